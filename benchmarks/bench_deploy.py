"""Deployment latency, model sizes, infer.py memory and the accuracy cost of quantisation (DESIGN 10, issue 6).

Per 5 s window (250 feature frames, batch 1) of a paper-size FOA DOAnet: Keras (the model in a `tf.function`),
the exported SavedModel (`serving_default`, and `from_audio` with the features in the graph) and each TFLite
variant (fp32, dynamic-range int8, fp16 as exported, GRUs as WHILE loops; plus unrolled-GRU fp32/int8 for
comparison), each with one thread and with all threads. TensorFlow's thread count is fixed at start-up, so every
TensorFlow measurement runs in its own subprocess. Latency = median of `repeats` calls after 3 warm-up calls;
real-time factor = 5 s / latency. Random weights are fine for latency (same arithmetic as a trained model).

Also: files on disk, and peak RSS / wall time of `scripts/infer.py` with the int8 `.tflite` on a 60 s file (in a
fresh Python process that also reports whether TensorFlow was imported). Accuracy: when a trained run exists
(the run the shipped `doanet_foa` was exported from, else the newest `runs/*/best.keras`, whose data
manifest points at a DCASE-layout root; or the run folder in $DTBT_DEPLOY_RUN), the LE/LF1 change of the
quantised variants vs fp32 on that root's test split (`dtbt_tf.evaluation.quantization_report`); else a TODO
note.

    python benchmarks/run.py deploy            # or: python benchmarks/bench_deploy.py [--quick]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 250
WINDOW_SECONDS = 5.0


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _tf_worker(kind: str, path: str, threads: int, repeats: int) -> dict:
    """In a subprocess: latency of a Keras model file or a SavedModel signature with `threads` TF threads."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    rng = np.random.default_rng(0)
    if kind == "keras":
        from dtbt_tf.artifacts import load_doanet_keras

        model = load_doanet_keras(path)
        fn = tf.function(lambda x: model(x, training=False))
        x = tf.constant(rng.standard_normal((1, WINDOW, 64, 7)).astype(np.float32) * 10 - 40)
        call = lambda: fn(x)  # noqa: E731
    else:
        sig = tf.saved_model.load(path).signatures
        if kind == "savedmodel":
            x = tf.constant(rng.standard_normal((1, WINDOW, 64, 7)).astype(np.float32) * 10 - 40)
            call = lambda: sig["serving_default"](features=x)  # noqa: E731
        else:
            x = tf.constant(0.1 * rng.standard_normal((1, WINDOW * 480, 4)).astype(np.float32))
            call = lambda: sig["from_audio"](audio=x)  # noqa: E731
    for _ in range(3):
        [v.numpy() for v in call().values()]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        [v.numpy() for v in call().values()]
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1000 * float(np.median(times)), "min_ms": 1000 * float(np.min(times))}


def _tf_latency(kind: str, path: str, threads: int, repeats: int) -> dict:
    code = f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); " \
           f"import bench_deploy as b; print(json.dumps(b._tf_worker({kind!r}, {path!r}, {threads}, {repeats})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if out.returncode:
        raise RuntimeError(f"TF latency worker failed ({kind}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tflite_latency(path: str, threads: int, repeats: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(0)
    scale, shift = (0.1, 0.0) if len(inp["shape"]) == 3 else (10.0, -40.0)
    interp.set_tensor(inp["index"], (rng.standard_normal(inp["shape"]) * scale + shift).astype(np.float32))
    for _ in range(3):
        interp.invoke()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1000 * float(np.median(times)), "min_ms": 1000 * float(np.min(times))}


def _infer_rss(tflite_path: str, seconds: float, tmp: str) -> dict:
    """Peak RSS (MB) and wall time of scripts/infer.py on a synthetic file, in a fresh interpreter.

    Peak RSS = VmHWM of that process (getrusage's ru_maxrss would include the forking parent's pages on Linux:
    the high-water mark survives exec)."""
    from dtbt_tf.data.dcase import write_audio

    wav = os.path.join(tmp, "fold1_room1_mix001_ov1.wav")
    rng = np.random.default_rng(1)
    write_audio(wav, (0.1 * rng.standard_normal((int(seconds * 24000), 4))).astype(np.float32))
    code = textwrap.dedent(f"""
        import json, runpy, sys, time
        sys.argv = ["infer.py", {wav!r}, "--model", {tflite_path!r}, "--out", {os.path.join(tmp, 'pred')!r}]
        t0 = time.perf_counter()
        try:
            runpy.run_path({os.path.join(REPO, 'scripts', 'infer.py')!r}, run_name="__main__")
        except SystemExit as e:
            assert not e.code, e.code
        wall = time.perf_counter() - t0
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
        print(json.dumps({{"peak_rss_mb": int(hwm.split()[1]) / 1024,
                          "wall_s": wall, "tensorflow_imported": "tensorflow" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"infer.py run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _trained_run():
    """(run_dir, DCASE root) of a trained FOA run: $DTBT_DEPLOY_RUN if set, else the one the shipped doanet_foa
    was exported from (its sidecar names it), else the newest runs/*/best.keras; (None, None) if there is none."""
    from dtbt_tf.artifacts import BEST_MODEL, SIDECAR, load_run_config, provenance, read_sidecar, shipped_model
    from dtbt_tf.config import ConfigError

    candidates = [os.environ["DTBT_DEPLOY_RUN"]] if os.environ.get("DTBT_DEPLOY_RUN") else []
    try:
        pattern = os.path.join(shipped_model("doanet_foa"), "*", "assets.extra", SIDECAR)
    except ConfigError:
        pattern = None
    for info in sorted(glob.glob(pattern)) if pattern else []:
        try:
            candidates.append(read_sidecar(info)["source_run"])
        except (ConfigError, KeyError):
            pass
    candidates += [os.path.dirname(p) for p in sorted(glob.glob(os.path.join(REPO, "runs", "*", BEST_MODEL)),
                                                      key=os.path.getmtime, reverse=True)]
    for run in candidates:
        root = provenance(run).get("data_root")
        try:
            fmt = load_run_config(run).feature.fmt
        except ConfigError:
            continue
        if root and os.path.isdir(root) and fmt == "foa" and os.path.isfile(os.path.join(run, BEST_MODEL)):
            return run, root
    return None, None


def _paper_model():
    import keras

    from dtbt_tf.config import DoanetConfig
    from dtbt_tf.models.doanet import build_doanet

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = build_doanet(DoanetConfig(fmt="foa"), norm_mean=np.full((64, 7), -40.0), norm_std=np.full((64, 7), 10.0))
    for layer in model.layers:
        for w in layer.weights:
            if w.path.endswith("bias"):
                w.assign(rng.normal(0.0, 0.1, w.shape).astype(np.float32))
    return model


def run(quick: bool = False) -> dict:
    from dtbt_tf.export import export_saved_model, export_tflite

    repeats = 5 if quick else 50
    all_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    thread_counts = [1] if quick else sorted({1, all_threads})
    run_dir, data_root = _trained_run()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model = _paper_model()
        if run_dir:
            from dtbt_tf.artifacts import load_trained

            model, _ = load_trained(run_dir)
        keras_path = os.path.join(tmp, "doanet.keras")
        model.save(keras_path)
        sm_dir = export_saved_model(model, os.path.join(tmp, "doanet_foa"))
        variants = {"fp32": ("fp32", False), "int8": ("int8", False), "fp16": ("fp16", False)}
        if not quick:
            variants.update({"fp32 (unrolled GRU)": ("fp32", True), "int8 (unrolled GRU)": ("int8", True)})
        lite = {}
        for name, (quant, unroll) in variants.items():
            path = os.path.join(tmp, f"doanet_{name.split()[0]}_{'unrolled' if unroll else 'while'}.tflite")
            t0 = time.perf_counter()
            export_tflite(model, path, quant, WINDOW, unroll=unroll)
            lite[name] = (path, time.perf_counter() - t0)

        def add(runtime, threads, lat, size, extra=None):
            rows.append({"runtime": runtime, "threads": threads, "median_ms": round(lat["median_ms"], 2),
                         "min_ms": round(lat["min_ms"], 2),
                         "realtime_factor": round(1000 * WINDOW_SECONDS / lat["median_ms"], 1),
                         "size_MB": round(size / 1e6, 2), **(extra or {})})

        for threads in thread_counts:
            add("keras tf.function", threads, _tf_latency("keras", keras_path, threads, repeats),
                os.path.getsize(keras_path))
            add("SavedModel serving_default", threads, _tf_latency("savedmodel", sm_dir, threads, repeats),
                _dir_bytes(sm_dir))
            add("SavedModel from_audio (features in graph)", threads,
                _tf_latency("from_audio", sm_dir, threads, repeats), _dir_bytes(sm_dir))
            for name, (path, conv_s) in lite.items():
                add(f"TFLite {name}", threads, _tflite_latency(path, threads, repeats), os.path.getsize(path),
                    {"convert_s": round(conv_s, 1)})
        seconds = 10.0 if quick else 60.0
        rss = _infer_rss(lite["int8"][0], seconds, tmp)
        rows.append({"runtime": f"scripts/infer.py, TFLite int8, {seconds:.0f} s file", "threads": "default",
                     "peak_rss_MB": round(rss["peak_rss_mb"], 1), "wall_s": round(rss["wall_s"], 2),
                     "tensorflow_imported": rss["tensorflow_imported"]})
        if run_dir:
            from dtbt_tf.evaluation import quantization_report

            rep = quantization_report({k: lite[k][0] for k in ("fp32", "int8", "fp16")}, data_root, "test",
                                      max_files=2 if quick else None)
            for name, m in rep["metrics"].items():
                rows.append({"runtime": f"accuracy TFLite {name} (test split, {rep['files']} files)",
                             "LE_deg": round(m["LE"], 3), "LF1": round(m["LF1"], 4), "MOTA": round(m["MOTA"], 4),
                             "LE_change_deg": round(rep["delta"].get(name, {}).get("LE", 0.0), 3),
                             "LF1_change": round(rep["delta"].get(name, {}).get("LF1", 0.0), 4)})
            notes.append(f"Weights and accuracy from the trained run {os.path.relpath(run_dir, REPO)} "
                         f"(test split of {data_root}).")
        else:
            notes.append("TODO accuracy: no trained FOA run (runs/*/best.keras with a data manifest) was found, so "
                         "the LE change of int8/fp16 vs fp32 is not measured; latency uses random weights.")
    notes.append(f"Batch 1, one {WINDOW}-frame (5 s) window per call; median of {repeats} calls after 3 warm-up "
                 "calls; real-time factor = 5 s / median. TFLite variants are the exported files (GRUs as "
                 "WHILE loops); the unrolled-GRU rows are the same models converted with unroll=True. "
                 "The machine is shared: see the load average.")
    return {"name": "deploy", "rows": rows, "notes": " ".join(notes)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 repeats, one thread, 10 s infer file (smoke test)")
    print(json.dumps(run(quick=ap.parse_args().quick), indent=2))
