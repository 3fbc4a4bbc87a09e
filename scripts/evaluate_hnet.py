#!/usr/bin/env python
"""Score an exported Hnet (SavedModel serving_default) against the exact Hungarian association on fresh
matrices: generator and DOAnet-training layouts, grid and continuous directions.

Example: python scripts/evaluate_hnet.py saved_models/hnet_n2 --size 100000 --json /tmp/hnet_n2.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="exported Hnet folder (SavedModel root, e.g. saved_models/hnet_n2)")
    p.add_argument("--size", type=int, default=100_000, help="matrices per evaluation set; default 100000")
    p.add_argument("--seed", type=int, default=12345, help="first seed of the evaluation sets; default 12345")
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = p.parse_args(argv)
    import tensorflow as tf

    from dtbt_tf.hnet_training import evaluate_hnet

    path = os.path.join(args.model_dir, "saved_model.pb")
    if not os.path.isfile(path):
        print(f"error: {path}: not found (expected an exported Hnet folder)", file=sys.stderr)
        return 2
    sig = tf.saved_model.load(args.model_dir).signatures["serving_default"]
    n = int(sig.structured_input_signature[1]["distance"].shape[-1])
    scores = evaluate_hnet(sig, n, size=args.size, seed=args.seed)
    for name, m in scores.items():
        print(f"{name:24s} F1 {100 * m['f1']:.3f}%  exact {100 * m['exact_match']:.3f}%  "
              f"optimal {100 * m['optimal_match']:.3f}%  away-from-ties {100 * m['exact_match_away_from_ties']:.3f}%  "
              f"near-ties {100 * m['near_tie_fraction']:.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
