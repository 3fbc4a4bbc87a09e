#!/usr/bin/env python
"""Localise sources in DCASE-format wav files with a trained DOAnet and write one DCASE CSV (and a plot) per file."""
from __future__ import annotations

import argparse
import sys

from dtbt_tf.inference import infer_files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Run a DOAnet over 4-channel 24 kHz wav files (FOA or MIC, as the model was trained) of any "
                    "length: 5 s windows with 50% overlap, the centre of each kept. Writes OUT/<name>.csv with "
                    "rows frame,class,track,azimuth,elevation (100 ms frames, class 0, track = regressor slot, "
                    "integer degrees) for every slot whose activity exceeds --threshold, and with --plot "
                    "OUT/<name>.png. A .tflite model runs without TensorFlow (ai_edge_litert + NumPy features).")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="wav files (4 channels, 24 kHz)")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="SavedModel folder (a version folder, or a TF Serving base folder: highest version), "
                        "training run folder (run_config.json + best.keras) or .tflite file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--plot", action="store_true", help="also write a PNG of azimuth/elevation over time per file")
    p.add_argument("--ref", metavar="DIR", help="metadata folder: overlay OUT's plot with DIR/<name>.csv if present")
    p.add_argument("--threshold", type=float, default=0.5, help="activity threshold of a slot (default 0.5)")
    p.add_argument("--threads", type=int, default=None, help="TFLite interpreter threads (default: its own)")
    args = p.parse_args(argv)
    try:
        written = infer_files(args.audio, args.model, args.out, plot=args.plot, ref_dir=args.ref,
                              threshold=args.threshold, num_threads=args.threads)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
