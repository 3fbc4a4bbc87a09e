"""Hnet accuracy against the exact Hungarian association: NumPy scores, Keras metrics, fresh-matrix evaluation.

Scores compare thresholded soft associations (size, N, N) with exact 0/1 associations: support-weighted F1
over all entries and exact match of whole matrices (plus optimal match and the share of near-ties).
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from dtbt_tf.association import ACTIVE_MAX_DISTANCE, association_margin
from dtbt_tf.hnet.config import EVAL_SEED, EVAL_SIZE
from dtbt_tf.hnet.data import make_hnet_data
from dtbt_tf.models.hnet import HNET_CONFIG_FILE

NEAR_TIE_MARGIN = 0.01  # assignments whose cost differs from the optimum by less than this are near-ties
EVAL_SETS = (("generator", "grid"), ("training", "grid"), ("generator", "continuous"), ("training", "continuous"))


def association_scores(pred: np.ndarray, exact: np.ndarray, distance: np.ndarray | None = None,
                       margin: np.ndarray | None = None, threshold: float = 0.5) -> dict:
    """Scores of soft associations pred (size, N, N) against exact 0/1 associations.

    f1: support-weighted F1 over all entries of the thresholded matrices (classes 0 and 1);
    exact_match: fraction of matrices whose thresholded matrix equals the exact one (strict: at exact ties
    the exact one is the lexicographically first optimum);
    with distance (size, N, N): optimal_match, the fraction whose thresholded matrix is *an* optimal
    association (same number of pairs, one per row/column, active entries only, cost within 1e-5 of the
    optimum; differs from exact_match only at exact ties, e.g. identical grid directions);
    with margin (size,) (see association_margin): exact_match_away_from_ties (margin > NEAR_TIE_MARGIN) and
    near_tie_fraction.
    """
    hard = np.asarray(pred) > threshold
    ref = np.asarray(exact) > 0.5
    tp, fp = np.sum(hard & ref), np.sum(hard & ~ref)
    fn, tn = np.sum(~hard & ref), np.sum(~hard & ~ref)
    match = np.all(hard == ref, axis=(-2, -1))
    out = {"f1": _weighted_f1(tp, fp, fn, tn), "exact_match": float(np.mean(match)), "count": int(len(ref))}
    if distance is not None:
        D = np.asarray(distance, np.float64)
        valid = (np.sum(hard, axis=(-2, -1)) == np.sum(ref, axis=(-2, -1))) \
            & np.all(np.sum(hard, axis=-1) <= 1, axis=-1) & np.all(np.sum(hard, axis=-2) <= 1, axis=-1) \
            & ~np.any(hard & (D > ACTIVE_MAX_DISTANCE), axis=(-2, -1))
        cost_pred = np.sum(np.where(hard, D, 0.0), axis=(-2, -1))
        cost_ref = np.sum(np.where(ref, D, 0.0), axis=(-2, -1))
        out["optimal_match"] = float(np.mean(match | (valid & (cost_pred <= cost_ref + 1e-5))))
    if margin is not None:
        far = np.asarray(margin) > NEAR_TIE_MARGIN
        out["exact_match_away_from_ties"] = float(np.mean(match[far]))
        out["near_tie_fraction"] = float(1.0 - far.mean())
    return out


def _weighted_f1(tp, fp, fn, tn):
    """Support-weighted mean of the F1 of class 1 and of class 0 (sklearn's average='weighted')."""
    f1_pos = 2 * tp / max(2 * tp + fp + fn, 1)
    f1_neg = 2 * tn / max(2 * tn + fn + fp, 1)
    pos, neg = tp + fn, tn + fp
    return float((f1_pos * pos + f1_neg * neg) / max(pos + neg, 1))


@keras.saving.register_keras_serializable(package="dtbt_tf")
class AssociationF1(keras.metrics.Metric):
    """Streaming support-weighted F1 of thresholded associations (entries as binary labels)."""

    def __init__(self, threshold=0.5, name="f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.counts = self.add_variable(shape=(4,), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ref = keras.ops.cast(y_true > 0.5, "float32")
        hard = keras.ops.cast(y_pred > self.threshold, "float32")
        tp = keras.ops.sum(hard * ref)
        fp = keras.ops.sum(hard * (1 - ref))
        fn = keras.ops.sum((1 - hard) * ref)
        tn = keras.ops.sum((1 - hard) * (1 - ref))
        self.counts.assign_add(keras.ops.stack([tp, fp, fn, tn]))

    def result(self):
        tp, fp, fn, tn = (self.counts[i] for i in range(4))
        f1_pos = 2 * tp / keras.ops.maximum(2 * tp + fp + fn, 1.0)
        f1_neg = 2 * tn / keras.ops.maximum(2 * tn + fn + fp, 1.0)
        return (f1_pos * (tp + fn) + f1_neg * (tn + fp)) / keras.ops.maximum(tp + fp + fn + tn, 1.0)

    def reset_state(self):
        self.counts.assign(keras.ops.zeros((4,)))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="dtbt_tf")
class ExactMatch(keras.metrics.MeanMetricWrapper):
    """Fraction of matrices whose thresholded association equals the target exactly."""

    def __init__(self, threshold=0.5, name="exact_match", **kwargs):
        super().__init__(fn=_exact_match, name=name, threshold=threshold, **kwargs)
        self.threshold = threshold

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


def _exact_match(y_true, y_pred, threshold=0.5):
    equal = keras.ops.equal(y_true > 0.5, y_pred > threshold)
    return keras.ops.cast(keras.ops.all(equal, axis=(-2, -1)), "float32")


def evaluate_hnet(model: keras.Model, n_max: int, size: int = EVAL_SIZE, seed: int = EVAL_SEED,
                  batch_size: int = 8192) -> dict:
    """Scores on fresh matrices (seeds never used for training) for each (layout, directions) in EVAL_SETS.

    model: a keras Hnet (dict outputs of :func:`build_hnet` or the association alone) or a SavedModel
    signature (``tf.saved_model.load(dir).signatures["serving_default"]``).
    Returns {"<layout>/<directions>": association_scores(...)}.
    """
    out = {}
    for k, (layout, directions) in enumerate(EVAL_SETS):
        data = make_hnet_data(n_max, size, seed + k, layout=layout, directions=directions)
        pred = predict_association(model, data["distance"], batch_size)
        margin = association_margin(data["distance"], data["row_active"], data["col_active"])
        out[f"{layout}/{directions}"] = association_scores(pred, data["association"], data["distance"], margin)
    return out


def predict_association(model, distance: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Ã (size, N, N) NumPy from a keras Hnet or a SavedModel serving signature, in batches."""
    if isinstance(model, keras.Model):
        pred = model.predict(distance, batch_size=batch_size, verbose=0)
        return pred["association"] if isinstance(pred, dict) else pred
    parts = [model(distance=tf.constant(distance[i:i + batch_size]))["association"].numpy()
             for i in range(0, len(distance), batch_size)]
    return np.concatenate(parts, axis=0)


def score_table(scores: dict) -> str:
    """One line per evaluation set of :func:`evaluate_hnet`'s result, in percent."""
    return "\n".join(
        f"{name:24s} F1 {100 * m['f1']:.3f}%  exact {100 * m['exact_match']:.3f}%  "
        f"optimal {100 * m['optimal_match']:.3f}%  away-from-ties {100 * m['exact_match_away_from_ties']:.3f}%  "
        f"near-ties {100 * m['near_tie_fraction']:.2f}%" for name, m in scores.items())


def load_exported_hnet(model_dir) -> tuple:
    """(serving_default signature, N) of a folder written by :func:`dtbt_tf.hnet.card.export_hnet`;
    ValueError naming the folder when it is not one (e.g. a DOAnet export)."""
    for name in ("saved_model.pb", HNET_CONFIG_FILE):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise ValueError(f"{model_dir}: not an exported Hnet folder (no {name})")
    signature = tf.saved_model.load(str(model_dir)).signatures.get("serving_default")
    spec = signature.structured_input_signature[1].get("distance") if signature is not None else None
    if spec is None or spec.shape.rank != 3 or spec.shape[-1] != spec.shape[-2]:
        raise ValueError(f"{model_dir}: serving_default does not take `distance` (batch, N, N)")
    return signature, int(spec.shape[-1])
