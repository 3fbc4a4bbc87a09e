"""DOAnet: the CRNN localiser of the paper (section III-B, DESIGN 4).

features (batch, T, n_mels, C) -> {"doa": (batch, T/5, Nmax, 3) unit vectors, "activity": (batch, T/5, Nmax)}.

Three Conv2D(3x3, same) + BatchNorm + ReLU + MaxPool blocks with (time, frequency) pools (5, 2), (1, 2), (1, 2)
-> (T/5, n_mels/8, filters), reshaped to (T/5, n_mels/8 * filters); two bidirectional GRUs (the first
concatenates its directions; after the second, tanh of each direction and their element-wise product, as the
reference code does); two per-frame heads of two Dense(relu) layers and an output layer: DOA (tanh, 3 * Nmax,
reshaped to (Nmax, 3) and normalised to unit length) and activity (sigmoid, Nmax). Dense layers act on the
last axis of 3-D tensors (no ``TimeDistributed``). The time length is variable (any multiple of the time pool,
5 by default).

An optional :class:`keras.layers.Normalization` at the input holds the training-split statistics per
(mel bin, channel), so saved and exported models take raw features.

Batch normalisation is :class:`FusedBatchNorm`, Keras' layer with TensorFlow's fused kernel in training mode
(5x faster on CPU for the first block's (B, T, 64, 128) tensor, the most expensive part of a training step);
its inference path, weights and config are Keras' own. Loading a saved DOAnet needs this module imported
(``import dtbt_tf.models.doanet``, done by :func:`dtbt_tf.training.load_trained`).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dtbt_tf.config import ConfigError, DoanetConfig


@keras.saving.register_keras_serializable(package="dtbt_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization over the last axis of 4-D NHWC tensors whose training pass uses TensorFlow's fused
    kernel (``FusedBatchNormV3``); moving statistics are updated as Keras does (momentum on the batch mean and
    variance). Inference, weights, config and everything else are :class:`keras.layers.BatchNormalization`."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm or len(inputs.shape) != 4 \
                or self.axis not in (-1, 3) or not (self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon,
            is_training=True)
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (n - 1.0) / n  # the op returns the unbiased variance; Keras tracks the biased one
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def build_doanet(cfg: DoanetConfig, norm_mean=None, norm_std=None, name: str = "doanet") -> keras.Model:
    """Functional DOAnet for `cfg`.

    norm_mean, norm_std: optional (n_mels, C) arrays (training-split statistics); when given, the model starts
    with a Normalization layer computing (x - mean) / std, so it takes raw features.
    Returns a keras.Model: input "features" (batch, T, n_mels, C) float32 with T a multiple of
    ``cfg.time_pool``; outputs {"doa": (batch, T/5, Nmax, 3), "activity": (batch, T/5, Nmax)}.
    """
    c = cfg.n_channels
    inputs = keras.Input(shape=(None, cfg.n_mels, c), name="features")
    x = inputs
    if (norm_mean is None) != (norm_std is None):
        raise ConfigError("build_doanet: give both norm_mean and norm_std, or neither")
    if norm_mean is not None:
        mean = np.asarray(norm_mean, np.float32)
        std = np.asarray(norm_std, np.float32)
        if mean.shape != (cfg.n_mels, c) or std.shape != (cfg.n_mels, c):
            raise ConfigError(f"normalisation statistics must have shape {(cfg.n_mels, c)}, "
                              f"got mean {mean.shape}, std {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ConfigError("normalisation statistics must be finite with std > 0")
        x = keras.layers.Normalization(axis=(-2, -1), mean=mean, variance=np.square(std), dtype="float32",
                                       name="normalization")(x)

    for k, (tp, fp) in enumerate(cfg.pool_sizes):
        x = keras.layers.Conv2D(cfg.conv_filters, 3, padding="same", use_bias=False, name=f"conv{k}")(x)
        x = FusedBatchNorm(name=f"bn{k}")(x)
        x = keras.layers.ReLU(name=f"relu{k}")(x)
        x = keras.layers.MaxPooling2D((tp, fp), name=f"pool{k}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"conv_dropout{k}")(x)
    x = keras.layers.Reshape((-1, (cfg.n_mels // cfg.freq_pool) * cfg.conv_filters), name="flatten_freq")(x)

    x = keras.layers.Bidirectional(keras.layers.GRU(cfg.rnn_units, return_sequences=True, dropout=cfg.dropout),
                                   merge_mode="concat", name="bigru0")(x)
    fwd, bwd = keras.layers.Bidirectional(
        keras.layers.GRU(cfg.rnn_units, return_sequences=True, dropout=cfg.dropout),
        merge_mode=None, name="bigru1")(x)
    x = keras.layers.Multiply(name="gru_product")(
        [keras.layers.Activation("tanh", name="gru_tanh_fwd")(fwd),
         keras.layers.Activation("tanh", name="gru_tanh_bwd")(bwd)])

    def head(h, prefix):
        for k in range(2):
            h = keras.layers.Dense(cfg.fc_units, activation="relu", name=f"{prefix}_fc{k}")(h)
            if cfg.dropout:
                h = keras.layers.Dropout(cfg.dropout, name=f"{prefix}_dropout{k}")(h)
        return h

    # output layers in float32 whatever the global dtype policy (mixed precision keeps them exact)
    doa = keras.layers.Dense(3 * cfg.n_max, activation="tanh", dtype="float32", name="doa_out")(head(x, "doa"))
    doa = keras.layers.Reshape((-1, cfg.n_max, 3), dtype="float32", name="doa_slots")(doa)
    doa = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="doa")(doa)
    activity = keras.layers.Dense(cfg.n_max, activation="sigmoid", dtype="float32", name="activity")(head(x, "act"))
    return keras.Model(inputs, {"doa": doa, "activity": activity}, name=name)
