#!/usr/bin/env python
"""Localise sources in users' 4-channel recordings (FOA or MIC, as the model was trained) with a trained DOAnet
and write one DCASE CSV (and a plot) per file."""
from __future__ import annotations

import sys

from dtbt_tf import cli
from dtbt_tf.data.user_audio import CHANNEL_ORDERS


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)) or value * 24000 < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv=None) -> int:
    p = cli.parser(
        "Run a DOAnet over 4-channel recordings of any length: wav, flac or ogg at any sample rate (resampled to "
        "24 kHz, said in one line), FOA in ACN/SN3D order (AmbiX) or FuMa (--channel-order fuma), MIC in the "
        "tetrahedral capsule order (docs/recording.md). 5 s windows with 50% overlap, the centre of each kept, the "
        "regressor slots of consecutive windows re-matched on their overlap (Hungarian match of directions and "
        "activities) so a source keeps its slot. Files are read and processed in blocks (--block-seconds), so "
        "memory stays bounded for files of any length. Writes OUT/<name>.csv with rows "
        "frame,class,track,azimuth,elevation (100 ms frames, class 0, track = a track id: a new one each time a "
        "track starts, by the --tracking rule; integer degrees) for every detection, and with "
        "--plot OUT/<name>.png. A .tflite model runs without TensorFlow (ai_edge_litert + NumPy features).")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files (4 channels)")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="SavedModel folder (a version folder, or a TF Serving base folder: highest version), "
                        "training run folder (run_config.json + best.keras) or .tflite file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="acn",
                   help="FOA channel order of the files: acn (W, Y, Z, X, SN3D: AmbiX) or fuma (W, X, Y, Z with W "
                        "at -3 dB); default acn")
    p.add_argument("--plot", action="store_true", help="also write a PNG of azimuth/elevation over time per file")
    p.add_argument("--ref", metavar="DIR", help="metadata folder: overlay OUT's plot with DIR/<name>.csv if present")
    p.add_argument("--threshold", type=cli.probability, default=None,
                   help="activity threshold of a slot; default: the model's own (saved at training)")
    cli.add_tracking(p)
    p.add_argument("--block-seconds", type=_seconds, default=60.0, metavar="S",
                   help="audio read and processed at a time (same result for any value; memory grows with it); "
                        "default %(default)s")
    cli.add_threads(p)
    args = p.parse_args(argv)

    def run():
        cli.quiet_tensorflow()
        from dtbt_tf.inference import infer_files

        log = lambda msg: print(msg, file=sys.stderr)
        for path in infer_files(args.audio, args.model, args.out, plot=args.plot, ref_dir=args.ref,
                                threshold=args.threshold, tracking=args.tracking, num_threads=args.threads,
                                channel_order=args.channel_order, log=log, block_seconds=args.block_seconds):
            print(path)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
