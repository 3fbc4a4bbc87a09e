"""Overlap augmentation (paper IV-B): new two-source training recordings mixed from pairs of single-source ones.

`augment_dataset(root, out)` writes a complete DCASE2020-layout root at `out`: every original recording (all folds,
all formats present; hard-linked, or copied where linking fails) plus new training recordings, each the sum of two
single-source (ov1) training recordings of the same fold and room, in every format (so FOA and MIC stay the same
scene), with the two metadata CSVs merged. Validation and test folds are never touched.

Counting rule: with N2 = number of original ov2 training recordings, the job adds (factor - 1) * N2 new mixes, so the
training set then holds factor * N2 two-source recordings (the paper: "4 times the original dataset of 2-source
overlapping recordings" for factor 4). ov1 recordings are used as evenly as possible (round-robin pairings inside
each fold and room, mixes spread over the (fold, room) groups in proportion to their ov1 counts); no pair is used
twice. New names are `foldF_roomR_mixMMM_ov2` with mix numbers from max(500, largest existing mix + 1) upward.

Level: a mix whose peak (over all channels of all formats) would exceed PEAK_LIMIT is scaled down by one gain shared
by its formats; the summary counts these rescales. Note that each mix carries the ambient noise of both sources.

Restartable: the job works in `out + ".partial"` (each file written to a temporary name, then renamed), records each
finished mix in a progress log there, and renames the folder to `out` only when everything, including
`augment_summary.json`, is written. A rerun with the same settings resumes a `.partial` folder (assuming the source
files did not change meanwhile) and returns at once for a finished `out`. Bad input is detected before anything is
written (DataError, one line naming the file). One job at a time: the job holds the `.partial` folder's
:class:`~dtbt_tf.artifacts.FolderLock` until the folder is renamed to `out` (a second job fails at once) and removes
the temporaries of a killed run first.
Hard links share storage with the source dataset: edit an output file in place and the original changes too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil

import numpy as np

from dtbt_tf.artifacts import LOCK_FILE, FolderLock
from dtbt_tf.config import FORMATS, atomic_write_text
from dtbt_tf.data.dcase import (DEFAULT_SPLITS, DataError, Metadata, Recording, audio_dirs, discover,
                                format_name, load_audio, read_metadata, split_recordings, write_audio,
                                wav_declared_frames, write_metadata)
from dtbt_tf.progress import progress_bar

logger = logging.getLogger(__name__)

SUMMARY_NAME = "augment_summary.json"
PEAK_LIMIT = 0.99
MIX_START = 500
COUNTING_RULE = ("new two-source mixes = (factor - 1) x original ov2 training recordings, so the training set holds "
                 "factor x as many two-source recordings (original ov2 + new mixes) as before")
_PLAN_NAME = ".augment_plan.json"
_PROGRESS_NAME = ".augment_progress.jsonl"
_TMP_RE = re.compile(r"\.tmp\d+(\.wav)?$")


@dataclasses.dataclass(frozen=True)
class Mix:
    """One planned new recording: its name fields and the stems of its two ov1 sources."""

    stem: str
    fold: int
    room: int
    mix: int
    source_a: str
    source_b: str


def count_new_mixes(n_ov2: int, factor: int) -> int:
    """Number of new mixes so that the training set holds `factor` x `n_ov2` two-source recordings."""
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise DataError(f"factor must be an integer >= 1, got {factor!r}")
    return (int(factor) - 1) * int(n_ov2)


def round_robin_pairs(items: list) -> list[tuple]:
    """All unordered pairs of `items`, ordered in rounds of disjoint pairs (circle method).

    Taking the first k rounds uses every item k times (one fewer for the odd one out when len is odd).
    """
    arr = list(items) + ([None] if len(items) % 2 else [])
    n = len(arr)
    pairs = []
    for _ in range(n - 1):
        pairs += [(arr[i], arr[n - 1 - i]) for i in range(n // 2) if arr[i] is not None and arr[n - 1 - i] is not None]
        arr = [arr[0], arr[-1]] + arr[1:-1]
    return pairs


def plan_pairs(groups: dict[tuple[int, int], list[str]], n_new: int,
               seed: int) -> list[tuple[tuple[int, int], str, str]]:
    """Choose `n_new` distinct same-group pairs: ((fold, room), stem_a, stem_b) in group order.

    Each group's stems are shuffled with `seed`, then paired round-robin; mixes go one at a time to the group whose
    mean use per ov1 recording would stay lowest, so every recording is used about equally often.
    DataError if fewer than `n_new` distinct pairs exist.
    """
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    seqs = {}
    for k in keys:
        stems = sorted(groups[k])
        seqs[k] = round_robin_pairs([stems[i] for i in rng.permutation(len(stems))])
    available = sum(len(s) for s in seqs.values())
    if n_new > available:
        raise DataError(f"cannot make {n_new} distinct mixes: the ov1 training recordings give only {available} "
                        f"same-fold, same-room pairs (lower --factor)")
    alloc = {k: 0 for k in keys}
    for _ in range(n_new):
        k = min((k for k in keys if alloc[k] < len(seqs[k])), key=lambda k: (alloc[k] + 1) / len(groups[k]))
        alloc[k] += 1
    return [(k, a, b) for k in keys for a, b in seqs[k][:alloc[k]]]


def merge_metadata(meta_a: Metadata, meta_b: Metadata, name: str = "<mix>") -> Metadata:
    """Union of two recordings' rows; B's track ids of classes that A also has are offset past A's.

    Two events of one class in one frame so get different track numbers. DataError if a frame ends up with more than
    two active events (impossible for two single-source recordings) or a repeated (class, track).
    """
    track_b = meta_b.track.copy()
    for c in np.intersect1d(meta_a.cls, meta_b.cls):
        track_b[meta_b.cls == c] += int(meta_a.track[meta_a.cls == c].max()) + 1
    merged = Metadata(np.concatenate([meta_a.frame, meta_b.frame]), np.concatenate([meta_a.cls, meta_b.cls]),
                      np.concatenate([meta_a.track, track_b]), np.concatenate([meta_a.doa, meta_b.doa]))
    if merged.frame.size:
        per_frame = np.bincount(merged.frame)
        if per_frame.max() > 2:
            raise DataError(f"{name}: frame {int(per_frame.argmax())} would hold {int(per_frame.max())} events (> 2)")
        keys = set(zip(merged.frame.tolist(), merged.cls.tolist(), merged.track.tolist()))
        if len(keys) != merged.frame.size:
            raise DataError(f"{name}: merged metadata repeats a (frame, class, track) row")
    return merged


def mix_audio(audio_a: dict[str, np.ndarray], audio_b: dict[str, np.ndarray],
              peak_limit: float = PEAK_LIMIT) -> tuple[dict[str, np.ndarray], float]:
    """Sum two recordings per format ({fmt: (samples, 4) float32}); one gain <= 1 for all formats keeps the peak
    at or below `peak_limit`. Returns ({fmt: mix}, gain)."""
    mixed = {f: audio_a[f] + audio_b[f] for f in audio_a}
    peak = max(float(np.max(np.abs(m))) if m.size else 0.0 for m in mixed.values())
    gain = peak_limit / peak if peak > peak_limit else 1.0
    if gain < 1.0:
        mixed = {f: (m * np.float32(gain)).astype(np.float32) for f, m in mixed.items()}
    return mixed, gain


# ----------------------------------------------------------------------------------------------------------
# Checks before anything is written


def _audio_info(path: str) -> tuple[int, int]:
    """(sample rate, frames) from the wav header; DataError if the file holds fewer frames than it declares."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read audio ({e})") from None
    declared = wav_declared_frames(path)
    if declared is not None and declared > info.frames:
        raise DataError(f"{path}: truncated: header declares {declared} frames, file holds {info.frames}")
    return int(info.samplerate), int(info.frames)


def _check_group_audio(recs: list[dict[str, Recording]]) -> int:
    """All recordings (all formats) of one fold/room share sample rate and length; returns the sample rate."""
    first, first_info = None, None
    for by_fmt in recs:
        for r in by_fmt.values():
            info = _audio_info(r.audio_path)
            if first is None:
                first, first_info = r.audio_path, info
            elif info[0] != first_info[0]:
                raise DataError(f"cannot mix {first} ({first_info[0]} Hz) and {r.audio_path} ({info[0]} Hz): "
                                f"different sample rates")
            elif info[1] != first_info[1]:
                raise DataError(f"cannot mix {first} ({first_info[1]} samples) and {r.audio_path} ({info[1]} samples): "
                                f"different lengths")
    return first_info[0]


def _is_cartesian(path: str) -> bool:
    """Whether a metadata CSV uses the 6-column Cartesian variant (first non-empty row)."""
    with open(path) as f:
        for line in f:
            if line.strip():
                return line.count(",") == 5
    return False


def _expected_metadata_path(r: Recording) -> str:
    audio_dir = os.path.dirname(r.audio_path)
    return os.path.join(os.path.dirname(audio_dir), "metadata_" + audio_dir.rsplit("_", 1)[1], r.stem + ".csv")


def _load_single_source(r: Recording) -> Metadata:
    meta = read_metadata(r.metadata_path)
    if meta.frame.size:
        per_frame = np.bincount(meta.frame)
        if per_frame.max() > 1:
            raise DataError(f"{r.metadata_path}: named ov1 but frame {int(per_frame.argmax())} has "
                            f"{int(per_frame.max())} active events")
    return meta


# ----------------------------------------------------------------------------------------------------------
# File helpers


def _link_or_copy(src: str, dst: str) -> bool:
    """Hard-link `src` to `dst` (True), or copy through a temporary name where linking fails (False)."""
    try:
        os.link(src, dst)
        return True
    except OSError:  # other file system, no permission, no hard links
        pass
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return False


def _out_path(out_root: str, like: str, name: str) -> str:
    """`name` in the folder of `out_root` that corresponds to the folder of the source file `like`."""
    return os.path.join(out_root, os.path.basename(os.path.dirname(like)), name)


def _remove_temp_files(folder: str) -> int:
    n = 0
    for d, _, files in os.walk(folder):
        for f in files:
            if _TMP_RE.search(f):
                os.remove(os.path.join(d, f))
                n += 1
    return n


def _read_progress(path: str) -> dict[str, float]:
    """Finished mixes {stem: gain} from the progress log (a torn last line is ignored)."""
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    done[rec["stem"]] = float(rec["gain"])
                except (ValueError, KeyError, TypeError):
                    continue
    return done


def _settings_match(summary: dict, settings: dict) -> bool:
    return all(summary.get(k) == v for k, v in settings.items())


def _finished_output(out: str, settings: dict) -> dict | None:
    """The result for a finished augmentation with these `settings` in `out`; None if `out` is missing or
    empty; DataError if it holds anything else."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a folder")
    if not (os.path.isdir(out) and os.listdir(out)):
        return None
    summary_path = os.path.join(out, SUMMARY_NAME)
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if _settings_match(summary, settings):
            logger.info("%s: already complete", out)
            return {**summary, "run": {"already_complete": True}}
    raise DataError(f"{out}: already exists and is not a finished augmentation with these settings; "
                    f"choose another --out or delete it")


# ----------------------------------------------------------------------------------------------------------
# The job


def augment_dataset(root: str, out: str, factor: int = 4, formats: tuple[str, ...] | None = None, seed: int = 0,
                    splits: dict | None = None, progress: bool = True) -> dict:
    """Write the augmented DCASE-layout root `out` from `root` (see the module docstring); returns the summary.

    formats: audio formats to process (default: those of FORMATS present under `root`). splits: as DEFAULT_SPLITS;
    only its 'train' folds are augmented. The summary (also `out/augment_summary.json`) holds the settings, counts,
    every mix with its two sources and gain, and the number of rescaled mixes; the returned dict adds `run`
    (files linked/copied, mixes written/reused this run).
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset root not found")
    count_new_mixes(0, factor)  # validates factor before any work
    out = os.path.normpath(out)
    if os.path.realpath(out) == os.path.realpath(root):
        raise DataError(f"{out}: output must differ from the dataset root")
    splits = dict(splits or DEFAULT_SPLITS)
    if "train" not in splits:
        raise DataError(f"splits {splits} have no 'train' entry")
    train_folds = sorted(int(f) for f in splits["train"])
    if formats is None:
        formats = tuple(f for f in FORMATS if audio_dirs(root, f))
        if not formats:
            raise DataError(f"{root}: no {'/, '.join(f + '_dev' for f in FORMATS)}/ folder (not a DCASE-layout root)")
    formats = tuple(formats)
    settings = {"source": os.path.abspath(root), "factor": int(factor), "seed": int(seed), "formats": list(formats),
                "train_folds": train_folds}

    finished = _finished_output(out, settings)
    if finished is not None:
        return finished

    # Discover and check everything before writing.
    recs = {f: discover(root, f) for f in formats}
    train = {f: split_recordings(recs[f], "train", splits, root) for f in formats}
    by_stem: dict[str, dict[str, Recording]] = {}
    for f in formats:
        for r in train[f]:
            by_stem.setdefault(r.stem, {})[f] = r
    for stem, by_fmt in sorted(by_stem.items()):
        for f in formats:
            if f not in by_fmt:
                other = next(iter(by_fmt.values()))
                raise DataError(f"{other.audio_path}: no {f} version of this recording under {root}")
        r = by_fmt[formats[0]]
        if r.metadata_path is None:
            raise DataError(f"{r.audio_path}: metadata missing (expected {_expected_metadata_path(r)})")
    ov1 = {s: b for s, b in by_stem.items() if b[formats[0]].overlap == 1}
    n_ov2 = sum(b[formats[0]].overlap == 2 for b in by_stem.values())
    if not ov1:
        raise DataError(f"{root}: no single-source (ov1) training recordings in folds {train_folds}: nothing to mix")
    n_new = count_new_mixes(n_ov2, factor)
    if n_new == 0 and factor > 1:
        raise DataError(f"{root}: no two-source (ov2) training recordings in folds {train_folds} for --factor to "
                        f"multiply")
    groups: dict[tuple[int, int], list[str]] = {}
    for stem, b in ov1.items():
        groups.setdefault((b[formats[0]].fold, b[formats[0]].room), []).append(stem)
    sample_rate = {k: _check_group_audio([ov1[s] for s in sorted(v)]) for k, v in groups.items()}
    metas = {s: _load_single_source(b[formats[0]]) for s, b in sorted(ov1.items())}
    available = sum(len(v) * (len(v) - 1) // 2 for v in groups.values())
    if n_new > available:
        raise DataError(f"{root}: --factor {factor} needs {n_new} new mixes ({factor - 1} x {n_ov2} ov2 training "
                        f"recordings) but the ov1 training recordings give only {available} distinct same-fold, "
                        f"same-room pairs; the largest possible --factor is {1 + available // max(n_ov2, 1)}")
    pairs = plan_pairs(groups, n_new, seed)
    start = max(MIX_START, max(r.mix for f in formats for r in recs[f]) + 1)
    mixes = [Mix(format_name(fold, room, start + i, 2), fold, room, start + i, a, b)
             for i, ((fold, room), a, b) in enumerate(pairs)]

    # Work folder, locked until it becomes `out`: resume one with the same plan, discard one with another plan.
    partial = out + ".partial"
    plan = {**settings, "mixes": [[m.stem, m.source_a, m.source_b] for m in mixes]}
    if (os.path.isdir(partial) and set(os.listdir(partial)) - {LOCK_FILE}
            and not os.path.isfile(os.path.join(partial, _PLAN_NAME))):
        raise DataError(f"{partial}: exists but was not made by augment; delete it or choose another --out")
    with FolderLock(partial, "augmentation") as lock:
        finished = _finished_output(out, settings)  # another job may have finished it since the check above
        if finished is not None:
            lock.release()
            with contextlib.suppress(OSError):
                os.rmdir(partial)  # the empty folder the lock made
            return finished
        plan_path = os.path.join(partial, _PLAN_NAME)
        if os.path.isfile(plan_path):
            with open(plan_path) as f:
                old = json.load(f)
            if old != plan:
                logger.info("%s: unfinished run with other settings, starting over", partial)
                for name in os.listdir(partial):
                    if name != LOCK_FILE:
                        path = os.path.join(partial, name)
                        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            else:
                n_tmp = _remove_temp_files(partial)
                logger.info("%s: resuming (%d stale temporary files removed)", partial, n_tmp)
        if not os.path.isfile(plan_path):
            atomic_write_text(plan_path, json.dumps(plan))

        copy_jobs = []
        src_dirs = [d for f in formats for d in audio_dirs(root, f)]
        src_dirs += [d for d in (os.path.join(root, "metadata_" + s) for s in ("dev", "eval")) if os.path.isdir(d)]
        for d in src_dirs:
            dst_dir = os.path.join(partial, os.path.basename(d))
            os.makedirs(dst_dir, exist_ok=True)
            copy_jobs += [(os.path.join(d, n), os.path.join(dst_dir, n)) for n in sorted(os.listdir(d))
                          if os.path.isfile(os.path.join(d, n)) and not _TMP_RE.search(n)]

        progress_path = os.path.join(partial, _PROGRESS_NAME)
        done = _read_progress(progress_path)
        run = {"linked": 0, "copied": 0, "files_reused": 0, "written": 0, "reused": 0, "already_complete": False}
        gains: dict[str, float] = {}
        bar = progress_bar(len(copy_jobs) + len(mixes), "augment", "file", enabled=progress)
        try:
            for src, dst in copy_jobs:
                if os.path.exists(dst):
                    run["files_reused"] += 1
                elif _link_or_copy(src, dst):
                    run["linked"] += 1
                else:
                    run["copied"] += 1
                bar.update()
            with open(progress_path, "a") as log:
                for m in mixes:
                    if m.stem in done:
                        gains[m.stem] = done[m.stem]
                        run["reused"] += 1
                        bar.update()
                        continue
                    a, b = ov1[m.source_a], ov1[m.source_b]
                    sr = sample_rate[(m.fold, m.room)]
                    audio, gain = mix_audio({f: load_audio(a[f].audio_path, sr) for f in formats},
                                            {f: load_audio(b[f].audio_path, sr) for f in formats})
                    for f in formats:
                        write_audio(_out_path(partial, a[f].audio_path, m.stem + ".wav"), audio[f], sr)
                    merged = merge_metadata(metas[m.source_a], metas[m.source_b], m.stem)
                    meta_a = a[formats[0]].metadata_path
                    write_metadata(_out_path(partial, meta_a, m.stem + ".csv"), merged,
                                   cartesian=_is_cartesian(meta_a))
                    log.write(json.dumps({"stem": m.stem, "gain": gain}) + "\n")
                    log.flush()
                    os.fsync(log.fileno())
                    gains[m.stem] = gain
                    run["written"] += 1
                    bar.update()
        except BaseException:
            _remove_temp_files(partial)
            raise
        finally:
            bar.close()

        rescaled = sum(g < 1.0 for g in gains.values())
        if rescaled:
            logger.info("%d of %d mixes scaled down to keep the peak <= %.2f", rescaled, len(mixes), PEAK_LIMIT)
        use = {s: 0 for s in ov1}
        for m in mixes:
            use[m.source_a] += 1
            use[m.source_b] += 1
        summary = {
            **settings,
            "counting_rule": COUNTING_RULE,
            "train_ov1": len(ov1),
            "train_ov2_original": n_ov2,
            "new_mixes": len(mixes),
            "train_two_source_total": n_ov2 + len(mixes),
            "ov1_use_min": min(use.values()),
            "ov1_use_max": max(use.values()),
            "groups": {f"fold{k[0]}_room{k[1]}": {"ov1": len(v), "mixes": sum((m.fold, m.room) == k for m in mixes)}
                       for k, v in sorted(groups.items())},
            "peak_limit": PEAK_LIMIT,
            "rescaled": rescaled,
            "original_files": len(copy_jobs),
            "mixes": [{"name": m.stem, "a": m.source_a, "b": m.source_b, "gain": gains[m.stem]} for m in mixes],
        }
        atomic_write_text(os.path.join(partial, SUMMARY_NAME), json.dumps(summary, indent=1) + "\n")
        os.remove(progress_path)
        os.remove(plan_path)
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(partial, out)
        lock.path = os.path.join(out, LOCK_FILE)  # the lock moved with its folder; released (removed) there
    logger.info("%s: %d new two-source training recordings (%d original ov2 -> %d)", out, len(mixes), n_ov2,
                n_ov2 + len(mixes))
    return {**summary, "run": run}
