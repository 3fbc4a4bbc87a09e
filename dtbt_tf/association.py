"""Distance matrices between predicted and reference DOAs, and exact (Hungarian) associations.

One convention everywhere (DESIGN 3): D has shape (..., Nmax, Nmax), rows = prediction slots, columns =
reference slots, entries = Euclidean distance between unit vectors (0..2). Entries whose row or column is
inactive hold `pad_value` (>> 2), so padding never looks like a plausible pairing. The same function builds
D for Hnet training data and inside DOAnet training.
"""
from __future__ import annotations

import itertools

import numpy as np
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


# ----------------------------------------------------------------------------------------------------------
# Exact (Hungarian) association by brute force over permutations

ACTIVE_MAX_DISTANCE = 3.0  # D entries above this can only be padding (unit-vector distances are <= 2)
MAX_EXACT_N = 7  # 7! = 5040 permutations; beyond that use scipy.optimize.linear_sum_assignment per matrix


def _permutation_matrices(n: int) -> np.ndarray:
    """(n!, n, n) float64 one-hot permutation matrices in lexicographic order (identity first)."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    return np.eye(n)[perms]


def _check_square(D) -> int:
    shape = D.shape
    if shape.rank is None or shape.rank < 2:
        raise ValueError(f"distance matrix must have shape (..., N, N), got shape {shape}")
    n, m = shape[-2], shape[-1]
    if n is None or m is None:
        raise ValueError(f"distance matrix needs static N, got shape {shape}")
    if n != m:
        raise ValueError(f"distance matrix must be square (..., N, N), got shape {shape}")
    if n > MAX_EXACT_N:
        raise ValueError(f"exact association supports N <= {MAX_EXACT_N}, got N = {n}")
    return n


def _active_masks(D, row_active, col_active):
    """Row/column activity (..., N) bool; inferred from D (any entry <= ACTIVE_MAX_DISTANCE) where None."""
    valid = D <= ACTIVE_MAX_DISTANCE
    rows = tf.reduce_any(valid, axis=-1) if row_active is None else tf.cast(row_active, tf.bool)
    cols = tf.reduce_any(valid, axis=-2) if col_active is None else tf.cast(col_active, tf.bool)
    return rows, cols


def _permutation_scores(D, row_active, col_active):
    """Shared core: per-permutation matched-pair count and cost. Returns (perm (P,N,N), pair (...,N,N) bool,
    count (..., P), cost (..., P)) in float64."""
    n = _check_square(D)
    rows, cols = _active_masks(D, row_active, col_active)
    pair = tf.logical_and(rows[..., :, None], cols[..., None, :])
    perm = tf.constant(_permutation_matrices(n))
    pairf = tf.cast(pair, tf.float64)
    cost_in = tf.where(pair, tf.cast(D, tf.float64), tf.zeros_like(pairf))
    count = tf.einsum("...ij,pij->...p", pairf, perm)
    cost = tf.einsum("...ij,pij->...p", cost_in, perm)
    return perm, pair, count, cost


TIE_TOLERANCE = 1e-10  # costs closer than this are equal (float64 sums of the same numbers in another order)


def _first_optimum(cost):
    """(...,) index of the first permutation whose cost is within TIE_TOLERANCE of the minimum."""
    best = tf.reduce_min(cost, axis=-1, keepdims=True)
    return tf.argmax(tf.cast(cost <= best + TIE_TOLERANCE, tf.int32), axis=-1)


def exact_association_tf(D, row_active=None, col_active=None):
    """Exact minimum-cost association on the active block of D (the Hungarian result), in TF ops.

    D: (..., N, N) distances (rows = predictions, columns = references), N <= MAX_EXACT_N (static).
    row_active / col_active: (..., N) bool or 0/1; None infers them from D (a row/column is active when one
    of its entries is <= ACTIVE_MAX_DISTANCE). Returns A (..., N, N) float32 0/1 with exactly
    min(#active rows, #active columns) ones, all on the active block; no gradient. Among the N! permutations,
    those matching the most active pairs are kept and the cheapest is taken (ties: lexicographically first
    permutation, identity first, among costs within TIE_TOLERANCE). Costs are summed in float64.
    """
    D = tf.convert_to_tensor(D)
    perm, pair, count, cost = _permutation_scores(D, row_active, col_active)
    best_count = tf.reduce_max(count, axis=-1, keepdims=True)
    inf = tf.constant(np.inf, tf.float64)
    idx = _first_optimum(tf.where(count >= best_count - 0.5, cost, inf))
    A = tf.gather(perm, idx) * tf.cast(pair, tf.float64)
    return tf.stop_gradient(tf.cast(A, tf.float32))


def exact_association(D, row_active=None, col_active=None) -> np.ndarray:
    """NumPy entry point of :func:`exact_association_tf` (same algorithm): (..., N, N) -> (..., N, N) float32."""
    return exact_association_tf(np.asarray(D), row_active, col_active).numpy()


def association_margin(D, row_active=None, col_active=None) -> np.ndarray:
    """Cost gap between the best association and the best *different* one (..., ) float64, NumPy.

    Small margins are near-ties, where any approximate association (Hnet) may legitimately differ from the
    exact one; np.inf where the association is unique (e.g. one active row and one active column).
    """
    D = tf.convert_to_tensor(np.asarray(D))
    perm, pair, count, cost = _permutation_scores(D, row_active, col_active)
    best_count = tf.reduce_max(count, axis=-1, keepdims=True)
    inf = tf.constant(np.inf, tf.float64)
    feasible_cost = tf.where(count >= best_count - 0.5, cost, inf)
    idx = _first_optimum(feasible_cost)
    pairf = tf.cast(pair, tf.float64)
    best_A = tf.gather(perm, idx) * pairf  # (..., N, N)
    masked = perm * pairf[..., None, :, :]  # (..., P, N, N)
    same = tf.reduce_all(tf.equal(masked, best_A[..., None, :, :]), axis=[-2, -1])
    other = tf.reduce_min(tf.where(same, inf, feasible_cost), axis=-1)
    return (other - tf.reduce_min(feasible_cost, axis=-1)).numpy()


def assignment_cost(D, A) -> np.ndarray:
    """Sum of D over the pairs A associates (..., ) float64, NumPy; A is thresholded at 0.5."""
    D = np.asarray(D, np.float64)
    return np.sum(np.where(np.asarray(A) > 0.5, D, 0.0), axis=(-2, -1))
