#!/usr/bin/env python
"""Send a wav file to a DOAnet behind TF Serving (REST or gRPC, signature from_audio) and write a DCASE CSV."""
from __future__ import annotations

import argparse
import sys

from dtbt_tf.data.dcase import load_audio, write_metadata
from dtbt_tf.inference import grpc_predict, grpc_request, outputs_to_metadata, rest_predict, rest_request


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Build the TF Serving predict request for a 4-channel 24 kHz wav (the whole file in one "
                    "request, signature from_audio: the server computes the features), send it and write the "
                    "answer as a DCASE CSV (frame,0,slot,azimuth,elevation). See docs/deployment.md.")
    p.add_argument("audio", metavar="WAV")
    p.add_argument("--model-name", default="doanet_foa", help="MODEL_NAME the server was started with")
    p.add_argument("--host", default="localhost")
    p.add_argument("--protocol", choices=("rest", "grpc"), default="rest",
                   help="rest (port 8501, standard library only) or grpc (port 8500, needs tensorflow-serving-api)")
    p.add_argument("--port", type=int, help="default 8501 for rest, 8500 for grpc")
    p.add_argument("--signature", default="from_audio")
    p.add_argument("--out", metavar="CSV", help="write the tracks here (default: print a summary only)")
    p.add_argument("--threshold", type=float, default=0.5, help="activity threshold (default 0.5)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds")
    p.add_argument("--dry-run", action="store_true",
                   help="print the request (REST: URL line then the JSON body, usable as curl -d @file) and exit")
    args = p.parse_args(argv)
    port = args.port or (8501 if args.protocol == "rest" else 8500)
    try:
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
            return 0
        predict = rest_predict if args.protocol == "rest" else grpc_predict
        doa, act = predict(audio, args.model_name, args.host, port, args.signature, args.timeout)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = outputs_to_metadata(doa, act, args.threshold)
    print(f"{args.audio}: {len(act)} frames, {meta.frame.size} active (frame, slot) rows")
    if args.out:
        write_metadata(args.out, meta)
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
