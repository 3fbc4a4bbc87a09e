#!/usr/bin/env python
"""Polyphony-resolved localisation of models and the classical baseline on test sets (issue 16).

For every system (DOAnet model folders / .tflite files given with --model NAME=PATH, and the classical
baseline with --baseline) and every dataset (--data NAME=ROOT, scored on its test split, fold 1), writes the
predictions under --work, scores them with the one metric module (``dtbt_tf.metrics.evaluate_folders``) and
prints and saves a table of LE on all / 1-source / 2-source frames, LR, LF1, MOTA and IDS.

    python benchmarks/localisation_report.py --data standard=data/synth_standard --data ood=data/synth_ood \\
        --model doanet_foa=saved_models/doanet_foa --baseline --format foa \\
        --json benchmarks/results/localisation_foa.json

Prediction folders are kept: a system whose folder under --work holds ``done.json`` (written when it
finished) is scored again without being re-run, so an interrupted report resumes (--force re-runs all).
--pred DATASET:NAME=DIR scores a prediction folder made elsewhere (e.g. by scripts/baseline.py) as NAME.
--tracking slots,continuity runs every model with each track-id rule (dtbt_tf.tracks), as systems
"NAME [rule]"; without it each model uses its own rule.

Baseline modes: 'oracle' takes the number of sources per frame from the reference metadata (the fair LE
comparison), 'detect' uses its detection threshold; --baseline-modes picks them (MIC NormMUSIC costs about
15 s of CPU per minute of audio per mode).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

KEYS = ("LE", "LE_poly1", "LE_poly2", "LR", "LF1", "MOTA", "IDS", "frames_poly1", "frames_poly2")


def _named(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: --{what} {item!r}: expected NAME=PATH")
        out.append((name, path))
    return out


def _test_files(root: str, fmt: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(root, f"{fmt}_dev", "fold1_*.wav")))
    if not files:
        raise SystemExit(f"error: {root}: no {fmt}_dev/fold1_*.wav (test split) files")
    return files


def _run_once(run, out: str, n_files: int, force: bool):
    """Run a system into ``out`` unless a finished run is there -> (wall seconds, how it was obtained)."""
    done = os.path.join(out, "done.json")
    if os.path.isfile(done) and not force:
        with open(done) as f:
            wall = json.load(f)["wall_s"]
        return wall, f"reused, {wall:.0f} s when run"
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(done):
        os.remove(done)
    start = time.perf_counter()
    run(out)
    wall = time.perf_counter() - start
    with open(done + ".tmp", "w") as f:
        json.dump({"wall_s": wall, "files": n_files}, f)
    os.replace(done + ".tmp", done)
    return wall, f"{wall:.0f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", default=[], metavar="NAME=ROOT", required=True,
                   help="a DCASE-layout dataset, scored on its test split (fold 1); repeatable")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a DOAnet (SavedModel / run folder / .tflite) for scripts/infer.py; repeatable")
    p.add_argument("--baseline", action="store_true", help="also score the classical baseline")
    p.add_argument("--baseline-modes", default="oracle,detect", help="comma-separated: oracle, detect")
    p.add_argument("--format", choices=("foa", "mic"), default="foa", dest="fmt")
    p.add_argument("--work", default="runs/localisation_report", help="prediction folders (default %(default)s)")
    p.add_argument("--pred", action="append", default=[], metavar="DATASET:NAME=DIR",
                   help="score an existing prediction folder of DATASET's test split as system NAME; repeatable")
    p.add_argument("--tracking", default="", metavar="LIST",
                   help="comma-separated track-id rules (slots, continuity) to run every model with; default: "
                        "each model's own")
    p.add_argument("--force", action="store_true", help="re-run systems whose prediction folder is complete")
    p.add_argument("--json", help="write the table as JSON here")
    args = p.parse_args(argv)

    from dtbt_tf.baseline import BaselineConfig, run_baseline
    from dtbt_tf.inference import infer_files
    from dtbt_tf.metrics import evaluate_folders

    datasets, models = _named(args.data, "data"), _named(args.model, "model")
    given = {}
    for key, path in _named(args.pred, "pred"):
        dname, sep, sname = key.partition(":")
        if not sep or dname not in dict(datasets):
            raise SystemExit(f"error: --pred {key}={path}: expected DATASET:NAME with DATASET one of --data")
        if not os.path.isdir(path):
            raise SystemExit(f"error: --pred {path}: no such folder")
        given.setdefault(dname, []).append((sname, path))
    from dtbt_tf.config import TRACKINGS

    trackings = [t for t in args.tracking.split(",") if t] or [None]
    if any(t not in TRACKINGS for t in trackings if t):
        raise SystemExit(f"error: --tracking {args.tracking!r}: expected some of {', '.join(TRACKINGS)}")
    modes = [m for m in args.baseline_modes.split(",") if m] if args.baseline else []
    if any(m not in ("oracle", "detect") for m in modes):
        raise SystemExit(f"error: --baseline-modes {args.baseline_modes!r}: expected oracle and/or detect")
    rows = []
    for dname, root in datasets:
        files, ref = _test_files(root, args.fmt), os.path.join(root, "metadata_dev")
        systems = [(name if tracking is None else f"{name} [{tracking}]",
                    lambda out, path=path, tracking=tracking: infer_files(files, path, out, tracking=tracking,
                                                                          log=lambda *a: None))
                   for name, path in models for tracking in trackings]
        systems += [(f"baseline {args.fmt} {mode}",
                     lambda out, mode=mode: run_baseline(files, out, BaselineConfig(fmt=args.fmt),
                                                         ref_dir=ref if mode == "oracle" else None,
                                                         log=lambda *a: None))
                    for mode in modes]
        systems += [(sname, path) for sname, path in given.get(dname, [])]
        for sname, run in systems:
            if isinstance(run, str):
                out, wall, how = run, None, f"given {run}"
            else:
                out = os.path.join(args.work, dname, args.fmt,
                                   sname.replace(" [", "_").replace("]", "").replace(" ", "_"))
                wall, how = _run_once(run, out, len(files), args.force)
            m = evaluate_folders(out, ref, split="test")
            row = {"dataset": dname, "system": sname, "files": len(files), "predictions": out,
                   "wall_s": None if wall is None else round(wall, 1),
                   **{k: (float(m[k]) if k in m else None) for k in KEYS}}
            rows.append(row)
            print(f"{dname:10s} {sname:36s} LE {row['LE']:5.1f}  poly1 {row['LE_poly1']:5.1f}  "
                  f"poly2 {row['LE_poly2'] if row['LE_poly2'] is not None else float('nan'):5.1f}  "
                  f"LR {100 * row['LR']:5.1f}  LF1 {100 * row['LF1']:5.1f}  MOTA {100 * row['MOTA']:5.1f}  "
                  f"IDS {row['IDS']:.0f}  ({how})", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
                       "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
