"""FOA / MIC spatial features (paper III-B, DESIGN 2): one definition, two implementations.

- :mod:`dtbt_tf.features.tf_features`: :func:`~dtbt_tf.features.tf_features.extract_features` in TF ops, used by
  feature extraction (TFRecords) and inside the exported audio-in models.
- :mod:`dtbt_tf.features.device`: :func:`~dtbt_tf.features.device.features_numpy`, the same features in NumPy for
  TFLite inference on devices, where TensorFlow is never imported (tested against the TF ops).

This package imports neither TensorFlow nor librosa (librosa pulls in numba, ~140 MB of RSS); only
``tf_features`` imports TensorFlow. The constants are in :mod:`~dtbt_tf.features.constants`, the one mel filterbank in
:mod:`~dtbt_tf.features.mel`.

Both formats start from one STFT of the four audio channels, identical to
``librosa.stft(n_fft=1024, win_length=960, hop_length=480, window='hann', center=True, pad_mode='constant')``:
a periodic Hann window of ``win_length`` samples centred (zero-padded) in ``n_fft``, the signal zero-padded by
``n_fft // 2`` at both ends, frame ``t`` centred on sample ``t * hop_length``; only the first
``T = samples // hop_length`` frames are kept (librosa has one more), so a 60 s file gives 3000 frames.

Channels (last axis of the output, (T, n_mels, C) float32):

- FOA, C = 7: ``[logmel W, logmel Y, logmel Z, logmel X, Ix, Iy, Iz]``. Input channels are ACN/SN3D
  (W = 0, Y = 1, Z = 2, X = 3); the intensity channels are the Cartesian x, y, z components in that order.
- MIC, C = 10: ``[logmel m1..m4, GCC 01, 02, 03, 12, 13, 23]``.

Definitions, per STFT bin (f = frequency bin, t = frame):

- log-mel: ``10 * log10(max(|S|^2 @ M, 1e-10))`` with ``M`` = :func:`~dtbt_tf.features.mel.mel_filterbank`
  (librosa's ``filters.mel(sr, n_fft, n_mels)``: Slaney scale and area normalisation); no ``top_db`` clipping.
- intensity: ``I_c = Re(conj(W) * S_c) / (eps + |W|^2 + (|X|^2 + |Y|^2 + |Z|^2) / 3)`` for ``c`` in (X, Y, Z),
  normalised per linear-frequency bin, THEN mel-weighted with the same matrix ``M`` (``I_c @ M``), as the
  DCASE baseline does. ``eps`` = :data:`INTENSITY_EPS`. With Slaney's area-normalised filters the values are
  small (|I| up to ~0.04); the per-channel normalisation statistics take care of the scale.
- GCC-PHAT of pair (m, n): ``irfft(exp(j * angle(conj(S_m) * S_n)), n_fft)``, lags ``-L/2 .. L/2 - 1`` in that
  order with ``L = n_mels`` (64 by default, :func:`gcc_lags`). A positive lag ``d`` means channel ``n`` lags
  channel ``m`` by ``d`` samples. Bins where ``conj(S_m) * S_n`` is exactly 0 (digital silence) count as phase 0.
  Computed in float32: in bins some 100 dB below the frame's loudest, round-off decides the phase (the
  implementations differ there).
"""
from dtbt_tf.features.constants import (INTENSITY_EPS, LOG_FLOOR, MIC_PAIRS, N_AUDIO_CHANNELS, gcc_lags, n_frames,
                                        stft_window)
from dtbt_tf.features.device import features_numpy
from dtbt_tf.features.mel import mel_filterbank

__all__ = ["INTENSITY_EPS", "LOG_FLOOR", "MIC_PAIRS", "N_AUDIO_CHANNELS", "features_numpy", "gcc_lags",
           "mel_filterbank", "n_frames", "stft_window"]
