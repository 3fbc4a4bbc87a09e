"""The features package: the mel filterbank vs librosa, the TF ops and the NumPy device path vs the librosa oracle
(tests/feature_reference.py) and vs each other, and the TF-free imports."""
import subprocess
import sys

import librosa
import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import FeatureConfig
from dtbt_tf.features import MIC_PAIRS, features_numpy, mel_filterbank
from dtbt_tf.features.tf_features import extract_features, feature_function
from dtbt_tf.geometry import angular_distance_deg, polar_to_unit
from feature_reference import reference_features_numpy, synthetic_audio

SR = 24000
FOA, MIC = FeatureConfig(fmt="foa"), FeatureConfig(fmt="mic")
IMPLEMENTATIONS = {"tf": lambda audio, cfg: extract_features(audio, cfg).numpy(), "device": features_numpy}

# Both implementations vs the librosa oracle (all float32). Measured TF maxima on 2 s / 60 s of synthetic_audio, whose
# noise envelope dips to zero so frames span ~100 dB: log-mel 1.6e-4 / 3.9e-4 dB in bands within 60 dB of the frame's
# loudest band and 0.008 / 0.028 dB anywhere; intensity 1.5e-5 / 2.3e-5 (values up to 0.034); GCC 2.3e-4 / 3.6e-4
# (values up to 0.19). The differences sit in near-silent bins, where float32 round-off decides the phase.
ATOL_LOGMEL_DB = 1e-3  # bands within 60 dB of the frame maximum
ATOL_LOGMEL_DB_ALL = 0.05
ATOL_INTENSITY = 1e-4
ATOL_GCC = 2e-3


@pytest.mark.parametrize("sr,n_fft,n_mels", [(24000, 1024, 64), (16000, 512, 40), (44100, 2048, 128)])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels):
    got = mel_filterbank(sr, n_fft, n_mels)
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).T
    assert got.shape == want.shape == (n_fft // 2 + 1, n_mels) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cfg,atol_spatial", [(FOA, ATOL_INTENSITY), (MIC, ATOL_GCC)], ids=["foa", "mic"])
def test_matches_librosa_reference(cfg, atol_spatial, impl):
    audio = synthetic_audio(2.0)
    got = IMPLEMENTATIONS[impl](audio, cfg)
    want = reference_features_numpy(audio, cfg)
    assert got.shape == want.shape == (100, 64, cfg.n_channels)
    assert got.dtype == np.float32
    logmel, want_logmel = got[..., :4], want[..., :4]
    loud = want_logmel.max(axis=1, keepdims=True) - want_logmel < 60.0
    np.testing.assert_allclose(logmel[loud], want_logmel[loud], atol=ATOL_LOGMEL_DB, rtol=0)
    np.testing.assert_allclose(logmel, want_logmel, atol=ATOL_LOGMEL_DB_ALL, rtol=0)
    np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=atol_spatial, rtol=0)
    assert np.abs(want[..., 4:]).max() > 50 * atol_spatial  # the spatial channels are not trivially ~0


@pytest.mark.parametrize("cfg", [FOA, MIC], ids=["foa", "mic"])
def test_device_path_matches_tf_features(cfg, noise):
    audio = noise(1.3, 7)
    audio[:, 1] = 0.5 * np.roll(audio[:, 0], 3) + 0.05 * audio[:, 1]  # correlated channels: non-trivial GCC / intensity
    ref = extract_features(audio, cfg).numpy()
    got = features_numpy(audio, cfg, chunk_frames=17)  # chunk boundaries inside the file
    assert got.shape == ref.shape == (1.3 * SR // 480, 64, cfg.n_channels)
    np.testing.assert_allclose(got[..., :4], ref[..., :4], atol=1e-3)  # dB
    np.testing.assert_allclose(got[..., 4:], ref[..., 4:], atol=1e-5)
    np.testing.assert_allclose(got, features_numpy(audio, cfg), rtol=1e-5, atol=1e-6)  # chunking: same result


@pytest.mark.filterwarnings("ignore:n_fft=1024 is too large")
@pytest.mark.parametrize("n_samples", [479, 480, 481, 24000 + 17])
def test_frame_count_and_shape(n_samples):
    audio = synthetic_audio(n_samples / SR)[:n_samples]
    for cfg in (FOA, MIC):
        out = extract_features(audio, cfg)
        assert out.shape == (n_samples // 480, 64, cfg.n_channels)
        assert features_numpy(audio, cfg).shape == reference_features_numpy(audio, cfg).shape == out.shape


def test_frames_are_centred_on_hop_multiples():
    # Frame t sees samples t * 480 +- 480 (Hann 960, zero at both ends): a click at 10 * 480 only reaches frame 10,
    # one 100 samples later reaches frames 10 and 11; every other frame stays at the -100 dB floor.
    for offset, frames in ((0, {10}), (100, {10, 11})):
        audio = np.zeros((24000, 4), np.float32)
        audio[10 * 480 + offset] = 1.0
        energy = extract_features(audio, FOA).numpy()[..., 0].max(axis=1)
        assert set(np.flatnonzero(energy > -100.0)) == frames


@pytest.mark.parametrize("az,el", [(0, 0), (90, 0), (-135, 30), (45, -40), (170, 60), (-60, -75)])
def test_foa_intensity_points_at_plane_wave(az, el):
    """SN3D/ACN plane wave W=s, Y=s sin(az)cos(el), Z=s sin(el), X=s cos(az)cos(el) with 20 dB uncorrelated noise."""
    rng = np.random.default_rng([az + 180, el + 90])
    s = rng.standard_normal(SR)
    x, y, z = polar_to_unit(az, el)
    audio = np.stack([s, s * y, s * z, s * x], axis=1) + 0.1 * rng.standard_normal((SR, 4))
    intensity = extract_features(audio.astype(np.float32), FOA).numpy()[..., 4:].mean(axis=(0, 1))
    assert angular_distance_deg(intensity, [x, y, z]) < 1.5


def test_gcc_phat_peak_at_known_delays():
    # Channel c is the same noise delayed by delay[c] samples; pair (m, n) peaks at lag delay[n] - delay[m].
    delays = [0, 3, -5, 9]
    rng = np.random.default_rng(1)
    s = rng.standard_normal(SR + 40)
    audio = np.stack([s[20 - d : 20 - d + SR] for d in delays], axis=1).astype(np.float32)
    gcc = extract_features(audio, MIC).numpy()[..., 4:].mean(axis=0)  # (64 lags, 6 pairs)
    lags = np.arange(-32, 32)
    for p, (m, n) in enumerate(MIC_PAIRS):
        assert lags[np.argmax(gcc[:, p])] == delays[n] - delays[m], (m, n)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_silence_is_finite_and_matches_reference(impl):
    # Exact zeros: log-mel hits the 1e-10 floor (-100 dB), intensity is 0, GCC-PHAT phase of a zero product is 1.
    audio = np.zeros((4800, 4), np.float32)
    audio[2400:, 1] = 0.1 * np.random.default_rng(2).standard_normal(2400)
    for cfg in (FOA, MIC):
        got, want = IMPLEMENTATIONS[impl](audio, cfg), reference_features_numpy(audio, cfg)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=ATOL_GCC, rtol=0)
    np.testing.assert_allclose(IMPLEMENTATIONS[impl](audio, FOA)[:2, :, 0], -100.0, atol=1e-4, rtol=0)


def test_batch_equals_unbatched_and_unknown_shapes():
    audio = np.stack([synthetic_audio(0.5, seed=3), synthetic_audio(0.5, seed=4)])
    for cfg in (FOA, MIC):
        fn = tf.function(lambda a: extract_features(a, cfg), input_signature=[tf.TensorSpec([None, None, 4])])
        batched = fn(audio).numpy()
        assert batched.shape == (2, 25, 64, cfg.n_channels)
        for b in range(2):
            np.testing.assert_allclose(batched[b], extract_features(audio[b], cfg).numpy(), atol=1e-5, rtol=0)
        compiled = feature_function(cfg)(audio[0]).numpy()
        np.testing.assert_allclose(compiled, extract_features(audio[0], cfg).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1000, 2), (2, 1000, 5), (1000,)])
def test_wrong_channel_count_or_rank_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"channels|shape"):
        extract_features(np.zeros(shape, np.float32), FOA)
    with pytest.raises(ValueError, match="samples, 4"):
        features_numpy(np.zeros(shape, np.float32), FOA)


def test_wrong_channel_count_message_names_the_count():
    with pytest.raises(ValueError, match="has 2 channels, expected 4"):
        extract_features(np.zeros((1000, 2), np.float32), MIC)


@pytest.mark.slow  # a fresh interpreter that ends up importing TensorFlow (~10-20 s)
def test_device_path_imports_neither_tensorflow_nor_librosa():
    # TFLite inference computes its features with the device path; the TF ops need no librosa either (setup.cfg
    # lists librosa in the dev extra only).
    code = (
        "import sys, numpy as np\n"
        "import dtbt_tf.features, dtbt_tf.features.device\n"
        "from dtbt_tf.config import FeatureConfig\n"
        "dtbt_tf.features.features_numpy(np.zeros((4800, 4), np.float32), FeatureConfig(fmt='mic'))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'librosa'}))\n"
        "from dtbt_tf.features.tf_features import extract_features\n"
        "extract_features(np.zeros((4800, 4), np.float32), FeatureConfig(fmt='mic'))\n"
        "print('librosa' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "False True"]
