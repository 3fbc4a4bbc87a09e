"""Predict a split and score it: whole-recording DOAnet outputs (the windows of infer.py, slots re-associated
across windows), track ids (:func:`dtbt_tf.inference.outputs_to_metadata`, as infer.py), metrics, CSVs.

Used by training (validation per epoch, the test split at the end), by ``benchmarks/`` and by the
quantisation report of exported TFLite variants.
"""
from __future__ import annotations

import os
import shutil

import numpy as np

from dtbt_tf.artifacts import PREDICTIONS_DIR, TEST_METRICS
from dtbt_tf.config import ConfigError, InferenceConfig, atomic_write_text
from dtbt_tf.data.dcase import DataError, write_metadata
from dtbt_tf.metrics import compute_metrics, metrics_to_json, tracks_from_labels, tracks_from_metadata
from dtbt_tf.windowing import run_windows


def predict_function(model):
    """``model(x, training=False)`` as a tf.function for any batch and length (traced once) -> NumPy
    (doa, activity)."""
    import tensorflow as tf

    shape = [None, None, *model.input_shape[2:]]
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)],
                     autograph=False)

    def predict(x):
        out = fn(tf.constant(x, tf.float32))
        return out["doa"].numpy(), out["activity"].numpy()

    return predict


def predict_features(model, features: np.ndarray, window: int, predict=None, max_batch: int = 32):
    """DOAnet outputs of a whole recording in the windows of :mod:`dtbt_tf.windowing` (as infer.py).

    features: (T, n_mels, C) raw; window: label frames per window; predict: from :func:`predict_function`
    (built when None). Returns doa (T // 5, N, 3), activity (T // 5, N) NumPy.
    """
    hop = 5
    n_label = features.shape[0] // hop
    n_max = int(model.output["activity"].shape[-1])
    return run_windows(features[:n_label * hop], n_label, window, hop, n_max,
                       predict or predict_function(model), max_batch)


def evaluate_split(model, data_dir: str, split: str, window: int, inference: InferenceConfig,
                   csv_dir: str | None = None, predict=None):
    """Metrics (dtbt_tf.metrics.compute_metrics) of ``model`` on the whole recordings of a split.

    window: label frames per window; inference: threshold and whether the activity head counts. Prediction
    identities are the track ids of :func:`dtbt_tf.inference.outputs_to_metadata` (those infer.py writes). With
    ``csv_dir``, one DCASE CSV per recording (frame, 0, track id, azimuth, elevation) is written there.
    Returns (metrics, {name: (doa, activity, labels)}) for the first recording (for plots).
    """
    from dtbt_tf.data.pipeline import iter_recordings
    from dtbt_tf.inference import outputs_to_metadata

    predict = predict or predict_function(model)
    pred, ref, first = {}, {}, {}
    for name, feats, labels in iter_recordings(data_dir, split):
        if not np.all(np.isfinite(feats)):
            raise DataError(f"{data_dir}: recording {name} ({split}) has NaN or Inf features")
        doa, act = predict_features(model, feats, window, predict)
        meta = outputs_to_metadata(doa, act, inference)
        pred[name] = tracks_from_metadata(meta)
        ref[name] = tracks_from_labels(labels["doa"], labels["active"], labels["track_id"])
        if not first:
            first[name] = (doa, act, labels)
        if csv_dir is not None:
            write_metadata(os.path.join(csv_dir, f"{name}.csv"), meta)
    if not ref:
        raise DataError(f"{data_dir}: split {split!r} is empty")
    return compute_metrics(pred, ref, by_polyphony=True), first


def evaluate_run_split(model, run_dir: str, data_dir: str, window: int, inference: InferenceConfig,
                       split: str = "test") -> dict:
    """:func:`evaluate_split` writing ``<run_dir>/predictions/`` (CSVs, replaced whole) and
    ``<run_dir>/test_metrics.json``; returns the metrics."""
    pred_dir = os.path.join(run_dir, PREDICTIONS_DIR)
    tmp_dir = f"{pred_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        metrics, _ = evaluate_split(model, data_dir, split, window, inference, csv_dir=tmp_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(pred_dir, ignore_errors=True)
    os.replace(tmp_dir, pred_dir)
    atomic_write_text(os.path.join(run_dir, TEST_METRICS), metrics_to_json(metrics))
    return metrics


def quantization_report(tflite_paths: dict, data_root: str, split: str = "test", threshold: float | None = None,
                        max_files: int | None = None, baseline: str = "fp32") -> dict:
    """Metrics of each TFLite variant on a split of a DCASE-layout dataset, and their change vs ``baseline``.

    tflite_paths: variant name -> .tflite file (all of one format). Every variant sees the same NumPy features
    (features-in models) and the same windowing as ``scripts/infer.py``; threshold None = each model's own.
    Returns {"split", "files", "metrics": {variant: METRIC_KEYS dict}, "delta": {variant: {key: value -
    baseline value}}} (deltas for LE in degrees).
    """
    from dtbt_tf.data.dcase import discover, load_audio, read_metadata, split_recordings
    from dtbt_tf.features import features_numpy
    from dtbt_tf.inference import load_model, localize, outputs_to_metadata

    if baseline not in tflite_paths:
        raise ConfigError(f"quantization_report: no {baseline!r} variant among {sorted(tflite_paths)}")
    models = {name: load_model(path) for name, path in tflite_paths.items()}
    cfg = models[baseline].feature_cfg
    recs = [r for r in split_recordings(discover(data_root, cfg.fmt), split, root=data_root) if r.metadata_path]
    if not recs:
        raise ConfigError(f"{data_root}: split {split!r} has no recordings with metadata")
    recs = recs[:max_files] if max_files else recs
    preds = {name: {} for name in models}
    refs = {}
    for rec in recs:
        audio = load_audio(rec.audio_path, cfg.sample_rate)
        feats = features_numpy(audio, cfg)
        refs[rec.stem] = tracks_from_metadata(read_metadata(rec.metadata_path))
        for name, model in models.items():
            doa, act = localize(audio, model, features=feats)
            inference = model.inference.with_overrides(threshold)
            preds[name][rec.stem] = tracks_from_metadata(outputs_to_metadata(doa, act, inference))
    metrics = {name: compute_metrics(p, refs) for name, p in preds.items()}
    delta = {name: {k: float(m[k] - metrics[baseline][k]) for k in ("LE", "LR", "LP", "LF1", "MOTA")}
             for name, m in metrics.items() if name != baseline}
    return {"split": split, "files": len(recs), "metrics": metrics, "delta": delta}
