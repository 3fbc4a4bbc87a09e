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
    export/             SavedModel, serving_default: features (B, T, 64, C) -> doa, activity
"""
from __future__ import annotations

import dataclasses
import datetime
import json
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
        return {m.name: m.result() for m in self.trackers}

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
    random offset per file and epoch). threshold: activity threshold at inference.
    """

    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
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
                 progress: bool = True) -> str:
    """A TFRecord feature folder for ``data``: the folder itself if it holds a manifest.json; for a
    DCASE-layout root, ``<root>_features_<fmt>_n<N>`` next to it, extracted or reused (finished shards are
    kept); None: the synthetic ``preset`` dataset (made or reused) and its feature folder."""
    from dtbt_tf.data.tfrecord import MANIFEST, extract_dataset

    if data is None:
        from dtbt_tf.data.synth import make_dataset

        data = make_dataset(preset, fmt=fmt, seed=seed, progress=progress)
    data = os.path.normpath(data)
    if not os.path.isdir(data):
        raise DataError(f"{data}: data folder not found")
    if os.path.isfile(os.path.join(data, MANIFEST)):
        return data
    if not any(os.path.isdir(os.path.join(data, f"{fmt}_{s}")) for s in ("dev", "eval")):
        raise DataError(f"{data}: neither a feature folder (no {MANIFEST}) nor a DCASE-layout root with {fmt}_dev/")
    out = f"{data}_features_{fmt}_n{n_max}"
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
    return load_hnet(path, n_max=n_max), os.path.abspath(path)


def predict_features(model: keras.Model, features: np.ndarray, window: int, predict_fn=None):
    """DOAnet outputs of a whole recording: windows of ``window`` feature frames with 50% overlap, centres
    stitched (the scheme of :func:`dtbt_tf.inference.localize`, so training-time evaluation equals infer.py).

    features: (T, n_mels, C) raw. Returns doa (T // 5, N, 3), activity (T // 5, N) as NumPy arrays.
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
    need = (plan[-1][0] + win) * hop_t
    src = np.zeros((need,) + features.shape[1:], np.float32)
    src[: n_label * hop_t] = features[: n_label * hop_t]
    x = np.stack([src[s * hop_t:(s + win) * hop_t] for s, _, _ in plan])
    out = (predict_fn or model)(tf.constant(x))
    d, a = out["doa"].numpy(), out["activity"].numpy()
    for (s, lo, hi), di, ai in zip(plan, d, a):
        doa[lo:hi] = di[lo - s:hi - s]
        act[lo:hi] = ai[lo - s:hi - s]
    return doa, act


def _predict_fn(model):
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def evaluate_split(model: keras.Model, data_dir: str, split: str, window: int, threshold: float | None,
                   csv_dir: str | None = None):
    """Metrics (dtbt_tf.metrics.compute_metrics) of ``model`` on the whole recordings of a split.

    threshold: activity threshold, None = every slot counts in every frame (losses without activity). With
    ``csv_dir``, one DCASE CSV per recording (frame, 0, slot, azimuth, elevation) is written there.
    Returns (metrics, {name: (doa, activity, labels)}) for the first recording (for plots).
    """
    from dtbt_tf.data.pipeline import iter_recordings
    from dtbt_tf.metrics import compute_metrics, tracks_from_labels, tracks_from_outputs

    fn = _predict_fn(model)
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

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.chief:
            metrics, first = evaluate_split(self.doanet, self.data_dir, "val", self.window, self.threshold)
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


def export_saved_model(model: keras.Model, out_dir: str, n_channels: int, n_mels: int = 64) -> str:
    """A plain SavedModel of DOAnet: ``serving_default`` takes ``features`` float32 (batch, T, n_mels, C) (T a
    multiple of 5, raw features: the normalisation is inside) and returns ``doa`` and ``activity``.
    Written to a temporary folder and renamed. Returns out_dir."""
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, None, n_mels, n_channels], tf.float32, name="features")])
    def serve(features):
        out = model(features, training=False)
        return {"doa": out["doa"], "activity": out["activity"]}

    module.serve = serve
    tmp = f"{out_dir.rstrip(os.sep)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


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
    if not training:  # a known length keeps Keras from warning at the end of every validation pass
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(ds.reduce(0, lambda n, _: n + 1))))
    return ds


def default_run_dir(fmt: str, loss: str) -> str:
    return os.path.join("runs", f"{fmt}_{loss}_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")


def train(data: str | None = None, fmt: str = "foa", loss_cfg: LossConfig | None = None, hnet: str | None = None,
          n_max: int = 2, settings: TrainSettings | None = None, out: str | None = None, resume: bool = False,
          doanet_cfg: DoanetConfig | None = None, verbose="auto", log=print) -> dict:
    """The main job: train DOAnet on ``data`` with ``loss_cfg``, evaluate the test split, export. Returns
    {"run_dir", "test_metrics", "best_epoch", "best_val_LE"}.

    data: TFRecord feature folder, DCASE-layout root (features extracted next to it) or None (the synthetic
    ``settings.preset`` set). hnet: Hnet folder/.keras (default saved_models/hnet_n{N}; unused by mse and pit).
    out: run folder (default runs/<fmt>_<loss>_<timestamp>). resume: continue the run in ``out`` from its
    last checkpoint up to ``settings.epochs`` epochs; the run's saved configs are used, the other arguments
    (except ``settings.epochs``) are ignored. Raises ConfigError / DataError (one line) on bad input.
    """
    from dtbt_tf.data.pipeline import normalization_stats
    from dtbt_tf.metrics import format_table, metrics_to_json

    settings = settings or TrainSettings()
    if resume:
        if not out or not os.path.isfile(os.path.join(out, RUN_CONFIG)):
            raise ConfigError(f"{out}: no {RUN_CONFIG} to resume from")
        saved = load_json(os.path.join(out, RUN_CONFIG))
        feature_cfg = from_dict(FeatureConfig, saved["feature_config"])
        doanet_cfg = from_dict(DoanetConfig, saved["doanet_config"])
        loss_cfg = from_dict(LossConfig, saved["loss_config"])
        settings = dataclasses.replace(from_dict(TrainSettings, saved["train"]), epochs=settings.epochs)
        data_dir, hnet, n_max = saved["data_dir"], saved["hnet"], doanet_cfg.n_max
    else:
        loss_cfg = loss_cfg or LossConfig()
        doanet_cfg = doanet_cfg or DoanetConfig(fmt=fmt, n_max=n_max)
        if (doanet_cfg.fmt, doanet_cfg.n_max) != (fmt, n_max):
            raise ConfigError(f"doanet_cfg is for {doanet_cfg.fmt}/n_max={doanet_cfg.n_max}, not {fmt}/{n_max}")
        feature_cfg = FeatureConfig(fmt=fmt, n_mels=doanet_cfg.n_mels)
        out = out or default_run_dir(fmt, loss_cfg.name)
        if os.path.isfile(os.path.join(out, RUN_CONFIG)):
            raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
        data_dir = None
    hnet_model, hnet_path = _load_hnet_for(hnet, loss_cfg, n_max)
    if data_dir is None:
        data_dir = resolve_data(data, fmt, n_max, settings.preset, settings.seed, progress=verbose != 0)
    manifest = _check_data(data_dir, feature_cfg, n_max)
    mean, std = normalization_stats(manifest)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise DataError(f"{data_dir}: training features contain NaN or Inf (non-finite normalisation statistics)")

    keras.utils.set_random_seed(settings.seed)
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(settings.strategy)
    chief = _is_chief(strategy)
    if chief:
        os.makedirs(out, exist_ok=True)
        save_json({"feature_config": feature_cfg, "doanet_config": doanet_cfg, "loss_config": loss_cfg,
                   "train": settings, "data_dir": os.path.abspath(data_dir), "hnet": hnet_path},
                  os.path.join(out, RUN_CONFIG))
    with strategy.scope():
        doanet = build_doanet(doanet_cfg, mean, std)
        trainer = DoaTrainer(doanet, hnet_model, loss_cfg)
        trainer.compile(optimizer=keras.optimizers.Adam(settings.lr), jit_compile=settings.jit_compile)
        trainer.optimizer.build(doanet.trainable_variables)
        ckpt, manager = _checkpoint(out, doanet, trainer.optimizer, chief)
        initial_epoch = 0
        if resume and manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            initial_epoch = int(ckpt.epoch.numpy())
            log(f"resuming {out} after epoch {initial_epoch} (best val LE {float(ckpt.best_le.numpy()):.2f} deg)")
    threshold = settings.threshold if loss_cfg.uses_activity else None
    callbacks = [RunCallback(out, data_dir, doanet, ckpt, manager, feature_cfg.seq_frames, threshold, chief)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tb"), write_graph=False))
    if initial_epoch < settings.epochs:
        n_seq = sequences_per_epoch(manifest, "train", feature_cfg.seq_frames, settings.seq_hop)
        steps = max(1, math.ceil(n_seq / settings.batch_size))
        log(f"training {loss_cfg.name} on {data_dir}: ~{n_seq} sequences per epoch ({steps} steps of "
            f"{settings.batch_size}), epochs {initial_epoch + 1}..{settings.epochs}, run folder {out}")
        try:
            train_ds = _dataset(data_dir, "train", settings, feature_cfg, training=True)
            val_ds = _dataset(data_dir, "val", settings, feature_cfg, training=False)
            trainer.fit(train_ds, validation_data=val_ds, epochs=settings.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
        except tf.errors.InvalidArgumentError as e:
            if "NaN or Inf" in str(e):
                raise DataError(e.message.splitlines()[0].split(" : ")[0]) from None
            raise
    result = {"run_dir": out, "best_epoch": int(ckpt.best_epoch.numpy()),
              "best_val_LE": float(ckpt.best_le.numpy())}
    if not chief:
        return result
    best, _, _, _ = load_trained(out)
    pred_dir = os.path.join(out, "predictions")
    tmp_dir = f"{pred_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    metrics, _ = evaluate_split(best, data_dir, "test", feature_cfg.seq_frames, threshold, csv_dir=tmp_dir)
    shutil.rmtree(pred_dir, ignore_errors=True)
    os.replace(tmp_dir, pred_dir)
    atomic_write_text(os.path.join(out, "test_metrics.json"), metrics_to_json(metrics))
    log(f"test split ({loss_cfg.name}, best epoch {result['best_epoch']}):\n{format_table(metrics)}")
    export_saved_model(best, os.path.join(out, "export"), feature_cfg.n_channels, feature_cfg.n_mels)
    log(f"run folder: {out} (best.keras, export/, predictions/, tb/)")
    return {**result, "test_metrics": metrics}
