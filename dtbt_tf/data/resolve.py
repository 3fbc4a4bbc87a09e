"""Which feature folder a run trains on: a given one, one extracted next to a DCASE root, or the synthetic set."""
from __future__ import annotations

import os

import numpy as np

from dtbt_tf.config import FeatureConfig
from dtbt_tf.data.dcase import DataError

SPLITS = ("train", "val", "test")


def after_other_jobs(job, log):
    """``job()``; when another live job holds the folder it needs (two trainings started on one dataset),
    wait for that job to finish, then run ``job()`` again (it then reuses what the other job made)."""
    from dtbt_tf.artifacts import FolderBusy, wait_until_unlocked

    while True:
        try:
            return job()
        except FolderBusy as e:
            log(f"{e}: waiting for it to finish")
            wait_until_unlocked(e.folder)


def resolve_data(data: str | None, fmt: str, n_max: int, preset: str = "quick", seed: int = 0,
                 progress: bool = True, extract: bool = True, log=print) -> str:
    """A TFRecord feature folder for ``data``: the folder itself if it holds a manifest.json; for a
    DCASE-layout root, ``<root>_features_<fmt>_n<N>`` next to it, extracted or reused (finished shards are
    kept; the plan is checked against the root again, so added or changed recordings are picked up); None: the
    synthetic ``preset`` dataset with up to ``n_max`` overlapping sources (made or reused) and its feature
    folder. ``extract=False`` (multi-worker non-chief) uses a finished feature folder as it is and extracts only
    when there is none (another file system). A dataset or feature folder another job is making or checking is
    waited for (said through ``log``), not refused."""
    from dtbt_tf.data.tfrecord import MANIFEST, extract_dataset

    if data is None:
        from dtbt_tf.data.synth import make_dataset, synthetic_preset_for

        data = after_other_jobs(lambda: make_dataset(synthetic_preset_for(preset, n_max), fmt=fmt, seed=seed,
                                                      progress=progress), log)
    data = os.path.normpath(data)
    if not os.path.isdir(data):
        raise DataError(f"{data}: data folder not found")
    if os.path.isfile(os.path.join(data, MANIFEST)):
        return data
    if not any(os.path.isdir(os.path.join(data, f"{fmt}_{s}")) for s in ("dev", "eval")):
        raise DataError(f"{data}: neither a feature folder (no {MANIFEST}) nor a DCASE-layout root with {fmt}_dev/")
    out = f"{data}_features_{fmt}_n{n_max}"
    if extract or not os.path.isfile(os.path.join(out, MANIFEST)):
        after_other_jobs(lambda: extract_dataset(data, fmt, out, n_max=n_max, progress=progress), log)
    return out


def check_training_data(data_dir: str, feature_cfg: FeatureConfig, n_max: int) -> dict:
    """The manifest of a feature folder a run can train on: matching feature config and n_max, non-empty
    train/val/test splits, finite normalisation statistics, and a first record whose shapes agree with the
    manifest (an edited manifest or a truncated shard is caught here, not deep in training)."""
    from dtbt_tf.data.pipeline import check_manifest, iter_recordings, load_manifest, normalization_stats

    manifest = load_manifest(data_dir)
    check_manifest(manifest, feature_cfg, n_max, data_dir)
    for split in SPLITS:
        info = manifest["splits"].get(split)
        if not info or not info.get("n_files"):
            raise DataError(f"{data_dir}: split {split!r} is empty")
    mean, std = normalization_stats(manifest)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise DataError(f"{data_dir}: training features contain NaN or Inf (non-finite normalisation statistics)")
    for split in SPLITS:
        for _ in iter_recordings(data_dir, split):  # a first record per split: shapes agree with the manifest
            break
    return manifest
