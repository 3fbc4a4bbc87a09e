"""FOA / MIC spatial features in TensorFlow ops (paper III-B, DESIGN 2), and their NumPy/librosa oracle.

Both formats start from one STFT of the four audio channels, identical to
``librosa.stft(n_fft=1024, win_length=960, hop_length=480, window='hann', center=True, pad_mode='constant')``:
a periodic Hann window of ``win_length`` samples centred (zero-padded) in ``n_fft``, the signal zero-padded by
``n_fft // 2`` at both ends, frame ``t`` centred on sample ``t * hop_length``; only the first
``T = samples // hop_length`` frames are kept (librosa has one more), so a 60 s file gives 3000 frames.

Channels (last axis of the output):

- FOA, C = 7: ``[logmel W, logmel Y, logmel Z, logmel X, Ix, Iy, Iz]``. Input channels are ACN/SN3D
  (W = 0, Y = 1, Z = 2, X = 3); the intensity channels are the Cartesian x, y, z components in that order.
- MIC, C = 10: ``[logmel m1..m4, GCC 01, 02, 03, 12, 13, 23]``.

Definitions, per STFT bin (f = frequency bin, t = frame):

- log-mel: ``10 * log10(max(|S|^2 @ M, 1e-10))`` with ``M`` = ``librosa.filters.mel(sr, n_fft, n_mels)``
  (Slaney scale and area normalisation); no ``top_db`` clipping.
- intensity: ``I_c = Re(conj(W) * S_c) / (eps + |W|^2 + (|X|^2 + |Y|^2 + |Z|^2) / 3)`` for ``c`` in (X, Y, Z),
  normalised per linear-frequency bin, THEN mel-weighted with the same matrix ``M`` (``I_c @ M``), as the
  DCASE baseline does. ``eps`` = :data:`INTENSITY_EPS`. With Slaney's area-normalised filters the values are
  small (|I| up to ~0.04); the per-channel normalisation statistics take care of the scale.
- GCC-PHAT of pair (m, n): ``irfft(exp(j * angle(conj(S_m) * S_n)), n_fft)``, lags ``-L/2 .. L/2 - 1`` in that
  order with ``L = n_mels`` (64 by default). A positive lag ``d`` means channel ``n`` lags channel ``m`` by ``d``
  samples. Bins where ``conj(S_m) * S_n`` is exactly 0 (digital silence) count as phase 0. Computed in float32:
  in bins some 100 dB below the frame's loudest, round-off decides the phase (TF and the oracle differ there).
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from dtbt_tf.config import FeatureConfig
from dtbt_tf.features_numpy import INTENSITY_EPS, LOG_FLOOR, MIC_PAIRS, N_AUDIO_CHANNELS, stft_window



@functools.lru_cache(maxsize=None)
def mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filterbank, transposed: (n_fft // 2 + 1, n_mels) float32."""
    import librosa  # only needed to build the constant once

    return np.ascontiguousarray(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _gcc_basis(n_fft: int, n_lags: int) -> tuple[np.ndarray, np.ndarray]:
    """Real inverse-DFT rows for the central lags: cc = re @ C + im @ S, each (n_fft // 2 + 1, n_lags) float32.

    Equal to ``numpy.fft.irfft(re + 1j * im, n_fft)`` at lags ``-n_lags/2 .. n_lags/2 - 1`` (the imaginary parts
    of the DC and Nyquist bins are ignored, as irfft does).
    """
    k = np.arange(n_fft // 2 + 1)[:, None]
    lags = np.arange(-(n_lags // 2), n_lags - n_lags // 2)[None, :]
    weight = np.full((k.shape[0], 1), 2.0)
    weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once in the Hermitian spectrum
    angle = 2.0 * np.pi * k * lags / n_fft
    cos = weight * np.cos(angle) / n_fft
    sin = -weight * np.sin(angle) / n_fft
    return cos.astype(np.float32), sin.astype(np.float32)


def n_frames(n_samples: int, cfg: FeatureConfig) -> int:
    """Number of feature frames of a signal of ``n_samples`` samples."""
    return n_samples // cfg.hop_length


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
    and definitions in the module docstring. Raises ValueError for a wrong static channel count or rank (a channel
    count unknown while tracing is checked when the graph runs: InvalidArgumentError).
    """
    audio = _check_audio(tf.cast(tf.convert_to_tensor(audio), tf.float32))
    n_time = tf.shape(audio)[-2] // cfg.hop_length
    pad = cfg.n_fft // 2
    window = tf.constant(stft_window(cfg))
    mel = tf.constant(mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels))

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
        cos, sin = (tf.constant(b) for b in _gcc_basis(cfg.n_fft, cfg.n_mels))
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


def reference_features_numpy(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Independent librosa/NumPy computation of :func:`extract_features` (test oracle and benchmark baseline).

    audio: (samples, 4) float; returns (T, n_mels, C) float32. Same definitions as the module docstring.
    """
    import librosa

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
