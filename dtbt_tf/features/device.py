"""The TF-free device path: :func:`features_numpy`, the features of :mod:`dtbt_tf.features` in plain NumPy, used by
inference with ``.tflite`` models so TensorFlow is never imported (tested against
:func:`dtbt_tf.features.tf_features.extract_features`)."""
from __future__ import annotations

import numpy as np

from dtbt_tf.config import FeatureConfig
from dtbt_tf.features.constants import (INTENSITY_EPS, LOG_FLOOR, MIC_PAIRS, N_AUDIO_CHANNELS, gcc_lags, n_frames,
                                        stft_window)
from dtbt_tf.features.mel import mel_filterbank


def features_numpy(audio: np.ndarray, cfg: FeatureConfig, chunk_frames: int = 500) -> np.ndarray:
    """FOA or MIC features of one file (definitions in :mod:`dtbt_tf.features`), float32.

    audio: (samples, 4); returns (T, n_mels, C) float32 with T = samples // hop_length. Computed in chunks of
    ``chunk_frames`` frames so memory stays a few tens of MB for any file length.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] != N_AUDIO_CHANNELS:
        raise ValueError(f"audio must have shape (samples, 4), got {audio.shape}")
    n_time = n_frames(audio.shape[0], cfg)
    pad = cfg.n_fft // 2
    padded = np.pad(audio.T, ((0, 0), (pad, pad)))  # (4, samples + n_fft)
    window = stft_window(cfg)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    lags = gcc_lags(cfg)  # negative lags index from the end of the irfft output
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
                phase = np.exp(1j * np.angle(cross))
                phase[cross == 0] = 1.0  # angle(+-0 +-0j) is 0 or +-pi by the zeros' signs; the definition says 0
                gcc.append(np.fft.irfft(phase, n=cfg.n_fft, axis=-1)[:, lags])
            spatial = np.stack(gcc)  # (6, t, L)
        out[start:stop] = np.concatenate([logmel, spatial]).transpose(1, 2, 0)
    return out
