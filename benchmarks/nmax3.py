"""Nmax = 3 against Nmax = 2 on the same three-source test scenes.

    python benchmarks/nmax3.py            # trains both models (or reuses / resumes their runs), evaluates, saves

- Nmax = 3: `python scripts/train.py --loss full --n-max 3` (FOA, 10 epochs, batch 16 by default): DOAnet with
  three regressors through the shipped hnet_n3, on the quick synthetic set with up to three overlapping sources
  (data/synth_quick-max_polyphony3_seed0: scenes alternate ov1, ov2, ov3).
- Nmax = 2: the same job with two regressors through the shipped hnet_n2 on the standard quick set (up to two
  sources; a two-slot model cannot be given labels for frames with three sources).
Each run is trained (dtbt_tf.jobs.train_run) and exported (export_run); both exported models then localise the
test fold (fold 1) of the three-source set through the path of scripts/infer.py, and dtbt_tf.metrics scores them
on all its test scenes and per overlap (ov1 / ov2 / ov3). Runs live in runs/nmax3/n<N>/ (a finished one is
reused, an unfinished one resumed with its own settings); results go to benchmarks/results/nmax3.json and
nmax3.md and the README's table.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # a fresh clone without `pip install -e .`

from dtbt_tf import cli  # noqa: E402  (light: no TensorFlow import)
from dtbt_tf.config import (DoanetConfig, FeatureConfig, InferenceConfig, LossConfig, RunConfig,  # noqa: E402
                            TrainSettings)

RESULTS = os.path.join(HERE, "results")
SUBSETS = ("all", "ov1", "ov2", "ov3")
COLUMNS = ("LE", "LE_poly1", "LE_poly2", "LE_poly3", "LR", "LP", "LF1", "MOTA", "IDS", "IDS_onsets")


def parse_args(argv=None):
    train = TrainSettings()
    p = cli.parser(__doc__)
    p.add_argument("--epochs", type=cli.positive_int, default=10, help="epochs per model; default %(default)s")
    p.add_argument("--batch-size", type=cli.positive_int, default=train.batch_size, help="default %(default)s")
    p.add_argument("--seed", type=int, default=train.seed, help="default %(default)s")
    p.add_argument("--hnet2", default=None, help="Hnet for the Nmax = 2 model; default the shipped hnet_n2")
    p.add_argument("--hnet3", default=None, help="Hnet for the Nmax = 3 model; default the shipped hnet_n3")
    p.add_argument("--hnet-temperature", type=float, default=LossConfig().hnet_temperature,
                   help="train through sigmoid(Hnet logits / T) (scripts/train.py --hnet-temperature); default "
                        "%(default)s (results/nmax3.json records each run's)")
    p.add_argument("--runs", default=os.path.join("runs", "nmax3"), help="where the two runs live")
    p.add_argument("--models", type=int, nargs="+", choices=(2, 3), default=(3, 2),
                   help="which Nmax to train and score (e.g. --models 3 to start one run early); default 3 2")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README's Nmax = 3 table")
    return p.parse_args(argv)


def run_config(n_max: int, hnet: str | None, args) -> RunConfig:
    """The RunConfig of one model, built as scripts/train.py builds a new run's (validated here)."""
    train = TrainSettings.from_preset("quick", epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    loss = LossConfig(name="full", hnet_temperature=args.hnet_temperature)
    model = DoanetConfig(fmt="foa", n_max=n_max)
    return RunConfig(FeatureConfig(fmt=model.fmt, n_mels=model.n_mels), model, loss, train,
                     InferenceConfig.for_loss(loss, tracking="slots"), hnet=hnet)  # the paper's protocol, as Table I


def _train(n_max: int, hnet: str | None, args) -> tuple[str, float]:
    """Train and export (or reuse / resume) the run of one Nmax; returns (run folder, training minutes)."""
    from dtbt_tf.artifacts import EXPORT_DIR, has_run
    from dtbt_tf.config import atomic_write_text
    from dtbt_tf.jobs import export_run, train_run

    cfg = run_config(n_max, hnet, args)
    run_dir = os.path.join(args.runs, f"n{n_max}")
    time_path = os.path.join(run_dir, "nmax3_time.json")
    if not (os.path.isdir(os.path.join(run_dir, EXPORT_DIR, "1")) and os.path.isfile(time_path)):
        resume = has_run(run_dir)
        spent = json.load(open(time_path))["seconds"] if os.path.isfile(time_path) else 0.0
        changes = {"model.n_max": n_max, "loss.hnet_temperature": args.hnet_temperature,
                   "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.seed": args.seed}
        t0 = time.perf_counter()
        train_run(cfg, out=run_dir, resume=resume, changes=changes, verbose=2)
        atomic_write_text(time_path, json.dumps({"seconds": spent + time.perf_counter() - t0}))
        export_run(run_dir)
    else:
        print(f"[nmax3] reusing {run_dir}")
    return run_dir, json.load(open(time_path))["seconds"] / 60.0


def _scores(pred_dir: str, ref_dir: str, names: list[str]) -> dict:
    """Metrics on all test scenes and on each overlap subset (by the ovN field of the file name)."""
    from dtbt_tf.data.dcase import parse_name, read_metadata
    from dtbt_tf.metrics import compute_metrics, tracks_from_metadata

    pred = {n: tracks_from_metadata(read_metadata(os.path.join(pred_dir, n + ".csv"))) for n in names}
    ref = {n: tracks_from_metadata(read_metadata(os.path.join(ref_dir, n + ".csv"))) for n in names}
    out = {}
    for subset in SUBSETS:
        keep = [n for n in names if subset == "all" or parse_name(n + ".csv")[3] == int(subset[2:])]
        if keep:
            m = compute_metrics({n: pred[n] for n in keep}, {n: ref[n] for n in keep})
            out[subset] = {"files": len(keep), **{k: m.get(k) for k in COLUMNS}}
    return out


def markdown(result: dict) -> str:
    lines = ["| model | test scenes | files | LE (deg) | LE 1-src | LE 2-src | LE 3-src | LR % | LP % | LF1 % | MOTA % | IDS |"
             " IDS_onsets | train min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in [k for k in ("n3", "n2") if k in result]:
        row = result[key]
        for subset, m in row["scores"].items():
            pct = [f"{100 * m[k]:.1f}" for k in ("LR", "LP", "LF1", "MOTA")]
            poly = ["-" if m.get(k) is None else f"{m[k]:.1f}" for k in ("LE_poly1", "LE_poly2", "LE_poly3")]
            lines.append(f"| Nmax = {key[1]} | {subset} | {m['files']} | {m['LE']:.1f} | " + " | ".join(poly + pct)
                         + f" | {int(m['IDS'])} | {int(m['IDS_onsets'])} | {row['train_min']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: _main(args))


def _main(args) -> None:
    cli.quiet_tensorflow()
    from dtbt_tf.artifacts import EXPORT_DIR, load_run_config
    from dtbt_tf.config import atomic_write_text, replace_marked_section
    from dtbt_tf.data import dcase
    from dtbt_tf.data.synth import make_dataset, synthetic_preset_for
    from dtbt_tf.inference import infer_files

    hnets = {3: args.hnet3, 2: args.hnet2}
    runs = {n: _train(n, hnets[n], args) for n in args.models}
    root = make_dataset(synthetic_preset_for("quick", 3), fmt="foa", seed=0, progress=False)
    test = dcase.split_recordings(dcase.discover(root, "foa"), "test", root=root)
    names = [r.stem for r in test]
    ref_dir = os.path.join(root, "metadata_dev")
    result = {"date": datetime.date.today().isoformat(), "test_data": root, "epochs": args.epochs,
              "batch_size": args.batch_size, "seed": args.seed}
    for n, (run_dir, minutes) in runs.items():
        pred_dir = os.path.join(run_dir, "ov3_test_predictions")
        infer_files([r.audio_path for r in test], os.path.join(run_dir, EXPORT_DIR), pred_dir)
        saved = load_run_config(run_dir)  # a reused run's own settings
        result[f"n{n}"] = {"run_dir": run_dir, "hnet": saved.hnet, "hnet_temperature": saved.loss.hnet_temperature,
                           "train_min": round(minutes, 1), "scores": _scores(pred_dir, ref_dir, names)}
    os.makedirs(RESULTS, exist_ok=True)
    atomic_write_text(os.path.join(RESULTS, "nmax3.json"), json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    atomic_write_text(os.path.join(RESULTS, "nmax3.md"),
                      "# Nmax = 3 against Nmax = 2 on three-source test scenes\n\n"
                      f"Measured {result['date']} by `python benchmarks/nmax3.py` (see its docstring).\n\n" + md)
    if not args.no_readme:
        replace_marked_section(os.path.join(ROOT, "README.md"), "nmax3", md)
    print(md)

if __name__ == "__main__":
    sys.exit(main())
