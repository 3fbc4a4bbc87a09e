"""DOAnet training with differentiable tracking losses (paper III-B, DESIGN 5 and 8).

- :class:`DoaTrainer`: a ``keras.Model`` wrapping DOAnet and the frozen Hnet, with custom ``train_step`` /
  ``test_step`` (Keras' "customizing fit()" pattern), a ``keras.metrics.Mean`` tracker per loss term, losses
  scaled by the global batch size so that it trains under ``tf.distribute`` strategies.
- :func:`make_strategy`: default / mirrored / multiworker (``TF_CONFIG``).
- :func:`fit_run`: fit a validated :class:`dtbt_tf.config.RunConfig` in its run folder (checkpoints every epoch,
  validation metrics, TensorBoard, best.keras); the job around it (data, run folder, test split, export) is
  :mod:`dtbt_tf.jobs`. The run folder layout is in :mod:`dtbt_tf.artifacts`.
"""
from __future__ import annotations

import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dtbt_tf.artifacts import BEST_MODEL, CHECKPOINT_DIR
from dtbt_tf.config import STRATEGIES, ConfigError, LossConfig, RunConfig
from dtbt_tf.data.dcase import DataError
from dtbt_tf.evaluation import evaluate_split, predict_function
from dtbt_tf.inference import outputs_to_metadata
from dtbt_tf.losses import loss_terms, term_names
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import hnet_n_max
from dtbt_tf.plots import labels_to_metadata, plot_tracks

VAL_KEYS = ("LE", "LR", "LP", "LF1", "MOTA", "IDS")  # validation metrics logged per epoch
COSINE_FINAL_FRACTION = 0.05


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
# Fitting a run


def is_chief(strategy) -> bool:
    """True for the worker that writes the run folder (the only one outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def _multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy spanning several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())  # noqa: SLF001  (no public test for it)


def barrier(strategy) -> None:
    """Block until every worker of a multi-worker strategy gets here (a one-number all-reduce)."""
    if _multi_worker(strategy):
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def sequences_per_epoch(manifest: dict, split: str, seq_frames: int, seq_hop: int, label_hop: int = 5) -> int:
    """Expected number of training windows of a split per epoch (random offsets: about 1.5 windows per file
    beyond (frames - window) / hop), used as the epoch length of the training dataset."""
    info = manifest["splits"][split]
    win, hop = seq_frames // label_hop, seq_hop // label_hop
    n = (info["n_label_frames"] - info["n_files"] * win) / hop + 1.5 * info["n_files"]
    return max(info["n_files"], int(round(n)))


def _learning_rate(cfg: RunConfig, steps_per_epoch: int):
    if cfg.train.schedule == "constant":
        return cfg.train.lr
    return keras.optimizers.schedules.CosineDecay(cfg.train.lr, cfg.train.epochs * steps_per_epoch,
                                                  alpha=COSINE_FINAL_FRACTION)


def build_trainer(cfg: RunConfig, strategy, hnet: keras.Model | None, mean: np.ndarray, std: np.ndarray,
                  steps_per_epoch: int):
    """(DOAnet, compiled DoaTrainer with a built optimizer) under ``strategy``, initialised from the run's seed."""
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        doanet = build_doanet(cfg.model, mean, std)
        trainer = DoaTrainer(doanet, hnet, cfg.loss)
        trainer.compile(optimizer=keras.optimizers.Adam(_learning_rate(cfg, steps_per_epoch)),
                        jit_compile=cfg.train.jit_compile)
        trainer.optimizer.build(doanet.trainable_variables)
    return doanet, trainer


def _tracks_png(path: str, name: str, doa, act, labels, inference, title: str) -> None:
    meta = outputs_to_metadata(doa, act, inference)
    plot_tracks(meta, path, ref=labels_to_metadata(labels), title=f"{name}: {title}", n_frames=len(act))


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress output with the run's epoch count: training calls ``fit`` once per epoch, so Keras' own
    logger would print "Epoch e/e" (and nothing for the first epoch) instead of "Epoch e/E"."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs


class RunCallback(keras.callbacks.Callback):
    """Per epoch: validation metrics on whole recordings (added to the logs as val_LE, val_LR, ...), a track
    image to TensorBoard, best.keras by validation LE, and the resumable checkpoint. Files are written by the
    chief only (other workers checkpoint into a temporary folder, as tf.distribute requires)."""

    def __init__(self, run_dir, cfg: RunConfig, doanet, ckpt, manager, chief: bool):
        super().__init__()
        self.run_dir, self.cfg, self.doanet = run_dir, cfg, doanet
        self.ckpt, self.manager, self.chief = ckpt, manager, chief
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "tb", "images")) if chief else None
        self.predict = predict_function(doanet)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.chief:
            metrics, first = evaluate_split(self.doanet, self.cfg.data_dir, "val", self.cfg.feature.seq_label_frames,
                                            self.cfg.inference, predict=self.predict)
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
            _tracks_png(png, name, doa, act, labels, self.cfg.inference,
                        f"epoch {epoch + 1}, val LE {metrics['LE']:.1f} deg, LR {100 * metrics['LR']:.0f}%")
            with self.writer.as_default():
                image = tf.image.decode_png(tf.io.read_file(png), channels=3)[None]
                tf.summary.image("validation_tracks", image, step=epoch + 1)
            self.writer.flush()
            logs["val_best_LE"] = float(self.ckpt.best_le.numpy())
        self.ckpt.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def checkpoint(run_dir: str, doanet, optimizer, chief: bool):
    """(tf.train.Checkpoint of DOAnet + optimizer (its step drives the schedule) + epoch + best LE/epoch, its
    CheckpointManager in ``<run_dir>/ckpt``)."""
    ckpt = tf.train.Checkpoint(model=doanet, optimizer=optimizer, epoch=tf.Variable(0, dtype=tf.int64),
                               best_le=tf.Variable(math.inf, dtype=tf.float64),
                               best_epoch=tf.Variable(0, dtype=tf.int64))
    directory = os.path.join(run_dir, CHECKPOINT_DIR) if chief else tempfile.mkdtemp(prefix="dtbt_ckpt_worker")
    return ckpt, tf.train.CheckpointManager(ckpt, directory, max_to_keep=2)


def fit_run(cfg: RunConfig, run_dir: str, doanet, trainer, strategy, steps_per_epoch: int, ckpt, manager,
            verbose=1, log=print, callbacks=()) -> dict:
    """Fit epochs ``ckpt.epoch + 1 .. cfg.train.epochs`` (1-based) of a run whose checkpoint is restored.

    Each epoch's batches depend only on the seed and the epoch (dtbt_tf.data.pipeline.make_training_dataset),
    so a run resumed from its last checkpoint ends as the uninterrupted run. Returns {"best_epoch",
    "best_val_LE"}. DataError (one line) for data that cannot be read.
    """
    from dtbt_tf.data.pipeline import make_sequence_dataset, make_training_dataset

    chief = is_chief(strategy)
    initial_epoch = int(ckpt.epoch.numpy())
    if initial_epoch < cfg.train.epochs:
        all_callbacks = [RunCallback(run_dir, cfg, doanet, ckpt, manager, chief), *callbacks]
        if verbose:
            all_callbacks.append(RunProgbar(cfg.train.epochs))
        if chief:
            all_callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tb"), write_graph=False))
        log(f"training {cfg.loss.name} on {cfg.data_dir}: {steps_per_epoch} steps of {cfg.train.batch_size} per "
            f"epoch, epochs {initial_epoch + 1}..{cfg.train.epochs}, run folder {run_dir}")
        options = tf.data.Options()  # multi-worker: every worker reads all shards, keeps its share of the batches
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        check = lambda x, y: (tf.debugging.check_numerics(x, f"{cfg.data_dir}: features contain NaN or Inf"), y)

        def train_ds(epoch):
            return make_training_dataset(cfg.data_dir, "train", cfg.train.batch_size, steps_per_epoch, epoch,
                                         seed=cfg.train.seed, seq_frames=cfg.feature.seq_frames,
                                         seq_hop=cfg.train.seq_hop).map(check).with_options(options)

        val_ds = None
        # multi-worker: no validation loss pass (a partial last batch leaves some workers an empty batch,
        # which the model cannot take); the chief's whole-recording validation metrics still run
        if not _multi_worker(strategy):
            val_ds = make_sequence_dataset(cfg.data_dir, "val", cfg.train.batch_size, shuffle=False,
                                           seq_frames=cfg.feature.seq_frames).map(check).with_options(options)
            # a known length keeps Keras from warning at the end of every validation pass
            val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(int(val_ds.reduce(0, lambda n, _: n + 1))))
        try:
            for epoch in range(initial_epoch, cfg.train.epochs):  # one fit per epoch: its data is its own
                trainer.fit(train_ds(epoch), validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch,
                            steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, verbose=verbose, shuffle=False)
        except tf.errors.InvalidArgumentError as e:
            if "NaN or Inf" in str(e):
                raise DataError(e.message.splitlines()[0].split(" : ")[0]) from None
            raise DataError(f"{cfg.data_dir}: training data do not match the manifest "
                            f"({e.message.splitlines()[0][:160]})") from None
        except tf.errors.DataLossError as e:
            raise DataError(f"{cfg.data_dir}: a training shard is corrupt or truncated "
                            f"({e.message.splitlines()[0][:160]})") from None
    return {"best_epoch": int(ckpt.best_epoch.numpy()), "best_val_LE": float(ckpt.best_le.numpy())}
