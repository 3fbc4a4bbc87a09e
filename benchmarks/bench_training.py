"""DOAnet training step time: `mse` vs `full` on the same batch (DESIGN 10: full <= 1.1x mse, <= 0.8 s at paper
size on 2 cores), sequences/s and the first (tracing) step; and the `full` step of the stronger
``--arch resnet_conformer`` body against the paper's CRNN (issue 16 point 6).

Paper size: batch 32, 250 feature frames, FOA (7 channels), the paper's DOAnet. Random features and random
labels with stable slots (polyphony 0..2). The Hnet is the shipped one when present, else an untrained build
of the same architecture (same cost). The two losses' steps are interleaved so that load from other processes
hits both alike; times are medians after the warm-up. `step_cpu_s_median` is the process CPU time of a step
(all threads): on a shared machine, CPU time / cores is a lower bound of the step time on an idle one.

    python benchmarks/run.py training          # or: python benchmarks/bench_training.py [--quick]
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np


def _batch(rng, batch, frames, n_max=2, channels=7):
    from dtbt_tf.config import PAD_VALUE
    from dtbt_tf.geometry import polar_to_unit

    F = frames // 5
    feats = rng.standard_normal((batch, frames, 64, channels)).astype(np.float32)
    active = (rng.random((batch, F, n_max)) < 0.6).astype(np.float32)
    doa = polar_to_unit(rng.uniform(-180, 180, (batch, F, n_max)), rng.uniform(-45, 45, (batch, F, n_max)))
    doa = np.where(active[..., None] > 0, doa, PAD_VALUE).astype(np.float32)
    track_id = np.where(active > 0, np.arange(n_max)[None, None], -1).astype(np.int32)
    return feats, {"doa": doa, "active": active, "track_id": track_id}


def _hnet(n_max):
    """(the shipped Hnet of n_max, "shipped"), or an untrained build of the same architecture (same cost)."""
    from dtbt_tf.artifacts import shipped_model
    from dtbt_tf.config import ConfigError
    from dtbt_tf.models.hnet import build_hnet, load_hnet

    try:
        return load_hnet(shipped_model(f"hnet_n{n_max}"), n_max=n_max), "shipped"
    except ConfigError:
        return build_hnet(n_max), "untrained build"


def run(quick: bool = False, jit_compile: bool = False) -> dict:
    import keras
    import tensorflow as tf

    from dtbt_tf.config import DoanetConfig, LossConfig
    from dtbt_tf.models.doanet import build_doanet
    from dtbt_tf.training import DoaTrainer

    batch, frames, steps = (4, 50, 3) if quick else (32, 250, 8)
    cfg = DoanetConfig(conv_filters=16, rnn_units=16, fc_units=16) if quick else DoanetConfig()
    rng = np.random.default_rng(0)
    x, y = _batch(rng, batch, frames)
    hnet, hnet_kind = _hnet(2)
    conformer = dataclasses.replace(cfg, arch="resnet_conformer", conformer_dim=32 if quick else cfg.conformer_dim)
    runs = {"mse": (cfg, "mse"), "full": (cfg, "full"), "full_resnet_conformer": (conformer, "full")}
    trainers, first = {}, {}
    for name, (model_cfg, loss) in runs.items():
        keras.utils.set_random_seed(0)
        t = DoaTrainer(build_doanet(model_cfg), hnet, LossConfig(name=loss))
        t.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
        t0 = time.perf_counter()
        t.train_on_batch(x, y)
        first[name] = time.perf_counter() - t0
        t.train_on_batch(x, y)  # warm-up
        trainers[name] = t
    times, cpu = {k: [] for k in runs}, {k: [] for k in runs}
    for _ in range(steps):
        for name, t in trainers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            t.train_on_batch(x, y)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = [{"loss": runs[k][1], "arch": runs[k][0].arch, "params": int(trainers[k].doanet.count_params()),
             "batch": batch, "frames": frames, "step_s_median": round(med[k], 4),
             "step_s_min": round(float(np.min(times[k])), 4), "sequences_per_s": round(batch / med[k], 1),
             "step_cpu_s_median": round(float(np.median(cpu[k])), 4),
             "first_step_s": round(first[k], 2), "ratio_vs_mse": round(med[k] / med["mse"], 3)} for k in med]
    notes = (f"{'quick (reduced model)' if quick else 'paper size (DOAnet of DESIGN 4)'}, FOA, "
             f"{steps} interleaved timed steps after 1 warm-up, jit_compile={jit_compile}, Hnet: {hnet_kind}, "
             f"tf {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs visible, load average "
             f"{os.getloadavg()[0]:.1f} at the end; "
             f"full/mse = {med['full'] / med['mse']:.3f} (target <= 1.1), full step {med['full']:.3f} s "
             f"(target <= 0.8 s at paper size); resnet_conformer/crnn full step = "
             f"{med['full_resnet_conformer'] / med['full']:.2f}")
    return {"name": "training", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from dtbt_tf import cli

    ap = cli.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model and batch (smoke test)")
    cli.add_jit(ap)
    a = ap.parse_args()
    print(json.dumps(run(quick=a.quick, jit_compile=a.jit_compile), indent=2))
