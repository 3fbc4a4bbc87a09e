"""Table I of the paper on our data: every loss trained on the same data and budget, one table.

    python benchmarks/table1.py --format foa               # mse, dmotp, dmotp_act, full, pit
    python benchmarks/table1.py --format foa --augment     # + the "+Augmentation" rows (dmotp, dmotp_act, full, pit)

Runs live in runs/table1/<format>[_aug]/<loss>/; a finished run (test_metrics.json present) is reused and an
unfinished one resumes from its checkpoint, so the job can be killed and restarted. Results go to
benchmarks/results/table1_<format>.json, the combined markdown to benchmarks/results/table1.md and the README
section between the `table1` markers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
BASE_LOSSES = ("mse", "dmotp", "dmotp_act", "full", "pit")
AUG_LOSSES = ("dmotp", "dmotp_act", "full", "pit")
COLUMNS = ("LE", "MOTA", "IDS", "IDS_onsets", "LR", "LP", "LF1", "train_min")
LABELS = {"mse": "MSE", "dmotp": "dMOTP", "dmotp_act": "dMOTP+Act", "full": "dMOTP+dMOTA+Act", "pit": "PIT (exact)"}
# The paper's Table I (real DCASE2020 dev set): loss -> (LE, MOTA %, IDS, LR %) per format; None = not reported.
PAPER = {
    ("foa", False): {"mse": (25.4, None, None, None), "dmotp": (13.7, None, None, None)},
    ("mic", False): {"mse": (25.3, None, None, None), "dmotp": (13.6, None, None, None)},
    ("foa", True): {"dmotp": (12.1, None, None, None), "dmotp_act": (9.7, 69.0, 2374, 86.9),
                    "full": (9.5, 70.5, 2188, 88.1)},
    ("mic", True): {"dmotp": (11.8, None, None, None), "dmotp_act": (8.7, 71.3, 1982, 87.3),
                    "full": (8.5, 72.1, 1812, 87.6)},
}


def parse_args(argv=None):
    from dtbt_tf.config import LossConfig  # light: no TensorFlow import

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", dest="fmt", choices=("foa", "mic"), default="foa")
    p.add_argument("--augment", action="store_true",
                   help="train the augmented rows on the overlap-augmented training set")
    p.add_argument("--factor", type=int, default=3,
                   help="augmentation factor (x two-source training recordings); default 3 (the most the quick "
                        "synthetic preset allows; the paper used 4 on DCASE2020)")
    p.add_argument("--losses", nargs="+", default=None, help="subset of losses to run; default all of the table")
    p.add_argument("--data", default=None, help="DCASE-layout root; default the quick synthetic set")
    p.add_argument("--epochs", type=int, default=12, help="epochs per run (same for every loss); default 12")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hnet", default=None, help="Hnet folder for every run; default saved_models/hnet_n2")
    p.add_argument("--hnet-temperature", type=float, default=LossConfig().hnet_temperature,
                   help="train through sigmoid(Hnet logits / T) (scripts/train.py --hnet-temperature); default "
                        "%(default)s. The README's table was measured with 1 through the c4abe68 Hnet snapshot")
    p.add_argument("--runs", default=os.path.join("runs", "table1"), help="where the runs live")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table section")
    return p.parse_args(argv)


def _run_one(loss, data_root, args, run_dir):
    from dtbt_tf.config import LossConfig, from_dict
    from dtbt_tf.training import TrainSettings, train

    metrics_path = os.path.join(run_dir, "test_metrics.json")
    time_path = os.path.join(run_dir, "table1_time.json")
    if os.path.isfile(metrics_path) and os.path.isfile(time_path):
        print(f"[table1] reusing {run_dir}")
    else:
        resume = os.path.isfile(os.path.join(run_dir, "run_config.json"))
        spent = json.load(open(time_path))["seconds"] if os.path.isfile(time_path) else 0.0
        settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        t0 = time.perf_counter()
        loss_cfg = LossConfig(name=loss, hnet_temperature=args.hnet_temperature)
        train(data=data_root, fmt=args.fmt, loss_cfg=loss_cfg, hnet=args.hnet, settings=settings, out=run_dir,
              resume=resume, verbose=2)
        from dtbt_tf.config import atomic_write_text

        atomic_write_text(time_path, json.dumps({"seconds": spent + time.perf_counter() - t0}))
    with open(metrics_path) as f:
        metrics = json.load(f)
    with open(time_path) as f:
        seconds = json.load(f)["seconds"]
    with open(os.path.join(run_dir, "run_config.json")) as f:
        hnet_temperature = from_dict(LossConfig, json.load(f)["loss_config"]).hnet_temperature  # a reused run's
    return {"loss": loss, **{k: metrics.get(k) for k in COLUMNS if k != "train_min"},
            "train_min": round(seconds / 60.0, 1), "run_dir": run_dir, "hnet_temperature": hnet_temperature,
            "measured": datetime.date.fromtimestamp(os.path.getmtime(metrics_path)).isoformat()}


def _fmt(v, key):
    if v is None:
        return "~"
    if key in ("IDS", "IDS_onsets"):
        return str(int(v))
    if key in ("MOTA", "LR", "LP", "LF1"):
        return f"{100 * v:.1f}"
    return f"{v:.1f}"


def markdown(results: dict) -> str:
    """All table1_<fmt>.json results as one markdown table, with the paper's figures beside ours."""
    lines = ["| format | rows | loss | LE (deg) | MOTA % | IDS | IDS_onsets | LR % | LP % | LF1 % | train min |"
             " paper LE / MOTA / IDS / LR |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fmt in ("foa", "mic"):
        res = results.get(fmt)
        if not res:
            continue
        for aug in (False, True):
            for row in res.get("aug" if aug else "base", []):
                paper = PAPER.get((fmt, aug), {}).get(row["loss"])
                paper_s = " / ".join("~" if v is None else str(v) for v in paper) if paper else "-"
                no_act = row["loss"] in ("mse", "dmotp")
                cells = [_fmt(row.get(k), k) for k in COLUMNS]
                if no_act:  # every regressor always counts: LR = 100 %, detection scores not meaningful
                    cells[1:7] = [f"({c})" for c in cells[1:7]]
                lines.append(f"| {fmt.upper()} | {'+Aug' if aug else 'base'} | {LABELS[row['loss']]} | "
                             + " | ".join(cells) + f" | {paper_s} |")
    return "\n".join(lines) + "\n"


def _write_outputs(no_readme: bool):
    from dtbt_tf.config import atomic_write_text, replace_marked_section

    results = {}
    for fmt in ("foa", "mic"):
        path = os.path.join(RESULTS, f"table1_{fmt}.json")
        if os.path.isfile(path):
            with open(path) as f:
                results[fmt] = json.load(f)
    md = markdown(results)
    notes = ("Synthetic `quick` scenes (not DCASE2020), same data and budget for every loss; values in parentheses "
             "are for losses without an activity branch, where every regressor always counts (LR = 100 % by "
             "construction). Paper figures are on the real DCASE2020 dev set.\n")
    atomic_write_text(os.path.join(RESULTS, "table1.md"), "# Table I on synthetic data\n\n" + notes + "\n" + md)
    if not no_readme:
        replace_marked_section(os.path.join(ROOT, "README.md"), "table1", md)
    print(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    from dtbt_tf.config import ConfigError
    from dtbt_tf.data.dcase import DataError

    losses = tuple(args.losses or (AUG_LOSSES if args.augment else BASE_LOSSES))
    try:
        data_root = args.data
        if data_root is None:
            from dtbt_tf.data.synth import make_dataset

            data_root = make_dataset("quick", fmt="both", seed=0)
        if args.augment:
            from dtbt_tf.data.augment import augment_dataset

            aug_root = os.path.normpath(data_root) + f"_aug{args.factor}"
            augment_dataset(data_root, aug_root, factor=args.factor, seed=args.seed)
            data_root = aug_root
        for loss in losses:  # results are saved after every run, so a killed job keeps what it finished
            run_dir = os.path.join(args.runs, f"{args.fmt}{'_aug' if args.augment else ''}", loss)
            _save_row(_run_one(loss, data_root, args, run_dir), data_root, args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _write_outputs(args.no_readme)
    return 0


def _save_row(row: dict, data_root: str, args) -> None:
    """Merge one finished run into benchmarks/results/table1_<format>.json."""
    from dtbt_tf.config import atomic_write_text

    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"table1_{args.fmt}.json")
    existing = json.load(open(path)) if os.path.isfile(path) else {}
    key = "aug" if args.augment else "base"
    old = {r["loss"]: r for r in existing.get(key, [])}
    old[row["loss"]] = row
    order = AUG_LOSSES if args.augment else BASE_LOSSES
    existing[key] = [old[l] for l in order if l in old]
    settings = existing.setdefault("settings", {})
    first_date = settings.get(key, {}).get("date", datetime.date.today().isoformat())
    settings[key] = {  # "date": when the first row of this group was measured; each row has its own "measured"
        "data": data_root, "hnet": args.hnet or "saved_models/hnet_n2", "epochs": args.epochs,
        "batch_size": args.batch_size, "seed": args.seed,
        "factor": args.factor if args.augment else None,
        "date": first_date, "cpus": os.cpu_count(), "machine": platform.machine()}
    atomic_write_text(path, json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
