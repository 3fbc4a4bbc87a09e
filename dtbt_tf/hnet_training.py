"""Hnet training data, metrics, training loop, evaluation and export (paper IV-A, DESIGN 3).

Data: reference and predicted DOAs drawn from spherical equiangular grids (1..30 degrees) and, for variety,
continuous uniform directions; every (number of predictions, number of references) in 0..Nmax equally; the
active slots are a random subset (DOAnet keeps references in stable slots, so any slot may be empty); padded
entries hold random values in PAD_RANGE. D comes from :func:`dtbt_tf.association.distance_matrix`, the
targets from :func:`dtbt_tf.association.exact_association_tf` (equal to scipy's Hungarian on the active block).

Two layouts are generated: "generator" (as above) and "training" (what DOAnet training feeds the Hnet: all
Nmax prediction rows active, references padded with the constant PAD_VALUE).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dtbt_tf.association import ACTIVE_MAX_DISTANCE, association_margin, distance_matrix, exact_association_tf
from dtbt_tf.config import PAD_VALUE, atomic_write_text
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.models.hnet import HNET_CONFIG_FILE, HNET_KERAS_FILE, build_hnet

GRID_RESOLUTIONS_DEG = (1, 2, 3, 4, 5, 10, 15, 20, 30)
PAD_RANGE = (4.0, 20.0)  # random padding values of the generator layout (includes DOAnet's PAD_VALUE = 10)
LAYOUTS = ("generator", "training")
DIRECTIONS = ("grid", "continuous", "mixed")
NEAR_TIE_MARGIN = 0.01  # assignments whose cost differs from the optimum by less than this are near-ties
EVAL_SETS = (("generator", "grid"), ("training", "grid"), ("generator", "continuous"), ("training", "continuous"))
FRESH_SEED = 777_000  # per-epoch fresh matrices (train_hnet); evaluate_hnet uses 12345 + k, training 1000 * seed + k

# ----------------------------------------------------------------------------------------------------------
# Data


def sample_directions(rng: np.random.Generator, size: int, n: int, directions: str = "grid",
                      continuous_fraction: float = 0.0) -> np.ndarray:
    """(size, n, 3) float64 unit vectors.

    "grid": per matrix one resolution r from GRID_RESOLUTIONS_DEG, azimuth on {-180, -180 + r, ...} and
    elevation on {-90, ..., 90} (equiangular: poles are over-represented, as on the grid);
    "continuous": uniform on the sphere; "mixed": grid, with a `continuous_fraction` of matrices continuous.
    """
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    res = rng.choice(np.array(GRID_RESOLUTIONS_DEG, np.float64), size=size)[:, None]
    az = rng.integers(0, np.round(360.0 / res).astype(np.int64), size=(size, n)) * res - 180.0
    el = rng.integers(0, np.round(180.0 / res).astype(np.int64) + 1, size=(size, n)) * res - 90.0
    grid = polar_to_unit(az, el)
    cont = rng.standard_normal((size, n, 3))
    cont /= np.linalg.norm(cont, axis=-1, keepdims=True)
    if directions == "grid":
        return grid
    if directions == "continuous":
        return cont
    pick = rng.random(size) < continuous_fraction
    return np.where(pick[:, None, None], cont, grid)


def _random_subset_mask(rng: np.random.Generator, counts: np.ndarray, n: int) -> np.ndarray:
    """(size, n) bool with counts[k] True entries at random positions in row k."""
    rank = np.argsort(np.argsort(rng.random((len(counts), n)), axis=-1), axis=-1)
    return rank < counts[:, None]


def make_hnet_data(n_max: int, size: int, seed: int, layout: str = "generator", directions: str = "grid",
                   continuous_fraction: float = 0.0, pad_range=PAD_RANGE, max_margin: float | None = None) -> dict:
    """Seeded, vectorised Hnet data set.

    Returns a dict of NumPy arrays: distance (size, N, N) float32, association (size, N, N) float32 0/1,
    row_active / col_active (size, N) bool. "generator": (n_pred, n_ref) cycles through all (N + 1)^2 pairs
    equally, padded entries uniform in pad_range; "training": n_pred = N, n_ref cycles through 0..N,
    padded entries = PAD_VALUE. max_margin: keep only hard matrices, whose second-best association costs
    less than max_margin more than the best (see :func:`association_margin`), drawn by rejection.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if max_margin is not None:
        return _make_hard_data(n_max, size, seed, max_margin, layout=layout, directions=directions,
                               continuous_fraction=continuous_fraction, pad_range=pad_range)
    rng = np.random.default_rng(seed)
    if layout == "generator":
        pairs = np.array([(p, r) for p in range(n_max + 1) for r in range(n_max + 1)])
        combo = rng.permutation(np.resize(np.arange(len(pairs)), size))
        n_pred, n_ref = pairs[combo, 0], pairs[combo, 1]
        pad = rng.uniform(pad_range[0], pad_range[1], size=(size, n_max, n_max))
    else:
        n_pred = np.full(size, n_max)
        n_ref = rng.permutation(np.resize(np.arange(n_max + 1), size))
        pad = PAD_VALUE
    row_active = _random_subset_mask(rng, n_pred, n_max)
    col_active = _random_subset_mask(rng, n_ref, n_max)
    pred = sample_directions(rng, size, n_max, directions, continuous_fraction)
    ref = sample_directions(rng, size, n_max, directions, continuous_fraction)
    D = distance_matrix(pred, ref, col_active, row_active, pad_value=pad)
    A = exact_association_tf(D, row_active, col_active)
    return {"distance": D.numpy(), "association": A.numpy(), "row_active": row_active, "col_active": col_active}


def _make_hard_data(n_max: int, size: int, seed: int, max_margin: float, **kwargs) -> dict:
    """Rejection sampling for make_hnet_data(max_margin=...): chunks of fresh matrices (seeds derived from
    seed), keeping those with margin < max_margin, until size are found."""
    if not max_margin > 0:
        raise ValueError(f"max_margin must be > 0, got {max_margin!r}")
    parts, found, chunk = [], 0, 0
    while found < size:
        chunk += 1
        if chunk > 1000:
            raise ValueError(f"too few matrices with association margin < {max_margin} (found {found} of {size})")
        data = make_hnet_data(n_max, max(4 * (size - found), 10_000), seed * 7919 + chunk, **kwargs)
        keep = association_margin(data["distance"], data["row_active"], data["col_active"]) < max_margin
        parts.append({k: v[keep] for k, v in data.items()})
        found += int(keep.sum())
    return {k: np.concatenate([p[k] for p in parts])[:size] for k in parts[0]}


def targets(association: np.ndarray) -> dict:
    """Keras targets for the three Hnet heads from exact associations (size, N, N)."""
    return {"association": association, "row_max": association.max(axis=-1),
            "col_max": association.max(axis=-2)}


def load_or_make_hnet_data(cache_dir, n_max: int, size: int, seed: int, **kwargs) -> dict:
    """:func:`make_hnet_data`, cached as .npz under cache_dir (keyed by every argument; written atomically)."""
    key = json.dumps({"n_max": n_max, "size": size, "seed": seed, "version": 1, **kwargs}, sort_keys=True,
                     default=str)
    path = Path(cache_dir) / f"hnet_n{n_max}_{size}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    data = make_hnet_data(n_max, size, seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **data)
    os.replace(tmp, path)
    return data


# ----------------------------------------------------------------------------------------------------------
# Metrics


def association_scores(pred: np.ndarray, exact: np.ndarray, distance: np.ndarray | None = None,
                       margin: np.ndarray | None = None, threshold: float = 0.5) -> dict:
    """Scores of soft associations pred (size, N, N) against exact 0/1 associations.

    f1: support-weighted F1 over all entries of the thresholded matrices (classes 0 and 1);
    exact_match: fraction of matrices whose thresholded matrix equals the exact one (strict: at exact ties
    the exact one is the lexicographically first optimum);
    with distance (size, N, N): optimal_match, the fraction whose thresholded matrix is *an* optimal
    association (same number of pairs, one per row/column, active entries only, cost within 1e-5 of the
    optimum; differs from exact_match only at exact ties, e.g. identical grid directions);
    with margin (size,) (see association_margin): exact_match_away_from_ties (margin > NEAR_TIE_MARGIN) and
    near_tie_fraction.
    """
    hard = np.asarray(pred) > threshold
    ref = np.asarray(exact) > 0.5
    tp, fp = np.sum(hard & ref), np.sum(hard & ~ref)
    fn, tn = np.sum(~hard & ref), np.sum(~hard & ~ref)
    match = np.all(hard == ref, axis=(-2, -1))
    out = {"f1": _weighted_f1(tp, fp, fn, tn), "exact_match": float(np.mean(match)), "count": int(len(ref))}
    if distance is not None:
        D = np.asarray(distance, np.float64)
        valid = (np.sum(hard, axis=(-2, -1)) == np.sum(ref, axis=(-2, -1))) \
            & np.all(np.sum(hard, axis=-1) <= 1, axis=-1) & np.all(np.sum(hard, axis=-2) <= 1, axis=-1) \
            & ~np.any(hard & (D > ACTIVE_MAX_DISTANCE), axis=(-2, -1))
        cost_pred = np.sum(np.where(hard, D, 0.0), axis=(-2, -1))
        cost_ref = np.sum(np.where(ref, D, 0.0), axis=(-2, -1))
        out["optimal_match"] = float(np.mean(match | (valid & (cost_pred <= cost_ref + 1e-5))))
    if margin is not None:
        far = np.asarray(margin) > NEAR_TIE_MARGIN
        out["exact_match_away_from_ties"] = float(np.mean(match[far]))
        out["near_tie_fraction"] = float(1.0 - far.mean())
    return out


def _weighted_f1(tp, fp, fn, tn):
    """Support-weighted mean of the F1 of class 1 and of class 0 (sklearn's average='weighted')."""
    f1_pos = 2 * tp / max(2 * tp + fp + fn, 1)
    f1_neg = 2 * tn / max(2 * tn + fn + fp, 1)
    pos, neg = tp + fn, tn + fp
    return float((f1_pos * pos + f1_neg * neg) / max(pos + neg, 1))


@keras.saving.register_keras_serializable(package="dtbt_tf")
class AssociationF1(keras.metrics.Metric):
    """Streaming support-weighted F1 of thresholded associations (entries as binary labels)."""

    def __init__(self, threshold=0.5, name="f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.counts = self.add_variable(shape=(4,), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ref = keras.ops.cast(y_true > 0.5, "float32")
        hard = keras.ops.cast(y_pred > self.threshold, "float32")
        tp = keras.ops.sum(hard * ref)
        fp = keras.ops.sum(hard * (1 - ref))
        fn = keras.ops.sum((1 - hard) * ref)
        tn = keras.ops.sum((1 - hard) * (1 - ref))
        self.counts.assign_add(keras.ops.stack([tp, fp, fn, tn]))

    def result(self):
        tp, fp, fn, tn = (self.counts[i] for i in range(4))
        f1_pos = 2 * tp / keras.ops.maximum(2 * tp + fp + fn, 1.0)
        f1_neg = 2 * tn / keras.ops.maximum(2 * tn + fn + fp, 1.0)
        return (f1_pos * (tp + fn) + f1_neg * (tn + fp)) / keras.ops.maximum(tp + fp + fn + tn, 1.0)

    def reset_state(self):
        self.counts.assign(keras.ops.zeros((4,)))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="dtbt_tf")
class ExactMatch(keras.metrics.MeanMetricWrapper):
    """Fraction of matrices whose thresholded association equals the target exactly."""

    def __init__(self, threshold=0.5, name="exact_match", **kwargs):
        super().__init__(fn=_exact_match, name=name, threshold=threshold, **kwargs)
        self.threshold = threshold

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


def _exact_match(y_true, y_pred, threshold=0.5):
    equal = keras.ops.equal(y_true > 0.5, y_pred > threshold)
    return keras.ops.cast(keras.ops.all(equal, axis=(-2, -1)), "float32")


# ----------------------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class HnetTrainConfig:
    """Everything a Hnet training run depends on (saved next to the model)."""

    n_max: int = 2
    train_size: int = 405_000
    val_size: int = 40_500
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1.5e-3  # peak learning rate of the warm-up + cosine schedule
    warmup_epochs: float = 1.0
    final_lr_fraction: float = 0.002  # cosine decays to lr * this
    clipnorm: float = 0.0  # Adam gradient-norm clipping (0 = off); high peak rates can diverge without it
    loss_weights: tuple = (1.0, 1.0, 1.0)  # association, row_max, col_max
    units: int = 128
    # architecture options of build_hnet (see dtbt_tf.models.hnet for what each deviation from the paper buys)
    bidirectional: bool = True
    relative_inputs: bool = True
    input_scale: float = 10.0
    head_layers: int = 1
    continuous_fraction: float = 0.1  # share of training matrices with continuous (non-grid) directions
    training_layout_fraction: float = 0.0  # share of matrices in the DOAnet training layout (rest: generator)
    hard_fraction: float = 0.0  # share of near-tie training-layout matrices (association margin < hard_margin)
    hard_margin: float = 0.1
    init_from: str = ""  # .keras Hnet to start from (fine-tuning); "" = random initialisation
    seed: int = 0
    jit_compile: bool = True  # XLA: ~2-3x faster training steps on CPU for this tiny model (measured)

    def __post_init__(self):
        if self.n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {self.n_max}")
        for name in ("train_size", "val_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("continuous_fraction", "training_layout_fraction", "hard_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.training_layout_fraction + self.hard_fraction > 1.0:
            raise ValueError(f"training_layout_fraction + hard_fraction must be <= 1, got "
                             f"{self.training_layout_fraction} + {self.hard_fraction}")
        if self.clipnorm < 0:
            raise ValueError(f"clipnorm must be >= 0 (0 = off), got {self.clipnorm}")
        if not self.hard_margin > 0:
            raise ValueError(f"hard_margin must be > 0, got {self.hard_margin}")
        if len(self.loss_weights) != 3:
            raise ValueError(f"loss_weights needs 3 values (association, row_max, col_max), got {self.loss_weights}")
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))


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


def training_data(cfg: HnetTrainConfig, cache_dir, size: int, seed: int) -> dict:
    """Training/validation matrices of a run (all with `continuous_fraction` continuous directions, cached):
    the generator layout, then a `training_layout_fraction` share in the DOAnet training layout, then a
    `hard_fraction` share of near-tie training-layout matrices (margin < `hard_margin`)."""
    n_layout = int(round(size * cfg.training_layout_fraction))
    n_hard = int(round(size * cfg.hard_fraction))
    common = {"directions": "mixed", "continuous_fraction": cfg.continuous_fraction}
    parts = []
    if size - n_layout - n_hard > 0:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, size - n_layout - n_hard, seed, **common))
    if n_layout:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, n_layout, seed + 500, layout="training",
                                            **common))
    if n_hard:
        parts.append(load_or_make_hnet_data(cache_dir, cfg.n_max, n_hard, seed + 700, layout="training",
                                            max_margin=cfg.hard_margin, **common))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def train_hnet(cfg: HnetTrainConfig, work_dir, cache_dir="cache/hnet", resume: bool = False,
               verbose: int | None = None, callbacks=(), fresh_size: int = 20_000) -> tuple[keras.Model, dict]:
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
        verbose = 1 if sys.stdout.isatty() else 2
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


# ----------------------------------------------------------------------------------------------------------
# Evaluation and export


def evaluate_hnet(model: keras.Model, n_max: int, size: int = 100_000, seed: int = 12345,
                  batch_size: int = 8192) -> dict:
    """Scores on fresh matrices (seeds never used for training) for each (layout, directions) in EVAL_SETS.

    model: a keras Hnet (dict outputs of :func:`build_hnet` or the association alone) or a SavedModel
    signature (``tf.saved_model.load(dir).signatures["serving_default"]``).
    Returns {"<layout>/<directions>": association_scores(...)}.
    """
    out = {}
    for k, (layout, directions) in enumerate(EVAL_SETS):
        data = make_hnet_data(n_max, size, seed + k, layout=layout, directions=directions)
        pred = predict_association(model, data["distance"], batch_size)
        margin = association_margin(data["distance"], data["row_active"], data["col_active"])
        out[f"{layout}/{directions}"] = association_scores(pred, data["association"], data["distance"], margin)
    return out


def predict_association(model, distance: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Ã (size, N, N) NumPy from a keras Hnet or a SavedModel serving signature, in batches."""
    if isinstance(model, keras.Model):
        pred = model.predict(distance, batch_size=batch_size, verbose=0)
        return pred["association"] if isinstance(pred, dict) else pred
    parts = [model(distance=tf.constant(distance[i:i + batch_size]))["association"].numpy()
             for i in range(0, len(distance), batch_size)]
    return np.concatenate(parts, axis=0)


def serving_module_signature(model: keras.Model) -> keras.export.ExportArchive:
    """ExportArchive with serving_default: `distance` float32 (batch, N, N) -> `association` (batch, N, N)."""
    n = int(model.inputs[0].shape[-1])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(distance):
        out = model(distance, training=False)
        return {"association": out["association"] if isinstance(out, dict) else out}

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec((None, n, n), tf.float32, name="distance")])
    return archive


def export_hnet(model: keras.Model, out_dir, info: dict) -> Path:
    """Write out_dir (replaced as a whole, through a temporary folder): a SavedModel at its root
    (serving_default: distance -> association), hnet.keras, hnet_config.json (info) and MODEL_CARD.md."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    serving_module_signature(model).write_out(str(tmp), verbose=False)
    model.save(tmp / HNET_KERAS_FILE)
    atomic_write_text(str(tmp / HNET_CONFIG_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
    atomic_write_text(str(tmp / "MODEL_CARD.md"), model_card(info))
    old = out.with_name(out.name + f".old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return out


def model_card(info: dict) -> str:
    """MODEL_CARD.md text from the info dict written by export (config, data, metrics, timing)."""
    cfg = info["config"]
    n = cfg["n_max"]
    clip = f" (gradient norm clipped at {cfg['clipnorm']:g})" if cfg.get("clipnorm") else ""
    lines = [
        f"# Hnet for Nmax = {n}",
        "",
        "Hungarian network (paper III-A, DESIGN 3): distance matrix D (batch, N, N), rows = prediction slots,",
        "columns = reference slots, Euclidean distances of unit vectors (0..2), padded entries > 3 (clipped to 3",
        "inside the model) -> soft association (batch, N, N) in [0, 1].",
        "",
        "## Files",
        "- SavedModel at this folder's root: `serving_default` takes `distance` float32 (batch, N, N), returns",
        "  `association` float32 (batch, N, N); loads with `tf.saved_model.load` alone.",
        f"- `{HNET_KERAS_FILE}`: Keras model (dict outputs association, row_max, col_max); "
        "`dtbt_tf.models.hnet.load_hnet(N)` loads it frozen. DOAnet training reads it through",
        "  sigmoid(logits / T), `scripts/train.py --hnet-temperature` (default 5; see the README's \"Hnet\").",
        f"- `{HNET_CONFIG_FILE}`: training config, metrics and timing as JSON.",
        "",
        "## Architecture",
        f"{_architecture_text(cfg)};",
        "association = sigmoid(logits), row_max = sigmoid(max over columns), col_max = sigmoid(max over rows).",
        "Deviations from the paper's network (one-way GRU on D, attention, Dense logits) are measured in the",
        "docstring of dtbt_tf/models/hnet.py.",
        "",
        "## Training data (paper IV-A)",
        f"- {cfg['train_size']} training / {cfg['val_size']} validation matrices, seed {cfg['seed']}: DOAs from",
        f"  spherical equiangular grids of {', '.join(map(str, GRID_RESOLUTIONS_DEG))} degrees "
        f"({100 * (1 - cfg['continuous_fraction']):.0f}%) and uniform continuous directions "
        f"({100 * cfg['continuous_fraction']:.0f}%);",
        f"  every (number of predictions, number of references) in 0..{n} equally, active slots at random",
        f"  positions, padded entries uniform in [{PAD_RANGE[0]:g}, {PAD_RANGE[1]:g}]"
        + (f"; {100 * cfg.get('training_layout_fraction', 0):.0f}% of the matrices are in the DOAnet training "
           "layout instead" if cfg.get("training_layout_fraction") else "")
        + (f"; {100 * cfg['hard_fraction']:.0f}% are near-tie training-layout matrices (second-best association "
           f"within {cfg['hard_margin']:g} of the best, by rejection sampling)" if cfg.get("hard_fraction") else "")
        + ".",
        "- Targets: exact minimum-cost association on the active block (equal to scipy's Hungarian) and its",
        "  row/column maxima; loss = weighted sum of three BCEs, weights "
        f"{', '.join(f'{w:g}' for w in cfg['loss_weights'])}.",
        f"- Adam{clip}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, peak learning rate {cfg['lr']:g} "
        f"(warm-up {cfg['warmup_epochs']:g} epoch, cosine decay to {cfg['final_lr_fraction']:g} x peak)"
        + (f", starting from `{cfg['init_from']}`" if cfg.get("init_from") else "") + ".",
        f"- Training time: {info['train_seconds'] / 60:.1f} min on {info.get('hardware', 'CPU')}"
        f"{' (all stages)' if info.get('stages') else ''}; best epoch by validation F1.",
        "",
        "## Accuracy against the exact Hungarian association",
        f"Fresh matrices ({info['eval_size']} per row, seeds never used in training), threshold 0.5.",
        "'generator' = the training-data layout; 'training' = the DOAnet training layout (all N prediction rows",
        "active, references padded with the constant 10); 'grid' / 'continuous' = direction sampling.",
        f"'away from ties' excludes matrices whose second-best association costs < {NEAR_TIE_MARGIN} more.",
        "",
        "'optimal match' also accepts another optimal association where several exist (exact ties, frequent",
        "on coarse grids: identical directions, poles).",
        "",
        "| layout / directions | weighted F1 | exact match | optimal match | exact match away from ties | "
        "near-tie share |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in info["metrics"].items():
        lines.append(f"| {name} | {100 * m['f1']:.3f}% | {100 * m['exact_match']:.3f}% | "
                     f"{100 * m['optimal_match']:.3f}% | {100 * m['exact_match_away_from_ties']:.3f}% | "
                     f"{100 * m['near_tie_fraction']:.2f}% |")
    if info.get("stages"):
        lines += ["", "## Training stages"]
        lines += [f"- {st['what']}: {st['epochs']} epochs, {st['seconds'] / 60:.1f} min" for st in info["stages"]]
    lines += ["", "## Reproduce", "```", info["command"], "```", ""]
    return "\n".join(lines)


def _architecture_text(cfg: dict) -> str:
    """One line describing the network of a training config (older configs lack the newer options)."""
    relative = cfg.get("relative_inputs", False)
    scale = cfg.get("input_scale", 1.0)
    inputs = "[D, D - column minima, D - row minima]" if relative else "D"
    text = f"min(D, 3) -> {inputs}{f' x {scale:g}' if scale != 1.0 else ''} -> "
    text += f"{'bidirectional ' if cfg.get('bidirectional') else ''}GRU({cfg['units']}, rows as time steps) "
    text += "-> single-head self-attention -> "
    text += "".join(f"Dense({cfg['units']}, relu) -> " for _ in range(cfg.get("head_layers", 0)))
    return text + "Dense(N) logits"


def run_hnet_training(cfg: HnetTrainConfig, out_dir, work_dir, cache_dir="cache/hnet", resume: bool = False,
                      eval_size: int = 100_000, command: str = "") -> Path:
    """Train (or resume), evaluate the best model on fresh matrices of every layout, print the table and
    export to out_dir (see :func:`export_hnet`). Returns out_dir."""
    model, info = train_hnet(cfg, work_dir, cache_dir=cache_dir, resume=resume)
    info["metrics"] = evaluate_hnet(model, cfg.n_max, size=eval_size)
    info["eval_size"] = eval_size
    info["command"] = command
    info["hardware"] = f"{os.cpu_count()} CPU cores (shared), TensorFlow {tf.__version__}"
    for name, m in info["metrics"].items():
        print(f"{name:24s} F1 {100 * m['f1']:.3f}%  exact {100 * m['exact_match']:.3f}%  "
              f"optimal {100 * m['optimal_match']:.3f}%  away-from-ties {100 * m['exact_match_away_from_ties']:.3f}%")
    return export_hnet(model, out_dir, info)
