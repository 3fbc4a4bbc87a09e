#!/usr/bin/env python
"""Score an exported Hnet (SavedModel serving_default) against the exact Hungarian association on fresh
matrices: generator and DOAnet-training layouts, grid and continuous directions.

Example: python scripts/evaluate_hnet.py saved_models/hnet_n2 --size 100000 --json /tmp/hnet_n2.json
"""
from __future__ import annotations

import json
import sys

from dtbt_tf import cli
from dtbt_tf.config import atomic_write_text
from dtbt_tf.hnet.config import EVAL_SEED, EVAL_SIZE


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("model_dir", help="exported Hnet folder (SavedModel root, e.g. saved_models/hnet_n2)")
    p.add_argument("--size", type=int, default=EVAL_SIZE, help=f"matrices per evaluation set; default {EVAL_SIZE}")
    p.add_argument("--seed", type=int, default=EVAL_SEED,
                   help=f"seed of the first evaluation set (set k uses seed + k); default {EVAL_SEED}")
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    cli.add_threads(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.size < 1:
        raise ValueError(f"--size: must be >= 1, got {args.size}")
    cli.quiet_tensorflow()
    cli.apply_threads(args.threads)
    from dtbt_tf.hnet.evaluation import evaluate_hnet, load_exported_hnet, score_table

    signature, n_max = load_exported_hnet(args.model_dir)
    scores = evaluate_hnet(signature, n_max, size=args.size, seed=args.seed)
    print(score_table(scores))
    if args.json:
        atomic_write_text(args.json, json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
