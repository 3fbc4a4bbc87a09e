"""DOAnet: the CRNN localiser of the paper (section III-B, DESIGN 4).

features (batch, T, n_mels, C) -> {"doa": (batch, T/5, Nmax, 3) unit vectors, "activity": (batch, T/5, Nmax)}.

Three Conv2D(3x3, same) + BatchNorm + ReLU + MaxPool blocks with (time, frequency) pools (5, 2), (1, 2), (1, 2)
-> (T/5, n_mels/8, filters), reshaped to (T/5, n_mels/8 * filters); two bidirectional GRUs (the first
concatenates its directions; after the second, tanh of each direction and their element-wise product, as the
reference code does); two per-frame heads of two Dense(relu) layers and an output layer: DOA (tanh, 3 * Nmax,
reshaped to (Nmax, 3) and normalised to unit length) and activity (sigmoid, Nmax). Dense layers act on the
last axis of 3-D tensors (no ``TimeDistributed``). The time length is variable (any multiple of the time pool,
5 by default).

``DoanetConfig.arch`` "resnet_conformer" swaps the convolutions and GRUs for the body of
:mod:`dtbt_tf.models.conformer` (same input, normalisation and heads); "crnn", the above, is the default.

An optional :class:`keras.layers.Normalization` at the input holds the training-split statistics per
(mel bin, channel), so saved and exported models take raw features.

Causal variant (``DoanetConfig.causal``, for streaming, :mod:`dtbt_tf.streaming`): every convolution is padded
with two frames of zeros in the past and none in the future (``causal_pad{k}`` + a "valid" Conv2D; frequency
still "same"), the time pooling only merges the frames of one label frame, and the GRUs are unidirectional
(``gru0``, ``gru1``, then ``gru_tanh``). Label frame ``t`` then depends on feature frames ``<= 5t + 4`` only, i.e.
on audio up to the end of its own 100 ms: no lookahead. :func:`build_doanet_step` is the same network as one
step of 100 ms with explicit state (the last two input frames of each convolution, the GRU states).

Batch normalisation is :class:`dtbt_tf.models.layers.FusedBatchNorm` (Keras' layer with TensorFlow's fused
kernel in training mode). Loading a saved DOAnet needs this module imported
(``import dtbt_tf.models.doanet``, done by :func:`dtbt_tf.training.load_trained`).
"""
from __future__ import annotations

import keras
import numpy as np

from dtbt_tf.config import ConfigError, DoanetConfig
from dtbt_tf.models.conformer import resnet_conformer_body
from dtbt_tf.models.layers import FusedBatchNorm


def _normalization(cfg: DoanetConfig, norm_mean, norm_std):
    """The input Normalization layer for the training statistics, or None without statistics."""
    c = cfg.n_channels
    if (norm_mean is None) != (norm_std is None):
        raise ConfigError("build_doanet: give both norm_mean and norm_std, or neither")
    if norm_mean is None:
        return None
    mean = np.asarray(norm_mean, np.float32)
    std = np.asarray(norm_std, np.float32)
    if mean.shape != (cfg.n_mels, c) or std.shape != (cfg.n_mels, c):
        raise ConfigError(f"normalisation statistics must have shape {(cfg.n_mels, c)}, "
                          f"got mean {mean.shape}, std {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ConfigError("normalisation statistics must be finite with std > 0")
    return keras.layers.Normalization(axis=(-2, -1), mean=mean, variance=np.square(std), dtype="float32",
                                      name="normalization")


def _heads(x, cfg: DoanetConfig):
    """The per-frame DOA and activity heads on (batch, F, units) -> {"doa": (batch, F, Nmax, 3), "activity"}."""

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
    return {"doa": doa, "activity": activity}


def build_doanet(cfg: DoanetConfig, norm_mean=None, norm_std=None, name: str = "doanet") -> keras.Model:
    """Functional DOAnet for `cfg`: the CRNN (bidirectional, or causal when ``cfg.causal``) or, with
    ``cfg.arch`` "resnet_conformer", the body of :mod:`dtbt_tf.models.conformer`; the same heads either way.

    norm_mean, norm_std: optional (n_mels, C) arrays (training-split statistics); when given, the model starts
    with a Normalization layer computing (x - mean) / std, so it takes raw features.
    Returns a keras.Model: input "features" (batch, T, n_mels, C) float32 with T a multiple of
    ``cfg.time_pool``; outputs {"doa": (batch, T/5, Nmax, 3), "activity": (batch, T/5, Nmax)}.
    """
    c = cfg.n_channels
    inputs = keras.Input(shape=(None, cfg.n_mels, c), name="features")
    x = inputs
    norm = _normalization(cfg, norm_mean, norm_std)
    if norm is not None:
        x = norm(x)
    if cfg.arch == "resnet_conformer":
        return keras.Model(inputs, _heads(resnet_conformer_body(x, cfg), cfg), name=name)

    for k, (tp, fp) in enumerate(cfg.pool_sizes):
        if cfg.causal:  # two past frames of zeros, none in the future; frequency as "same"
            x = keras.layers.ZeroPadding2D(((2, 0), (1, 1)), name=f"causal_pad{k}")(x)
            x = keras.layers.Conv2D(cfg.conv_filters, 3, padding="valid", use_bias=False, name=f"conv{k}")(x)
        else:
            x = keras.layers.Conv2D(cfg.conv_filters, 3, padding="same", use_bias=False, name=f"conv{k}")(x)
        x = FusedBatchNorm(name=f"bn{k}")(x)
        x = keras.layers.ReLU(name=f"relu{k}")(x)
        x = keras.layers.MaxPooling2D((tp, fp), name=f"pool{k}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"conv_dropout{k}")(x)
    x = keras.layers.Reshape((-1, (cfg.n_mels // cfg.freq_pool) * cfg.conv_filters), name="flatten_freq")(x)

    if cfg.causal:
        for k in range(2):
            x = keras.layers.GRU(cfg.rnn_units, return_sequences=True, dropout=cfg.dropout, name=f"gru{k}")(x)
        x = keras.layers.Activation("tanh", name="gru_tanh")(x)
    else:
        x = keras.layers.Bidirectional(keras.layers.GRU(cfg.rnn_units, return_sequences=True, dropout=cfg.dropout),
                                       merge_mode="concat", name="bigru0")(x)
        fwd, bwd = keras.layers.Bidirectional(
            keras.layers.GRU(cfg.rnn_units, return_sequences=True, dropout=cfg.dropout),
            merge_mode=None, name="bigru1")(x)
        x = keras.layers.Multiply(name="gru_product")(
            [keras.layers.Activation("tanh", name="gru_tanh_fwd")(fwd),
             keras.layers.Activation("tanh", name="gru_tanh_bwd")(bwd)])
    return keras.Model(inputs, _heads(x, cfg), name=name)


def is_causal(model: keras.Model) -> bool:
    """True for a causal DOAnet (:func:`build_doanet` with ``causal``): it has the unidirectional ``gru0``."""
    return any(layer.name == "gru0" and isinstance(layer, keras.layers.GRU) for layer in model.layers)


# ----------------------------------------------------------------------------------------------------------
# One streaming step of a causal DOAnet

CONV_CONTEXT = 2  # past input frames a causal 3x3 convolution sees besides the current ones


def step_state_specs(model: keras.Model) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape without batch) of the states of :func:`build_doanet_step` for a causal DOAnet, in order:
    ``conv{k}``: the last two (time) input frames of convolution k, (2, width_k, channels_k), with the
    normalised features as the input of conv0; ``gru{k}``: the GRU state, (units,)."""
    if not is_causal(model):
        raise ConfigError("not a causal DOAnet (it has no unidirectional gru0; train with --causal)")
    specs = []
    width, channels = int(model.inputs[0].shape[2]), int(model.inputs[0].shape[3])
    k = 0
    while any(layer.name == f"conv{k}" for layer in model.layers):
        specs.append((f"conv{k}", (CONV_CONTEXT, width, channels)))
        width //= int(model.get_layer(f"pool{k}").pool_size[1])
        channels = int(model.get_layer(f"conv{k}").filters)
        k += 1
    for g in range(2):
        specs.append((f"gru{g}", (int(model.get_layer(f"gru{g}").units),)))
    return specs


def step_frames(model: keras.Model) -> int:
    """Feature frames per step (one label frame): the product of the time pools."""
    out, k = 1, 0
    while any(layer.name == f"pool{k}" for layer in model.layers):
        out *= int(model.get_layer(f"pool{k}").pool_size[0])
        k += 1
    return out


def build_doanet_step(model: keras.Model, batch_size: int | None = 1) -> keras.Model:
    """The causal DOAnet ``model`` as one 100 ms step with explicit state (same weights, copied).

    Inputs (a dict): ``features`` (batch, 5, n_mels, C) raw features of one label frame and ``state_<name>`` for
    every state of :func:`step_state_specs` (zeros at the start of a stream). Outputs (a dict): ``doa`` (batch, 1,
    Nmax, 3), ``activity`` (batch, 1, Nmax) and ``next_<name>``, the states for the next step. Run over the
    steps of a sequence from zero states it gives what ``model`` gives on the whole sequence. The GRUs are
    unrolled (one time step, no loop op).
    """
    specs = step_state_specs(model)
    n_mels, c = (int(d) for d in model.inputs[0].shape[2:])
    frames = step_frames(model)
    copied = []

    def clone(name, **overrides):
        layer = model.get_layer(name)
        cfg = {**layer.get_config(), **overrides}
        new = layer.__class__.from_config(cfg)
        copied.append(name)
        return new

    features = keras.Input(batch_shape=(batch_size, frames, n_mels, c), name="features")
    states = {name: keras.Input(batch_shape=(batch_size,) + shape, name=f"state_{name}") for name, shape in specs}
    nexts = {}
    x = features
    if any(layer.name == "normalization" for layer in model.layers):
        x = clone("normalization")(x)
    n, k = frames, 0
    while f"conv{k}" in states:
        both = keras.layers.Concatenate(axis=1, name=f"step_context{k}")([states[f"conv{k}"], x])
        nexts[f"conv{k}"] = keras.layers.Cropping2D(((n, 0), (0, 0)), name=f"step_keep{k}")(both)
        x = keras.layers.ZeroPadding2D(((0, 0), (1, 1)), name=f"step_freq_pad{k}")(both)
        for name in (f"conv{k}", f"bn{k}", f"relu{k}", f"pool{k}"):
            x = clone(name)(x)
        n //= int(model.get_layer(f"pool{k}").pool_size[0])
        k += 1
    x = keras.layers.Reshape((1, -1), name="step_flatten")(x)
    for g in range(2):
        x = clone(f"gru{g}", unroll=True)(x, initial_state=[states[f"gru{g}"]])
        nexts[f"gru{g}"] = keras.layers.Reshape((-1,), name=f"step_state_gru{g}")(x)
    x = clone("gru_tanh")(x)
    heads = {}
    for prefix in ("doa", "act"):
        h = x
        for j in range(2):
            h = clone(f"{prefix}_fc{j}")(h)
        heads[prefix] = h
    doa = clone("doa")(clone("doa_slots")(clone("doa_out")(heads["doa"])))
    activity = clone("activity")(heads["act"])
    outputs = {"doa": doa, "activity": activity, **{f"next_{name}": t for name, t in nexts.items()}}
    step = keras.Model({"features": features, **{f"state_{name}": t for name, t in states.items()}}, outputs,
                       name=f"{model.name}_step")
    for name in copied:
        weights = model.get_layer(name).get_weights()
        if weights:
            step.get_layer(name).set_weights(weights)
    return step
