#!/usr/bin/env python
"""Export a trained DOAnet: SavedModel for TF Serving (features-in and audio-in signatures) and TFLite files."""
from __future__ import annotations

import sys

from dtbt_tf import cli


def main(argv=None) -> int:
    p = cli.parser(
        "Write OUT/<version>/ (TF Serving layout: signatures serving_default (features) and from_audio "
        "(audio at 24 kHz), configs and the activity threshold in assets.extra/dtbt_tf.json) and, with --tflite, "
        "OUT/tflite/doanet_<fmt>_<variant>.tflite (batch 1, fixed window, built-in ops only) with a JSON sidecar "
        "each. Everything is checked before anything is written; OUT is locked while the export runs. With --stream "
        "(a causal DOAnet, train.py --causal): only OUT/doanet_<fmt>_stream_<variant>.tflite, the 100 ms step with "
        "explicit state inputs/outputs for scripts/stream.py (--tflite fp32,int8 by default). See "
        "docs/deployment.md.")
    p.add_argument("--model", required=True, metavar="RUN_DIR",
                   help="training run folder (run_config.json + best.keras) or a DOAnet .keras file")
    p.add_argument("--out", required=True, metavar="DIR", help="model base folder, e.g. models/doanet_foa")
    p.add_argument("--version", type=cli.positive_int, default=1, help="SavedModel version number (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version / TFLite files")
    p.add_argument("--tflite", default="", metavar="LIST",
                   help="comma-separated TFLite variants: fp32, int8 (dynamic range), fp16, audio (fp32 with the "
                        "features in the graph); e.g. fp32,int8,fp16")
    p.add_argument("--window", type=cli.positive_int, default=250,
                   help="TFLite window in feature frames, a multiple of 5 (default 250 = 5 s)")
    p.add_argument("--no-saved-model", action="store_true", help="write only the TFLite files")
    p.add_argument("--stream", action="store_true",
                   help="streaming TFLite of a causal DOAnet (variants fp32, int8; default both), no SavedModel")
    cli.add_tracking(p, "saved in the sidecars; default: the run's own")
    args = p.parse_args(argv)

    def run():
        cli.quiet_tensorflow()
        if args.stream:
            from dtbt_tf.export import export_streaming

            for path in export_streaming(args.model, args.out, args.tflite or "fp32,int8", overwrite=args.overwrite,
                                         tracking=args.tracking):
                print(path)
            return
        from dtbt_tf.export import export_all

        for path in export_all(args.model, args.out, version=args.version, tflite=args.tflite,
                               window_frames=args.window, saved_model=not args.no_saved_model,
                               overwrite=args.overwrite, tracking=args.tracking):
            print(path)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
