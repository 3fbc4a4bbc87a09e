"""The training job as separate steps: train (new or resumed run) -> evaluate the test split -> export.

``scripts/train.py`` runs :func:`main_job` (all three); ``benchmarks/table1.py`` trains and evaluates without
exporting. Every step works on a run folder (layout in :mod:`dtbt_tf.artifacts`) and holds its lock.

Guarantees of :func:`train_run`: the whole RunConfig is validated, the Hnet loaded and the data resolved and
checked before ``run_config.json`` is written; a start that fails before the first checkpoint leaves no run
behind; a resumed run continues with the run's own settings (only ``RunConfig.RESUMABLE_CHANGES`` may differ,
anything else is refused by name) and ends equal to the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from dtbt_tf.artifacts import (CHECKPOINT_DIR, EXPORT_DIR, RUN_CONFIG, FolderLock, default_run_dir, has_run,
                               load_run_config, load_trained, save_run_config, shipped_model)
from dtbt_tf.config import ConfigError, RunConfig
from dtbt_tf.progress import keras_verbose

HNET_FREE_LOSSES = ("mse", "pit")


def _get(cfg: RunConfig, key: str):
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


def apply_resume_changes(saved: RunConfig, changes: dict, where: str) -> RunConfig:
    """``saved`` with the values of ``changes`` ({"train.epochs": 20, ...}) that differ from it, if every one
    of them may change on resume (``RunConfig.RESUMABLE_CHANGES``); else a ConfigError naming each field."""
    differing = {k: v for k, v in changes.items() if _get(saved, k) != v}
    refused = [k for k in differing if k not in RunConfig.RESUMABLE_CHANGES]
    if refused:
        listed = ", ".join(f"{k} (run: {_get(saved, k)!r}, given: {differing[k]!r})" for k in refused)
        raise ConfigError(f"{where}: --resume continues the run with its own settings; these differ from it: "
                          f"{listed}. Drop them, or start a new run with another --out")
    cfg = saved
    for key, value in differing.items():
        section, field = key.split(".")
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{field: value})})
    return cfg


def _hnet(cfg: RunConfig):
    """(frozen Hnet model, its absolute path) for the losses that use one, else (None, None)."""
    from dtbt_tf.models.hnet import load_hnet

    if cfg.loss.name in HNET_FREE_LOSSES:
        return None, None
    n_max = cfg.model.n_max
    if cfg.hnet is None:
        try:
            path = shipped_model(f"hnet_n{n_max}")
        except ConfigError:
            raise ConfigError(f"no shipped Hnet for n_max={n_max} (train one with scripts/train_hnet.py "
                              f"--n-max {n_max} and pass --hnet)") from None
    else:
        path = cfg.hnet
        if not os.path.exists(path):
            raise ConfigError(f"{path}: Hnet not found")
    return load_hnet(path, n_max=n_max, temperature=cfg.loss.hnet_temperature), os.path.abspath(path)


def _remove_failed_start(out: str, created: bool) -> None:
    """Undo a start that failed before its first checkpoint, so the corrected command is not refused."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in (RUN_CONFIG, "tb", CHECKPOINT_DIR, "val_tracks.png"):
        path = os.path.join(out, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (
            os.remove(path) if os.path.exists(path) else None)


def train_run(cfg: RunConfig | None = None, out: str | None = None, data: str | None = None, resume: bool = False,
              changes: dict | None = None, verbose=None, log=print, callbacks=()) -> dict:
    """Train a new run of ``cfg`` (data: DCASE root, feature folder, or None for the synthetic ``preset`` set;
    ``cfg.data_dir`` set skips resolution) into ``out`` (default runs/<fmt>_<loss>_<time>-<pid>), or with
    ``resume`` continue the run in ``out`` (``cfg`` ignored; ``changes`` as in :func:`apply_resume_changes`).

    Returns {"run_dir", "config" (the saved RunConfig), "chief", "best_epoch", "best_val_LE"}. Raises
    ConfigError / DataError (one line) on bad input, before anything is written.
    """
    import keras

    from dtbt_tf.data.pipeline import normalization_stats
    from dtbt_tf.data.resolve import check_training_data, resolve_data
    from dtbt_tf.training import barrier, build_trainer, checkpoint, fit_run, is_chief, make_strategy, \
        sequences_per_epoch

    if resume:
        if not out:
            raise ConfigError("--resume needs --out (the run folder to continue)")
        cfg = apply_resume_changes(load_run_config(out), changes or {}, os.path.join(out, RUN_CONFIG))
    elif cfg is None:
        raise ConfigError("train_run: a RunConfig is needed for a new run")
    else:
        out = out or default_run_dir(cfg.feature.fmt, cfg.loss.name)
        if has_run(out):
            raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    verbose = keras_verbose() if verbose is None else verbose
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(cfg.train.strategy)  # first: collective ops must be configured before other TF ops
    chief = is_chief(strategy)
    created = not os.path.exists(out)
    lock = FolderLock(out, "training", log=log) if chief else None
    if lock:
        lock.acquire()
    try:
        if chief and not resume and has_run(out):  # another job wrote it between the check and the lock
            raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
        if not chief:
            barrier(strategy)
        hnet_model, hnet_path = _hnet(cfg)
        data_dir = cfg.data_dir or resolve_data(data, cfg.feature.fmt, cfg.model.n_max, cfg.train.preset,
                                                progress=verbose != 0, extract=chief, log=log)
        manifest = check_training_data(data_dir, cfg.feature, cfg.model.n_max)
        if chief:
            barrier(strategy)
        cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(data_dir), hnet=hnet_path)
        mean, std = normalization_stats(manifest)
        n_seq = sequences_per_epoch(manifest, "train", cfg.feature.seq_frames, cfg.train.seq_hop)
        steps = cfg.train.steps_per_epoch or max(1, -(-n_seq // cfg.train.batch_size))
        doanet, trainer = build_trainer(cfg, strategy, hnet_model, mean, std, steps)
        ckpt, manager = checkpoint(out, doanet, trainer.optimizer, chief)
        if chief:
            save_run_config(out, cfg)
        if resume and manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            log(f"resuming {out} after epoch {int(ckpt.epoch.numpy())} "
                f"(best val LE {float(ckpt.best_le.numpy()):.2f} deg)")
        result = fit_run(cfg, out, doanet, trainer, strategy, steps, ckpt, manager, verbose, log, callbacks)
    except BaseException:
        if chief and not resume and not (os.path.isdir(os.path.join(out, CHECKPOINT_DIR))
                                         and os.listdir(os.path.join(out, CHECKPOINT_DIR))):
            if lock:
                lock.release()
            _remove_failed_start(out, created)
        raise
    finally:
        if lock:
            lock.release()
    return {"run_dir": out, "config": cfg, "chief": chief, **result}


def evaluate_run(out: str, split: str = "test", log=print) -> dict:
    """Metrics of the run's best.keras on a split of its data; for the test split also writes
    ``predictions/`` and ``test_metrics.json`` into the run folder. Prints the table."""
    from dtbt_tf.evaluation import evaluate_run_split, evaluate_split
    from dtbt_tf.metrics import format_table

    model, cfg = load_trained(out)
    window = cfg.feature.seq_label_frames
    with FolderLock(out, "evaluation", log=log):
        if split == "test":
            metrics = evaluate_run_split(model, out, cfg.data_dir, window, cfg.inference)
        else:
            metrics, _ = evaluate_split(model, cfg.data_dir, split, window, cfg.inference)
    log(f"{split} split ({cfg.loss.name}):\n{format_table(metrics)}")
    return metrics


def export_run(out: str, version: int = 1, log=print) -> str:
    """The run's best.keras as a SavedModel (TF Serving layout) in ``<out>/export/<version>/`` (replaced)."""
    from dtbt_tf.export import export_saved_model

    with FolderLock(out, "export", log=log):
        path = export_saved_model(out, os.path.join(out, EXPORT_DIR), version=version, overwrite=True)
    log(f"run folder: {out} (best.keras, export/, predictions/, tb/)")
    return path


def main_job(cfg: RunConfig | None = None, out: str | None = None, data: str | None = None, resume: bool = False,
             changes: dict | None = None, evaluate: bool = True, export: bool = True, verbose=None, log=print,
             callbacks=()) -> dict:
    """``scripts/train.py``: :func:`train_run`, then on the chief :func:`evaluate_run` (test split) and
    :func:`export_run`. Returns train_run's result plus "test_metrics" (when evaluated) and "export"."""
    result = train_run(cfg, out, data, resume, changes, verbose, log, callbacks)
    if result["chief"]:
        if evaluate:
            result["test_metrics"] = evaluate_run(result["run_dir"], log=log)
        if export:
            result["export"] = export_run(result["run_dir"], log=log)
    return result
