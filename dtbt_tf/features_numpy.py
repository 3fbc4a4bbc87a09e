"""The FOA / MIC feature definitions in plain NumPy, without TensorFlow or librosa (librosa pulls in numba,
~140 MB of RSS): the constants and the STFT window that :mod:`dtbt_tf.features` builds its TF graph from, and
:func:`features_numpy`, the NumPy twin of :func:`dtbt_tf.features.extract_features` used by TFLite inference on
devices (tested against it). The test oracle is the independent librosa computation
:func:`dtbt_tf.features.reference_features_numpy`.
"""
from __future__ import annotations

import numpy as np

from dtbt_tf.config import FeatureConfig

N_AUDIO_CHANNELS = 4
LOG_FLOOR = 1e-10  # power floor before 10*log10 (no top_db, DESIGN 2)
INTENSITY_EPS = 1e-8  # added to the intensity normaliser
MIC_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))



def _hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    f_sp, min_hz = 200.0 / 3.0, 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_hz, min_hz / f_sp + np.log(np.maximum(f, 1e-12) / min_hz) / logstep, f / f_sp)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    f_sp, min_hz = 200.0 / 3.0, 1000.0
    min_mel, logstep = min_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_mel, min_hz * np.exp(logstep * (m - min_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filterbank from 0 Hz to Nyquist (librosa.filters.mel's default):
    (n_fft // 2 + 1, n_mels) float32."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def stft_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` zeros: (n_fft,) float32 (librosa's
    ``stft(window="hann", win_length < n_fft)``)."""
    n = np.arange(cfg.win_length)
    window = np.zeros(cfg.n_fft, np.float32)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left:left + cfg.win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    return window


def features_numpy(audio: np.ndarray, cfg: FeatureConfig, chunk_frames: int = 500) -> np.ndarray:
    """NumPy version of :func:`dtbt_tf.features.extract_features` for one file (same definitions, float32).

    audio: (samples, 4); returns (T, n_mels, C) float32 with T = samples // hop_length. Computed in chunks of
    ``chunk_frames`` frames so memory stays a few tens of MB for any file length.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] != N_AUDIO_CHANNELS:
        raise ValueError(f"audio must have shape (samples, 4), got {audio.shape}")
    n_time = audio.shape[0] // cfg.hop_length
    pad = cfg.n_fft // 2
    padded = np.pad(audio.T, ((0, 0), (pad, pad)))  # (4, samples + n_fft)
    window = stft_window(cfg)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    half = cfg.n_mels // 2
    out = np.empty((n_time, cfg.n_mels, cfg.n_channels), np.float32)
    for start in range(0, n_time, chunk_frames):
        stop = min(start + chunk_frames, n_time)
        idx = (np.arange(start, stop) * cfg.hop_length)[:, None] + np.arange(cfg.n_fft)[None, :]
        spec = np.fft.rfft(padded[:, idx] * window, axis=-1)  # (4, t, K) complex64
        power = spec.real ** 2 + spec.imag ** 2
        logmel = 10.0 * np.log10(np.maximum(power @ mel, LOG_FLOOR))  # (4, t, M)
        if cfg.fmt == "foa":
            w = spec[0]
            norm = INTENSITY_EPS + power[0] + power[1:].sum(axis=0) / 3.0
            num = np.stack([np.real(np.conj(w) * spec[c]) for c in (3, 1, 2)])
            spatial = (num / norm) @ mel  # (3, t, M)
        else:
            gcc = []
            for m, n in MIC_PAIRS:
                cross = np.conj(spec[m]) * spec[n]
                cc = np.fft.irfft(np.exp(1j * np.angle(cross)), n=cfg.n_fft, axis=-1)
                gcc.append(np.concatenate([cc[:, -half:], cc[:, :cfg.n_mels - half]], axis=-1))
            spatial = np.stack(gcc)  # (6, t, L)
        out[start:stop] = np.concatenate([logmel, spatial]).transpose(1, 2, 0)
    return out
