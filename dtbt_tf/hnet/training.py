"""Hnet training (paper IV-A, DESIGN 3): schedule and losses, the resumable training loop, the whole job.

A run folder (``work_dir``) holds best.keras, backup/ (resumable state), logs/ (TensorBoard), history.csv,
wall_clock.json and train_config.json; :func:`run_hnet_training` then evaluates the best model and exports it
to a separate folder (:func:`dtbt_tf.hnet.card.export_hnet`).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from dtbt_tf.artifacts import FolderLock, pid_alive
from dtbt_tf.config import atomic_write_text
from dtbt_tf.hnet.card import export_hnet
from dtbt_tf.hnet.config import CACHE_DIR, EVAL_SIZE, FRESH_SIZE, HnetTrainConfig
from dtbt_tf.hnet.data import make_hnet_data, targets, training_data
from dtbt_tf.hnet.evaluation import (EVAL_SETS, AssociationF1, ExactMatch, association_scores, evaluate_hnet,
                                     predict_association, score_table)
from dtbt_tf.models.hnet import build_hnet
from dtbt_tf.progress import keras_verbose

FRESH_SEED = 777_000  # per-epoch fresh matrices; evaluate_hnet uses EVAL_SEED + k, training data 1000 * seed + k


def compile_hnet(model: keras.Model, cfg: HnetTrainConfig, steps_per_epoch: int) -> None:
    """Adam with linear warm-up then cosine decay; weighted sum of three BCEs; F1 and exact-match metrics."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr * 0.05, decay_steps=max(total - warmup, 1), alpha=cfg.final_lr_fraction,
        warmup_target=cfg.lr, warmup_steps=warmup)
    w_assoc, w_row, w_col = cfg.loss_weights
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule, clipnorm=cfg.clipnorm or None),
        loss={"association": "binary_crossentropy", "row_max": "binary_crossentropy",
              "col_max": "binary_crossentropy"},
        loss_weights={"association": w_assoc, "row_max": w_row, "col_max": w_col},
        metrics={"association": [AssociationF1(), ExactMatch()]},
        jit_compile=cfg.jit_compile,
    )


class _WallClock(keras.callbacks.Callback):
    """Adds the elapsed training seconds (cumulative over resumed runs) to the epoch logs."""

    def __init__(self, state_file: Path):
        super().__init__()
        self.state_file = state_file
        self.before = json.loads(state_file.read_text())["seconds"] if state_file.is_file() else 0.0

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.before + time.time() - self.start
        if logs is not None:
            logs["train_seconds"] = seconds
        atomic_write_text(str(self.state_file), json.dumps({"seconds": seconds, "epoch": epoch + 1}))


def train_hnet(cfg: HnetTrainConfig, work_dir, cache_dir=CACHE_DIR, resume: bool = False,
               verbose: int | None = None, callbacks=(), fresh_size: int = FRESH_SIZE) -> tuple[keras.Model, dict]:
    """Train a Hnet; returns (best model by validation F1, info dict); `callbacks` are added to fit's.

    After every epoch the exact match on `fresh_size` fresh matrices of each evaluation set (EVAL_SETS, seeds
    used nowhere else) is logged as ``fresh_<layout>_<directions>`` (history.csv, TensorBoard), so the time to
    reach a quality bar can be read off the history.

    work_dir receives best.keras (best validation F1), backup/ (resumable state, removed when training
    completes), logs/ (TensorBoard), history.csv and train_config.json. With resume=False an existing
    backup is discarded; with resume=True training continues from it (same config required).
    """
    work = Path(work_dir)
    backup, cfg_file = work / "backup", work / "train_config.json"
    if resume and cfg_file.is_file():
        saved = json.loads(cfg_file.read_text())
        if saved != json.loads(json.dumps(dataclasses.asdict(cfg))):
            raise ValueError(f"{cfg_file}: --resume with a different config than the interrupted run ({saved})")
    if not resume:
        for p in (backup, work / "logs", work / "history.csv", work / "wall_clock.json", work / "best.keras"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(cfg_file), json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    keras.utils.set_random_seed(cfg.seed)
    train = training_data(cfg, cache_dir, cfg.train_size, 1000 * cfg.seed + 1)
    val = training_data(cfg, cache_dir, cfg.val_size, 1000 * cfg.seed + 2)
    steps = -(-cfg.train_size // cfg.batch_size)
    model = build_hnet(cfg.n_max, units=cfg.units, bidirectional=cfg.bidirectional,
                       relative_inputs=cfg.relative_inputs, input_scale=cfg.input_scale,
                       head_layers=cfg.head_layers)
    if cfg.init_from:
        try:
            start = keras.saving.load_model(cfg.init_from, compile=False)
            model.set_weights(start.get_weights())
        except (OSError, ValueError) as e:
            raise ValueError(f"{cfg.init_from}: cannot start from this model ({e})") from None
    compile_hnet(model, cfg, steps)

    best_path = work / "best.keras"
    best_so_far = None
    if resume and best_path.is_file():
        best = keras.saving.load_model(best_path, compile=False)
        pred = best.predict(val["distance"], batch_size=8192, verbose=0)["association"]
        best_so_far = association_scores(pred, val["association"])["f1"]
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_association_f1", mode="max",
                                        save_best_only=True, initial_value_threshold=best_so_far),
        _WallClock(work / "wall_clock.json"),
        _FreshScores(cfg.n_max, fresh_size),
        keras.callbacks.TensorBoard(str(work / "logs"), update_freq="epoch"),
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=resume),
        *callbacks,
    ]
    if verbose is None:
        verbose = keras_verbose()
    model.fit(train["distance"], targets(train["association"]), batch_size=cfg.batch_size, epochs=cfg.epochs,
              validation_data=(val["distance"], targets(val["association"])), callbacks=callbacks,
              verbose=verbose, shuffle=True)
    seconds = json.loads((work / "wall_clock.json").read_text())["seconds"]
    best = keras.saving.load_model(best_path, compile=False)
    return best, {"train_seconds": seconds, "config": dataclasses.asdict(cfg),
                  "history": read_history(work / "history.csv")}


class _FreshScores(keras.callbacks.Callback):
    """Adds the exact match on fixed fresh matrices of every evaluation set to the epoch logs."""

    def __init__(self, n_max: int, size: int):
        super().__init__()
        self.sets = {_fresh_key(layout, directions): make_hnet_data(n_max, size, FRESH_SEED + k, layout=layout,
                                                                    directions=directions)
                     for k, (layout, directions) in enumerate(EVAL_SETS)} if size else {}

    def on_epoch_end(self, epoch, logs=None):
        for key, data in self.sets.items():
            pred = predict_association(self.model, data["distance"])
            if logs is not None:
                logs[key] = association_scores(pred, data["association"])["exact_match"]


def _fresh_key(layout: str, directions: str) -> str:
    return f"fresh_{layout}_{directions}"


def read_history(path) -> list[dict]:
    """Per-epoch validation scores, fresh-set exact matches and cumulative training seconds of a run."""
    keep = ("epoch", "train_seconds", "val_association_exact_match", "val_association_f1", "val_loss",
            *(_fresh_key(*s) for s in EVAL_SETS))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: round(float(r[k]), 6) for k in keep if k in r} for r in rows]


def run_hnet_training(cfg: HnetTrainConfig, out_dir, work_dir, cache_dir=CACHE_DIR, resume: bool = False,
                      eval_size: int = EVAL_SIZE, fresh_size: int = FRESH_SIZE, command: str = "") -> Path:
    """Train (or resume) in work_dir, evaluate the best model on `eval_size` fresh matrices of every evaluation
    set, print the table and export to out_dir (see :func:`export_hnet`). Returns out_dir.

    The export replaces out_dir as a whole, so work_dir must not be out_dir or lie inside it (checked first). The
    whole job holds work_dir's :class:`~dtbt_tf.artifacts.FolderLock` (a second job on it stops at once) and
    first removes the temporary export folders of a killed job.
    """
    out, work = Path(out_dir).resolve(), Path(work_dir).resolve()
    if work == out or out in work.parents:
        raise ValueError(f"{work_dir}: the work folder must lie outside the export folder {out_dir} "
                         "(the export replaces that folder as a whole)")
    if eval_size < 1:
        raise ValueError(f"eval_size must be >= 1, got {eval_size}")
    with FolderLock(str(work), "Hnet training"):  # one job per work folder (and so per default export folder)
        _remove_dead_exports(out)
        model, info = train_hnet(cfg, work_dir, cache_dir=cache_dir, resume=resume, fresh_size=fresh_size)
        info["metrics"] = evaluate_hnet(model, cfg.n_max, size=eval_size)
        info["eval_size"] = eval_size
        info["command"] = command
        info["hardware"] = f"{os.cpu_count()} CPU cores (shared), TensorFlow {tf.__version__}"
        print(score_table(info["metrics"]))
        return export_hnet(model, out_dir, info)


def _remove_dead_exports(out: Path) -> None:
    """Remove ``<out>.tmp<pid>`` / ``<out>.old<pid>`` folders that a killed export left (its process is gone)."""
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        m = re.fullmatch(re.escape(out.name) + r"\.(?:tmp|old)(\d+)", p.name)
        if m and p.is_dir() and not pid_alive(int(m.group(1))):
            shutil.rmtree(p)
