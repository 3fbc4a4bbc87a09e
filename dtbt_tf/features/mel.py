"""The one mel filterbank: librosa's default (Slaney scale, area-normalised) in NumPy, so neither the TF graph nor
the device path needs librosa at run time. ``tf.signal.linear_to_mel_weight_matrix`` is HTK-style and unnormalised,
a different filterbank (DESIGN 2)."""
from __future__ import annotations

import functools

import numpy as np

_F_SP = 200.0 / 3.0  # Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0  # mel step of the logarithmic part


def _hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the Slaney mel scale from 0 Hz to Nyquist, each divided by its width in Hz / 2
    (``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T``): (n_fft // 2 + 1, n_mels) float32,
    read-only (cached)."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out = np.ascontiguousarray(weights.T, dtype=np.float32)
    out.flags.writeable = False
    return out
