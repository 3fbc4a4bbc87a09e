#!/usr/bin/env python
"""Learning curve of the `full` loss: test-split LE (all / 1-source / 2-source frames), LF1 and MOTA against
(a) optimizer steps and (b) hours of training audio (issue 16).

    python benchmarks/learning_curve.py --data data/synth_standard_features_foa_n2 --hours 0.7,2,all \\
        --steps 600 --eval-every 200 --val-shards 1 --threads 2 --out runs/lc_standard_foa \\
        --json benchmarks/results/learning_curve.json --plot benchmarks/results/learning_curve.png

For every budget H of --hours a feature folder ``<out>/h<H>/data`` is made whose manifest lists training shards
of --data totalling about H hours (symlinks to the source's shards, nothing copied) and the source's test split.
A run of the `full` loss (dMOTP + dMOTA + activity through the frozen Hnet) is then trained on it
(dtbt_tf.jobs.train_run) for exactly --steps optimizer steps, the same for every budget, so the amount of
distinct audio is the only variable: epochs of --eval-every steps (TrainSettings.steps_per_epoch; the subset is
repeated within an epoch as often as needed) and a cosine schedule over the --steps. After the last step of
every epoch the current weights localise the whole test split of --data (dtbt_tf.evaluation.evaluate_split,
the windows of infer.py; dtbt_tf.metrics) -> one point of the curve. The last point of each budget gives the
curve against hours.

Subsets. Shards are the unit (8 recordings of 60 s = 8 min in the standard set; the real hours of each budget
are reported). They are taken in a fixed low-discrepancy order (--order spread, default: bit-reversed shard
index), so a small budget draws its shards from across the source's shard list (its rooms and overlap types)
instead of its first room only, and every budget contains the shards of every smaller one; --order prefix takes
the first shards in name order. Normalisation: every subset keeps the source's statistics (computed on the
whole training split of --data), so all budgets see identically normalised inputs and the test split is
evaluated identically; they are per-band means and deviations only, no labels. Validation: the split only
picks the run's best.keras (not used here) but is scored after every epoch; --val-shards N keeps N of its
shards to save that time (default: all, as the source).

Runs are resumable: a budget whose ``curve.json`` says done is reused without importing TensorFlow, an
unfinished one resumes from its last checkpoint (the curve points already measured are kept; an epoch cut off
by the kill is trained and evaluated again), and a changed setting (steps, batch, seed, subset, ...) is refused
by name -- choose another --out. Times: wall and CPU seconds of the whole process per budget, split into the
test evaluations and the rest (training steps, validation, checkpoints, tracing); a resumed budget adds its
legs, including the work repeated after a kill.

Output: JSON (printed, saved to --json, default <out>/learning_curve.json) with the command, the data identity
(manifest path and SHA-256, training hours), the settings, per budget the requested and real hours, shards,
files, the curve (step, audio seen, metrics, cumulative times) and totals; ``rows`` (one per budget and step)
and ``notes`` let benchmarks/run.py tabulate it when it is saved in benchmarks/results/. --plot writes a PNG:
LE, LE_poly1, LE_poly2 against steps (one line per budget) and the final values against hours.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # a fresh clone without `pip install -e .`

from dtbt_tf import cli  # noqa: E402  (light: no TensorFlow import)
from dtbt_tf.config import (ARCHS, ConfigError, DoanetConfig, FeatureConfig, InferenceConfig, LossConfig,  # noqa: E402
                            RunConfig, TrainSettings, atomic_write_text, from_dict)
from dtbt_tf.machine import machine_info  # noqa: E402

CURVE_KEYS = ("LE", "LE_poly1", "LE_poly2", "LR", "LP", "LF1", "MOTA", "IDS", "frames_poly1", "frames_poly2")
ROW_KEYS = ("LE", "LE_poly1", "LE_poly2", "LF1", "MOTA")
CURVE_FILE, SUBSET_DIR, RUN_DIR = "curve.json", "data", "run"
MANIFEST = "manifest.json"  # dtbt_tf.data.tfrecord.MANIFEST (not imported: it imports TensorFlow)
ORDERS = ("spread", "prefix")


# ----------------------------------------------------------------------------------------------------------
# Command line


def _hours_list(text: str) -> list[str]:
    """'0.7,2,all' -> ['0.7', '2', 'all'] (numbers > 0 or 'all', each once)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of hours, e.g. 0.7,2,all")
    out = []
    for t in items:
        if t != "all":
            try:
                value = float(t)
            except ValueError:
                raise argparse.ArgumentTypeError(f"not a number of hours or 'all': {t!r}") from None
            if not (value > 0 and math.isfinite(value)):
                raise argparse.ArgumentTypeError(f"hours must be > 0, got {t!r}")
            t = f"{value:g}"
        if t in out:
            raise argparse.ArgumentTypeError(f"{t} given twice")
        out.append(t)
    return out


def _val_shards(text: str) -> int | None:
    return None if text == "all" else cli.positive_int(text)


def parse_args(argv=None):
    model, loss = DoanetConfig(), LossConfig()
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, help="feature folder (manifest.json + TFRecord shards), e.g. "
                   "data/synth_standard_features_foa_n2; its test split scores every point")
    p.add_argument("--hours", type=_hours_list, default=["0.7", "2", "all"],
                   help="training-audio budgets in hours, comma-separated ('all' = the whole training split); "
                        "each is rounded to the nearest whole number of shards; default 0.7,2,all")
    p.add_argument("--steps", type=cli.positive_int, default=600,
                   help="optimizer steps per budget (the same for all); a multiple of --eval-every; "
                        "default %(default)s")
    p.add_argument("--eval-every", type=cli.positive_int, default=200,
                   help="evaluate the test split every K steps (= the epoch length); default %(default)s")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="default %(default)s")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate; default %(default)s")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine decay to 5%% of --lr over --steps (as scripts/train.py), or constant; "
                        "default %(default)s")
    p.add_argument("--seed", type=int, default=0,
                   help="initialisation and data order, the same for every budget; default %(default)s")
    p.add_argument("--order", choices=ORDERS, default="spread",
                   help="which training shards a budget takes: spread (bit-reversed index order: across the whole "
                        "split, nested) or prefix (the first ones); default %(default)s")
    p.add_argument("--val-shards", type=_val_shards, default=None, metavar="N|all",
                   help="validation shards kept in the subsets (validation runs after every epoch but is not "
                        "part of the curve); default all")
    p.add_argument("--hnet", default=None, help="Hnet folder; default the shipped hnet_n<N>")
    p.add_argument("--hnet-temperature", type=float, default=loss.hnet_temperature,
                   help="as scripts/train.py --hnet-temperature; default %(default)s")
    p.add_argument("--threshold", type=cli.probability, default=InferenceConfig().threshold,
                   help="activity threshold of the detections; default %(default)s")
    p.add_argument("--arch", choices=ARCHS, default=model.arch,
                   help="DOAnet body (as scripts/train.py --arch): crnn (the paper's) or resnet_conformer; "
                        "default %(default)s")
    p.add_argument("--conv-filters", type=cli.positive_int, default=model.conv_filters,
                   help="DOAnet size (as scripts/train.py); default %(default)s (paper)")
    p.add_argument("--rnn-units", type=cli.positive_int, default=model.rnn_units, help="default %(default)s")
    p.add_argument("--fc-units", type=cli.positive_int, default=model.fc_units, help="default %(default)s")
    p.add_argument("--out", default=os.path.join("runs", "lc_" + time.strftime("%Y%m%d")),
                   help="folder of the budgets' subsets, runs and curves; default runs/lc_<date>")
    p.add_argument("--json", default=None, help="write the result here; default <out>/learning_curve.json")
    p.add_argument("--plot", default=None, help="write a PNG of the curves here")
    cli.add_threads(p)
    cli.add_progress(p)
    args = p.parse_args(argv)
    if args.steps % args.eval_every:
        p.error(f"--steps {args.steps} is not a multiple of --eval-every {args.eval_every}")
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    return args


# ----------------------------------------------------------------------------------------------------------
# Subsets of a feature folder


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def spread_order(n: int) -> list[int]:
    """0..n-1 in bit-reversed (van der Corput) order: every prefix is spread evenly over the range, and a
    longer prefix contains every shorter one. spread_order(6) == [0, 4, 2, 1, 5, 3]."""
    bits = max(1, (n - 1).bit_length())
    return sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))


def read_source(data_dir: str) -> dict:
    """The source folder: its raw manifest, SHA-256, and per split the shards with their recordings and hours
    (from the shard indexes extraction writes beside them). DataError/ConfigError (one line) when unusable."""
    from dtbt_tf.data.dcase import DataError

    path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; --data must be a finished feature folder (scripts/extract_features.py)")
    with open(path) as f:
        manifest = json.load(f)
    try:
        feat = from_dict(FeatureConfig, manifest["feature_config"])
        splits = {s: manifest["splits"][s] for s in ("train", "val", "test")}
    except KeyError as e:
        raise DataError(f"{path}: malformed manifest (missing {e})") from None
    if "subset" in manifest:
        raise ConfigError(f"{path}: {data_dir} is itself a subset made by this benchmark; give its source folder")
    shards = {}
    for split, info in splits.items():
        shards[split] = []
        for name in info["shards"]:
            index_path = os.path.join(data_dir, name + ".json")
            try:
                with open(index_path) as f:
                    index = json.load(f)
                frames = [int(t) for t in index["n_frames"]]
                files = list(index["files"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{index_path}: shard index missing or unreadable ({type(e).__name__}); the "
                                "subsets count hours from it (re-extract the folder)") from None
            shards[split].append({"name": name, "files": files, "n_frames": frames,
                                  "hours": sum(frames) * feat.hop_length / feat.sample_rate / 3600.0})
    return {"dir": os.path.abspath(data_dir), "manifest": manifest, "manifest_path": os.path.abspath(path),
            "sha256": sha256(path), "feature": feat, "shards": shards}


def _ordered(shards: list[dict], order: str) -> list[int]:
    return spread_order(len(shards)) if order == "spread" else list(range(len(shards)))


def choose_count(shards: list[dict], n: int, order: str) -> list[dict]:
    """The first ``n`` shards in ``order`` (all when there are fewer), in the source's order."""
    return [shards[i] for i in sorted(_ordered(shards, order)[:n])]


def choose_shards(shards: list[dict], hours: str, order: str) -> list[dict]:
    """The shards of a budget: the prefix (in ``order``) whose hours are nearest to ``hours`` ('all': all of
    them), at least one; returned in the source's order."""
    idx = _ordered(shards, order)
    if hours == "all":
        k = len(shards)
    else:
        totals, acc = [], 0.0
        for i in idx:
            acc += shards[i]["hours"]
            totals.append(acc)
        k = 1 + min(range(len(totals)), key=lambda j: abs(totals[j] - float(hours)))
    return choose_count(shards, k, order)


def _split_entry(info: dict, chosen: list[dict], label_hop: int) -> dict:
    frames = [t for sh in chosen for t in sh["n_frames"]]
    return {"folds": info["folds"], "files": [f for sh in chosen for f in sh["files"]], "n_files": len(frames),
            "n_frames": int(sum(frames)), "n_label_frames": int(sum(t // label_hop for t in frames)),
            "shards": [sh["name"] for sh in chosen]}


def make_subset(source: dict, out_dir: str, hours: str, order: str, val_shards: int | None) -> dict:
    """Write (or reuse) the feature folder of one budget; returns its identity ({"dir", "sha256", "hours",
    "train_shards", "train_files", "val_files"}). The folder's manifest is the source's with the chosen
    training (and validation) shards and a "subset" record; the shards are symlinks; the manifest is written
    last, atomically (a folder without it is unfinished and is redone)."""
    train = choose_shards(source["shards"]["train"], hours, order)
    val = (source["shards"]["val"] if val_shards is None
           else choose_count(source["shards"]["val"], val_shards, order))
    test = source["shards"]["test"]
    record = {"source_dir": source["dir"], "source_manifest_sha256": source["sha256"], "order": order,
              "hours_requested": hours, "train_shards": [s["name"] for s in train],
              "val_shards": [s["name"] for s in val],
              "normalization": "the source's, computed on its whole training split (unchanged)"}
    path = os.path.join(out_dir, MANIFEST)
    if os.path.isfile(path):
        with open(path) as f:
            existing = json.load(f)
        if existing.get("subset") != record:
            raise ConfigError(f"{path}: holds another subset (other source, order, budget or shards); choose "
                              "another --out")
    else:
        os.makedirs(out_dir, exist_ok=True)
        for sh in train + val + test:
            for name in (sh["name"], sh["name"] + ".json"):
                link, target = os.path.join(out_dir, name), os.path.realpath(os.path.join(source["dir"], name))
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(target, link)
        manifest = dict(source["manifest"])
        hop = source["feature"].label_hop_frames
        manifest["splits"] = {**source["manifest"]["splits"],
                              "train": _split_entry(source["manifest"]["splits"]["train"], train, hop),
                              "val": _split_entry(source["manifest"]["splits"]["val"], val, hop)}
        manifest["subset"] = record
        atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return {"dir": os.path.abspath(out_dir), "sha256": sha256(path), "hours": sum(s["hours"] for s in train),
            "train_shards": len(train), "train_files": sum(len(s["files"]) for s in train),
            "val_files": sum(len(s["files"]) for s in val)}


# ----------------------------------------------------------------------------------------------------------
# One budget: train with a test-split evaluation after every epoch


def run_config(args, n_max: int, fmt: str) -> RunConfig:
    """The RunConfig of every budget (validated here): `full` loss, epochs of --eval-every steps."""
    train = TrainSettings.from_preset("standard", epochs=args.steps // args.eval_every, batch_size=args.batch_size,
                                      lr=args.lr, schedule=args.schedule, seed=args.seed,
                                      steps_per_epoch=args.eval_every)
    loss = LossConfig(name="full", hnet_temperature=args.hnet_temperature)
    model = DoanetConfig(fmt=fmt, n_max=n_max, conv_filters=args.conv_filters, rnn_units=args.rnn_units,
                         fc_units=args.fc_units, arch=args.arch)
    # scored as Table I is, on the raw regressor slots: the curve measures the network, not the track-id rule
    return RunConfig(FeatureConfig(fmt=fmt, n_mels=model.n_mels), model, loss, train,
                     InferenceConfig.for_loss(loss, threshold=args.threshold, tracking="slots"), hnet=args.hnet)


def _flat(d: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}, values as JSON gives them back (tuples -> lists)."""
    out = {}
    for k, v in json.loads(json.dumps(d)).items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _clean(metrics: dict) -> dict:
    out = {}
    for k in CURVE_KEYS:
        v = metrics.get(k)
        v = None if v is None else float(v)
        out[k] = None if v is None or math.isnan(v) else (int(v) if k.startswith(("IDS", "frames")) else v)
    return out


def _as_saved_today(settings: dict) -> dict:
    """Saved flat settings with the run-config fields added since they were saved filled in as the run used
    them (``SAVED_BEFORE``, else the default: :meth:`RunConfig.from_dict`), so new fields do not read as changes."""
    sections = {key: {} for key in RunConfig.KEYS if key not in ("data_dir", "hnet")}
    rest = {}
    for key, value in settings.items():
        section, _, field = key.partition(".")
        if section in sections and field:
            sections[section][field] = value
        else:
            rest[key] = value
    if not all(sections.values()):  # not a run's settings: compare as saved
        return settings
    filled = {k: v for k, v in RunConfig.from_dict(sections).to_dict().items() if k in sections}
    return {**rest, **_flat(filled)}


class Budget:
    """The curve file of one budget (``<point>/curve.json``): settings, measured points, accumulated times."""

    def __init__(self, folder: str, settings: dict, started: bool):
        """``started``: the budget's run folder holds a run; until then other settings replace the saved ones
        (a start that failed before training is not a measurement)."""
        self.path = os.path.join(folder, CURVE_FILE)
        self.state = {"settings": settings, "points": [], "wall_s": 0.0, "cpu_s": 0.0, "eval_wall_s": 0.0,
                      "eval_cpu_s": 0.0, "legs": 0, "done": False}
        if os.path.isfile(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            old = _as_saved_today(saved.get("settings", {}))
            differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if differ and not started and not saved.get("points"):
                saved = None
            elif differ:
                listed = ", ".join(f"{k} (run: {old.get(k)!r}, given: {settings.get(k)!r})" for k in differ)
                raise ConfigError(f"{self.path}: this budget was measured with other settings: {listed}; "
                                  "choose another --out")
            self.state = saved or self.state
        self.leg_wall0 = self.leg_cpu0 = None
        self.base = None

    def start_leg(self) -> None:
        self.base = dict(self.state)
        self.state["legs"] += 1
        self.leg_wall0, self.leg_cpu0 = time.perf_counter(), time.process_time()
        self.save()  # the settings are on disk before the run folder is

    def _update_times(self) -> None:
        self.state["wall_s"] = self.base["wall_s"] + time.perf_counter() - self.leg_wall0
        self.state["cpu_s"] = self.base["cpu_s"] + time.process_time() - self.leg_cpu0

    def add_point(self, point: dict, eval_wall: float, eval_cpu: float) -> None:
        self.base["eval_wall_s"] += eval_wall
        self.base["eval_cpu_s"] += eval_cpu
        self.state["eval_wall_s"], self.state["eval_cpu_s"] = self.base["eval_wall_s"], self.base["eval_cpu_s"]
        self._update_times()
        point["train_wall_s"] = round(self.state["wall_s"] - self.state["eval_wall_s"], 2)
        point["train_cpu_s"] = round(self.state["cpu_s"] - self.state["eval_cpu_s"], 2)
        self.state["points"] = sorted([p for p in self.state["points"] if p["step"] != point["step"]] + [point],
                                      key=lambda p: p["step"])
        self.save()

    def end_leg(self, done: bool) -> None:
        self._update_times()
        self.state["done"] = done
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state, indent=1) + "\n")


def _test_curve_callback(budget: Budget, data_dir: str, cfg: RunConfig, log):
    """A Keras callback: after the last step of each epoch (before the epoch's checkpoint is written, so a
    resumed run never lacks a point it has passed) the current DOAnet localises the test split of ``data_dir``."""
    import keras

    from dtbt_tf.evaluation import evaluate_split, predict_function

    every, batch = cfg.train.steps_per_epoch, cfg.train.batch_size
    seconds_per_window = cfg.feature.seq_frames * cfg.feature.hop_length / cfg.feature.sample_rate

    class TestCurve(keras.callbacks.Callback):
        predict = None

        def on_train_batch_end(self, batch_index, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if step % every:
                return
            doanet = self.model.doanet
            self.predict = self.predict or predict_function(doanet)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            metrics, _ = evaluate_split(doanet, data_dir, "test", cfg.feature.seq_label_frames, cfg.inference,
                                        predict=self.predict)
            point = {"step": step, "audio_seen_h": round(step * batch * seconds_per_window / 3600.0, 4),
                     **_clean(metrics)}
            eval_wall, eval_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            point["eval_wall_s"], point["eval_cpu_s"] = round(eval_wall, 2), round(eval_cpu, 2)
            budget.add_point(point, eval_wall, eval_cpu)
            le = point["LE"]
            log(f"[learning_curve] step {step}: test LE {'nan' if le is None else f'{le:.2f}'} deg "
                f"(1 source {_deg(point['LE_poly1'])}, 2 sources {_deg(point['LE_poly2'])}), "
                f"LF1 {_pct(point['LF1'])}, MOTA {_pct(point['MOTA'])}; evaluation {eval_wall:.0f} s")

    return TestCurve()


def _deg(v):
    return "nan" if v is None else f"{v:.2f}"


def _pct(v):
    return "nan" if v is None else f"{100 * v:.1f}%"


@functools.cache
def _start_tensorflow(threads: int | None) -> None:
    """Quiet TensorFlow's start-up lines and apply --threads, once (only budgets that train import it)."""
    cli.quiet_tensorflow()
    cli.apply_threads(threads)


def run_budget(args, source: dict, hours: str, log) -> dict:
    """Subset, train (or resume / reuse) and measure one budget; returns its JSON entry."""
    from dtbt_tf.artifacts import has_run

    label = "h" + hours
    folder = os.path.join(args.out, label)
    subset = make_subset(source, os.path.join(folder, SUBSET_DIR), hours, args.order, args.val_shards)
    cfg = run_config(args, int(source["manifest"]["n_max"]), source["feature"].fmt)
    run_settings = {k: v for k, v in cfg.to_dict().items() if k not in ("data_dir", "hnet")}
    settings = {"steps": args.steps, "eval_every": args.eval_every, **_flat(run_settings),
                "hnet": args.hnet or "shipped", "subset_manifest_sha256": subset["sha256"],
                "test_data": source["dir"], "test_manifest_sha256": source["sha256"]}
    run_dir = os.path.join(folder, RUN_DIR)
    budget = Budget(folder, settings, started=has_run(run_dir))
    wanted = list(range(args.eval_every, args.steps + 1, args.eval_every))
    if budget.state["done"]:
        log(f"[learning_curve] {label}: reusing {budget.path}")
    else:
        _start_tensorflow(args.threads)
        from dtbt_tf.jobs import train_run
        from dtbt_tf.progress import keras_verbose

        resume = has_run(run_dir)
        log(f"[learning_curve] {label}: {subset['hours']:.3f} h of training audio ({subset['train_shards']} shards, "
            f"{subset['train_files']} recordings), {args.steps} steps of {args.batch_size}, test every "
            f"{args.eval_every}{' (resuming)' if resume else ''}")
        budget.start_leg()
        callback = _test_curve_callback(budget, source["dir"], cfg, log)
        verbose = 0 if args.no_progress else keras_verbose()
        try:
            if resume:
                train_run(out=run_dir, resume=True, verbose=verbose, log=log, callbacks=[callback])
            else:
                train_run(cfg, out=run_dir, data=subset["dir"], verbose=verbose, log=log, callbacks=[callback])
        except BaseException:
            budget.end_leg(done=False)
            raise
        missing = sorted(set(wanted) - {p["step"] for p in budget.state["points"]})
        budget.end_leg(done=not missing)
        if missing:
            raise ConfigError(f"{budget.path}: no test evaluation at steps {missing} although the run in {run_dir} "
                              f"is past them; delete {folder} to measure this budget again")
    state = budget.state
    return {"hours_requested": hours, "hours": round(subset["hours"], 4), "train_shards": subset["train_shards"],
            "train_files": subset["train_files"], "val_files": subset["val_files"], "subset_dir": subset["dir"],
            "subset_manifest_sha256": subset["sha256"], "run_dir": os.path.abspath(run_dir),
            "steps": [p["step"] for p in state["points"]], "curve": state["points"],
            "final": {k: state["points"][-1][k] for k in CURVE_KEYS} if state["points"] else None,
            "wall_s": round(state["wall_s"], 1), "cpu_s": round(state["cpu_s"], 1),
            "eval_wall_s": round(state["eval_wall_s"], 1), "eval_cpu_s": round(state["eval_cpu_s"], 1),
            "train_wall_s": round(state["wall_s"] - state["eval_wall_s"], 1),
            "train_cpu_s": round(state["cpu_s"] - state["eval_cpu_s"], 1), "legs": state["legs"]}


# ----------------------------------------------------------------------------------------------------------
# Result, plot


def result_json(args, argv, source: dict, budgets: list[dict], wall: float, load_start, name: str) -> dict:
    train = source["shards"]["train"]
    rows = [{"hours": b["hours"], "train_files": b["train_files"], "step": p["step"],
             **{k: p[k] for k in ROW_KEYS}, "train_wall_s": p["train_wall_s"], "train_cpu_s": p["train_cpu_s"]}
            for b in budgets for p in b["curve"]]
    machine = machine_info()
    machine["loadavg_1min_start"] = load_start
    notes = (f"`full` loss, {args.steps} steps of batch {args.batch_size} per budget ({args.schedule} learning "
             f"rate over the steps), test split of {source['dir']} ({len(source['shards']['test'])} shards) scored "
             f"every {args.eval_every} steps with the current weights; budgets are whole training shards "
             f"(order {args.order}) with the source's normalisation; LE in degrees, LF1 and MOTA fractions; "
             "train_*_s: cumulative seconds without the test evaluations. Command: "
             f"`{_command(argv)}`.")
    return {"name": name, "notes": notes, "rows": rows, "command": _command(argv),
            "date": time.strftime("%Y-%m-%d"), "quick": False, "wall_s": round(wall, 1), "machine": machine,
            "data": {"dir": source["dir"], "manifest": source["manifest_path"], "manifest_sha256": source["sha256"],
                     "source": source["manifest"].get("source"), "train_shards": len(train),
                     "train_files": sum(len(s["files"]) for s in train),
                     "train_hours": round(sum(s["hours"] for s in train), 4),
                     "test_files": sum(len(s["files"]) for s in source["shards"]["test"])},
            "settings": {"steps": args.steps, "eval_every": args.eval_every, "batch_size": args.batch_size,
                         "lr": args.lr, "schedule": args.schedule, "seed": args.seed, "order": args.order,
                         "val_shards": "all" if args.val_shards is None else args.val_shards,
                         "threads": args.threads, "hnet": args.hnet or "shipped",
                         "hnet_temperature": args.hnet_temperature, "threshold": args.threshold,
                         "model": {"arch": args.arch, "conv_filters": args.conv_filters, "rnn_units": args.rnn_units,
                                   "fc_units": args.fc_units}},
            "budgets": budgets,
            "final_vs_hours": [{"hours": b["hours"], **(b["final"] or {})} for b in budgets]}


def _command(argv) -> str:
    return " ".join(shlex.quote(a) for a in ["python", "benchmarks/learning_curve.py",
                                             *(sys.argv[1:] if argv is None else argv)])


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("LE", "all frames"), ("LE_poly1", "1-source frames"), ("LE_poly2", "2-source frames"))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    nan = float("nan")
    for b in result["budgets"]:
        steps = [p["step"] for p in b["curve"]]
        for ax, (key, _) in zip(axes, keys):
            ax.plot(steps, [nan if p[key] is None else p[key] for p in b["curve"]], marker="o",
                    label=f"{b['hours']:.3g} h")
    for ax, (key, title) in zip(axes, keys):
        ax.set_title(f"test {key} ({title})")
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("degrees")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="training audio")
    final = [b for b in result["budgets"] if b["final"]]
    hours = [b["hours"] for b in final]
    for key, title in keys:
        axes[3].plot(hours, [nan if b["final"][key] is None else b["final"][key] for b in final], marker="o",
                     label=title)
    axes[3].set_xscale("log")
    axes[3].set_title(f"test LE after {result['settings']['steps']} steps")
    axes[3].set_xlabel("hours of training audio")
    axes[3].set_ylabel("degrees")
    axes[3].grid(alpha=0.3, which="both")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        from dtbt_tf.artifacts import FolderLock

        t0 = time.perf_counter()
        load_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        source = read_source(args.data)
        train_hours = sum(s["hours"] for s in source["shards"]["train"])
        print(f"[learning_curve] {source['dir']}: {train_hours:.3f} h of training audio in "
              f"{len(source['shards']['train'])} shards", flush=True)
        json_path = args.json or os.path.join(args.out, "learning_curve.json")
        for path in [args.json, args.plot]:
            parent = os.path.dirname(os.path.abspath(path)) if path else None
            if parent and not os.path.isdir(parent):
                raise ConfigError(f"{path}: folder {parent} does not exist")
        plans = {h: choose_shards(source["shards"]["train"], h, args.order) for h in args.hours}
        seen = {}
        for h, chosen in plans.items():
            key = tuple(s["name"] for s in chosen)
            if key in seen:
                raise ConfigError(f"--hours {seen[key]} and {h} both give the same {len(chosen)} shards "
                                  f"({sum(s['hours'] for s in chosen):.3f} h); drop one")
            seen[key] = h
        log = lambda *a: print(*a, flush=True)  # noqa: E731
        budgets = []
        with FolderLock(args.out, "learning-curve benchmark", log=log):
            for hours in sorted(args.hours, key=lambda h: math.inf if h == "all" else float(h)):
                budgets.append(run_budget(args, source, hours, log))
                # named after its file, so several curves get their own sections in results/README.md
                result = result_json(args, argv, source, budgets, time.perf_counter() - t0, load_start,
                                     os.path.splitext(os.path.basename(json_path))[0])
                atomic_write_text(json_path, json.dumps(result, indent=1) + "\n")  # kept if a later budget dies
        if args.plot:
            plot(result, args.plot)
        print(json.dumps(result, indent=1))
        print(f"[learning_curve] wrote {json_path}" + (f" and {args.plot}" if args.plot else ""), flush=True)

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
