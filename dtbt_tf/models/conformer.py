"""The ResNet-Conformer body of DOAnet (``DoanetConfig.arch = "resnet_conformer"``, issue 16 point 6).

features (batch, T, n_mels, C) -> (batch, T/5, conformer_dim), then the CRNN's heads (:mod:`dtbt_tf.models.doanet`).

A convolution stem of ``conv_filters // 2`` channels at full resolution and the first (time, frequency) pool,
then per remaining pool one residual block (two 3x3 Conv2D + BatchNorm, a 1x1 projection when the width
changes, ReLU after the sum) of ``conv_filters`` channels and the pool; the (frequency x channels) of each
label frame are projected to ``conformer_dim`` and run through ``conformer_blocks`` Conformer blocks (Gulati
et al. 2020: half feed-forward, multi-head self-attention, convolution module with GLU and a depthwise
kernel, half feed-forward, LayerNorm; each a residual). Positions come from the depthwise convolutions (no
positional encoding), so any sequence length works. Self-attention is written in ``keras.ops`` matmuls
(:class:`SelfAttention`) so the TFLite converter maps it to built-in BATCH_MATMUL / SOFTMAX.
"""
from __future__ import annotations

import keras

from dtbt_tf.config import DoanetConfig
from dtbt_tf.models.layers import FusedBatchNorm


@keras.saving.register_keras_serializable(package="dtbt_tf")
class SelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention over time: (batch, T, dim) -> (batch, T, dim)."""

    def __init__(self, heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.dropout = dropout

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.head_dim = dim // self.heads
        self.qkv = keras.layers.Dense(3 * dim, name="qkv")
        self.qkv.build(input_shape)
        self.proj = keras.layers.Dense(dim, name="proj")
        self.proj.build(input_shape)
        self.drop = keras.layers.Dropout(self.dropout)

    def call(self, x, training=None):
        ops = keras.ops
        batch, steps = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, steps, 3, self.heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, batch, heads, T, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (self.head_dim ** -0.5)
        weights = self.drop(ops.softmax(scores, axis=-1), training=training)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # (batch, T, heads, head_dim)
        return self.proj(ops.reshape(out, (batch, steps, self.heads * self.head_dim)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "dropout": self.dropout}


def _residual_block(x, filters: int, name: str):
    """Two 3x3 convolutions + BatchNorm with a (projected) skip, ReLU after the sum."""
    skip = x
    if int(x.shape[-1]) != filters:
        skip = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
        skip = FusedBatchNorm(name=f"{name}_proj_bn")(skip)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv0")(x)
    y = FusedBatchNorm(name=f"{name}_bn0")(y)
    y = keras.layers.ReLU(name=f"{name}_relu0")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(y)
    y = FusedBatchNorm(name=f"{name}_bn1")(y)
    return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([skip, y]))


def _feed_forward(x, dim: int, dropout: float, name: str):
    """Half-step feed-forward residual: x + 0.5 * FF(LayerNorm(x)) (expansion 4, swish)."""
    y = keras.layers.LayerNormalization(name=f"{name}_norm")(x)
    y = keras.layers.Dense(4 * dim, activation="swish", name=f"{name}_up")(y)
    y = keras.layers.Dense(dim, name=f"{name}_down")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return keras.layers.Add(name=f"{name}_add")([x, keras.layers.Rescaling(0.5, name=f"{name}_half")(y)])


def _conformer_block(x, cfg: DoanetConfig, name: str):
    dim = cfg.conformer_dim
    x = _feed_forward(x, dim, cfg.dropout, f"{name}_ff0")
    y = keras.layers.LayerNormalization(name=f"{name}_mhsa_norm")(x)
    y = SelfAttention(cfg.attention_heads, cfg.dropout, name=f"{name}_mhsa")(y)
    x = keras.layers.Add(name=f"{name}_mhsa_add")([x, y])
    y = keras.layers.LayerNormalization(name=f"{name}_conv_norm")(x)
    gate = keras.layers.Dense(dim, activation="sigmoid", name=f"{name}_glu_gate")(y)
    y = keras.layers.Multiply(name=f"{name}_glu")([keras.layers.Dense(dim, name=f"{name}_glu_value")(y), gate])
    y = keras.layers.DepthwiseConv1D(cfg.conformer_kernel, padding="same", use_bias=False,
                                     name=f"{name}_depthwise")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_conv_bn")(y)
    y = keras.layers.Activation("swish", name=f"{name}_conv_swish")(y)
    y = keras.layers.Dense(dim, name=f"{name}_conv_out")(y)
    if cfg.dropout:
        y = keras.layers.Dropout(cfg.dropout, name=f"{name}_conv_dropout")(y)
    x = keras.layers.Add(name=f"{name}_conv_add")([x, y])
    x = _feed_forward(x, dim, cfg.dropout, f"{name}_ff1")
    return keras.layers.LayerNormalization(name=f"{name}_out_norm")(x)


def resnet_conformer_body(x, cfg: DoanetConfig):
    """(batch, T, n_mels, C) normalised features -> (batch, T / time_pool, conformer_dim)."""
    x = keras.layers.Conv2D(max(cfg.conv_filters // 2, 1), 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = FusedBatchNorm(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for k, pool in enumerate(cfg.pool_sizes):
        if k:
            x = _residual_block(x, cfg.conv_filters, f"res{k}")
        x = keras.layers.MaxPooling2D(pool, name=f"pool{k}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"conv_dropout{k}")(x)
    x = keras.layers.Reshape((-1, (cfg.n_mels // cfg.freq_pool) * int(x.shape[-1])), name="flatten_freq")(x)
    x = keras.layers.Dense(cfg.conformer_dim, name="conformer_in")(x)
    for b in range(cfg.conformer_blocks):
        x = _conformer_block(x, cfg, f"conformer{b}")
    return x
