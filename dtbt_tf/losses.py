"""Training losses of DOAnet (paper III-B and [25], DESIGN 5): small functions of the distance matrix D, a soft
association Ã, the activity output and the labels, plus :func:`loss_terms` which assembles the terms of a
:class:`~dtbt_tf.config.LossConfig`.

Shapes: B sequences of T label frames, N = Nmax regressor slots.
- ``D`` (B, T, N, N): rows = predictions (every regressor row is active), columns = reference slots, Euclidean
  distance between unit vectors (0..2) on the active block, the padding value (>> 2) elsewhere
  (:func:`dtbt_tf.association.distance_matrix`).
- ``A`` (B, T, N, N): soft association in [0, 1] (frozen Hnet of D) or an exact 0/1 assignment.
- ``ref_active`` (B, T, N) 0/1, ``track_id`` (B, T, N) int (-1 inactive), ``ref_doa`` (B, T, N, 3) with the
  padding vector in inactive slots; ``doa`` (B, T, N, 3) unit vectors, ``activity`` (B, T, N) probabilities.

Every term is returned PER SEQUENCE, shape (B,): sums over the frames of one sequence, never across sequences,
so that a batch loss is ``sum(per_sequence) / global_batch_size`` (``tf.nn.compute_average_loss``), which is
what ``tf.distribute`` needs. Columns of inactive reference slots are masked out of every term: padding never
contributes, whatever value it holds.
"""
from __future__ import annotations

import tensorflow as tf

from dtbt_tf.association import distance_matrix, exact_association_tf
from dtbt_tf.config import LossConfig
from dtbt_tf.models.hnet import apply_hnet

BCE_EPS = 1e-7  # probability clip of the activity cross-entropy
INACTIVE_TARGET = (0.0, 0.0, 1.0)  # `mse` target of inactive slots (reference code)


def _f32(x):
    return tf.cast(x, tf.float32)


def _column_mask(ref_active):
    """(B, T, N) -> (B, T, 1, N) float mask of active reference columns."""
    return _f32(ref_active)[..., None, :]


def masked_association(A, ref_active, hard_gate: bool = False):
    """Ã restricted to active reference columns; with ``hard_gate`` also Ã * (Ã > 0.5) (reference code).

    The gate is a constant mask: gradients still flow through the entries it keeps.
    """
    A = _f32(A) * _column_mask(ref_active)
    if hard_gate:
        A = A * tf.stop_gradient(_f32(A > 0.5))
    return A


def dmotp(D, A, ref_active):
    """Soft MOTP per sequence (paper eq. 2 with Ã): sum_t,ij Ã D / sum_t,ij Ã over active columns -> (B,).

    Euclidean units (0..2). 0 for a sequence without any active reference.
    """
    A = masked_association(A, ref_active)
    D = tf.where(_column_mask(ref_active) > 0, _f32(D), 0.0)
    num = tf.reduce_sum(A * D, axis=[1, 2, 3])
    den = tf.reduce_sum(A, axis=[1, 2, 3])
    return tf.math.divide_no_nan(num, den)


def soft_counts(A, ref_active, track_id):
    """Soft per-frame CLEAR-MOT counts from Ã (active columns only) -> dict of (B, T) tensors.

    matches M_t = sum_i max_j Ã_t,ij; n_ref N_t = number of active references; fp = relu(M_t - N_t);
    fn = relu(N_t - M_t); ids_t = sum_ij c_t,j Ã_t,ij (1 - Ã_t-1,ij) for t >= 1 (0 at t = 0), where
    c_t,j = 1 when reference slot j holds the same track in frames t-1 and t. The continuity mask c restricts
    identity switches to references that continue (with stable slots, a track's column does not change while
    it lives): the onset of a new track is not a switch. Frames are never compared across sequences.
    """
    A = masked_association(A, ref_active)
    active = _f32(ref_active)
    matches = tf.reduce_sum(tf.reduce_max(A, axis=-1), axis=-1)
    n_ref = tf.reduce_sum(active, axis=-1)
    track_id = tf.cast(track_id, tf.int32)
    same = _f32(tf.equal(track_id[:, 1:], track_id[:, :-1])) * active[:, 1:] * active[:, :-1]  # (B, T-1, N)
    ids = tf.reduce_sum(same[:, :, None, :] * A[:, 1:] * (1.0 - A[:, :-1]), axis=[-2, -1])
    ids = tf.pad(ids, [[0, 0], [1, 0]])
    return {"matches": matches, "n_ref": n_ref, "fp": tf.nn.relu(matches - n_ref),
            "fn": tf.nn.relu(n_ref - matches), "ids": ids}


def dmota(A, ref_active, track_id):
    """Error part of soft MOTA per sequence: sum_t (FP_t + FN_t + IDS_t) / max(sum_t N_t, 1) -> (B,).

    See :func:`soft_counts`. 0 is perfect; unlike MOTA it is a loss (1 - dMOTA is the soft MOTA).
    """
    c = soft_counts(A, ref_active, track_id)
    err = tf.reduce_sum(c["fp"] + c["fn"] + c["ids"], axis=1)
    return err / tf.maximum(tf.reduce_sum(c["n_ref"], axis=1), 1.0)


def activity_target_from_association(A, ref_active):
    """Binary activity target per regressor (B, T, N): row maxima of Ã on active columns, thresholded at 0.5
    (the paper's D_ref). No gradient. With an exact 0/1 assignment this is 'regressor i is assigned a
    reference'."""
    A = masked_association(A, ref_active)
    return tf.stop_gradient(_f32(tf.reduce_max(A, axis=-1) > 0.5))


def activity_bce(activity, target):
    """Mean binary cross-entropy per sequence between activity probabilities and a 0/1 target (B, T, N) -> (B,)."""
    p = tf.clip_by_value(_f32(activity), BCE_EPS, 1.0 - BCE_EPS)
    y = _f32(target)
    bce = -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))
    return tf.reduce_mean(bce, axis=[1, 2])


def mse_loss(doa, ref_doa, ref_active):
    """MSE in the labels' stable slot order (no association) per sequence -> (B,).

    Inactive slots target the fixed unit vector (0, 0, 1) (reference code). Mean over frames, slots and
    the 3 components.
    """
    active = _f32(ref_active)[..., None] > 0
    target = tf.where(active, _f32(ref_doa), tf.constant(INACTIVE_TARGET, tf.float32))
    return tf.reduce_mean(tf.square(_f32(doa) - target), axis=[1, 2, 3])


def exact_assignment(D, ref_active):
    """Exact minimum-cost assignment of all regressor rows to the active reference columns of D (the
    Hungarian result, :func:`dtbt_tf.association.exact_association_tf`): (B, T, N, N) 0/1, no gradient."""
    return exact_association_tf(D, row_active=tf.ones_like(_f32(ref_active)), col_active=ref_active)


def pit_mse(doa, ref_doa, A_exact):
    """Permutation-invariant MSE per sequence: squared error (mean over the 3 components) of the assigned
    (regressor, reference) pairs of the 0/1 assignment ``A_exact``, averaged over pairs -> (B,); 0 without pairs.
    Unassigned regressors get no DOA target (their activity target is 0)."""
    A = _f32(A_exact)
    ref = tf.where(tf.reduce_sum(A, axis=-2)[..., None] > 0, _f32(ref_doa), 0.0)  # clean unassigned columns
    sq = tf.reduce_mean(tf.square(_f32(doa)[..., :, None, :] - ref[..., None, :, :]), axis=-1)  # (B, T, N, N)
    return tf.math.divide_no_nan(tf.reduce_sum(A * sq, axis=[1, 2, 3]), tf.reduce_sum(A, axis=[1, 2, 3]))


def pit_loss(doa, activity, ref_doa, ref_active, D=None) -> dict:
    """The ``pit`` baseline per sequence: exact assignment on D (no gradient through it), MSE of the assigned
    pairs (:func:`pit_mse`) and activity BCE against 'regressor is assigned' -> {"mse": (B,), "activity": (B,)}.
    D: the distance matrix if already built."""
    D = distance_matrix(_f32(doa), ref_doa, ref_active) if D is None else D
    A = exact_assignment(D, ref_active)
    return {"mse": pit_mse(doa, ref_doa, A),
            "activity": activity_bce(activity, activity_target_from_association(A, ref_active))}


def term_names(loss_cfg: LossConfig) -> tuple[str, ...]:
    """Names of the per-sequence terms :func:`loss_terms` returns for this loss, "loss" (the total) first."""
    return {
        "mse": ("loss", "mse"),
        "dmotp": ("loss", "dmotp"),
        "dmotp_act": ("loss", "dmotp", "activity"),
        "full": ("loss", "dmotp", "dmota", "activity"),
        "pit": ("loss", "mse", "activity"),
    }[loss_cfg.name]


def loss_terms(outputs, labels, hnet, loss_cfg: LossConfig) -> dict:
    """Every term of ``loss_cfg`` per sequence (B,), plus the weighted total under "loss".

    outputs: {"doa": (B, T, N, 3), "activity": (B, T, N)} (DOAnet); labels: {"doa", "active", "track_id"};
    hnet: the frozen Hnet (D (batch, N, N) -> Ã), used by dmotp / dmotp_act / full only (may be None otherwise).

    total = w_dmotp * (dMOTP, or the MSE of mse / pit) + w_dmota * dMOTA (full) + w_activity * activity BCE
    (dmotp_act, full, pit). Activity target: row maxima of Ã binarised at 0.5 (``activity_target='hnet'``, the
    paper) or, with ``'labels'``, the reference activity carried to the regressors by the exact assignment
    on D; pit always uses its exact assignment.
    """
    doa, ref_doa, active = _f32(outputs["doa"]), labels["doa"], labels["active"]
    name = loss_cfg.name
    if name == "mse":
        mse = mse_loss(doa, ref_doa, active)
        return {"loss": loss_cfg.w_dmotp * mse, "mse": mse}
    D = distance_matrix(doa, ref_doa, active)
    if name == "pit":
        t = pit_loss(doa, outputs["activity"], ref_doa, active, D)
        return {"loss": loss_cfg.w_dmotp * t["mse"] + loss_cfg.w_activity * t["activity"], **t}
    if hnet is None:
        raise ValueError(f"loss {name!r} needs an Hnet")
    A = masked_association(apply_hnet(hnet, D), active, loss_cfg.hard_gate)
    terms = {"dmotp": dmotp(D, A, active)}
    total = loss_cfg.w_dmotp * terms["dmotp"]
    if name == "full":
        terms["dmota"] = dmota(A, active, labels["track_id"])
        total += loss_cfg.w_dmota * terms["dmota"]
    if loss_cfg.uses_activity:
        if loss_cfg.activity_target == "hnet":
            target = activity_target_from_association(A, active)
        else:
            target = activity_target_from_association(exact_assignment(D, active), active)
        terms["activity"] = activity_bce(outputs["activity"], target)
        total += loss_cfg.w_activity * terms["activity"]
    return {"loss": total, **terms}


def compute_loss_terms(outputs, labels, hnet, loss_cfg: LossConfig, global_batch_size=None) -> dict:
    """Batch values of :func:`loss_terms`: each per-sequence term summed and divided by ``global_batch_size``
    (default: this batch's size times the replicas in sync), as ``tf.nn.compute_average_loss`` does. Returns
    scalars under the same names, "loss" being the one to minimise."""
    return {k: tf.nn.compute_average_loss(v, global_batch_size=global_batch_size)
            for k, v in loss_terms(outputs, labels, hnet, loss_cfg).items()}
