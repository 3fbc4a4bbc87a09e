#!/usr/bin/env python
"""Localise sources as a stream: a causal DOAnet fed 100 ms of audio at a time (files as if live, or a sound card).

    python scripts/stream.py my_foa.wav --model saved_models/doanet_foa_stream --realtime

writes OUT/<name>.csv (default OUT = stream_out/) with the DCASE rows of scripts/infer.py (frame, class 0, track
id, azimuth, elevation; a new track id each time a slot starts a track). With a .tflite model (or a folder of
them) TensorFlow is never imported: NumPy features, ai_edge_litert interpreter. docs/deployment.md has the live
loop for a small device.
"""
from __future__ import annotations

import sys

from dtbt_tf import cli
from dtbt_tf.data.user_audio import CHANNEL_ORDERS


def main(argv=None) -> int:
    p = cli.parser(__doc__)
    p.add_argument("audio", nargs="*", metavar="AUDIO",
                   help="4-channel files (wav/flac/ogg, any rate: resampled to 24 kHz); none with --device")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="streaming .tflite file (scripts/export.py --stream), a folder holding "
                        "doanet_<fmt>_stream_int8.tflite (or _fp32), or a causal training run folder (TensorFlow)")
    p.add_argument("--out", default="stream_out", metavar="DIR", help="output folder (created); default stream_out")
    p.add_argument("--realtime", action="store_true",
                   help="feed the files at the pace of the clock and print each track as it starts and ends")
    p.add_argument("--device", type=cli.non_negative_int, default=None, metavar="N",
                   help="record sound card N live (needs sounddevice: pip install 'dtbt_tf[live]'); writes "
                        "OUT/live_<time>.csv when stopped (Ctrl-C or --seconds)")
    p.add_argument("--seconds", type=float, default=None, help="with --device: stop after this many seconds")
    p.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="acn",
                   help="FOA channel order: acn (W, Y, Z, X, SN3D: AmbiX) or fuma; default acn")
    p.add_argument("--threshold", type=cli.probability, default=None,
                   help="activity threshold of a slot; default: the model's own")
    cli.add_tracking(p)
    p.add_argument("--quiet", action="store_true", help="no track lines (with --realtime / --device)")
    cli.add_threads(p)
    args = p.parse_args(argv)
    if args.device is None and not args.audio:
        p.error("give AUDIO files or --device N")
    if args.device is not None and args.audio:
        p.error("give AUDIO files or --device N, not both")
    if args.seconds is not None and (args.device is None or not args.seconds > 0):
        p.error("--seconds takes a positive number and needs --device")

    def run():
        cli.quiet_tensorflow()
        from dtbt_tf.streaming import stream_device, stream_files

        log = lambda msg: print(msg, file=sys.stderr)
        show = None if args.quiet else (lambda line: print(line, flush=True))
        if args.device is not None:
            paths = stream_device(args.device, args.model, args.out, seconds=args.seconds, threshold=args.threshold,
                                  tracking=args.tracking, num_threads=args.threads,
                                  channel_order=args.channel_order, log=log, show=show)
        else:
            paths = stream_files(args.audio, args.model, args.out, realtime=args.realtime, threshold=args.threshold,
                                 tracking=args.tracking, num_threads=args.threads,
                                 channel_order=args.channel_order, log=log, show=show if args.realtime else None)
        for path in paths:
            print(path)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
