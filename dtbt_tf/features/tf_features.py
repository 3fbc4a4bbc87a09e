"""The features of :mod:`dtbt_tf.features` in TensorFlow ops (``tf.signal``): the one implementation used by the
feature extraction job and inside the exported audio-in models."""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from dtbt_tf.config import FeatureConfig
from dtbt_tf.features.constants import INTENSITY_EPS, LOG_FLOOR, MIC_PAIRS, N_AUDIO_CHANNELS, gcc_lags, stft_window
from dtbt_tf.features.mel import mel_filterbank


@functools.lru_cache(maxsize=None)
def _gcc_basis(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Real inverse-DFT rows for the kept lags: cc = re @ C + im @ S, each (n_fft // 2 + 1, n_mels) float32.

    Equal to ``numpy.fft.irfft(re + 1j * im, n_fft)`` at :func:`~dtbt_tf.features.constants.gcc_lags` (the imaginary
    parts of the DC and Nyquist bins are ignored, as irfft does).
    """
    k = np.arange(cfg.n_fft // 2 + 1)[:, None]
    lags = gcc_lags(cfg)[None, :]
    weight = np.full((k.shape[0], 1), 2.0)
    weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once in the Hermitian spectrum
    angle = 2.0 * np.pi * k * lags / cfg.n_fft
    cos = weight * np.cos(angle) / cfg.n_fft
    sin = -weight * np.sin(angle) / cfg.n_fft
    return cos.astype(np.float32), sin.astype(np.float32)


def _check_audio(audio: tf.Tensor) -> tf.Tensor:
    shape = audio.shape
    if shape.rank is None or shape.rank not in (2, 3):
        raise ValueError(f"audio must have shape (samples, 4) or (batch, samples, 4), got shape {shape}")
    if shape[-1] is not None and shape[-1] != N_AUDIO_CHANNELS:
        raise ValueError(
            f"audio has {shape[-1]} channels, expected {N_AUDIO_CHANNELS} (shape (..., samples, 4), channels last); "
            f"got shape {shape}"
        )
    return tf.ensure_shape(audio, [None] * (shape.rank - 1) + [N_AUDIO_CHANNELS])


def _mel(x: tf.Tensor, mel: tf.Tensor) -> tf.Tensor:
    """(..., K) @ (K, M) -> (..., M) as one 2-D matmul."""
    out = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), mel)
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [tf.shape(mel)[-1]]], 0))


def extract_features(audio, cfg: FeatureConfig) -> tf.Tensor:
    """FOA or MIC features of 24 kHz 4-channel audio, in TF ops (works eagerly, in tf.function, in a SavedModel).

    audio: (samples, 4) or (batch, samples, 4), float (cast to float32); leading/time dims may be unknown.
    Returns (..., T, n_mels, C) float32 with T = samples // hop_length, C = 7 (FOA) or 10 (MIC); channel layout
    and definitions in :mod:`dtbt_tf.features`. Raises ValueError for a wrong static channel count or rank (a channel
    count unknown while tracing is checked when the graph runs: InvalidArgumentError).
    """
    audio = _check_audio(tf.cast(tf.convert_to_tensor(audio), tf.float32))
    n_time = tf.shape(audio)[-2] // cfg.hop_length
    pad = cfg.n_fft // 2
    window = tf.constant(stft_window(cfg))
    mel = tf.constant(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels))

    # (..., samples, 4) -> four (..., padded samples) signals, cut to the samples of the first T frames (librosa
    # has one more). Each channel gets its own ops: TF's FFT kernel is single-threaded, separate ops run
    # concurrently, and the large spectra are never sliced by channel.
    rank = audio.shape.rank
    signals = tf.transpose(audio, list(range(rank - 2)) + [rank - 1, rank - 2])
    signals = tf.pad(signals, [[0, 0]] * (rank - 1) + [[pad, pad]])[..., : (n_time - 1) * cfg.hop_length + cfg.n_fft]
    re, im, power = [], [], []  # each (..., T, n_fft // 2 + 1)
    for signal in tf.unstack(signals, axis=-2):
        spec = tf.signal.rfft(tf.signal.frame(signal, cfg.n_fft, cfg.hop_length) * window)
        re.append(tf.math.real(spec))
        im.append(tf.math.imag(spec))
        power.append(re[-1] * re[-1] + im[-1] * im[-1])
    logmel = [10.0 / np.log(10.0) * tf.math.log(tf.maximum(_mel(p, mel), LOG_FLOOR)) for p in power]

    if cfg.fmt == "foa":
        inv_norm = 1.0 / (INTENSITY_EPS + power[0] + (power[1] + power[2] + power[3]) / 3.0)
        # Re(conj(W) * S_c) / norm for c = X (ch 3), Y (ch 1), Z (ch 2), then mel-weighted.
        spatial = [_mel((re[0] * re[c] + im[0] * im[c]) * inv_norm, mel) for c in (3, 1, 2)]
    else:
        cos, sin = (tf.constant(b) for b in _gcc_basis(cfg))
        spatial = []
        for m, n in MIC_PAIRS:
            # conj(S_m) * S_n / |conj(S_m) * S_n|, with |conj(S_m) * S_n| = |S_m| |S_n|.
            magnitude2 = power[m] * power[n]
            inv_mag = tf.math.rsqrt(magnitude2)
            phase_re = tf.where(tf.equal(magnitude2, 0.0), 1.0, (re[m] * re[n] + im[m] * im[n]) * inv_mag)
            phase_im = tf.math.multiply_no_nan(inv_mag, re[m] * im[n] - im[m] * re[n])  # 0 (not nan) where it is 0
            spatial.append(_mel(phase_re, cos) + _mel(phase_im, sin))
    return tf.stack(logmel + spatial, axis=-1)


@functools.lru_cache(maxsize=None)
def feature_function(cfg: FeatureConfig, jit_compile: bool = False):
    """A cached ``tf.function`` of :func:`extract_features` for ``cfg``.

    ``jit_compile=True`` (XLA) fuses the element-wise work and is faster for repeated inputs of one length, but
    compiles again (~1-2 s) for every new input shape; the default graph function accepts any length.
    """
    return tf.function(lambda audio: extract_features(audio, cfg), reduce_retracing=True, jit_compile=jit_compile)
