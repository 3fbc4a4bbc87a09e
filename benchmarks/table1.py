"""Table I of the paper on our data: every loss trained on the same data and budget, one table.

    python benchmarks/table1.py --format foa               # mse, dmotp, dmotp_act, full, pit
    python benchmarks/table1.py --format foa --augment     # + the "+Augmentation" rows (dmotp, dmotp_act, full, pit)
    python benchmarks/table1.py --format foa --preset standard --data data/synth_standard   # Table I at scale
    python benchmarks/table1.py --format foa --losses full pit --seeds 0 1 2                # run-to-run spread

Each run is trained (dtbt_tf.jobs.train_run) and its test split evaluated (evaluate_run), without exporting.
Runs live in runs/table1/<format>[_aug][_<preset>][_seed<S>]/<loss>/ (no suffix for the `quick` preset and seed
0); a finished run (test_metrics.json present) is reused and an unfinished one resumes from its checkpoint with
its own settings (a changed flag is refused by name), so the job can be killed and restarted. Results go to
benchmarks/results/table1_<format>[_<preset>][_seed<S>].json, the combined markdown of a preset to
benchmarks/results/table1[_<preset>].md and the README section between the `table1[_<preset>]` markers. With
several --seeds, a loss already in a seed's results file is not trained again, and the mean and standard
deviation over the seeds go to benchmarks/results/table1_spread_<format>[_<preset>].json, table1_spread.md and
the README's `table1_spread` section.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # a fresh clone without `pip install -e .`

from dtbt_tf import cli  # noqa: E402  (light: no TensorFlow import)
from dtbt_tf.config import (TRAIN_PRESETS, DoanetConfig, FeatureConfig, InferenceConfig, LossConfig,  # noqa: E402
                            RunConfig, TrainSettings)

RESULTS = os.path.join(HERE, "results")
BASE_LOSSES = ("mse", "dmotp", "dmotp_act", "full", "pit")
AUG_LOSSES = ("dmotp", "dmotp_act", "full", "pit")
COLUMNS = ("LE", "LE_poly1", "LE_poly2", "MOTA", "IDS", "IDS_onsets", "LR", "LP", "LF1", "train_min")
SPREAD_COLUMNS = ("LE", "LE_poly1", "LE_poly2", "MOTA", "IDS", "LR", "LF1")
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
    p = cli.parser(__doc__)
    cli.add_format(p)
    p.add_argument("--augment", action="store_true",
                   help="train the augmented rows on the overlap-augmented training set")
    p.add_argument("--factor", type=cli.positive_int, default=3,
                   help="augmentation factor (x two-source training recordings); default 3 (the most the quick "
                        "synthetic preset allows; the paper used 4 on DCASE2020)")
    p.add_argument("--losses", nargs="+", choices=BASE_LOSSES, default=None,
                   help="subset of losses to run; default all of the table")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="quick",
                   help="training preset of every run (epochs, batch size, learning rate; scripts/train.py "
                        "--preset) and the synthetic set rendered when --data is not given; default %(default)s")
    p.add_argument("--data", default=None, help="DCASE-layout root; default the preset's synthetic set")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="epochs per run (same for every loss); default the preset's")
    p.add_argument("--batch-size", type=cli.positive_int, default=None, help="default the preset's")
    p.add_argument("--seeds", type=int, nargs="+", default=[TrainSettings().seed], metavar="S",
                   help="training seed(s); every loss is trained once per seed, and with several seeds the mean "
                        "and standard deviation are reported; default 0")
    p.add_argument("--hnet", default=None, help="Hnet folder for every run; default the shipped hnet_n2")
    p.add_argument("--hnet-temperature", type=float, default=LossConfig().hnet_temperature,
                   help="train through sigmoid(Hnet logits / T) (scripts/train.py --hnet-temperature); default "
                        "%(default)s (results/table1_<format>.json records each run's)")
    p.add_argument("--runs", default=os.path.join("runs", "table1"), help="where the runs live")
    cli.add_threads(p)
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table section")
    args = p.parse_args(argv)
    preset = TRAIN_PRESETS[args.preset]
    args.epochs = args.epochs or preset.epochs
    args.batch_size = args.batch_size or preset.batch_size
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: a seed is given twice ({' '.join(map(str, args.seeds))})")
    return args


def group_suffix(preset: str, seed: int | None = None) -> str:
    """Name suffix of a preset's (and seed's) runs and results: none for the `quick` preset and seed 0."""
    return ("" if preset == "quick" else f"_{preset}") + ("" if not seed else f"_seed{seed}")


# Table I scores the network's outputs as the paper does: raw regressor slots, no merging or bridging of tracks
TRACKING = "slots"


def run_config(loss: str, args, seed: int) -> RunConfig:
    """The RunConfig of one row, built as scripts/train.py builds a new run's (validated here)."""
    train = TrainSettings.from_preset(args.preset, epochs=args.epochs, batch_size=args.batch_size, seed=seed)
    loss_cfg = LossConfig(name=loss, hnet_temperature=args.hnet_temperature)
    model = DoanetConfig(fmt=args.fmt)
    return RunConfig(FeatureConfig(fmt=model.fmt, n_mels=model.n_mels), model, loss_cfg, train,
                     InferenceConfig.for_loss(loss_cfg, tracking=TRACKING), hnet=args.hnet)


def _run_one(loss, data_root, args, run_dir, seed):
    """Train (or resume) and evaluate one row's run, without exporting; reuse a finished one, or extend it
    when --epochs asks for more than it was trained for."""
    from dtbt_tf.artifacts import TEST_METRICS, has_run, load_run_config
    from dtbt_tf.config import ConfigError, atomic_write_text
    from dtbt_tf.jobs import evaluate_run, train_run

    cfg = run_config(loss, args, seed)
    metrics_path = os.path.join(run_dir, TEST_METRICS)
    time_path = os.path.join(run_dir, "table1_time.json")
    finished = os.path.isfile(metrics_path) and os.path.isfile(time_path)
    trained = load_run_config(run_dir).train.epochs if finished else None
    if finished and trained > args.epochs:
        raise ConfigError(f"{run_dir}: trained for {trained} epochs, more than --epochs {args.epochs}; "
                          "give another --runs folder")
    if finished and trained == args.epochs:
        print(f"[table1] reusing {run_dir}")
    else:
        resume = has_run(run_dir)
        spent = json.load(open(time_path))["seconds"] if os.path.isfile(time_path) else 0.0
        changes = {"loss.name": loss, "loss.hnet_temperature": args.hnet_temperature, "model.fmt": args.fmt,
                   "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.seed": seed,
                   "train.preset": args.preset}
        t0 = time.perf_counter()
        train_run(cfg, out=run_dir, data=data_root, resume=resume, changes=changes, verbose=2)
        atomic_write_text(time_path, json.dumps({"seconds": spent + time.perf_counter() - t0}))
        evaluate_run(run_dir)
    with open(metrics_path) as f:
        metrics = json.load(f)
    if "LE_poly1" not in metrics:  # evaluated before the metrics by polyphony existed: score it again
        metrics = evaluate_run(run_dir)
    with open(time_path) as f:
        seconds = json.load(f)["seconds"]
    saved = load_run_config(run_dir)  # a reused run's own settings
    return {"loss": loss, **{k: metrics.get(k) for k in COLUMNS if k != "train_min"},
            "train_min": round(seconds / 60.0, 1), "run_dir": run_dir, "hnet": saved.hnet,
            "hnet_temperature": saved.loss.hnet_temperature,
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
    lines = ["| format | rows | loss | LE (deg) | LE 1-src | LE 2-src | MOTA % | IDS | IDS_onsets | LR % | LP % | LF1 % |"
             " train min | paper LE / MOTA / IDS / LR |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
                    cells[3:9] = [f"({c})" for c in cells[3:9]]
                lines.append(f"| {fmt.upper()} | {'+Aug' if aug else 'base'} | {LABELS[row['loss']]} | "
                             + " | ".join(cells) + f" | {paper_s} |")
    return "\n".join(lines) + "\n"


def _write_outputs(args):
    """The preset's table (every format's results file) to results/table1[_<preset>].md and the README."""
    from dtbt_tf.config import atomic_write_text, replace_marked_section

    suffix = group_suffix(args.preset)
    results = {}
    for fmt in ("foa", "mic"):
        path = os.path.join(RESULTS, f"table1_{fmt}{suffix}.json")
        if os.path.isfile(path):
            with open(path) as f:
                results[fmt] = json.load(f)
    md = markdown(results)
    notes = (f"Synthetic `{TRAIN_PRESETS[args.preset].dataset}` scenes (not DCASE2020), same data and budget for "
             "every loss; values in parentheses are for losses without an activity branch, where every regressor "
             "always counts (LR = 100 % by construction). Paper figures are on the real DCASE2020 dev set.\n")
    atomic_write_text(os.path.join(RESULTS, f"table1{suffix}.md"), "# Table I on synthetic data\n\n" + notes + "\n" + md)
    if not args.no_readme:
        replace_marked_section(os.path.join(ROOT, "README.md"), f"table1{suffix}", md)
    print(md)


def spread(rows_by_seed: dict) -> dict:
    """{loss: {"seeds": [...], "<col>_mean", "<col>_std", "<col>_runs": [...]}} over seeds (sample std, n - 1)."""
    out = {}
    losses = sorted({loss for rows in rows_by_seed.values() for loss in rows}, key=BASE_LOSSES.index)
    for loss in losses:
        seeds = [s for s, rows in rows_by_seed.items() if loss in rows]
        entry = {"seeds": seeds}
        for col in SPREAD_COLUMNS:
            values = [rows_by_seed[s][loss].get(col) for s in seeds]
            values = [v for v in values if v is not None]
            entry[f"{col}_runs"] = values
            entry[f"{col}_mean"] = statistics.fmean(values) if values else None
            entry[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out[loss] = entry
    return out


def spread_markdown(spreads: dict) -> str:
    """Mean +- standard deviation over seeds, one row per (format, preset, rows, loss); "(n=k)" where only k of
    the seeds' rows have the column (rows evaluated before it existed)."""
    lines = ["| format | preset | rows | loss | seeds | LE (deg) | LE 1-src | LE 2-src | MOTA % | IDS | LR % | LF1 % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(entry, col):
        mean, std = entry[f"{col}_mean"], entry[f"{col}_std"]
        if mean is None:
            return "~"
        scale = 100.0 if col in ("MOTA", "LR", "LF1") else 1.0
        digits = 0 if col == "IDS" else 1
        text = f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if std is not None else "")
        runs = len(entry[f"{col}_runs"])
        return text + (f" (n={runs})" if runs < len(entry["seeds"]) else "")  # older rows lack the column

    for (fmt, preset, key), losses in sorted(spreads.items()):
        for loss, entry in losses.items():
            lines.append(f"| {fmt.upper()} | {preset} | {'+Aug' if key == 'aug' else 'base'} | {LABELS[loss]} | "
                         f"{len(entry['seeds'])} | " + " | ".join(cell(entry, c) for c in SPREAD_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _write_spread(args, rows_by_seed: dict):
    """The spread of this format and preset to its JSON; every spread JSON to table1_spread.md and the README."""
    from dtbt_tf.config import atomic_write_text, replace_marked_section

    key = "aug" if args.augment else "base"
    path = os.path.join(RESULTS, f"table1_spread_{args.fmt}{group_suffix(args.preset)}.json")
    existing = json.load(open(path)) if os.path.isfile(path) else {}
    existing[key] = spread(rows_by_seed)
    existing.setdefault("settings", {})[key] = {"preset": args.preset, "epochs": args.epochs,
                                                "batch_size": args.batch_size, "seeds": args.seeds,
                                                "hnet": args.hnet or "shipped hnet_n2",
                                                "hnet_temperature": args.hnet_temperature,
                                                "date": datetime.date.today().isoformat()}
    atomic_write_text(path, json.dumps(existing, indent=2) + "\n")
    spreads = {}
    for name in sorted(os.listdir(RESULTS)):
        if name.startswith("table1_spread_") and name.endswith(".json"):
            fmt, _, preset = name[len("table1_spread_"):-len(".json")].partition("_")
            with open(os.path.join(RESULTS, name)) as f:
                saved = json.load(f)
            for k in ("base", "aug"):
                if k in saved:
                    spreads[(fmt, preset or "quick", k)] = saved[k]
    md = spread_markdown(spreads)
    atomic_write_text(os.path.join(RESULTS, "table1_spread.md"),
                      "# Table I: run-to-run spread (mean ± standard deviation over seeds)\n\n" + md)
    if not args.no_readme:
        replace_marked_section(os.path.join(ROOT, "README.md"), "table1_spread", md)
    print(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    losses = tuple(args.losses or (AUG_LOSSES if args.augment else BASE_LOSSES))

    def run():
        cli.quiet_tensorflow()
        cli.apply_threads(args.threads)
        data_root = args.data
        if data_root is None:
            from dtbt_tf.data.resolve import after_other_jobs
            from dtbt_tf.data.synth import make_dataset

            # two table1.py jobs started together (one per seed or loss) share the set: the second waits
            data_root = after_other_jobs(lambda: make_dataset(TRAIN_PRESETS[args.preset].dataset, fmt="both",
                                                              seed=0), print)
        if args.augment:
            from dtbt_tf.data.augment import augment_dataset

            aug_root = os.path.normpath(data_root) + f"_aug{args.factor}"
            augment_dataset(data_root, aug_root, factor=args.factor, seed=args.seeds[0])
            data_root = aug_root
        rows_by_seed = {}
        for seed in args.seeds:
            done = _saved_rows(args, seed) if len(args.seeds) > 1 else {}
            for loss in losses:  # results are saved after every run, so a killed job keeps what it finished
                if loss in done:
                    print(f"[table1] seed {seed} {loss}: taken from {_results_path(args, seed)}")
                    continue
                group = f"{args.fmt}{'_aug' if args.augment else ''}{group_suffix(args.preset, seed)}"
                _save_row(_run_one(loss, data_root, args, os.path.join(args.runs, group, loss), seed),
                          data_root, args, seed)
            rows_by_seed[seed] = {loss: row for loss, row in _saved_rows(args, seed).items() if loss in losses}
        if args.seeds == [0]:
            _write_outputs(args)
        if len(args.seeds) > 1:
            _write_spread(args, rows_by_seed)

    return cli.run(run)


def _results_path(args, seed: int) -> str:
    return os.path.join(RESULTS, f"table1_{args.fmt}{group_suffix(args.preset, seed)}.json")


def _saved_rows(args, seed: int) -> dict:
    """{loss: row} of a seed's results file, for the rows group of args; a file measured with other settings
    (epochs, batch size, Hnet) is refused by name rather than mixed in."""
    from dtbt_tf.config import ConfigError

    path = _results_path(args, seed)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    key = "aug" if args.augment else "base"
    settings = saved.get("settings", {}).get(key)
    if settings is None:
        return {}
    for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                        ("hnet", args.hnet or "shipped hnet_n2")):
        if settings.get(name) != value:
            raise ConfigError(f"{path}: its {key} rows were measured with {name} {settings.get(name)}, not "
                              f"{value}; pass --{name.replace('_', '-')} {settings.get(name)} or move the file")
    return {row["loss"]: row for row in saved.get(key, [])}


def _save_row(row: dict, data_root: str, args, seed: int) -> None:
    """Merge one finished run into its results file, benchmarks/results/table1_<format>[_<preset>][_seed<S>].json."""
    from dtbt_tf.config import atomic_write_text

    os.makedirs(RESULTS, exist_ok=True)
    path = _results_path(args, seed)
    existing = json.load(open(path)) if os.path.isfile(path) else {}
    key = "aug" if args.augment else "base"
    old = {r["loss"]: r for r in existing.get(key, [])}
    old[row["loss"]] = row
    order = AUG_LOSSES if args.augment else BASE_LOSSES
    existing[key] = [old[l] for l in order if l in old]
    settings = existing.setdefault("settings", {})
    first_date = settings.get(key, {}).get("date", datetime.date.today().isoformat())
    settings[key] = {  # "date": when the first row of this group was measured; each row has its own "measured"
        "data": data_root, "hnet": args.hnet or "shipped hnet_n2", "epochs": args.epochs,
        "batch_size": args.batch_size, "seed": seed, "preset": args.preset,
        "factor": args.factor if args.augment else None,
        "date": first_date, "cpus": os.cpu_count(), "machine": platform.machine()}
    atomic_write_text(path, json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
