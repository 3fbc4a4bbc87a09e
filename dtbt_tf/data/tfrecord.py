"""Feature extraction job: a DCASE-layout folder -> sharded TFRecords + ``manifest.json`` (DESIGN 2, 8).

Output folder layout::

    manifest.json                       feature config, n_max, source, splits, counts, normalisation stats, shards
    <split>-00000-of-000NN.tfrecord     one tf.train.Example per recording (all files of a split, name order)
    <split>-00000-of-000NN.tfrecord.json  per-shard index: file names, frame counts, source stamps, feature sums

Each Example holds one whole recording (T = samples // 480 feature frames, F = T // 5 label frames):

- ``features``: ``tf.io.serialize_tensor`` of float32 (T, n_mels, C), RAW (unnormalised)
- ``doa`` float32 (F, Nmax, 3), ``active`` float32 (F, Nmax), ``track_id`` int32 (F, Nmax): serialized tensors
- ``name`` (bytes, file stem), ``fold`` (int64), ``n_frames`` (int64, T)

Shards hold ``shard_files`` consecutive recordings of one split in file-name order, so reading the shards of a
split in order gives its recordings in name order. Every shard is written to a temporary name and renamed, then
its index; a restarted job keeps every shard whose index matches the plan (same files with the same size and
mtime, same feature config and n_max, same shard size on disk) and only redoes the others. The manifest is
written last: a folder without ``manifest.json`` is an unfinished job.

One job per folder: the whole job holds the folder's :class:`~dtbt_tf.artifacts.FolderLock` (a second job on it
fails at once), removes the temporaries of a killed run first, and refuses a finished folder of another dataset
(source root, splits), feature config or n_max unless ``overwrite``.

Parallelism: recordings are processed by a pool of ``workers`` threads (TF kernels release the GIL). On our
2-core machines TF already spreads one file's STFT over both cores: one thread, two threads and a sequential
loop run at the same speed (~0.12 s per 60 s FOA file), while a pool of processes that each import TF was
several times slower; see ``benchmarks/bench_tfrecord.py``.
"""
from __future__ import annotations

import collections
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from dtbt_tf.artifacts import FolderLock
from dtbt_tf.config import FORMATS, ConfigError, FeatureConfig, atomic_write_text, to_dict
from dtbt_tf.data import dcase
from dtbt_tf.features.tf_features import feature_function
from dtbt_tf.progress import progress_bar
from dtbt_tf.version import __version__

MANIFEST = "manifest.json"
STD_FLOOR = 1e-6  # lower bound of the normalisation std (a constant bin must not divide by zero)
_SHARD_RE = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.json)?$")
_TMP_RE = re.compile(r"^([A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.json)?|manifest\.json)\.tmp\d+$")


def shard_name(split: str, index: int, n_shards: int) -> str:
    """``<split>-00000-of-000NN.tfrecord``."""
    return f"{split}-{index:05d}-of-{n_shards:05d}.tfrecord"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(name: str, fold: int, features: np.ndarray, doa: np.ndarray, active: np.ndarray,
                 track_id: np.ndarray) -> bytes:
    """One serialized tf.train.Example for a whole recording (tensors via tf.io.serialize_tensor)."""

    def tensor(x, dtype):
        return _bytes(tf.io.serialize_tensor(np.asarray(x, dtype)).numpy())

    feats = {
        "name": _bytes(name.encode()),
        "fold": _int(fold),
        "n_frames": _int(features.shape[0]),
        "features": tensor(features, np.float32),
        "doa": tensor(doa, np.float32),
        "active": tensor(active, np.float32),
        "track_id": tensor(track_id, np.int32),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


# ----------------------------------------------------------------------------------------------------------
# Planning and validation (everything that can be wrong with the input is found before anything is written)


Job = collections.namedtuple("Job", "rec labels")  # a recording and its (doa, active, track_id)
Shard = collections.namedtuple("Shard", "split name jobs")


def _stamp(path: str) -> list:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _check_header(path: str, cfg: FeatureConfig) -> int:
    """Sample count of a wav after checking its header (rate, channels, length, not truncated); DataError
    otherwise."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:
        raise dcase.DataError(f"{path}: cannot read audio ({e})") from None
    if info.samplerate != cfg.sample_rate:
        raise dcase.DataError(f"{path}: sample rate {info.samplerate} Hz, expected {cfg.sample_rate} Hz")
    if info.channels != dcase.N_CHANNELS:
        raise dcase.DataError(f"{path}: {info.channels} channels, expected {dcase.N_CHANNELS}")
    declared = dcase.wav_declared_frames(path)
    if declared is not None and declared > info.frames:
        raise dcase.DataError(f"{path}: truncated: header declares {declared} frames, file holds {info.frames}")
    min_samples = cfg.hop_length * cfg.label_hop_frames
    if info.frames < min_samples:
        raise dcase.DataError(f"{path}: {info.frames} samples, shorter than one label frame ({min_samples})")
    return info.frames


def _validate(rec: dcase.Recording, cfg: FeatureConfig, n_max: int) -> Job:
    if rec.metadata_path is None:
        raise dcase.DataError(f"{rec.audio_path}: no metadata CSV {rec.stem}.csv in the metadata folder")
    n_samples = _check_header(rec.audio_path, cfg)
    n_label_frames = (n_samples // cfg.hop_length) // cfg.label_hop_frames
    meta = dcase.read_metadata(rec.metadata_path)
    return Job(rec, dcase.metadata_to_labels(meta, n_label_frames, n_max, rec.metadata_path))


def _normalise_splits(splits: dict | None) -> dict:
    splits = dict(splits or dcase.DEFAULT_SPLITS)
    if "train" not in splits:
        raise ConfigError(f"splits {sorted(splits)} have no 'train' split (normalisation statistics need it)")
    seen: dict[int, str] = {}
    for name, folds in splits.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ConfigError(f"split name {name!r}: use letters, digits and '_' only")
        for f in folds:
            if f in seen:
                raise ConfigError(f"fold {f} is in both splits {seen[f]!r} and {name!r}")
            seen[f] = name
    return {name: tuple(int(f) for f in folds) for name, folds in splits.items()}


def plan(root: str, fmt: str, n_max: int = 2, splits: dict | None = None, shard_files: int = 8):
    """Validate a DCASE-layout root and plan its shards: (FeatureConfig, splits, [Shard, ...]).

    Reads every metadata CSV and wav header (not the audio): DataError naming the file for an unknown format,
    missing root/metadata, empty split, wrong sample rate/channels, malformed CSV or more than n_max sources.
    """
    if fmt not in FORMATS:
        raise dcase.DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if shard_files < 1 or n_max < 1:
        raise ConfigError(f"shard_files and n_max must be >= 1, got {shard_files}, {n_max}")
    cfg = FeatureConfig(fmt=fmt)
    splits = _normalise_splits(splits)
    recs = dcase.discover(root, fmt)
    shards = []
    for split in splits:
        jobs = [_validate(r, cfg, n_max) for r in dcase.split_recordings(recs, split, splits, root)]
        n_shards = -(-len(jobs) // shard_files)
        for i in range(n_shards):
            shards.append(Shard(split, shard_name(split, i, n_shards), jobs[i * shard_files:(i + 1) * shard_files]))
    return cfg, splits, shards


# ----------------------------------------------------------------------------------------------------------
# Writing


def _index_head(shard: Shard, cfg: FeatureConfig, n_max: int) -> dict:
    """The part of a shard index that must match the plan for a finished shard to be kept."""
    return {
        "files": [j.rec.stem for j in shard.jobs],
        "source": [_stamp(j.rec.audio_path) + _stamp(j.rec.metadata_path) for j in shard.jobs],
        "feature_config": to_dict(cfg),
        "n_max": n_max,
    }


def _finished_index(out_dir: str, shard: Shard, cfg: FeatureConfig, n_max: int) -> dict | None:
    """The shard's index if the shard on disk is complete and matches the plan, else None."""
    path = os.path.join(out_dir, shard.name)
    try:
        with open(path + ".json") as f:
            index = json.load(f)
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return None
    head = _index_head(shard, cfg, n_max)
    if any(index.get(k) != v for k, v in head.items()) or index.get("bytes") != size:
        return None
    return index


def _process(job: Job, cfg: FeatureConfig):
    """(serialized example, T, sum (M, C) float64, sum of squares (M, C) float64) of one recording."""
    rec = job.rec
    audio = dcase.load_audio(rec.audio_path, cfg.sample_rate)
    feats = feature_function(cfg)(audio).numpy()
    doa, active, track_id = job.labels
    x = feats.astype(np.float64)
    return (make_example(rec.stem, rec.fold, feats, doa, active, track_id), feats.shape[0],
            x.sum(axis=0), np.einsum("tmc,tmc->mc", x, x))


def _ordered_map(fn, items, workers: int):
    """fn over items in order, at most 2 * workers in flight (bounded memory); workers <= 1: in this thread."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as ex:
        pending = collections.deque()
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _temporaries(out_dir: str) -> list[str]:
    """What killed writers of this job left in ``out_dir`` (only our own file patterns)."""
    return [os.path.join(out_dir, f) for f in os.listdir(out_dir) if _TMP_RE.match(f)]


def _stale_shards(out_dir: str, planned: set[str]) -> list[str]:
    """Shards (and indexes) of an older plan in ``out_dir``."""
    return [os.path.join(out_dir, f) for f in os.listdir(out_dir)
            if _SHARD_RE.match(f) and f.removesuffix(".json") not in planned]


def _write_shards(out_dir, todo, cfg, n_max, workers, bar) -> None:
    jobs = [job for shard in todo for job in shard.jobs]
    results = _ordered_map(lambda job: _process(job, cfg), jobs, workers)
    for shard in todo:
        path = os.path.join(out_dir, shard.name)
        tmp = f"{path}.tmp{os.getpid()}"
        frames, total, total_sq = [], 0.0, 0.0
        try:
            with tf.io.TFRecordWriter(tmp) as writer:
                for _ in shard.jobs:
                    example, n_frames, s, sq = next(results)
                    writer.write(example)
                    frames.append(n_frames)
                    total, total_sq = total + s, total_sq + sq
                    bar.update(1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        index = dict(_index_head(shard, cfg, n_max), split=shard.split, n_frames=frames,
                     folds=[j.rec.fold for j in shard.jobs], bytes=os.path.getsize(path),
                     sum=np.asarray(total).tolist(), sum_sq=np.asarray(total_sq).tolist())
        atomic_write_text(path + ".json", json.dumps(index) + "\n")


def _check_same_job(path: str, cfg: FeatureConfig, n_max: int, root: str, splits: dict) -> None:
    """ConfigError if an existing manifest was made with another feature config or n_max, or from another
    dataset (source root or splits): a folder that runs may be reading is never replaced silently."""
    try:
        with open(path) as f:
            old = json.load(f)
        same_config = old["feature_config"] == to_dict(cfg) and old["n_max"] == n_max
        old_root = old["source"]["root"]
        old_splits = {name: tuple(info["folds"]) for name, info in old["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        same_config, old_root, old_splits = False, None, None
    if not same_config:
        raise ConfigError(f"{path}: this folder holds features of another job (different feature config, n_max "
                          "or an unreadable manifest); choose another output folder, delete it or pass --overwrite")
    if os.path.realpath(old_root) != os.path.realpath(root):
        raise ConfigError(f"{path}: this folder holds the features of another dataset ({old_root}); choose another "
                          "output folder or pass --overwrite to replace them")
    if old_splits != splits:
        raise ConfigError(f"{path}: this folder holds the features of other splits ({old_splits}, asked for "
                          f"{splits}); choose another output folder or pass --overwrite to replace them")


def _manifest(root, cfg, n_max, splits, shards, indexes) -> dict:
    out_splits = {}
    for split, folds in splits.items():
        mine = [(sh, indexes[sh.name]) for sh in shards if sh.split == split]
        frames = [t for _, ix in mine for t in ix["n_frames"]]
        out_splits[split] = {
            "folds": list(folds),
            "files": [f for _, ix in mine for f in ix["files"]],
            "n_files": len(frames),
            "n_frames": int(sum(frames)),
            "n_label_frames": int(sum(t // cfg.label_hop_frames for t in frames)),
            "shards": [sh.name for sh, _ in mine],
        }
    # Normalisation statistics from streaming float64 sums over the training shards only.
    train = [indexes[sh.name] for sh in shards if sh.split == "train"]
    n = out_splits["train"]["n_frames"]
    mean = sum(np.asarray(ix["sum"], np.float64) for ix in train) / n
    var = sum(np.asarray(ix["sum_sq"], np.float64) for ix in train) / n - mean * mean
    std = np.maximum(np.sqrt(np.maximum(var, 0.0)), STD_FLOOR)
    return {
        "dtbt_tf_version": __version__,
        "feature_config": to_dict(cfg),
        "n_max": n_max,
        "source": {"root": os.path.abspath(root), "format": cfg.fmt},
        "splits": out_splits,
        "normalization": {"split": "train", "n_frames": n, "mean": mean.tolist(), "std": std.tolist()},
    }


def extract_dataset(root: str, fmt: str, out_dir: str, n_max: int = 2, splits: dict | None = None,
                    shard_files: int = 8, workers: int | None = None, progress: bool = True,
                    overwrite: bool = False) -> str:
    """Extract features + labels of every recording under a DCASE-layout `root` into sharded TFRecords.

    fmt: 'foa' | 'mic'; splits: {split: folds} (default dcase.DEFAULT_SPLITS, must contain 'train', whose
    files give the normalisation statistics); shard_files: recordings per shard; workers: threads (default
    min(4, cpu count)). Restartable: finished shards that match the plan are kept. overwrite: replace a finished
    folder of another dataset, feature config or n_max (refused otherwise). Returns the manifest path.
    Raises DataError/ConfigError (one line, naming the file) before writing anything if the input is bad, and
    ConfigError at once if another job holds the folder.
    """
    cfg, splits, shards = plan(root, fmt, n_max, splits, shard_files)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    path = os.path.join(out_dir, MANIFEST)
    with FolderLock(out_dir, "feature extraction"):
        for f in _temporaries(out_dir):
            os.remove(f)
        if os.path.exists(path) and not overwrite:
            _check_same_job(path, cfg, n_max, root, splits)
        indexes = {sh.name: _finished_index(out_dir, sh, cfg, n_max) for sh in shards}
        todo = [sh for sh in shards if indexes[sh.name] is None]
        stale = _stale_shards(out_dir, {sh.name for sh in shards})
        if todo or stale:
            # Work to do: until the manifest is rewritten at the end the folder is an unfinished job. A finished
            # folder keeps its manifest throughout, so a second job reusing it never finds it missing.
            if os.path.exists(path):
                os.remove(path)
            for f in stale:
                os.remove(f)
        n_files = sum(len(sh.jobs) for sh in shards)
        n_todo = sum(len(sh.jobs) for sh in todo)
        with progress_bar(n_files, f"{fmt} features", "file", n_files - n_todo, enabled=progress) as bar:
            _write_shards(out_dir, todo, cfg, n_max, workers, bar)
        for sh in todo:
            indexes[sh.name] = _finished_index(out_dir, sh, cfg, n_max)
        atomic_write_text(path, json.dumps(_manifest(root, cfg, n_max, splits, shards, indexes), indent=1) + "\n")
    return path
