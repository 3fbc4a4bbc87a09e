#!/usr/bin/env python
"""Send a wav file to a DOAnet behind TF Serving (REST or gRPC, signature from_audio) and write a DCASE CSV.

The whole file goes in one predict request (signature from_audio: the server computes the features); the answer
is written as DCASE rows (frame, 0, slot, azimuth, elevation). See docs/deployment.md.
"""
from __future__ import annotations

import argparse
import sys

from dtbt_tf import cli
from dtbt_tf.config import InferenceConfig

PORTS = {"rest": 8501, "grpc": 8500}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("audio", metavar="WAV", help="4-channel 24 kHz wav")
    p.add_argument("--model-name", default="doanet_foa", help="MODEL_NAME the server was started with")
    p.add_argument("--host", default="localhost")
    p.add_argument("--protocol", choices=tuple(PORTS), default="rest",
                   help="rest (standard library only) or grpc (needs tensorflow-serving-api)")
    p.add_argument("--port", type=cli.positive_int, help=f"default {PORTS['rest']} for rest, {PORTS['grpc']} for grpc")
    p.add_argument("--signature", default="from_audio")
    p.add_argument("--out", metavar="CSV", help="write the tracks here (default: print a summary only)")
    p.add_argument("--threshold", type=cli.probability, default=InferenceConfig().threshold,
                   help="activity threshold (the server returns raw activities); default %(default)s")
    cli.add_tracking(p, f"default {InferenceConfig().tracking} (the server returns raw outputs)",
                     default=InferenceConfig().tracking)
    p.add_argument("--timeout", type=_positive_float, default=120.0, help="seconds; default %(default)s")
    p.add_argument("--dry-run", action="store_true",
                   help="print the request (REST: URL line then the JSON body, usable as curl -d @file) and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    port = args.port or PORTS[args.protocol]

    def run():
        from dtbt_tf.data.dcase import load_audio, write_metadata
        from dtbt_tf.inference import outputs_to_metadata
        from dtbt_tf.serving import grpc_predict, grpc_request, rest_predict, rest_request

        audio = load_audio(args.audio)
        if args.dry_run:
            if args.protocol == "rest":
                url, body = rest_request(audio, args.model_name, args.host, port, args.signature)
                print(f"POST {url}")
                print(body.decode())
            else:
                req = grpc_request(audio, args.model_name, args.signature)
                dims = [d.size for d in req.inputs["audio"].tensor_shape.dim]
                print(f"PredictionService.Predict {args.host}:{port}")
                print(req.model_spec, end="")
                print(f"inputs['audio']: DT_FLOAT {dims}, {len(req.inputs['audio'].tensor_content)} bytes")
            return
        predict = rest_predict if args.protocol == "rest" else grpc_predict
        doa, act = predict(audio, args.model_name, args.host, port, args.signature, args.timeout)
        meta = outputs_to_metadata(doa, act, InferenceConfig(threshold=args.threshold, tracking=args.tracking))
        print(f"{args.audio}: {len(act)} frames, {meta.frame.size} active (frame, slot) rows")
        if args.out:
            write_metadata(args.out, meta)
            print(args.out)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
