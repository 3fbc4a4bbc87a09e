"""DOAnet builder (DESIGN 4): shapes, unit vectors, variable T, normalisation, .keras round trip."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import ConfigError, DoanetConfig
from dtbt_tf.models.doanet import build_doanet

SMALL = dict(conv_filters=8, rnn_units=8, fc_units=8)


@pytest.mark.parametrize("fmt,n_max", [("foa", 2), ("mic", 3)])
def test_shapes_unit_vectors_and_variable_length(fmt, n_max):
    # seeded: a tiny random head can output an exactly-zero DOA vector (all ReLUs off), which has no direction
    keras.utils.set_random_seed(0)
    cfg = DoanetConfig(fmt=fmt, n_max=n_max, **SMALL)
    model = build_doanet(cfg)
    assert model.input_shape == (None, None, 64, cfg.n_channels)
    rng = np.random.default_rng(0)
    for T in (20, 35):
        out = model(rng.standard_normal((2, T, 64, cfg.n_channels)).astype(np.float32))
        assert set(out) == {"doa", "activity"}
        assert out["doa"].shape == (2, T // 5, n_max, 3)
        assert out["activity"].shape == (2, T // 5, n_max)
        np.testing.assert_allclose(np.linalg.norm(out["doa"], axis=-1), 1.0, atol=1e-5)
        act = out["activity"].numpy()
        assert np.all((act > 0) & (act < 1))


def test_paper_architecture_layers():
    model = build_doanet(DoanetConfig())
    assert [model.get_layer(f"conv{k}").filters for k in range(3)] == [128, 128, 128]
    assert [model.get_layer(f"pool{k}").pool_size for k in range(3)] == [(5, 2), (1, 2), (1, 2)]
    assert model.get_layer("flatten_freq").output.shape[-1] == 8 * 128
    assert model.get_layer("bigru0").output.shape[-1] == 256
    assert model.get_layer("gru_product").output.shape[-1] == 128
    assert model.get_layer("doa_out").units == 6 and model.get_layer("activity").units == 2
    assert not any(isinstance(layer, (keras.layers.Lambda, keras.layers.TimeDistributed)) for layer in model.layers)


def test_dropout_is_configurable():
    x = np.random.default_rng(1).standard_normal((1, 25, 64, 7)).astype(np.float32)
    model = build_doanet(DoanetConfig(dropout=0.5, **SMALL))
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    np.testing.assert_allclose(model(x)["doa"], model(x)["doa"])  # inference is deterministic
    assert not np.allclose(model(x, training=True)["doa"], model(x)["doa"])
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in build_doanet(DoanetConfig(**SMALL)).layers)


def test_normalization_layer_and_keras_round_trip(tmp_path):
    cfg = DoanetConfig(fmt="mic", **SMALL)
    rng = np.random.default_rng(2)
    mean = rng.standard_normal((64, 10)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, (64, 10)).astype(np.float32)
    model = build_doanet(cfg, mean, std)
    raw = (mean + std * rng.standard_normal((1, 25, 64, 10))).astype(np.float32)
    norm = model.get_layer("normalization")(raw).numpy()
    np.testing.assert_allclose(norm, (raw - mean) / std, rtol=1e-4, atol=1e-4)
    # the normalised-input model equals an un-normalised twin fed normalised features
    plain = build_doanet(cfg)
    plain.set_weights(model.get_weights())  # the statistics are constants of the layer, not weights
    np.testing.assert_allclose(plain(norm)["doa"], model(raw)["doa"], atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for k in ("doa", "activity"):
        np.testing.assert_allclose(loaded(raw)[k], model(raw)[k], atol=1e-6)


def test_bad_configs():
    with pytest.raises(ConfigError, match="shape"):
        build_doanet(DoanetConfig(**SMALL), np.zeros((64, 10)), np.ones((64, 10)))
    with pytest.raises(ConfigError, match="std > 0"):
        build_doanet(DoanetConfig(**SMALL), np.zeros((64, 7)), np.zeros((64, 7)))
    with pytest.raises(ConfigError, match="both"):
        build_doanet(DoanetConfig(**SMALL), np.zeros((64, 7)))
    with pytest.raises(ConfigError, match="divisible"):
        build_doanet(DoanetConfig(n_mels=36, **SMALL))


def test_fused_batch_norm_matches_keras_batch_norm():
    from dtbt_tf.models.layers import FusedBatchNorm

    x = tf.constant(np.random.default_rng(3).normal(1.0, 3.0, (4, 10, 8, 6)).astype(np.float32))
    fused, ref = FusedBatchNorm(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    fused.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(fused.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_f, y_r = fused(x, training=True), ref(x, training=True)
        l_f, l_r = tf.reduce_sum(y_f ** 3), tf.reduce_sum(y_r ** 3)
    np.testing.assert_allclose(y_f, y_r, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(l_f, x), tape.gradient(l_r, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(l_f, fused.gamma), tape.gradient(l_r, ref.gamma), rtol=1e-4)
    for a, b in zip(fused.get_weights(), ref.get_weights()):  # moving statistics updated alike
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused(x), ref(x), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Causal DOAnet (issue 17, point 2) and its streaming step


def _causal(seed=0, **kw):
    from dtbt_tf.models.doanet import build_doanet

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = DoanetConfig(causal=True, **{**SMALL, **kw})
    c = cfg.n_channels
    return build_doanet(cfg, rng.standard_normal((64, c)), rng.uniform(0.5, 2.0, (64, c))), cfg


def test_causal_architecture_layers_and_config():
    from dtbt_tf.models.doanet import is_causal

    model, cfg = _causal()
    names = [layer.name for layer in model.layers]
    assert {"gru0", "gru1", "gru_tanh", "causal_pad0", "causal_pad2"} <= set(names)
    assert not any(n.startswith("bigru") for n in names)
    assert not any(isinstance(layer, (keras.layers.Bidirectional, keras.layers.Lambda, keras.layers.TimeDistributed))
                   for layer in model.layers)
    assert all(model.get_layer(f"conv{k}").padding == "valid" for k in range(3))
    assert model.get_layer("causal_pad0").padding == ((2, 0), (1, 1))
    assert model.get_layer("gru_tanh").output.shape[-1] == cfg.rnn_units
    assert is_causal(model) and not is_causal(build_doanet(DoanetConfig(**SMALL)))
    assert DoanetConfig().causal is False
    with pytest.raises(ConfigError, match="causal"):
        DoanetConfig(causal="yes")


def test_causal_outputs_ignore_the_future_and_round_trip(tmp_path):
    """Label frame t depends on feature frames <= 5t + 4 only: changing frames from 23 on leaves frames 0-3 alone."""
    model, cfg = _causal(seed=1, fmt="mic", n_max=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 40, 64, 10)).astype(np.float32)
    out = model(x)
    assert out["doa"].shape == (2, 8, 3, 3) and out["activity"].shape == (2, 8, 3)
    y = x.copy()
    y[:, 23:] = rng.standard_normal(y[:, 23:].shape)
    changed = model(y)
    for k in ("doa", "activity"):
        np.testing.assert_array_equal(changed[k].numpy()[:, :4], out[k].numpy()[:, :4])
        assert not np.allclose(changed[k].numpy()[:, 4], out[k].numpy()[:, 4])
    path = tmp_path / "causal.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for k in ("doa", "activity"):
        np.testing.assert_allclose(loaded(x)[k], out[k], atol=1e-6)


@pytest.mark.parametrize("fmt,pools", [("foa", ((5, 2), (1, 2), (1, 2))), ("mic", ((1, 2), (5, 2), (1, 2)))])
def test_step_model_equals_the_whole_sequence(fmt, pools):
    """build_doanet_step run step by step from zero states = the causal model on the whole sequence (1e-5)."""
    from dtbt_tf.models.doanet import build_doanet_step, step_state_specs

    model, cfg = _causal(seed=2, fmt=fmt, pool_sizes=pools)
    step = build_doanet_step(model)
    specs = step_state_specs(model)
    assert [n for n, _ in specs] == ["conv0", "conv1", "conv2", "gru0", "gru1"]
    x = np.random.default_rng(2).standard_normal((1, 45, 64, cfg.n_channels)).astype(np.float32)
    whole = model(x)
    states = {f"state_{n}": np.zeros((1,) + s, np.float32) for n, s in specs}
    doa, act = [], []
    for t in range(9):
        out = step({"features": x[:, 5 * t:5 * t + 5], **states})
        states = {f"state_{n}": out[f"next_{n}"].numpy() for n, _ in specs}
        doa.append(out["doa"].numpy()[0, 0])
        act.append(out["activity"].numpy()[0, 0])
    np.testing.assert_allclose(np.stack(doa), whole["doa"].numpy()[0], atol=1e-5)
    np.testing.assert_allclose(np.stack(act), whole["activity"].numpy()[0], atol=1e-5)


def test_step_model_refuses_a_bidirectional_model():
    from dtbt_tf.models.doanet import build_doanet_step

    with pytest.raises(ConfigError, match="causal"):
        build_doanet_step(build_doanet(DoanetConfig(**SMALL)))
