"""Layers the DOAnet bodies share (:mod:`dtbt_tf.models.doanet`, :mod:`dtbt_tf.models.conformer`).

:class:`FusedBatchNorm` is Keras' BatchNormalization with TensorFlow's fused kernel in training mode (5x faster on
CPU for the CRNN's first-block (B, T, 64, 128) tensor, the most expensive part of a training step); its inference
path, weights and config are Keras' own.
"""
from __future__ import annotations

import keras
import tensorflow as tf


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
