"""DOAnet training with differentiable tracking losses (paper III-B, DESIGN 5 and 8).

- :class:`DoaTrainer`: a ``keras.Model`` wrapping DOAnet and the frozen Hnet, with custom ``train_step`` /
  ``test_step`` (Keras' "customizing fit()" pattern), a ``keras.metrics.Mean`` tracker per loss term, losses
  scaled by the global batch size so that it trains under ``tf.distribute`` strategies.
- :func:`make_strategy`: default / mirrored / multiworker (``TF_CONFIG``).
- :func:`train`: the main job (``scripts/train.py``): data -> fit with validation metrics, TensorBoard and
  checkpoints -> test-split evaluation -> export; :func:`load_trained` reads a run folder back.

Run folder layout (``out``)::

    run_config.json     feature_config, doanet_config, loss_config, train (TrainSettings), data_dir, hnet
    best.keras          DOAnet only (with its normalisation layer), best validation LE so far
    ckpt/               tf.train.Checkpoint of DOAnet + optimizer + epoch + best LE (resume)
    tb/                 TensorBoard: train/ and validation/ scalars per epoch (every loss term, val LE/LR/MOTA/...),
                        images/ predicted vs reference azimuth/elevation of one validation file
    val_tracks.png      the latest of those images
    predictions/        DCASE CSVs of the test split (frame, 0, slot, azimuth, elevation)
    test_metrics.json   metrics of the test split (dtbt_tf.metrics.METRIC_KEYS)
    export/1/           SavedModel (TF Serving layout): serving_default features (B, T, 64, C) and from_audio
                        audio (B, samples, 4) -> doa, activity (dtbt_tf.export)
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from dtbt_tf.config import (TRAIN_PRESETS, ConfigError, DoanetConfig, FeatureConfig, LossConfig,
                            atomic_write_text, from_dict, load_json, save_json)
from dtbt_tf.data.dcase import DataError, Metadata, write_metadata
from dtbt_tf.losses import loss_terms, term_names
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import SAVED_MODELS_DIR, hnet_n_max, load_hnet

STRATEGIES = ("default", "mirrored", "multiworker")
RUN_CONFIG = "run_config.json"
BEST_MODEL = "best.keras"
SPLITS = ("train", "val", "test")
VAL_KEYS = ("LE", "LR", "LP", "LF1", "MOTA", "IDS")  # validation metrics logged per epoch
SCHEDULES = ("constant", "cosine")
COSINE_FINAL_FRACTION = 0.05
DEFAULT_SEQ_HOP = 125  # feature frames between training windows (2.5 s: windows overlap by half)


class DoaTrainer(keras.Model):
    """DOAnet + frozen Hnet + the losses of ``loss_cfg``; ``fit`` / ``evaluate`` on
    ``(features (B, T, 64, C), {"doa", "active", "track_id"})`` batches.

    Only DOAnet's weights are trained: the Hnet is set ``trainable = False`` and called in inference mode, but
    gradients flow through it into DOAnet. The Hnet may be None for losses that do not use it (mse, pit).
    ``call`` returns DOAnet's outputs. Metrics: one Mean per term of :func:`dtbt_tf.losses.term_names`
    ("loss" = the weighted total), averaged over sequences (across replicas too).
    """

    def __init__(self, doanet: keras.Model, hnet: keras.Model | None, loss_cfg: LossConfig, **kwargs):
        super().__init__(**kwargs)
        n_max = int(doanet.output["activity"].shape[-1])
        needs_hnet = loss_cfg.name in ("dmotp", "dmotp_act", "full")
        if needs_hnet and hnet is None:
            raise ConfigError(f"loss {loss_cfg.name!r} needs an Hnet")
        if hnet is not None:
            if hnet_n_max(hnet) != n_max:
                raise ConfigError(f"Hnet was trained for n_max={hnet_n_max(hnet)}, but DOAnet has n_max={n_max}")
            hnet.trainable = False
        self.doanet = doanet
        self.hnet = hnet if needs_hnet else None
        self.loss_cfg = loss_cfg
        self.trackers = [keras.metrics.Mean(name=n) for n in term_names(loss_cfg)]
        self.built = True  # both wrapped models are built functional models

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' symbolic build has nothing to build here, except an optimizer not built yet. Skipping it also
        avoids its cross-replica MEAN of a whole input batch, which MultiWorkerMirroredStrategy rejects (nested
        batches are not reducible there; Keras 3.15)."""
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.doanet.trainable_variables)

    def call(self, features, training=False):
        return self.doanet(features, training=training)

    @property
    def metrics(self):
        return list(self.trackers)

    def _terms(self, data, training: bool) -> dict:
        features, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self.doanet(features, training=training)
        return loss_terms(outputs, labels, self.hnet, self.loss_cfg)

    def _update(self, terms: dict) -> dict:
        for m in self.trackers:
            m.update_state(terms[m.name])
        logs = {m.name: m.result() for m in self.trackers}
        if _multi_worker(self.distribute_strategy):
            # Keras 3 reduces step outputs across workers as a MEAN over axis 0, which fails on scalars
            # (tensorflow/tensorflow#72388): give them that axis (the values are equal on every worker)
            logs = {k: v[None] for k, v in logs.items()}
        return logs

    def train_step(self, data):
        variables = self.doanet.trainable_variables
        with tf.GradientTape() as tape:
            terms = self._terms(data, training=True)
            # sum over this replica's sequences / global batch size: the all-reduced gradient is the batch mean
            loss = tf.nn.compute_average_loss(terms["loss"])
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        # losses without an activity term (mse, dmotp) leave the activity head without gradient: skip it
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update(terms)

    def test_step(self, data):
        return self._update(self._terms(data, training=False))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local devices; two logical CPUs are enough to test it) or
    ``multiworker`` (MultiWorkerMirroredStrategy configured by the ``TF_CONFIG`` environment variable)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


# ----------------------------------------------------------------------------------------------------------
# The training job


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains (saved in run_config.json). Frames are feature frames (5 per label frame).

    seq_hop: step between training windows of ``FeatureConfig.seq_frames`` (250) frames; a hop below 250 gives
    overlapping windows, i.e. more (correlated) training sequences per epoch (window borders also move by a
    random offset per file and epoch). schedule: 'constant' lr or 'cosine' decay from lr to
    ``COSINE_FINAL_FRACTION * lr`` over all the steps of ``epochs`` (a resumed run with more epochs stretches
    it from where it is). threshold: activity threshold at inference. seed: initialisation and
    data order (the synthetic dataset always uses its own seed 0). preset: synthetic dataset used when no data
    is given.
    """

    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "cosine"
    seq_hop: int = DEFAULT_SEQ_HOP
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    threshold: float = 0.5
    preset: str = "quick"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"epochs, batch_size must be >= 1 and lr > 0 (got {self.epochs}, {self.batch_size}, "
                              f"{self.lr})")
        if self.seq_hop < 5 or self.seq_hop % 5:
            raise ConfigError(f"seq_hop must be a positive multiple of 5 feature frames, got {self.seq_hop}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.preset not in TRAIN_PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; expected one of {sorted(TRAIN_PRESETS)}")

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides) -> "TrainSettings":
        """Settings of a named preset (dtbt_tf.config.TRAIN_PRESETS: epochs, batch size, lr), None overrides
        ignored."""
        if preset not in TRAIN_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
        p = TRAIN_PRESETS[preset]
        base = dict(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, preset=preset)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def resolve_data(data: str | None, fmt: str, n_max: int, preset: str = "quick", seed: int = 0,
                 progress: bool = True, extract: bool = True) -> str:
    """A TFRecord feature folder for ``data``: the folder itself if it holds a manifest.json; for a
    DCASE-layout root, ``<root>_features_<fmt>_n<N>`` next to it, extracted or reused (finished shards are
    kept; the plan is checked against the root again, so added or changed recordings are picked up); None: the
    synthetic ``preset`` dataset with up to ``n_max`` overlapping sources (made or reused) and its feature
    folder. ``extract=False`` (multi-worker non-chief) uses a finished feature folder as it is and extracts only
    when there is none (another file system)."""
    from dtbt_tf.data.tfrecord import MANIFEST, extract_dataset

    if data is None:
        from dtbt_tf.data.synth import make_dataset, synthetic_preset_for

        data = make_dataset(synthetic_preset_for(preset, n_max), fmt=fmt, seed=seed, progress=progress)
    data = os.path.normpath(data)
    if not os.path.isdir(data):
        raise DataError(f"{data}: data folder not found")
    if os.path.isfile(os.path.join(data, MANIFEST)):
        return data
    if not any(os.path.isdir(os.path.join(data, f"{fmt}_{s}")) for s in ("dev", "eval")):
        raise DataError(f"{data}: neither a feature folder (no {MANIFEST}) nor a DCASE-layout root with {fmt}_dev/")
    out = f"{data}_features_{fmt}_n{n_max}"
    if extract or not os.path.isfile(os.path.join(out, MANIFEST)):
        extract_dataset(data, fmt, out, n_max=n_max, progress=progress)
    return out


def _check_data(data_dir: str, feature_cfg: FeatureConfig, n_max: int) -> dict:
    from dtbt_tf.data.pipeline import check_manifest, load_manifest

    manifest = load_manifest(data_dir)
    check_manifest(manifest, feature_cfg, n_max, data_dir)
    for split in SPLITS:
        info = manifest["splits"].get(split)
        if not info or not info.get("n_files"):
            raise DataError(f"{data_dir}: split {split!r} is empty")
    return manifest


def _load_hnet_for(path: str | None, loss_cfg: LossConfig, n_max: int):
    """The frozen Hnet for losses that use it (None for mse / pit); default path saved_models/hnet_n{N}."""
    if loss_cfg.name in ("mse", "pit"):
        return None, None
    path = path or str(SAVED_MODELS_DIR / f"hnet_n{n_max}")
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no Hnet for n_max={n_max} (train one with scripts/train_hnet.py "
                          f"--n-max {n_max} or pass --hnet)")
    return load_hnet(path, n_max=n_max, temperature=loss_cfg.hnet_temperature), os.path.abspath(path)


def predict_features(model: keras.Model, features: np.ndarray, window: int, predict_fn=None, max_batch: int = 32):
    """DOAnet outputs of a whole recording: windows of ``window`` feature frames with 50% overlap, centres
    stitched (the scheme of :func:`dtbt_tf.inference.localize`, so training-time evaluation equals infer.py).

    features: (T, n_mels, C) raw; predict_fn: a compiled ``x -> model(x)`` (default: :func:`predict_function`);
    windows go through it ``max_batch`` at a time. Returns doa (T // 5, N, 3), activity (T // 5, N) NumPy.
    """
    from dtbt_tf.inference import window_plan

    hop_t = 5
    n_label = features.shape[0] // hop_t
    win = window // hop_t
    plan = window_plan(n_label, win)
    n_max = int(model.output["activity"].shape[-1])
    doa = np.zeros((n_label, n_max, 3), np.float32)
    act = np.zeros((n_label, n_max), np.float32)
    if not plan:
        return doa, act
    predict_fn = predict_fn or predict_function(model)
    need = (plan[-1][0] + win) * hop_t
    src = np.zeros((need,) + features.shape[1:], np.float32)
    src[: n_label * hop_t] = features[: n_label * hop_t]
    for b in range(0, len(plan), max_batch):
        chunk = plan[b:b + max_batch]
        out = predict_fn(tf.constant(np.stack([src[s * hop_t:(s + win) * hop_t] for s, _, _ in chunk])))
        for (s, lo, hi), di, ai in zip(chunk, out["doa"].numpy(), out["activity"].numpy()):
            doa[lo:hi] = di[lo - s:hi - s]
            act[lo:hi] = ai[lo - s:hi - s]
    return doa, act


def predict_function(model: keras.Model):
    """``model(x, training=False)`` as a tf.function for any batch and length (traced once)."""
    shape = [None, None, *model.input_shape[2:]]
    return tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)],
                       autograph=False)


def evaluate_split(model: keras.Model, data_dir: str, split: str, window: int, threshold: float | None,
                   csv_dir: str | None = None, predict_fn=None):
    """Metrics (dtbt_tf.metrics.compute_metrics) of ``model`` on the whole recordings of a split.

    threshold: activity threshold, None = every slot counts in every frame (losses without activity). With
    ``csv_dir``, one DCASE CSV per recording (frame, 0, slot, azimuth, elevation) is written there.
    predict_fn: see :func:`predict_features`. Returns (metrics, {name: (doa, activity, labels)}) for the first recording (for plots).
    """
    from dtbt_tf.data.pipeline import iter_recordings
    from dtbt_tf.metrics import compute_metrics, tracks_from_labels, tracks_from_outputs

    fn = predict_fn or predict_function(model)
    pred, ref, first = {}, {}, {}
    for name, feats, labels in iter_recordings(data_dir, split):
        if not np.all(np.isfinite(feats)):
            raise DataError(f"{data_dir}: recording {name} ({split}) has NaN or Inf features")
        doa, act = predict_features(model, feats, window, fn)
        pred[name] = tracks_from_outputs(doa, None if threshold is None else act, threshold or 0.5)
        ref[name] = tracks_from_labels(labels["doa"], labels["active"], labels["track_id"])
        if not first:
            first[name] = (doa, act, labels)
        if csv_dir is not None:
            p = pred[name]  # ident = regressor slot
            write_metadata(os.path.join(csv_dir, f"{name}.csv"), Metadata(p.frame, 0 * p.frame, p.ident, p.doa))
    if not ref:
        raise DataError(f"{data_dir}: split {split!r} is empty")
    return compute_metrics(pred, ref), first


def _tracks_png(path: str, name: str, doa, act, labels, threshold, title: str) -> None:
    from dtbt_tf.inference import outputs_to_metadata, plot_tracks

    meta = outputs_to_metadata(doa, act if threshold is not None else np.ones_like(act),
                               threshold if threshold is not None else 0.5)
    frame, slot = np.nonzero(labels["active"] > 0.5)
    ref = Metadata(frame.astype(np.int64), np.zeros(frame.size, np.int64),
                   labels["track_id"][frame, slot].astype(np.int64), labels["doa"][frame, slot].astype(np.float64))
    plot_tracks(meta, path, ref=ref, title=f"{name}: {title}", n_frames=len(act))


class RunCallback(keras.callbacks.Callback):
    """Per epoch: validation metrics on whole recordings (added to the logs as val_LE, val_LR, ...), a track
    image to TensorBoard, best.keras by validation LE, and the resumable checkpoint. Files are written by the
    chief only (other workers checkpoint into a temporary folder, as tf.distribute requires)."""

    def __init__(self, run_dir, data_dir, doanet, ckpt, manager, window, threshold, chief: bool):
        super().__init__()
        self.run_dir, self.data_dir, self.doanet = run_dir, data_dir, doanet
        self.ckpt, self.manager, self.window, self.threshold, self.chief = ckpt, manager, window, threshold, chief
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "tb", "images")) if chief else None
        self.predict_fn = predict_function(doanet)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.chief:
            metrics, first = evaluate_split(self.doanet, self.data_dir, "val", self.window, self.threshold,
                                            predict_fn=self.predict_fn)
            for k in VAL_KEYS:
                logs[f"val_{k}"] = float(metrics[k])
            le = metrics["LE"] if not math.isnan(metrics["LE"]) else 180.0  # nothing detected: worst possible
            if le < float(self.ckpt.best_le.numpy()):
                self.ckpt.best_le.assign(le)
                self.ckpt.best_epoch.assign(epoch + 1)
                tmp = os.path.join(self.run_dir, f".best.tmp{os.getpid()}.keras")
                self.doanet.save(tmp)
                os.replace(tmp, os.path.join(self.run_dir, BEST_MODEL))
            (name, (doa, act, labels)), = first.items()
            png = os.path.join(self.run_dir, "val_tracks.png")
            _tracks_png(png, name, doa, act, labels, self.threshold,
                        f"epoch {epoch + 1}, val LE {metrics['LE']:.1f} deg, LR {100 * metrics['LR']:.0f}%")
            with self.writer.as_default():
                image = tf.image.decode_png(tf.io.read_file(png), channels=3)[None]
                tf.summary.image("validation_tracks", image, step=epoch + 1)
            self.writer.flush()
            logs["val_best_LE"] = float(self.ckpt.best_le.numpy())
        self.ckpt.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def _checkpoint(run_dir, doanet, optimizer, chief):
    ckpt = tf.train.Checkpoint(model=doanet, optimizer=optimizer, epoch=tf.Variable(0, dtype=tf.int64),
                               best_le=tf.Variable(math.inf, dtype=tf.float64),
                               best_epoch=tf.Variable(0, dtype=tf.int64))
    directory = os.path.join(run_dir, "ckpt") if chief else tempfile.mkdtemp(prefix="dtbt_ckpt_worker")
    return ckpt, tf.train.CheckpointManager(ckpt, directory, max_to_keep=2)


def load_trained(run_dir: str):
    """(DOAnet keras.Model from best.keras, FeatureConfig, DoanetConfig, LossConfig) of a training run folder."""
    cfg = load_json(os.path.join(run_dir, RUN_CONFIG))
    try:
        feature_cfg = from_dict(FeatureConfig, cfg["feature_config"])
        doanet_cfg = from_dict(DoanetConfig, cfg["doanet_config"])
        loss_cfg = from_dict(LossConfig, cfg["loss_config"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{os.path.join(run_dir, RUN_CONFIG)}: malformed run config ({e})") from None
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: not found (the run has not finished an epoch)")
    model = keras.saving.load_model(path, compile=False)
    return model, feature_cfg, doanet_cfg, loss_cfg


def sequences_per_epoch(manifest: dict, split: str, seq_frames: int, seq_hop: int, label_hop: int = 5) -> int:
    """Expected number of training windows of a split per epoch (random offsets: about 1.5 windows per file
    beyond (frames - window) / hop), used as the epoch length of the repeated training dataset."""
    info = manifest["splits"][split]
    win, hop = seq_frames // label_hop, seq_hop // label_hop
    n = (info["n_label_frames"] - info["n_files"] * win) / hop + 1.5 * info["n_files"]
    return max(info["n_files"], int(round(n)))


def _dataset(data_dir, split, settings: TrainSettings, feature_cfg: FeatureConfig, training: bool):
    from dtbt_tf.data.pipeline import make_sequence_dataset

    ds = make_sequence_dataset(data_dir, split, settings.batch_size, shuffle=training, seed=settings.seed,
                               repeat=training, seq_frames=feature_cfg.seq_frames,
                               seq_hop=settings.seq_hop if training else feature_cfg.seq_frames)
    ds = ds.map(lambda x, y: (tf.debugging.check_numerics(x, f"{data_dir}: {split} features contain NaN or Inf"), y))
    options = tf.data.Options()  # multi-worker: every worker reads all shards, keeps its share of the batches
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    if not training:  # a known length keeps Keras from warning at the end of every validation pass
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(ds.reduce(0, lambda n, _: n + 1))))
    return ds


def _learning_rate(settings: TrainSettings, steps_per_epoch: int):
    if settings.schedule == "constant":
        return settings.lr
    return keras.optimizers.schedules.CosineDecay(settings.lr, settings.epochs * steps_per_epoch,
                                                  alpha=COSINE_FINAL_FRACTION)


def default_run_dir(fmt: str, loss: str) -> str:
    return os.path.join("runs", f"{fmt}_{loss}_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")


def _multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy spanning several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001  (no public test for it)


def _barrier(strategy) -> None:
    """Block until every worker of a multi-worker strategy gets here (a one-number all-reduce)."""
    if _multi_worker(strategy):
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


@dataclass
class _Run:
    """The resolved configuration of a run (new or resumed)."""

    out: str
    feature_cfg: FeatureConfig
    doanet_cfg: DoanetConfig
    loss_cfg: LossConfig
    settings: TrainSettings
    hnet: str | None
    data: str | None  # as given (None: synthetic preset)
    data_dir: str | None  # the feature folder, once known


def _resolve_run(data, fmt, loss_cfg, hnet, n_max, settings, out, resume, doanet_cfg) -> _Run:
    if resume:
        if not out or not os.path.isfile(os.path.join(out, RUN_CONFIG)):
            raise ConfigError(f"{out}: no {RUN_CONFIG} to resume from")
        saved = load_json(os.path.join(out, RUN_CONFIG))
        try:
            return _Run(out, from_dict(FeatureConfig, saved["feature_config"]),
                        from_dict(DoanetConfig, saved["doanet_config"]), from_dict(LossConfig, saved["loss_config"]),
                        dataclasses.replace(from_dict(TrainSettings, saved["train"]), epochs=settings.epochs),
                        saved["hnet"], saved["data_dir"], saved["data_dir"])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{os.path.join(out, RUN_CONFIG)}: malformed run config ({e})") from None
    loss_cfg = loss_cfg or LossConfig()
    doanet_cfg = doanet_cfg or DoanetConfig(fmt=fmt, n_max=n_max)
    if (doanet_cfg.fmt, doanet_cfg.n_max) != (fmt, n_max):
        raise ConfigError(f"doanet_cfg is for {doanet_cfg.fmt}/n_max={doanet_cfg.n_max}, not {fmt}/{n_max}")
    out = out or default_run_dir(fmt, loss_cfg.name)
    if os.path.isfile(os.path.join(out, RUN_CONFIG)):
        raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    return _Run(out, FeatureConfig(fmt=fmt, n_mels=doanet_cfg.n_mels), doanet_cfg, loss_cfg, settings, hnet, data,
                None)


def train(data: str | None = None, fmt: str = "foa", loss_cfg: LossConfig | None = None, hnet: str | None = None,
          n_max: int = 2, settings: TrainSettings | None = None, out: str | None = None, resume: bool = False,
          doanet_cfg: DoanetConfig | None = None, verbose="auto", log=print) -> dict:
    """The main job: train DOAnet on ``data`` with ``loss_cfg``, evaluate the test split, export. Returns
    {"run_dir", "test_metrics", "best_epoch", "best_val_LE"} ("test_metrics" on the chief only).

    data: TFRecord feature folder, DCASE-layout root (features extracted next to it) or None (the synthetic
    ``settings.preset`` set). hnet: Hnet folder/.keras (default saved_models/hnet_n{N}; unused by mse and pit).
    out: run folder (default runs/<fmt>_<loss>_<timestamp>). resume: continue the run in ``out`` from its
    last checkpoint up to ``settings.epochs`` epochs; the run's saved configs are used, the other arguments
    (except ``settings.epochs``) are ignored. Multi-worker: the chief (worker 0) prepares the data while the
    others wait, and only the chief writes the run folder. Raises ConfigError / DataError (one line) on bad input.
    """
    settings = settings or TrainSettings()
    run = _resolve_run(data, fmt, loss_cfg, hnet, n_max, settings, out, resume, doanet_cfg)
    settings, out = run.settings, run.out
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(settings.strategy)  # first: collective ops must be configured before other TF ops
    chief = _is_chief(strategy)
    if not chief:
        _barrier(strategy)
    hnet_model, hnet_path = _load_hnet_for(run.hnet, run.loss_cfg, run.doanet_cfg.n_max)
    if run.data_dir is None:
        run.data_dir = resolve_data(run.data, run.feature_cfg.fmt, run.doanet_cfg.n_max, settings.preset,
                                    progress=verbose != 0, extract=chief)
    manifest = _check_data(run.data_dir, run.feature_cfg, run.doanet_cfg.n_max)
    if chief:
        _barrier(strategy)
    mean, std = _normalization(manifest, run.data_dir)
    n_seq = sequences_per_epoch(manifest, "train", run.feature_cfg.seq_frames, settings.seq_hop)
    steps = max(1, math.ceil(n_seq / settings.batch_size))
    if chief:
        os.makedirs(out, exist_ok=True)
        save_json({"feature_config": run.feature_cfg, "doanet_config": run.doanet_cfg, "loss_config": run.loss_cfg,
                   "train": settings, "data_dir": os.path.abspath(run.data_dir), "hnet": hnet_path},
                  os.path.join(out, RUN_CONFIG))
    keras.utils.set_random_seed(settings.seed)
    with strategy.scope():
        doanet = build_doanet(run.doanet_cfg, mean, std)
        trainer = DoaTrainer(doanet, hnet_model, run.loss_cfg)
        trainer.compile(optimizer=keras.optimizers.Adam(_learning_rate(settings, steps)),
                        jit_compile=settings.jit_compile)
        trainer.optimizer.build(doanet.trainable_variables)
        ckpt, manager = _checkpoint(out, doanet, trainer.optimizer, chief)
        if resume and manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            log(f"resuming {out} after epoch {int(ckpt.epoch.numpy())} "
                f"(best val LE {float(ckpt.best_le.numpy()):.2f} deg)")
    initial_epoch = int(ckpt.epoch.numpy())
    threshold = settings.threshold if run.loss_cfg.uses_activity else None
    if initial_epoch < settings.epochs:
        callbacks = [RunCallback(out, run.data_dir, doanet, ckpt, manager, run.feature_cfg.seq_frames, threshold,
                                 chief)]
        if chief:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False))
        log(f"training {run.loss_cfg.name} on {run.data_dir}: ~{n_seq} sequences per epoch ({steps} steps of "
            f"{settings.batch_size}), epochs {initial_epoch + 1}..{settings.epochs}, run folder {out}")
        try:
            train_ds = _dataset(run.data_dir, "train", settings, run.feature_cfg, training=True)
            # multi-worker: no validation loss pass (a partial last batch leaves some workers an empty batch,
            # which the model cannot take); the chief's whole-recording validation metrics still run
            val_ds = None if _multi_worker(strategy) else _dataset(run.data_dir, "val", settings, run.feature_cfg,
                                                                   training=False)
            trainer.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
        except tf.errors.InvalidArgumentError as e:
            if "NaN or Inf" in str(e):
                raise DataError(e.message.splitlines()[0].split(" : ")[0]) from None
            raise
    result = {"run_dir": out, "best_epoch": int(ckpt.best_epoch.numpy()), "best_val_LE": float(ckpt.best_le.numpy())}
    if chief:
        result["test_metrics"] = _finish(out, run, threshold, result["best_epoch"], log)
    return result


def _normalization(manifest: dict, data_dir: str):
    from dtbt_tf.data.pipeline import normalization_stats

    mean, std = normalization_stats(manifest)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise DataError(f"{data_dir}: training features contain NaN or Inf (non-finite normalisation statistics)")
    return mean, std


def _finish(out: str, run: _Run, threshold, best_epoch: int, log) -> dict:
    """Test split with best.keras -> predictions/ + test_metrics.json (printed as a table), then export/."""
    from dtbt_tf.metrics import format_table, metrics_to_json

    best, _, _, _ = load_trained(out)
    pred_dir = os.path.join(out, "predictions")
    tmp_dir = f"{pred_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    metrics, _ = evaluate_split(best, run.data_dir, "test", run.feature_cfg.seq_frames, threshold, csv_dir=tmp_dir)
    shutil.rmtree(pred_dir, ignore_errors=True)
    os.replace(tmp_dir, pred_dir)
    atomic_write_text(os.path.join(out, "test_metrics.json"), metrics_to_json(metrics))
    log(f"test split ({run.loss_cfg.name}, best epoch {best_epoch}):\n{format_table(metrics)}")
    from dtbt_tf.export import export_saved_model  # TF Serving layout export/1/: serving_default + from_audio

    export_saved_model(out, os.path.join(out, "export"), version=1, overwrite=True)
    log(f"run folder: {out} (best.keras, export/, predictions/, tb/)")
    return metrics
