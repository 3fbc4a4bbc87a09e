"""Hnet ablation: what each deviation from the paper's network and training buys, on one short budget.

    python benchmarks/hnet_ablation.py [--n-max 3] [--epochs 6] [--train-size 200000]

Every variant trains from scratch on the same matrices (half generator layout, half DOAnet training layout,
seed 0; "+ near-tie matrices" replaces half of them by near-tie training-layout ones) with the same schedule
(dtbt_tf.hnet.training.compile_hnet: warm-up + cosine, batch 512) and is scored on 20k fresh matrices of each
evaluation set (exact match against the Hungarian association). The variants add one change at a time:
bidirectional GRU (the previous default) -> x10 input scale -> relative inputs -> ReLU head layer (the
architecture of build_hnet's defaults) -> near-tie training matrices and a higher peak rate. The one-way
paper network is the first row. Results: benchmarks/results/hnet_ablation.json.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PAPER = {"bidirectional": False, "relative_inputs": False, "input_scale": 1.0, "head_layers": 0}
VARIANTS = (  # (name, architecture options, hard_fraction, peak lr)
    ("paper (one-way GRU on D)", PAPER, 0.0, 1.5e-3),
    ("+ bidirectional GRU", {**PAPER, "bidirectional": True}, 0.0, 1.5e-3),
    ("+ input x10", {**PAPER, "bidirectional": True, "input_scale": 10.0}, 0.0, 1.5e-3),
    ("+ relative inputs", {**PAPER, "bidirectional": True, "input_scale": 10.0, "relative_inputs": True}, 0.0,
     1.5e-3),
    ("+ ReLU head layer (default net)", {}, 0.0, 1.5e-3),
    ("+ near-tie matrices, lr 6e-3", {}, 0.5, 6e-3),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-max", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train-size", type=int, default=200_000)
    p.add_argument("--eval-size", type=int, default=20_000)
    p.add_argument("--only", type=int, nargs="+", default=None, help="indices of the variants to run")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from dtbt_tf.config import atomic_write_text
    from dtbt_tf.hnet.config import HnetTrainConfig
    from dtbt_tf.hnet.data import make_hnet_data, targets
    from dtbt_tf.hnet.evaluation import evaluate_hnet
    from dtbt_tf.hnet.training import compile_hnet
    from dtbt_tf.models.hnet import build_hnet

    n, size = args.n_max, args.train_size
    common = {"directions": "mixed", "continuous_fraction": 0.1}
    base = [make_hnet_data(n, size // 2, 1, **common), make_hnet_data(n, size // 2, 2, layout="training", **common)]
    hard = make_hnet_data(n, size // 2, 7, layout="training", max_margin=0.1, **common)
    quarter = size // 4
    mixed = [{k: v[:quarter] for k, v in base[0].items()}, {k: v[:quarter] for k, v in base[1].items()}, hard]
    datasets = {with_hard: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # built once, used per variant
                for with_hard, parts in ((False, base), (True, mixed))}
    defaults = {k: v.default for k, v in inspect.signature(build_hnet).parameters.items() if k in PAPER}
    rows = []
    for i, (name, options, hard_fraction, lr) in enumerate(VARIANTS):
        if args.only is not None and i not in args.only:
            continue
        data = datasets[bool(hard_fraction)]
        keras.utils.set_random_seed(0)
        cfg = HnetTrainConfig(n_max=n, epochs=args.epochs, lr=lr, batch_size=512)
        model = build_hnet(n, **options)
        compile_hnet(model, cfg, -(-len(data["distance"]) // cfg.batch_size))
        t0 = time.perf_counter()
        model.fit(data["distance"], targets(data["association"]), batch_size=cfg.batch_size, epochs=args.epochs,
                  shuffle=True, verbose=0)
        seconds = time.perf_counter() - t0
        scores = {key: round(100 * m["exact_match"], 2)
                  for key, m in evaluate_hnet(model, n, size=args.eval_size, seed=555_000).items()}
        rows.append({"variant": name, "architecture": {**defaults, **options}, "hard_fraction": hard_fraction,
                     "lr": lr, "train_seconds": round(seconds, 1), "exact_match_pct": scores})
        print(f"{name:34s} " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items()) + f"  ({seconds:.0f} s)",
              flush=True)
    result = {"name": "hnet_ablation", "date": datetime.date.today().isoformat(), "n_max": n,
              "epochs": args.epochs, "train_size": size, "eval_size": args.eval_size, "rows": rows}
    out = os.path.join(HERE, "results", "hnet_ablation.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
