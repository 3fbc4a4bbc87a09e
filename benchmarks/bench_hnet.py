"""Hnet benchmark: batched Hnet inference vs a Python loop of scipy's Hungarian algorithm, and training cost.

Run alone: python benchmarks/bench_hnet.py [--quick]   (or through benchmarks/run.py hnet)
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from dtbt_tf.association import exact_association_tf
from dtbt_tf.hnet.data import make_hnet_data
from dtbt_tf.artifacts import SHIPPED_DIR
from dtbt_tf.models.hnet import HNET_CONFIG_FILE

BATCH = 4096


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _scipy_loop(D, row_active, col_active):
    for b in range(len(D)):
        r, c = np.flatnonzero(row_active[b]), np.flatnonzero(col_active[b])
        if len(r) and len(c):
            linear_sum_assignment(D[b][np.ix_(r, c)])


def _bench_n(n, count, repeats):
    model_dir = SHIPPED_DIR / f"hnet_n{n}"
    data = make_hnet_data(n, count, seed=4242, layout="training", directions="continuous")
    D, ra, ca = data["distance"], data["row_active"], data["col_active"]
    sig = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    batches = [tf.constant(D[i:i + BATCH]) for i in range(0, count, BATCH)]

    def hnet():
        for b in batches:
            sig(distance=b)["association"].numpy()

    exact = tf.function(exact_association_tf)

    def brute():
        for b in batches:
            exact(b).numpy()

    hnet(), brute()  # warm-up / tracing
    t_hnet = _median_seconds(hnet, repeats)
    t_brute = _median_seconds(brute, repeats)
    t_scipy = _median_seconds(lambda: _scipy_loop(D, ra, ca), max(1, repeats // 2))
    info = json.loads((model_dir / HNET_CONFIG_FILE).read_text())
    m = info["metrics"]

    def minutes_to(level):
        """Training minutes until every per-epoch fresh evaluation set (or, in histories written before those
        were logged, the validation set) first reached `level` exact match."""
        def score(h):
            fresh = [v for k, v in h.items() if k.startswith("fresh_")]
            return min(fresh) if fresh else h["val_association_exact_match"]
        hits = [h["train_seconds"] for h in info.get("history", []) if score(h) >= level]
        return round(hits[0] / 60, 1) if hits else None

    return {
        "n_max": n, "matrices": count, "batch": BATCH,
        "hnet_matrices_per_s": round(count / t_hnet),
        "scipy_loop_matrices_per_s": round(count / t_scipy),
        "hnet_vs_scipy_loop": round(t_scipy / t_hnet, 2),
        "exact_tf_matrices_per_s": round(count / t_brute),
        "train_minutes": round(info["train_seconds"] / 60, 1),
        "train_epochs": sum(st["epochs"] for st in info.get("stages", [])) or info["config"]["epochs"],
        "minutes_to_val_exact_99": minutes_to(0.99),
        "minutes_to_val_exact_99_5": minutes_to(0.995),
        "exact_match_training_continuous_pct": round(100 * m["training/continuous"]["exact_match"], 2),
        "exact_match_training_grid_pct": round(100 * m["training/grid"]["exact_match"], 2),
        "exact_match_generator_grid_pct": round(100 * m["generator/grid"]["exact_match"], 2),
        "f1_generator_grid_pct": round(100 * m["generator/grid"]["f1"], 3),
    }


def run(quick: bool = False) -> dict:
    """Per shipped Hnet: matrices/s of the SavedModel (batch 4096), of a Python loop of
    linear_sum_assignment on the active blocks of the same matrices, of the TF brute-force exact
    association, their ratio (medians of repeats in one run), and the recorded training time/quality."""
    count, repeats = (10_000, 3) if quick else (100_000, 5)
    rows = [_bench_n(n, count, repeats) for n in (2, 3)
            if (SHIPPED_DIR / f"hnet_n{n}" / "saved_model.pb").is_file()]
    notes = (f"{count} training-layout matrices (all N prediction rows active, references padded with 10), "
             "continuous directions; Hnet = shipped SavedModel serving_default, batch 4096; scipy = Python loop of "
             "linear_sum_assignment on each active block; exact_tf = dtbt_tf.association.exact_association_tf "
             "(brute force over N! permutations, batch 4096). Medians of repeats in one process. Training time and "
             "exact match (against the Hungarian association, fresh matrices) from saved_models/hnet_n{N}/"
             "hnet_config.json, written by scripts/train_hnet.py (minutes_to_*: first epoch at which the exact match "
             "on every fresh evaluation set logged per epoch (20k matrices each: generator/training layout x "
             "grid/continuous) reached the level; older histories: the validation set); CPU shared with other jobs.")
    return {"name": "hnet", "rows": rows, "notes": notes}


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=2))
