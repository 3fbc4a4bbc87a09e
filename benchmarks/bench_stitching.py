"""Track ids on a test split: slot re-association across windows (dtbt_tf.windowing) and the track-id rules
(dtbt_tf.tracks), with a shipped model.

For every test-fold recording (DCASE layout) the model's outputs are stitched by the code infer.py uses
(`dtbt_tf.inference.localize`): with the raw slot order of each window (``reassociate=False``, what infer.py did
before slots were re-matched) and re-associated; turned into tracks by `outputs_to_metadata` with the slot rule
(``tracking="slots"``: the raw slots, the paper's protocol) or the continuity rule (the default: duplicates
merged, tracks continued by direction, gaps of up to 5 frames bridged) and scored with
`dtbt_tf.metrics.compute_metrics` (in memory, float directions: the CSVs of infer.py round to integer degrees, so
`scripts/evaluate.py` on them differs by a few switches). Two more rows feed the same model's outputs with the
two slots swapped in every odd window (a model with no slot order across windows, as the issue's
other-simulator run showed) to check that re-association undoes such swaps. ``frames_reordered``: label frames
whose slots the re-association put in another order than the window gave.

    python benchmarks/bench_stitching.py        # quick set test fold, shipped doanet_foa -> results/stitching.json
    python benchmarks/bench_stitching.py --data data/synth_standard --json benchmarks/results/stitching_standard.json
    python benchmarks/bench_stitching.py --quick   # 3 files, printed only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "stitching.json")
KEYS = ("LE", "LR", "LP", "LF1", "MOTA", "IDS", "IDS_onsets")


def swapping(model):
    """The model with its slots reversed in every odd window (windows counted in the order they are predicted)."""
    seen = [0]
    predict = model.predict

    def predict_swapped(x):
        doa, act = (np.array(v) for v in predict(x))
        for i in range(len(doa)):
            if seen[0] % 2:
                doa[i], act[i] = doa[i][:, ::-1], act[i][:, ::-1]
            seen[0] += 1
        return doa, act

    return dataclasses.replace(model, predict=predict_swapped), seen


def run(quick: bool = False, data: str = os.path.join(REPO, "data", "synth_quick_seed0"),
        model_path: str = os.path.join(REPO, "saved_models", "doanet_foa"), split: str = "test") -> dict:
    from dtbt_tf.config import InferenceConfig
    from dtbt_tf.data.dcase import discover, load_audio, read_metadata, split_recordings
    from dtbt_tf.inference import load_model, localize, outputs_to_metadata
    from dtbt_tf.metrics import compute_metrics, tracks_from_metadata
    from dtbt_tf.windowing import window_plan

    model = load_model(model_path)
    recs = [r for r in split_recordings(discover(data, model.feature_cfg.fmt), split, root=data) if r.metadata_path]
    recs = recs[:3] if quick else recs
    # name -> (odd windows swapped, slots re-associated across windows, track-id rule)
    variants = {"raw slots (before)": (False, False, "slots"), "re-associated": (False, True, "slots"),
                "re-associated + continuity (default)": (False, True, "continuity"),
                "odd windows swapped, raw slots": (True, False, "slots"),
                "odd windows swapped, re-associated": (True, True, "slots")}
    pred = {v: {} for v in variants}
    reordered = {v: 0 for v in variants}
    ref = {}
    n_label, n_boundaries = 0, 0
    t0 = time.perf_counter()
    for rec in recs:
        audio = load_audio(rec.audio_path, model.feature_cfg.sample_rate)
        ref[rec.stem] = tracks_from_metadata(read_metadata(rec.metadata_path))
        for name, (swap, reassociate, tracking) in variants.items():
            m = swapping(model)[0] if swap else model
            doa, act = localize(audio, m, reassociate=reassociate)
            if name == "re-associated":
                n_label += len(act)
                window = model.window_frames // model.feature_cfg.label_hop_frames
                n_boundaries += len(window_plan(len(act), window)) - 1
            if reassociate:
                raw, _ = localize(audio, swapping(model)[0] if swap else model, reassociate=False)
                reordered[name] += int(np.sum(np.any(np.abs(raw - doa) > 1e-6, axis=(1, 2))))
            inference = InferenceConfig(threshold=model.inference.threshold, tracking=tracking)
            pred[name][rec.stem] = tracks_from_metadata(outputs_to_metadata(doa, act, inference))
    rows = []
    for name in variants:
        met = compute_metrics(pred[name], ref)
        rows.append({"variant": name, **{k: (int(met[k]) if k.startswith("IDS") else round(float(met[k]), 4))
                                         for k in KEYS}, "frames_reordered": reordered[name]})
    notes = (f"{len(recs)} {split}-split recordings of {os.path.relpath(data, REPO)} ({n_label} label frames, "
             f"{n_boundaries} window boundaries), model {os.path.relpath(model_path, REPO)}, threshold "
             f"{model.inference.threshold}; LR/LP/LF1/MOTA as fractions; {time.perf_counter() - t0:.0f} s.")
    return {"name": "stitching", "rows": rows, "notes": notes}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 files, printed only")
    ap.add_argument("--data", default=os.path.join(REPO, "data", "synth_quick_seed0"), help="DCASE-layout root")
    ap.add_argument("--model", default=os.path.join(REPO, "saved_models", "doanet_foa"), help="model to run")
    ap.add_argument("--json", default=RESULTS, help="where the result goes; default %(default)s")
    args = ap.parse_args()
    from dtbt_tf.machine import machine_info

    t0 = time.perf_counter()
    result = run(quick=args.quick, data=args.data, model_path=args.model)
    # named after its file, so several stitching results get their own sections in results/README.md
    result.update(name=os.path.splitext(os.path.basename(args.json))[0], wall_s=round(time.perf_counter() - t0, 1),
                  machine=machine_info())
    text = json.dumps(result, indent=2)
    print(text)
    if not args.quick:
        with open(args.json + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.json + ".tmp", args.json)
    sys.exit(0)
