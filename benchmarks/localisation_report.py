#!/usr/bin/env python
"""Polyphony-resolved localisation of models and the classical baseline on test sets (issue 16).

For every system (DOAnet model folders / .tflite files given with --model NAME=PATH, and the classical
baseline with --baseline) and every dataset (--data NAME=ROOT, scored on its test split, fold 1), writes the
predictions under --work, scores them with the one metric module (``dtbt_tf.metrics.evaluate_folders``) and
prints and saves a table of LE on all / 1-source / 2-source frames, LR, LF1, MOTA and IDS.

    python benchmarks/localisation_report.py --data standard=data/synth_standard --data ood=data/synth_ood \\
        --model doanet_foa=saved_models/doanet_foa --baseline --format foa \\
        --json benchmarks/results/localisation_foa.json

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
    p.add_argument("--json", help="write the table as JSON here")
    args = p.parse_args(argv)

    from dtbt_tf.baseline import BaselineConfig, run_baseline
    from dtbt_tf.inference import infer_files
    from dtbt_tf.metrics import evaluate_folders

    datasets, models = _named(args.data, "data"), _named(args.model, "model")
    modes = [m for m in args.baseline_modes.split(",") if m] if args.baseline else []
    if any(m not in ("oracle", "detect") for m in modes):
        raise SystemExit(f"error: --baseline-modes {args.baseline_modes!r}: expected oracle and/or detect")
    rows = []
    for dname, root in datasets:
        files, ref = _test_files(root, args.fmt), os.path.join(root, "metadata_dev")
        systems = [(name, lambda out, path=path: infer_files(files, path, out, log=lambda *a: None))
                   for name, path in models]
        systems += [(f"baseline {args.fmt} {mode}",
                     lambda out, mode=mode: run_baseline(files, out, BaselineConfig(fmt=args.fmt),
                                                         ref_dir=ref if mode == "oracle" else None,
                                                         log=lambda *a: None))
                    for mode in modes]
        for sname, run in systems:
            out = os.path.join(args.work, dname, args.fmt, sname.replace(" ", "_"))
            os.makedirs(out, exist_ok=True)
            start = time.perf_counter()
            run(out)
            wall = time.perf_counter() - start
            m = evaluate_folders(out, ref, split="test")
            row = {"dataset": dname, "system": sname, "files": len(files), "wall_s": round(wall, 1),
                   **{k: (float(m[k]) if k in m else None) for k in KEYS}}
            rows.append(row)
            print(f"{dname:10s} {sname:28s} LE {row['LE']:5.1f}  poly1 {row['LE_poly1']:5.1f}  "
                  f"poly2 {row['LE_poly2'] if row['LE_poly2'] is not None else float('nan'):5.1f}  "
                  f"LR {100 * row['LR']:5.1f}  LF1 {100 * row['LF1']:5.1f}  MOTA {100 * row['MOTA']:5.1f}  "
                  f"IDS {row['IDS']:.0f}  ({wall:.0f} s)", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
                       "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
