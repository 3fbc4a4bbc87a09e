"""The librosa/NumPy oracle of the features (definitions in :mod:`dtbt_tf.features`) and its test signal.

Test code, not package code: tests/test_features.py checks both implementations against it and
benchmarks/bench_features.py times it as the baseline (importing this file by path).
"""
from __future__ import annotations

import librosa
import numpy as np

from dtbt_tf.config import FeatureConfig
from dtbt_tf.features import INTENSITY_EPS, LOG_FLOOR, MIC_PAIRS, N_AUDIO_CHANNELS, n_frames


def synthetic_audio(seconds: float, sample_rate: int = 24000, seed: int = 0) -> np.ndarray:
    """Seeded (samples, 4) float32: white noise under a slow envelope that dips to zero (frames span ~100 dB),
    plus a different tone per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)[:, None]
    tones = 0.3 * np.sin(2 * np.pi * np.array([440.0, 1000.0, 3100.0, 7000.0]) * t[:, None])
    return (0.1 * envelope * rng.standard_normal((t.size, 4)) + tones).astype(np.float32)


def reference_features_numpy(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Independent librosa/NumPy computation of the features: audio (samples, 4) float -> (T, n_mels, C) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] != N_AUDIO_CHANNELS:
        raise ValueError(f"audio must have shape (samples, 4), got {audio.shape}")
    n_time = n_frames(audio.shape[0], cfg)
    spec = librosa.stft(
        audio.T,
        n_fft=cfg.n_fft,
        win_length=cfg.win_length,
        hop_length=cfg.hop_length,
        window="hann",
        center=True,
        pad_mode="constant",
    )[:, :, :n_time].transpose(0, 2, 1)  # (4, T, K)
    mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)  # (M, K)
    power = np.abs(spec) ** 2
    logmel = 10.0 * np.log10(np.maximum(power @ mel.T, LOG_FLOOR))  # (4, T, M)
    if cfg.fmt == "foa":
        w, y, z, x = spec
        normaliser = INTENSITY_EPS + np.abs(w) ** 2 + (np.abs(x) ** 2 + np.abs(y) ** 2 + np.abs(z) ** 2) / 3.0
        intensity = np.real(np.conj(w)[None] * np.stack([x, y, z])) / normaliser[None]
        spatial = intensity @ mel.T  # (3, T, M)
    else:
        half = cfg.n_mels // 2
        gcc = []
        for m, n in MIC_PAIRS:
            cross = np.conj(spec[m]) * spec[n]
            phase = np.exp(1j * np.angle(cross))
            phase[cross == 0] = 1.0  # angle(+-0 +-0j) is 0 or +-pi by the zeros' signs; the definition says 0
            cc = np.fft.irfft(phase, n=cfg.n_fft)
            gcc.append(np.concatenate([cc[:, -half:], cc[:, : cfg.n_mels - half]], axis=-1))
        spatial = np.stack(gcc)  # (6, T, L)
    return np.concatenate([logmel, spatial]).transpose(1, 2, 0).astype(np.float32)
