"""The DOAnet models shipped in saved_models/ load with the TF tools alone and agree across formats."""
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.inference import load_model, localize

SAVED = pathlib.Path(__file__).resolve().parents[1] / "saved_models"


@pytest.mark.parametrize("fmt,channels", [("foa", 7), ("mic", 10)])
def test_shipped_doanet_signatures_and_tflite_agree(fmt, channels):
    root = SAVED / f"doanet_{fmt}"
    assert (root / "MODEL_CARD.md").is_file()
    loaded = tf.saved_model.load(str(root / "1"))
    assert {"serving_default", "from_audio"} <= set(loaded.signatures)
    info = json.loads((root / "1" / "assets.extra" / "dtbt_tf.json").read_text())
    assert info["feature_config"]["fmt"] == fmt and info["doanet_config"]["n_max"] == 2
    audio = np.random.default_rng(0).normal(0, 0.05, (1, 24000 * 5, 4)).astype(np.float32)
    out = loaded.signatures["from_audio"](audio=tf.constant(audio))
    assert out["doa"].shape == (1, 50, 2, 3) and out["activity"].shape == (1, 50, 2)
    np.testing.assert_allclose(np.linalg.norm(out["doa"].numpy(), axis=-1), 1.0, atol=1e-4)
    feats = loaded.signatures["serving_default"].structured_input_signature[1]["features"]
    assert feats.shape[-1] == channels
    # the int8 TFLite file (NumPy features) stays close to the SavedModel (TF features) on the same audio
    lite_doa, lite_act = localize(audio[0], load_model(str(root / "tflite" / f"doanet_{fmt}_int8.tflite")))
    sm_doa, sm_act = localize(audio[0], load_model(str(root)))
    assert np.max(np.abs(lite_act - sm_act)) < 0.15
    cos = np.sum(lite_doa * sm_doa, axis=-1)
    assert np.median(cos) > 0.98


def test_shipped_streaming_model_steps_and_int8_follows_fp32():
    """saved_models/doanet_foa_stream: fp32 and int8 streaming TFLite steps over the same 2 s of audio give unit
    DOAs and int8 activities close to fp32's (the int8 tolerance of tests/test_streaming.py)."""
    from dtbt_tf.streaming import StreamingLocalizer, TFLiteStep

    root = SAVED / "doanet_foa_stream"
    assert (root / "MODEL_CARD.md").is_file()
    audio = 0.05 * np.random.default_rng(0).standard_normal((48000, 4)).astype(np.float32)
    outs = {}
    for variant in ("fp32", "int8"):
        info = json.loads((root / f"doanet_foa_stream_{variant}.json").read_text())
        assert info["doanet_config"]["causal"] is True
        outs[variant] = StreamingLocalizer(TFLiteStep(str(root / f"doanet_foa_stream_{variant}.tflite"))).run(audio)
    doa, act, _ = outs["fp32"]
    assert doa.shape == (20, 2, 3) and act.shape == (20, 2)
    np.testing.assert_allclose(np.linalg.norm(doa, axis=-1), 1.0, atol=1e-3)
    assert np.max(np.abs(outs["int8"][1] - act)) < 0.05
