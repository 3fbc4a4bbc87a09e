"""The ResNet-Conformer DOAnet (DoanetConfig.arch = "resnet_conformer", issue 16 point 6): shapes at any length,
save/load, training through the job, TFLite with built-in ops only."""
import json
import os

import keras
import numpy as np
import pytest

from dtbt_tf.config import ConfigError, DoanetConfig, FeatureConfig, InferenceConfig, LossConfig, RunConfig, \
    TrainSettings
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import build_hnet

TINY = dict(arch="resnet_conformer", conv_filters=8, fc_units=8, conformer_dim=16, attention_heads=2,
            conformer_blocks=1, conformer_kernel=3)


def _model(seed=0, **extra):
    keras.utils.set_random_seed(seed)
    return build_doanet(DoanetConfig(**{**TINY, **extra}))


def test_outputs_at_any_length_and_time_dependence():
    model = _model()
    rng = np.random.default_rng(0)
    for frames in (25, 50, 100):
        out = model(rng.standard_normal((2, frames, 64, 7)).astype(np.float32), training=False)
        assert out["doa"].shape == (2, frames // 5, 2, 3) and out["activity"].shape == (2, frames // 5, 2)
        np.testing.assert_allclose(np.linalg.norm(out["doa"], axis=-1), 1.0, atol=1e-5)
    # attention: a change in the last label frame's features moves the first frame's output (not frame-local)
    x = rng.standard_normal((1, 50, 64, 7)).astype(np.float32)
    y = x.copy()
    y[:, -5:] += 3.0
    a, b = model(x, training=False)["doa"][0, 0], model(y, training=False)["doa"][0, 0]
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6


def test_config_refuses_causal_and_indivisible_heads():
    with pytest.raises(ConfigError, match="causal"):
        DoanetConfig(arch="resnet_conformer", causal=True)
    with pytest.raises(ConfigError, match="divisible"):
        DoanetConfig(arch="resnet_conformer", conformer_dim=30, attention_heads=4)
    with pytest.raises(ConfigError, match="unknown arch"):
        DoanetConfig(arch="transformer")


def test_saved_keras_file_reloads_with_the_same_outputs(tmp_path):
    model = _model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(1).standard_normal((1, 50, 64, 7)).astype(np.float32)
    for k in ("doa", "activity"):
        np.testing.assert_allclose(loaded(x, training=False)[k], model(x, training=False)[k], atol=1e-6)


@pytest.mark.slow  # one training epoch, evaluation and export of the job (~40 s)
def test_job_trains_evaluates_and_exports_the_conformer(tmp_path, write_tiny_dcase):
    from dtbt_tf.artifacts import load_run_config, load_trained
    from dtbt_tf.export import export_tflite, tflite_op_names
    from dtbt_tf.jobs import main_job

    root = write_tiny_dcase(tmp_path / "dcase")
    hnet = str(tmp_path / "hnet.keras")
    build_hnet(2, units=8).save(hnet)
    loss = LossConfig("full")
    model_cfg = DoanetConfig(**TINY)
    cfg = RunConfig(FeatureConfig(), model_cfg, loss, TrainSettings(epochs=1, batch_size=2, seq_hop=50),
                    InferenceConfig.for_loss(loss), hnet=hnet)
    out = str(tmp_path / "run")
    res = main_job(cfg, out=out, data=root, verbose=0, log=lambda *a: None)
    assert np.isfinite(res["test_metrics"]["LE"])
    assert load_run_config(out).model.arch == "resnet_conformer"
    saved = json.load(open(os.path.join(out, "export", "1", "assets.extra", "dtbt_tf.json")))
    assert saved["doanet_config"]["arch"] == "resnet_conformer"
    model, _ = load_trained(out)
    assert any(layer.name == "conformer0_mhsa" for layer in model.layers)
    path = export_tflite(out, str(tmp_path / "m.tflite"), "fp32", window_frames=50)
    ops = tflite_op_names(path)
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    assert {"BATCH_MATMUL", "SOFTMAX", "DEPTHWISE_CONV_2D", "CONV_2D"} <= ops
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(2).standard_normal((1, 50, 64, 7)).astype(np.float32) * 5 - 40
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = {len(d["shape"]): it.get_tensor(d["index"]) for d in it.get_output_details()}
    ref = model(x, training=False)
    np.testing.assert_allclose(got[4], ref["doa"], atol=1e-4)
    np.testing.assert_allclose(got[3], ref["activity"], atol=1e-4)
