"""DCASE2020 (TAU-NIGENS Spatial Sound Events 2020) layout: file names, splits, metadata CSVs, labels, audio.

Layout under one root: `foa_dev/`, `mic_dev/`, `metadata_dev/` (and the `*_eval` twins), files named
`foldF_roomR_mixMMM_ovO.wav|csv`. Metadata rows (no header), one per active event per 100 ms frame:
`frame, class, track, azimuth, elevation` (degrees) or the Cartesian variant `frame, class, track, x, y, z`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import struct
import warnings
from typing import Iterable

import numpy as np

from dtbt_tf.config import FORMATS, PAD_VALUE, atomic_write_text
from dtbt_tf.geometry import polar_to_unit, unit_to_polar

DEFAULT_SPLITS = {"test": (1,), "val": (2,), "train": (3, 4, 5, 6)}
SAMPLE_RATE = 24000
N_CHANNELS = 4
_NAME_RE = re.compile(r"^fold(\d+)_room(\d+)_mix(\d+)_ov(\d+)$")


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recording: its name fields and the paths of its audio and metadata (metadata may be None)."""

    stem: str
    fold: int
    room: int
    mix: int
    overlap: int
    audio_path: str
    metadata_path: str | None


def format_name(fold: int, room: int, mix: int, overlap: int) -> str:
    """`foldF_roomR_mixMMM_ovO` (no extension)."""
    return f"fold{fold}_room{room}_mix{mix:03d}_ov{overlap}"


def parse_name(path: str) -> tuple[int, int, int, int]:
    """(fold, room, mix, overlap) from a DCASE file name; DataError if it does not follow the pattern."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _NAME_RE.match(stem)
    if not m:
        raise DataError(f"{path}: file name does not match foldF_roomR_mixMMM_ovO")
    return tuple(int(g) for g in m.groups())


def audio_dirs(root: str, fmt: str) -> list[str]:
    """Existing audio folders of a format under `root`: `<fmt>_dev` and `<fmt>_eval`."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return [d for d in (os.path.join(root, f"{fmt}_{s}") for s in ("dev", "eval")) if os.path.isdir(d)]


def discover(root: str, fmt: str) -> list[Recording]:
    """All recordings of format `fmt` under a DCASE-layout root, sorted by name.

    Files of the `*_eval` folders named `mixNNN.wav` (the challenge's evaluation set) get fold 0.
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset root not found")
    dirs = audio_dirs(root, fmt)
    if not dirs:
        raise DataError(f"{root}: no {fmt}_dev/ or {fmt}_eval/ folder")
    recs = []
    for d in dirs:
        meta_dir = os.path.join(root, "metadata_" + d.rsplit("_", 1)[1])
        for fname in sorted(os.listdir(d)):
            if not fname.endswith(".wav"):
                continue
            path = os.path.join(d, fname)
            if d.endswith("_eval") and not _NAME_RE.match(fname[:-4]):
                fold, room, mix, ov = 0, 0, int(re.sub(r"\D", "", fname) or 0), 0  # eval set: mixNNN.wav, fold 0
            else:
                fold, room, mix, ov = parse_name(path)
            stem = fname[:-4]
            meta = os.path.join(meta_dir, stem + ".csv")
            recs.append(Recording(stem, fold, room, mix, ov, path, meta if os.path.isfile(meta) else None))
    return sorted(recs, key=lambda r: r.stem)


def split_recordings(recordings: Iterable[Recording], split: str, splits: dict | None = None,
                     root: str = "dataset") -> list[Recording]:
    """Recordings whose fold belongs to `split` ('train' | 'val' | 'test', folds from `splits`)."""
    splits = splits or DEFAULT_SPLITS
    if split not in splits:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(splits)}")
    out = [r for r in recordings if r.fold in splits[split]]
    if not out:
        raise DataError(f"{root}: split {split!r} (folds {list(splits[split])}) is empty")
    return out


# ----------------------------------------------------------------------------------------------------------
# Metadata CSVs


@dataclasses.dataclass
class Metadata:
    """Metadata rows as arrays: frame (n,), cls (n,), track (n,), doa (n, 3) unit vectors."""

    frame: np.ndarray
    cls: np.ndarray
    track: np.ndarray
    doa: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.frame.max()) + 1 if self.frame.size else 0


def _parse_int(tok: str) -> int:
    v = float(tok)
    if not np.isfinite(v) or v != int(v):
        raise ValueError(f"{tok!r} is not an integer")
    return int(v)


def parse_metadata(text: str, path: str = "<csv>") -> Metadata:
    """Parse metadata CSV text (5-column polar or 6-column Cartesian); DataError names file and row."""
    frames, classes, tracks, doas = [], [], [], []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) not in (5, 6):
            raise DataError(f"{path}: row {lineno}: expected 5 or 6 columns, got {len(row)}")
        try:
            frame, cls, track = (_parse_int(c) for c in row[:3])
            vals = [float(c) for c in row[3:]]
        except ValueError as e:
            raise DataError(f"{path}: row {lineno}: {e}") from None
        if frame < 0 or cls < 0:
            raise DataError(f"{path}: row {lineno}: negative frame or class")
        if not all(np.isfinite(vals)):
            raise DataError(f"{path}: row {lineno}: non-finite value")
        if len(vals) == 2:
            az, el = vals
            if not (-180 <= az <= 180 and -90 <= el <= 90):
                raise DataError(f"{path}: row {lineno}: azimuth {az} / elevation {el} out of range")
            doa = polar_to_unit(az, el)
        else:
            norm = float(np.linalg.norm(vals))
            if not 0.5 < norm < 1.5:
                raise DataError(f"{path}: row {lineno}: Cartesian DOA has length {norm:.3f}, expected ~1")
            doa = np.asarray(vals) / norm
        frames.append(frame)
        classes.append(cls)
        tracks.append(track)
        doas.append(doa)
    return Metadata(np.asarray(frames, np.int64), np.asarray(classes, np.int64), np.asarray(tracks, np.int64),
                    np.asarray(doas, np.float64).reshape(-1, 3))


def read_metadata(path: str) -> Metadata:
    """Read a metadata CSV file; DataError naming the file on any problem."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    return parse_metadata(text, path)


def write_metadata(path: str, meta: Metadata, cartesian: bool = False) -> None:
    """Write rows sorted by frame, atomically; polar angles rounded to integer degrees (DCASE convention)."""
    order = np.lexsort((meta.track, meta.cls, meta.frame))
    lines = []
    for i in order:
        head = f"{int(meta.frame[i])},{int(meta.cls[i])},{int(meta.track[i])}"
        if cartesian:
            x, y, z = meta.doa[i]
            lines.append(f"{head},{x:.4f},{y:.4f},{z:.4f}")
        else:
            az, el = unit_to_polar(meta.doa[i])
            az_i = int(np.round(az))
            lines.append(f"{head},{-180 if az_i == 180 else az_i},{int(np.round(el))}")
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


# ----------------------------------------------------------------------------------------------------------
# Labels for Nmax regressors


def metadata_to_labels(meta: Metadata, n_frames: int, n_max: int, path: str = "<csv>"):
    """Per-label-frame targets with stable slots per track identity (DESIGN 2).

    Identity = (class, track) over a contiguous run of frames; a new run gets a new track id. Each identity keeps
    the slot it got (first free slot) while it lives. Returns doa (n_frames, n_max, 3) float32 with the padding
    vector (10, 10, 10) in inactive slots, active (n_frames, n_max) float32 0/1, track_id (n_frames, n_max) int32
    (-1 inactive). A DataError names ``path`` for rows past the end of the audio (frame >= n_frames: they would
    be lost) and for more than n_max simultaneous sources.
    """
    if meta.frame.size and int(meta.frame.max()) >= n_frames:
        raise DataError(f"{path}: frame {int(meta.frame.max())} lies past the end of the audio ({n_frames} label "
                        f"frames)")
    doa = np.full((n_frames, n_max, 3), PAD_VALUE, np.float32)
    active = np.zeros((n_frames, n_max), np.float32)
    track_id = np.full((n_frames, n_max), -1, np.int32)
    by_frame: dict[int, list[int]] = {}
    for i, f in enumerate(meta.frame):
        by_frame.setdefault(int(f), []).append(i)
    slot_of: dict[tuple, int] = {}  # identity -> slot, for identities alive at the previous frame
    run_id: dict[tuple, int] = {}
    next_id = 0
    for t in range(n_frames):
        rows = by_frame.get(t, [])
        idents = [(int(meta.cls[i]), int(meta.track[i])) for i in rows]
        if len(set(idents)) != len(idents):
            raise DataError(f"{path}: frame {t}: duplicate (class, track) rows")
        if len(rows) > n_max:
            raise DataError(f"{path}: frame {t}: {len(rows)} active sources > n_max={n_max}")
        alive = {k: s for k, s in slot_of.items() if k in idents}
        used = set(alive.values())
        new_slots = {}
        for k in idents:
            if k in alive:
                new_slots[k] = alive[k]
            else:
                slot = min(s for s in range(n_max) if s not in used)
                used.add(slot)
                new_slots[k] = slot
                run_id[k] = next_id
                next_id += 1
        for i, k in zip(rows, idents):
            s = new_slots[k]
            doa[t, s] = meta.doa[i]
            active[t, s] = 1.0
            track_id[t, s] = run_id[k]
        slot_of = new_slots
    return doa, active, track_id


# ----------------------------------------------------------------------------------------------------------
# Audio


def wav_declared_frames(path: str) -> int | None:
    """Frames the data chunk of a RIFF/WAVE header declares, or None (not a plain RIFF wav, or a placeholder size
    0 / 0xFFFFFFFF of a recorder that never finalised the file). libsndfile silently reads a truncated wav as
    the shorter file it holds, so a caller compares this with the frames it read."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            cid, size = head[:4], struct.unpack("<I", head[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(min(size, 16))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
            elif cid == b"data":
                return None if not block_align or size in (0, 0xFFFFFFFF) else size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE, n_channels: int = N_CHANNELS,
               backend: str = "soundfile") -> np.ndarray:
    """Read a wav as float32 (samples, channels), checking channel count, sample rate, that it holds samples and,
    for a RIFF wav, every frame its header declares (DataError naming the file otherwise).

    backend: 'soundfile' (default) or 'tfio' (tensorflow-io, optional; it loads only with TF <= 2.17 and
    falls back to soundfile with a warning when its ops cannot be loaded).
    """
    if backend == "tfio":
        try:
            import tensorflow_io as tfio  # noqa: F401  (optional dependency)

            audio_t = tfio.audio.AudioIOTensor(path)
            sr, audio = int(audio_t.rate.numpy()), audio_t.to_tensor().numpy().astype(np.float32)
            if audio.dtype.kind == "i":
                audio = audio / np.iinfo(audio.dtype).max
        except Exception as e:  # ImportError or NotFoundError from its compiled ops
            warnings.warn(f"tensorflow-io audio backend unavailable ({type(e).__name__}); using soundfile")
            backend = "soundfile"
    if backend == "soundfile":
        import soundfile as sf

        try:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as e:
            raise DataError(f"{path}: cannot read audio ({e})") from None
        declared = wav_declared_frames(path)
        if declared is not None and declared > audio.shape[0]:
            raise DataError(f"{path}: truncated: header declares {declared} frames, file holds {audio.shape[0]}")
    elif backend != "tfio":
        raise DataError(f"unknown audio backend {backend!r}")
    if audio.shape[0] == 0:
        raise DataError(f"{path}: no audio samples (0 frames)")
    if sr != sample_rate:
        raise DataError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz")
    if audio.shape[1] != n_channels:
        raise DataError(f"{path}: {audio.shape[1]} channels, expected {n_channels}")
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{path}: audio contains NaN or Inf")
    return audio


def write_audio(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio (samples, channels) as 16-bit PCM wav, atomically."""
    import soundfile as sf

    tmp = f"{path}.tmp{os.getpid()}.wav"
    sf.write(tmp, np.asarray(audio, np.float32), sample_rate, subtype="PCM_16")
    os.replace(tmp, path)
