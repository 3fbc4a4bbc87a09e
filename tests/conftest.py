"""Shared tiny fixtures: DCASE-layout folders, a tiny random DOAnet, seeded noise and label batches.

Each helper is a session-scoped fixture returning a plain function (a factory), so module-scoped fixtures can use
it too and a test passes its own sizes, seeds and folders. Test modules never import each other; a helper that a
subprocess needs lives in a ``tests/_*.py`` script run by path.
"""
import os

import numpy as np
import pytest

# (fold, seconds): fold 1 = test, 2 = val, 3-6 = train; odd lengths give T not a multiple of 5.
TINY_FILES = [(1, 1.0), (2, 1.23), (3, 1.5), (3, 1.0), (4, 2.0), (5, 1.1), (6, 1.3)]


def _write_tiny_dcase(root, seconds=2.0, folds=(1, 2, 3, 4), seed=0, n_sources=1):
    """A DCASE2020-layout folder (foa_dev, mic_dev, metadata_dev) with one noise recording per fold and
    ``n_sources`` simultaneous moving sources per file (120 degrees apart, track ids 0..n-1)."""
    from dtbt_tf.data.dcase import Metadata, format_name, write_audio, write_metadata
    from dtbt_tf.geometry import polar_to_unit

    rng = np.random.default_rng(seed)
    for sub in ("foa_dev", "mic_dev", "metadata_dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    n_lab = int(seconds * 10)
    for fold in folds:
        name = format_name(fold, 1, 1, n_sources)
        frames = np.arange(2, n_lab - 2)
        az = np.linspace(-60, 60, frames.size)
        meta = Metadata(np.tile(frames, n_sources), 0 * np.tile(frames, n_sources),
                        np.repeat(np.arange(n_sources), frames.size),
                        polar_to_unit(np.concatenate([(az + 120 * k + 180) % 360 - 180 for k in range(n_sources)]),
                                      np.zeros(n_sources * frames.size)))
        write_metadata(os.path.join(root, "metadata_dev", name + ".csv"), meta)
        for fmt in ("foa", "mic"):
            write_audio(os.path.join(root, f"{fmt}_dev", name + ".wav"),
                        0.1 * rng.standard_normal((int(seconds * 24000), 4)))
    return str(root)


def _write_tiny_dataset(root, fmt="foa", files=TINY_FILES, seed=0, amplitude=0.05):
    """Noise wavs (4 ch, 24 kHz) + metadata with two overlapping moving tracks, in the DCASE2020 layout."""
    from dtbt_tf.data import dcase
    from dtbt_tf.geometry import polar_to_unit

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, f"{fmt}_dev"), exist_ok=True)
    os.makedirs(os.path.join(root, "metadata_dev"), exist_ok=True)
    for i, (fold, seconds) in enumerate(files):
        stem = dcase.format_name(fold, 1, i + 1, 2)
        audio = amplitude * rng.standard_normal((int(seconds * 24000), 4))
        dcase.write_audio(os.path.join(root, f"{fmt}_dev", stem + ".wav"), audio)
        n_lab = int(seconds * 10)
        rows = [(f, 1, 0, -170 + 7 * f, 10) for f in range(0, n_lab - 2)]
        rows += [(f, 4, 1, 90 - 5 * f, -20) for f in range(3, n_lab)]
        frame, cls, track, az, el = (np.array(c) for c in zip(*rows))
        doa = polar_to_unit(az, el)
        dcase.write_metadata(os.path.join(root, "metadata_dev", stem + ".csv"), dcase.Metadata(frame, cls, track, doa))
    return str(root)


def _random_batch(rng, B=4, T=20, N=2, C=7):
    """(features (B, T, 64, C), labels) with random activity (p = 0.7), stable track ids and padded DOAs."""
    from dtbt_tf.config import PAD_VALUE
    from dtbt_tf.geometry import polar_to_unit

    F = T // 5
    active = (rng.random((B, F, N)) < 0.7).astype(np.float32)
    doa = polar_to_unit(rng.uniform(-180, 180, (B, F, N)), rng.uniform(-45, 45, (B, F, N)))
    doa = np.where(active[..., None] > 0, doa, PAD_VALUE).astype(np.float32)
    track_id = np.where(active > 0, np.arange(N) + 1, -1).astype(np.int32)
    x = rng.standard_normal((B, T, 64, C)).astype(np.float32)
    return x, {"doa": doa, "active": active, "track_id": track_id}


def _noise(seconds, seed):
    """(samples, 4) float32 white noise at 0.1 standard deviation, 24 kHz."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((int(seconds * 24000), 4))).astype(np.float32)


def _tiny_doanet(fmt="foa", seed=0):
    """A small random DOAnet with normalisation statistics of noise features and non-zero random biases:
    (model, DoanetConfig)."""
    import keras

    from dtbt_tf.config import DoanetConfig, FeatureConfig
    from dtbt_tf.features import features_numpy
    from dtbt_tf.models.doanet import build_doanet

    keras.utils.set_random_seed(seed)
    # conv and GRU kernels of > 1024 weights, so dynamic-range quantisation applies to them
    cfg = DoanetConfig(fmt=fmt, conv_filters=12, rnn_units=16, fc_units=16)
    rng = np.random.default_rng(seed)
    feats = features_numpy(_noise(2.0, seed + 100), FeatureConfig(fmt=fmt))
    model = build_doanet(cfg, norm_mean=feats.mean(axis=0), norm_std=feats.std(axis=0) + 1e-3)
    for layer in model.layers:
        for w in layer.weights:
            if w.path.endswith("bias"):
                w.assign(rng.normal(0.0, 0.2, w.shape).astype(np.float32))
    return model, cfg


@pytest.fixture(scope="session")
def write_tiny_dcase():
    """``write_tiny_dcase(root, seconds=2.0, folds=(1, 2, 3, 4), seed=0, n_sources=1) -> root``"""
    return _write_tiny_dcase


@pytest.fixture(scope="session")
def write_tiny_dataset():
    """``write_tiny_dataset(root, fmt="foa", files=TINY_FILES, seed=0, amplitude=0.05) -> root``"""
    return _write_tiny_dataset


@pytest.fixture(scope="session")
def random_batch():
    """``random_batch(rng, B=4, T=20, N=2, C=7) -> (x, labels)``"""
    return _random_batch


@pytest.fixture(scope="session")
def noise():
    """``noise(seconds, seed) -> (samples, 4) float32``"""
    return _noise


@pytest.fixture(scope="session")
def tiny_doanet():
    """``tiny_doanet(fmt="foa", seed=0) -> (model, DoanetConfig)``, a new model on every call."""
    return _tiny_doanet
