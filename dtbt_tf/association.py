"""Distance matrices between predicted and reference DOAs, and exact (Hungarian) associations.

One convention everywhere (DESIGN 3): D has shape (..., Nmax, Nmax), rows = prediction slots, columns =
reference slots, entries = Euclidean distance between unit vectors (0..2). Entries whose row or column is
inactive hold `pad_value` (>> 2), so padding never looks like a plausible pairing. The same function builds
D for Hnet training data and inside DOAnet training.
"""
from __future__ import annotations

import tensorflow as tf

PAD_DISTANCE = 10.0  # default value of padded D entries


def distance_matrix(pred_doa, ref_doa, ref_active, pred_active=None, pad_value=PAD_DISTANCE):
    """Pairwise Euclidean distances with padding.

    pred_doa: (..., N, 3) predicted unit vectors; ref_doa: (..., N, 3) reference vectors (inactive slots may
    hold anything, e.g. the (10, 10, 10) padding vector); ref_active: (..., N) bool/0-1; pred_active: (..., N)
    or None (all prediction rows active, the DOAnet training layout); pad_value: scalar or (..., N, N) tensor.
    Returns D (..., N, N) float32, differentiable w.r.t. pred_doa on the active block (finite at D = 0).
    """
    pred = tf.convert_to_tensor(pred_doa, tf.float32)
    ref = tf.convert_to_tensor(ref_doa, tf.float32)
    diff = pred[..., :, None, :] - ref[..., None, :, :]
    sq = tf.reduce_sum(tf.square(diff), axis=-1)
    dist = tf.sqrt(tf.maximum(sq, 1e-12))
    mask = tf.cast(ref_active, tf.bool)[..., None, :]
    if pred_active is not None:
        mask = tf.logical_and(mask, tf.cast(pred_active, tf.bool)[..., :, None])
    mask = tf.broadcast_to(mask, tf.shape(dist))
    pad = tf.broadcast_to(tf.cast(pad_value, tf.float32), tf.shape(dist))
    return tf.where(mask, dist, pad)
