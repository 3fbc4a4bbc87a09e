"""The constants of the feature definitions (see :mod:`dtbt_tf.features`), the STFT window and the frame count."""
from __future__ import annotations

import numpy as np

from dtbt_tf.config import FeatureConfig

N_AUDIO_CHANNELS = 4  # input channels: FOA W, Y, Z, X (ACN/SN3D) or MIC capsules 1-4
LOG_FLOOR = 1e-10  # power floor before 10*log10 (no top_db, DESIGN 2): -100 dB
INTENSITY_EPS = 1e-8  # added to the intensity normaliser
MIC_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))  # GCC-PHAT channel pairs (m, n), in output order


def gcc_lags(cfg: FeatureConfig) -> np.ndarray:
    """The GCC-PHAT lags kept, in output order: ``-L/2 .. L/2 - 1`` samples with ``L = n_mels`` (the GCC channels
    share the band axis with the log-mel channels): (n_mels,) int."""
    half = cfg.n_mels // 2
    return np.arange(-half, cfg.n_mels - half)


def n_frames(n_samples: int, cfg: FeatureConfig) -> int:
    """Number of feature frames of a signal of ``n_samples`` samples (librosa's centred STFT has one more)."""
    return n_samples // cfg.hop_length


def stft_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` zeros: (n_fft,) float32 (librosa's
    ``stft(window="hann", win_length < n_fft)``)."""
    n = np.arange(cfg.win_length)
    window = np.zeros(cfg.n_fft, np.float32)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left:left + cfg.win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    return window
