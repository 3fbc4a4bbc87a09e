"""Users' own 4-channel recordings (FOA or tetrahedral MIC) read as the model expects them (DESIGN 7).

Any file soundfile reads (wav, flac, ogg tested), any sample rate (resampled to 24 kHz with soxr), FOA in
ACN/SN3D or FuMa channel order, long files in blocks with bounded memory. Imports no TensorFlow: this module
serves the TFLite device path too. Every problem with a file is a one-line DataError naming it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from dtbt_tf.config import FORMATS
from dtbt_tf.data.dcase import N_CHANNELS, SAMPLE_RATE, DataError, wav_declared_frames

CHANNEL_ORDERS = ("acn", "fuma")
RESAMPLER = "soxr"
_SOXR_QUALITY = "HQ"  # soxr's default: 20-bit precision, passband to 95% of the output Nyquist frequency
_READ_SECONDS = 10  # file read per call, whatever the block length: bounds the input buffer


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file holds: sample rate in Hz, channel count, frames per channel, soundfile format/subtype."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _error_text(e: Exception) -> str:
    """soundfile's reason without its repeated file name, on one line."""
    return " ".join(str(getattr(e, "error_string", None) or e).split())


def audio_info(path: str) -> AudioInfo:
    """Header facts of an audio file; DataError if it is missing, unreadable, empty or truncated.

    Truncation: a wav whose data chunk is shorter than its header declares, or a file (flac, ...) whose last
    declared frame cannot be read.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        i = sf.info(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read audio ({_error_text(e)})") from None
    info = AudioInfo(path, int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)
    if info.frames <= 0:
        raise DataError(f"{path}: no audio samples (0 frames)")
    declared = wav_declared_frames(path) if info.format in ("WAV", "WAVEX") else None
    if declared is not None and declared > info.frames:  # libsndfile reads a truncated wav as what it holds
        raise DataError(f"{path}: truncated: header declares {declared} frames, file holds {info.frames}")
    try:
        with sf.SoundFile(path) as f:
            f.seek(info.frames - 1)
            last = f.read(1)
    except Exception as e:
        raise DataError(f"{path}: truncated or corrupt: cannot read its last frame ({_error_text(e)})") from None
    if len(last) != 1:
        raise DataError(f"{path}: truncated: header declares {info.frames} frames, the last cannot be read")
    return info


def check_audio_files(paths) -> list[AudioInfo]:
    """:func:`audio_info` of every file, checked before anything is written (and before a model is loaded, so a
    bad file is named at once): readable, 4 channels; DataError naming the file otherwise."""
    infos = [audio_info(p) for p in paths]
    for p, info in zip(paths, infos):
        if info.channels != N_CHANNELS:
            raise DataError(f"{p}: {info.channels} channel{'s' if info.channels != 1 else ''}, expected {N_CHANNELS}")
    return infos


def check_long_enough(paths, infos: list[AudioInfo], frame_samples: int, sample_rate: int = SAMPLE_RATE) -> None:
    """Each file (its :func:`check_audio_files` info) holds at least one label frame of the model:
    ``frame_samples`` at ``sample_rate``, after resampling; DataError naming the file otherwise."""
    for p, info in zip(paths, infos):
        if info.frames * sample_rate < frame_samples * info.sample_rate:
            raise DataError(f"{p}: shorter than one 100 ms frame ({info.frames} samples)")


def resample_note(info: AudioInfo, sample_rate: int = SAMPLE_RATE) -> str | None:
    """The one line a caller prints when the file is resampled, e.g. 'resampled 48000 -> 24000 Hz (soxr)'."""
    if info.sample_rate == sample_rate:
        return None
    return f"resampled {info.sample_rate} -> {sample_rate} Hz ({RESAMPLER})"


def fuma_to_acn(audio: np.ndarray) -> np.ndarray:
    """First-order FuMa (W, X, Y, Z; W at -3 dB) -> ACN/SN3D (W, Y, Z, X), (n, 4) float32.

    [W, Y, Z, X]_acn = [sqrt(2) * W_fuma, Y_fuma, Z_fuma, X_fuma]: at first order the FuMa (maxN) and SN3D
    weights of X, Y, Z are both 1, so only W is rescaled and the channels reordered.
    """
    w, x, y, z = np.moveaxis(np.asarray(audio, np.float32), -1, 0)
    return np.stack([np.float32(np.sqrt(2.0)) * w, y, z, x], axis=-1)


def _checked_info(path: str, fmt: str, channel_order: str) -> AudioInfo:
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if channel_order not in CHANNEL_ORDERS:
        raise DataError(f"unknown channel order {channel_order!r}; expected one of {CHANNEL_ORDERS}")
    if fmt == "mic" and channel_order != "acn":
        raise DataError(f"{path}: channel order {channel_order!r} applies to FOA files only, not MIC")
    info = audio_info(path)
    if info.channels != N_CHANNELS:
        plural = "" if info.channels == 1 else "s"
        what = "first-order Ambisonics" if fmt == "foa" else "one per capsule of the tetrahedral array"
        raise DataError(f"{path}: {info.channels} channel{plural}, expected {N_CHANNELS} ({what})")
    return info


def _read(f: sf.SoundFile, frames: int, path: str) -> np.ndarray:
    try:
        audio = f.read(frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read audio at frame {f.tell()} ({_error_text(e)})") from None
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{path}: audio contains NaN or Inf")
    return audio


def _to_model_order(audio: np.ndarray, channel_order: str) -> np.ndarray:
    return fuma_to_acn(audio) if channel_order == "fuma" else audio


def read_user_audio(path: str, fmt: str, channel_order: str = "acn", sample_rate: int = SAMPLE_RATE,
                    start: int = 0, frames: int | None = None) -> np.ndarray:
    """A user's 4-channel file (or a part) as float32 (samples, 4) at `sample_rate`, ACN/SN3D for FOA.

    fmt: 'foa' | 'mic' (MIC channels in the array's capsule order); channel_order: 'acn' | 'fuma' (FOA only).
    start, frames: the part to read, in frames of the file's own rate (as soundfile counts them); None reads to
    the end. The whole file read equals the concatenated blocks of `iter_user_audio`.
    """
    info = _checked_info(path, fmt, channel_order)
    if not 0 <= start < info.frames:
        raise DataError(f"{path}: start frame {start} outside the file's {info.frames} frames")
    with sf.SoundFile(path) as f:
        f.seek(start)
        audio = _read(f, -1 if frames is None else frames, path)
    if info.sample_rate != sample_rate:
        audio = soxr.resample(audio, info.sample_rate, sample_rate, quality=_SOXR_QUALITY)
    return _to_model_order(audio, channel_order)


def iter_user_audio(path: str, fmt: str, channel_order: str = "acn", block_seconds: float = 60,
                    sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Consecutive float32 (n, 4) blocks of the whole file at `sample_rate`, ACN/SN3D for FOA.

    Every block but the last has exactly round(block_seconds * sample_rate) samples. Memory stays bounded by
    a few blocks whatever the file's length: the file is read 10 s at most at a time and resampled with soxr's
    streaming resampler, which carries the filter state across blocks, so the concatenation equals
    `read_user_audio` of the whole file. Arguments as in `read_user_audio`. The file is checked when this is
    called (DataError then), not at the first block.
    """
    info = _checked_info(path, fmt, channel_order)
    out_block = int(round(block_seconds * sample_rate))
    if out_block < 1:
        raise ValueError(f"block_seconds {block_seconds} gives no sample at {sample_rate} Hz")
    in_frames = max(1, int(round(min(block_seconds, _READ_SECONDS) * info.sample_rate)))
    return _blocks(info, channel_order, out_block, in_frames, sample_rate)


def _blocks(info: AudioInfo, channel_order: str, out_block: int, in_frames: int,
            sample_rate: int) -> Iterator[np.ndarray]:
    path = info.path
    stream = None
    if info.sample_rate != sample_rate:
        stream = soxr.ResampleStream(info.sample_rate, sample_rate, N_CHANNELS, dtype="float32",
                                     quality=_SOXR_QUALITY)
    pending, n_pending = [], 0
    with sf.SoundFile(path) as f:
        while True:
            audio = _read(f, in_frames, path)
            last = len(audio) < in_frames or f.tell() >= info.frames
            if stream is not None:
                audio = stream.resample_chunk(audio, last=last)
            pending.append(audio)
            n_pending += len(audio)
            while n_pending >= out_block or (last and n_pending):
                buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield _to_model_order(buf[:out_block], channel_order)
                pending, n_pending = [buf[out_block:]], len(buf) - min(out_block, len(buf))
            if last:
                return
