"""FOA / MIC feature extraction of one 60 s 4-channel file: TensorFlow (`dtbt_tf.features.tf_features`) vs the
librosa/NumPy reference (tests/feature_reference.py), in the same run (DESIGN 10: TF >= 5x faster than the reference
on 2 cores).

The file is synthetic and seeded: noise with a slow envelope plus one tone per channel, 24 kHz. TF is timed as
`feature_function(cfg)` (graph tf.function, the default) and `feature_function(cfg, jit_compile=True)` (XLA),
both warm, numpy in -> numpy out. The implementations' runs are interleaved, so load from other processes hits
them alike. Seconds are wall-clock medians; cpu_s is the process CPU time (all threads, including TF's thread-pool
spinning) per call; speedup_of_min_times compares the fastest runs, the least disturbed by other processes.

    python benchmarks/run.py features        # or: python benchmarks/bench_features.py [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "feature_reference.py"


def _reference_module():
    """tests/feature_reference.py (the oracle is test code, not part of the package), imported by path."""
    spec = importlib.util.spec_from_file_location("feature_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(quick: bool = False) -> dict:
    import tensorflow as tf

    from dtbt_tf.config import FeatureConfig
    from dtbt_tf.features.tf_features import feature_function

    reference = _reference_module()
    seconds, repeats = (5.0, 3) if quick else (60.0, 9)
    audio = reference.synthetic_audio(seconds)
    rows = []
    for fmt in ("foa", "mic"):
        cfg = FeatureConfig(fmt=fmt)
        impls = {
            "librosa/numpy reference": lambda: reference.reference_features_numpy(audio, cfg),
            "tf graph (default)": lambda: feature_function(cfg)(audio).numpy(),
            "tf xla (jit_compile)": lambda: feature_function(cfg, jit_compile=True)(audio).numpy(),
        }
        first, outputs = {}, {}
        for name, fn in impls.items():
            outputs[name], first[name], _ = _timed(fn)  # includes tracing / XLA compilation
        wall, cpu = {k: [] for k in impls}, {k: [] for k in impls}
        for _ in range(repeats):
            for name, fn in impls.items():
                _, w, c = _timed(fn)
                wall[name].append(w)
                cpu[name].append(c)
        ref_name = "librosa/numpy reference"
        ref, ref_s, ref_min = outputs[ref_name], float(np.median(wall[ref_name])), float(np.min(wall[ref_name]))
        for name in impls:
            med = float(np.median(wall[name]))
            diff = np.abs(outputs[name] - ref)
            rows.append({
                "format": fmt,
                "implementation": name,
                "seconds": round(med, 4),
                "seconds_min": round(float(np.min(wall[name])), 4),
                "cpu_s": round(float(np.median(cpu[name])), 4),
                "realtime_factor": round(seconds / med, 1),
                "speedup_vs_reference": round(ref_s / med, 2),
                "speedup_of_min_times": round(ref_min / float(np.min(wall[name])), 2),
                "first_call_s": round(first[name], 3),
                "max_diff_logmel_db": float(f"{diff[..., :4].max():.2g}"),
                "max_diff_spatial": float(f"{diff[..., 4:].max():.2g}"),
            })
    graph = {r["format"]: r["speedup_vs_reference"] for r in rows if r["implementation"].startswith("tf graph")}
    xla = {r["format"]: r["speedup_vs_reference"] for r in rows if r["implementation"].startswith("tf xla")}
    notes = (f"{seconds:.0f} s synthetic 4-channel file at 24 kHz, {repeats} interleaved timed runs per implementation "
             f"after one warm-up (first_call_s), tf {tf.__version__}, {os.cpu_count()} CPUs visible. Speed-up vs the "
             f"reference (target >= 5x): graph FOA {graph['foa']}x, MIC {graph['mic']}x; "
             f"XLA FOA {xla['foa']}x, MIC {xla['mic']}x.")
    return {"name": "features", "rows": rows, "notes": notes}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s file, 3 runs (smoke test)")
    print(json.dumps(run(quick=ap.parse_args().quick), indent=2))
