"""tf.data reader of the feature folders written by :mod:`dtbt_tf.data.tfrecord` (DESIGN 2, 8).

Training/validation batches: :func:`make_sequence_dataset` -> ``(features (batch, L, n_mels, C) float32 RAW,
{"doa": (batch, L/5, Nmax, 3), "active": (batch, L/5, Nmax), "track_id": (batch, L/5, Nmax) int32})`` with
L = ``seq_frames`` feature frames (default 250 = 50 label frames). Features are NOT normalised here: the model
holds a normalisation layer built from :func:`normalization_stats` so that it travels with exported models.

Cutting a recording of F label frames into sequences (all positions in label frames, 5 feature frames each):
the recording is truncated to 5F feature frames, padded in front by an offset ``o`` and cut into windows of
``seq_frames`` starting every ``seq_hop`` frames, from the first until one reaches the end; the padding before
the recording and after its end has zero features and inactive labels (doa = (10, 10, 10), active = 0,
track_id = -1). Nothing is dropped, every frame is in some window: with ``seq_hop == seq_frames`` (default)
each frame is in exactly one. ``o = 0`` when ``shuffle=False`` (windows at 0, L, 2L, ...; only the last one
may be padded); with ``shuffle=True`` ``o`` is drawn per file and per epoch from [0, seq_hop) label frames so
that window borders move between epochs (the first and the last window of a file may then be padded).
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from dtbt_tf.config import PAD_VALUE, ConfigError, FeatureConfig, check_compatible, from_dict
from dtbt_tf.data.dcase import DataError
from dtbt_tf.data.tfrecord import MANIFEST

_MANIFEST_KEYS = ("feature_config", "n_max", "splits", "normalization")
_EXAMPLE_SPEC = {
    "name": tf.io.FixedLenFeature([], tf.string),
    "fold": tf.io.FixedLenFeature([], tf.int64),
    "n_frames": tf.io.FixedLenFeature([], tf.int64),
    "features": tf.io.FixedLenFeature([], tf.string),
    "doa": tf.io.FixedLenFeature([], tf.string),
    "active": tf.io.FixedLenFeature([], tf.string),
    "track_id": tf.io.FixedLenFeature([], tf.string),
}


def load_manifest(data_dir: str) -> dict:
    """Read and check ``<data_dir>/manifest.json``; DataError (one line, naming the file) if missing/malformed.

    Adds ``manifest["dir"]`` = the folder's absolute path (shard names in the manifest are relative to it).
    """
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; {data_dir} is not a finished feature folder "
                        "(run scripts/extract_features.py)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read manifest ({e})") from None
    missing = [k for k in _MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise DataError(f"{path}: malformed manifest, missing {missing}")
    try:
        cfg = from_dict(FeatureConfig, manifest["feature_config"])
        mean, std = (np.asarray(manifest["normalization"][k], np.float32) for k in ("mean", "std"))
        shards = {s: v["shards"] for s, v in manifest["splits"].items()}
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
    if mean.shape != (cfg.n_mels, cfg.n_channels) or std.shape != mean.shape:
        raise DataError(f"{path}: normalisation statistics have shape {mean.shape}/{std.shape}, "
                        f"expected {(cfg.n_mels, cfg.n_channels)}")
    for split, names in shards.items():
        for name in names:
            if not os.path.isfile(os.path.join(data_dir, name)):
                raise DataError(f"{os.path.join(data_dir, name)}: shard of split {split!r} listed in {path} is missing")
            _check_shard(os.path.join(data_dir, name), manifest["n_max"], path)
    manifest["dir"] = os.path.abspath(data_dir)
    return manifest


def _check_shard(shard: str, n_max, manifest_path: str) -> None:
    """DataError if a shard differs from the index extraction wrote beside it (``<shard>.json``): a truncated or
    replaced file (byte size), or a manifest whose n_max was edited. A shard without an index is not checked."""
    try:
        with open(shard + ".json") as f:
            index = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise DataError(f"{shard}.json: cannot read the shard index ({e})") from None
    size = os.path.getsize(shard)
    if isinstance(index, dict) and "bytes" in index and index["bytes"] != size:
        raise DataError(f"{shard}: truncated or replaced: {size} bytes, extraction wrote {index['bytes']}")
    if isinstance(index, dict) and "n_max" in index and index["n_max"] != n_max:
        raise DataError(f"{manifest_path}: n_max={n_max!r}, but shard {os.path.basename(shard)} was extracted with "
                        f"n_max={index['n_max']!r}")


def feature_config(manifest: dict) -> FeatureConfig:
    """The FeatureConfig the folder was made with."""
    return from_dict(FeatureConfig, manifest["feature_config"])


def check_manifest(manifest: dict, feature_cfg: FeatureConfig, n_max: int, where: str) -> None:
    """ConfigError naming `where` and every mismatching field if a folder does not fit a model's config."""
    problems = []
    try:
        check_compatible(feature_cfg, feature_config(manifest), where)
    except ConfigError as e:
        problems.append(str(e).split("feature config mismatch: ", 1)[-1])
    if manifest["n_max"] != n_max:
        problems.append(f"n_max={manifest['n_max']!r} (expected {n_max!r})")
    if problems:
        raise ConfigError(f"{where}: feature folder does not match the model config: " + ", ".join(problems))


def normalization_stats(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each float32 (n_mels, C), computed on the training split of the folder."""
    norm = manifest["normalization"]
    return np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)


def _split_shards(manifest: dict, split: str) -> list[str]:
    if split not in manifest["splits"]:
        raise DataError(f"{os.path.join(manifest['dir'], MANIFEST)}: no split {split!r} "
                        f"(has {sorted(manifest['splits'])})")
    return [os.path.join(manifest["dir"], s) for s in manifest["splits"][split]["shards"]]


def _parser(cfg: FeatureConfig, n_max: int):
    def parse(record):
        ex = tf.io.parse_single_example(record, _EXAMPLE_SPEC)
        feats = tf.ensure_shape(tf.io.parse_tensor(ex["features"], tf.float32), [None, cfg.n_mels, cfg.n_channels])
        labels = {
            "doa": tf.ensure_shape(tf.io.parse_tensor(ex["doa"], tf.float32), [None, n_max, 3]),
            "active": tf.ensure_shape(tf.io.parse_tensor(ex["active"], tf.float32), [None, n_max]),
            "track_id": tf.ensure_shape(tf.io.parse_tensor(ex["track_id"], tf.int32), [None, n_max]),
        }
        return ex["name"], feats, labels

    return parse


def _cutter(cfg: FeatureConfig, seq_frames: int, seq_hop: int):
    """(features (T, M, C), labels, offset) -> windows (n, seq_frames, M, C) and labels (n, seq_frames/5, ...)."""
    hop_t = cfg.label_hop_frames
    win, hop = seq_frames // hop_t, seq_hop // hop_t  # in label frames

    def cut(feats, labels, offset):
        n_lab = tf.shape(labels["active"])[0]
        span = offset + n_lab
        n_win = 1 + tf.maximum(0, (span - win + hop - 1) // hop)
        back = (n_win - 1) * hop + win - span

        def pad(x, value, scale=1):
            inner = x.shape[1:].as_list()
            paddings = [[offset * scale, back * scale]] + [[0, 0]] * len(inner)
            framed = tf.signal.frame(tf.pad(x, paddings, constant_values=value), win * scale, hop * scale, axis=0)
            return tf.ensure_shape(framed, [None, win * scale] + inner)

        windows = pad(feats[: n_lab * hop_t], 0.0, hop_t)
        out = {"doa": pad(labels["doa"], PAD_VALUE), "active": pad(labels["active"], 0.0),
               "track_id": pad(labels["track_id"], -1)}
        return windows, out

    return cut


def make_sequence_dataset(data_dir: str, split: str, batch_size: int, shuffle: bool = True, seed: int = 0,
                          repeat: bool = False, seq_frames: int = 250, seq_hop: int | None = None,
                          drop_remainder: bool = False, shuffle_buffer: int = 256) -> tf.data.Dataset:
    """Batches of fixed-length sequences of a split: (features, {"doa", "active", "track_id"}) (module doc).

    seq_frames / seq_hop: window length / step in feature frames (multiples of 5; seq_hop defaults to
    seq_frames). shuffle: shard order, random window offsets per file and epoch (seeded) and a buffer of
    `shuffle_buffer` sequences (~0.45 MB each for FOA). drop_remainder: drop the last incomplete batch (fixed
    batch shapes). repeat: endless. Deterministic for a given seed; unshuffled, the sequences come in
    file-name order, each file's windows in time order.
    """
    manifest = load_manifest(data_dir)
    cfg, n_max = feature_config(manifest), int(manifest["n_max"])
    seq_hop = seq_hop or seq_frames
    for name, v in (("seq_frames", seq_frames), ("seq_hop", seq_hop)):
        if v <= 0 or v % cfg.label_hop_frames:
            raise ConfigError(f"{name}={v} must be a positive multiple of {cfg.label_hop_frames} feature frames")
    shards = _split_shards(manifest, split)

    files = tf.data.Dataset.from_tensor_slices(shards)
    if shuffle:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    # Unshuffled: one shard after the other, so recordings come in file-name order.
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(shards), 4) if shuffle else 1,
                               num_parallel_calls=tf.data.AUTOTUNE)
    parse, cut = _parser(cfg, n_max), _cutter(cfg, seq_frames, seq_hop)
    recs = records.map(lambda r: parse(r)[1:], num_parallel_calls=tf.data.AUTOTUNE)  # deterministic order
    if shuffle:
        hop_labels = seq_hop // cfg.label_hop_frames
        offsets = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(r % hop_labels, tf.int32))
    else:
        offsets = tf.data.Dataset.from_tensors(tf.constant(0, tf.int32)).repeat()
    seqs = tf.data.Dataset.zip(recs, offsets).map(lambda x, o: cut(x[0], x[1], o),
                                                  num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if shuffle:
        seqs = seqs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return seqs.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def iter_recordings(data_dir: str, split: str):
    """Yield (name, features (T, n_mels, C) float32, {"doa", "active", "track_id"} full-length np arrays)
    for every recording of a split, in file-name order (evaluation on whole files)."""
    manifest = load_manifest(data_dir)
    parse = _parser(feature_config(manifest), int(manifest["n_max"]))
    records = iter(tf.data.TFRecordDataset(_split_shards(manifest, split)).map(parse))
    while True:
        try:
            name, feats, labels = next(records)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise DataError(f"{data_dir}: {split} shards are corrupt, truncated or do not match the manifest "
                            f"({e.message.splitlines()[0][:160]})") from None
        yield name.numpy().decode(), feats.numpy(), {k: v.numpy() for k, v in labels.items()}


def make_training_dataset(data_dir: str, split: str, batch_size: int, steps_per_epoch: int, epoch: int,
                          seed: int = 0, seq_frames: int = 250, seq_hop: int | None = None,
                          shuffle_buffer: int = 256) -> tf.data.Dataset:
    """The ``steps_per_epoch`` training batches of one epoch (0-based ``epoch``).

    An epoch's data (shard order, window offsets, sequence shuffle) is a function of ``(seed, epoch)`` only,
    never of how many epochs this process has read: a run resumed at an epoch boundary sees the same batches as
    the uninterrupted run. Epoch 0 draws with ``seed`` itself, later epochs with ``seed + 1000003 * epoch``;
    the split is repeated within the epoch as often as ``steps_per_epoch`` needs.
    """
    epoch_seed = int(seed) + 1000003 * int(epoch)
    return make_sequence_dataset(data_dir, split, batch_size, shuffle=True, seed=epoch_seed, repeat=True,
                                 seq_frames=seq_frames, seq_hop=seq_hop,
                                 shuffle_buffer=shuffle_buffer).take(steps_per_epoch)
