"""SavedModel (TF Serving layout, two signatures) and TFLite export of DOAnet (dtbt_tf.export)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import ConfigError, FeatureConfig
from dtbt_tf.data.dcase import Metadata, format_name, write_audio, write_metadata
from dtbt_tf.artifacts import save_run_config, tflite_sidecar_path
from dtbt_tf.evaluation import quantization_report
from dtbt_tf.export import export_all, export_saved_model, export_tflite, fixed_shape_copy, tflite_op_names
from dtbt_tf.features.tf_features import extract_features
from dtbt_tf.inference import load_model

WINDOW = 50  # feature frames per TFLite window in these tests (10 label frames)
# Parity tolerances vs the Keras/SavedModel outputs on the same window (max abs difference; DOAs are unit vectors,
# activities probabilities). fp32 is the same arithmetic up to op fusion; fp16 rounds weights to 11 bits;
# dynamic-range int8 rounds weights to 8 bits and quantises activations on the fly per call.
TOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}  # measured here: 2e-6, 3e-3, 2.5e-2


@pytest.fixture(scope="module")
def foa_model(tiny_doanet):
    """(model, DoanetConfig) of the tiny FOA DOAnet, not exported (tests of the Keras side need no SavedModel)."""
    return tiny_doanet("foa")


@pytest.fixture(scope="module")
def foa(tmp_path_factory, foa_model):
    model, cfg = foa_model
    out = tmp_path_factory.mktemp("export") / "doanet_foa"
    vdir = export_saved_model(model, str(out))
    return model, cfg, str(out), vdir


@pytest.mark.slow  # saved_model_cli in a subprocess and two more exports (~25 s)
def test_saved_model_layout_config_and_cli(foa):
    model, cfg, out, vdir = foa
    assert vdir == os.path.join(out, "1") and os.path.isfile(os.path.join(vdir, "saved_model.pb"))
    info = json.load(open(os.path.join(vdir, "assets.extra", "dtbt_tf.json")))
    assert info["version"] == 1 and info["feature_config"]["fmt"] == "foa" and info["doanet_config"]["n_max"] == 2
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    text = subprocess.run([cli, "show", "--all", "--dir", vdir], capture_output=True, text=True, check=True).stdout
    for sig, arg, shape in (("serving_default", "features", "(-1, -1, 64, 7)"), ("from_audio", "audio", "(-1, -1, 4)")):
        block = text.split(f"signature_def['{sig}']")[1].split("signature_def[")[0]
        assert f"inputs['{arg}']" in block and shape in block
        assert "outputs['doa']" in block and "outputs['activity']" in block
        assert "Method name is: tensorflow/serving/predict" in block
    with pytest.raises(ConfigError, match="already exists"):
        export_saved_model(model, out)
    assert os.path.isdir(export_saved_model(model, out, version=2))
    assert sorted(os.listdir(out)) == ["1", "2"]  # no temporary folders left behind


@pytest.mark.slow  # a fresh interpreter loading the SavedModel (~25 s)
def test_saved_model_reloads_without_dtbt_tf_and_matches(foa, tmp_path, noise):
    model, cfg, out, vdir = foa
    feats = np.random.default_rng(1).standard_normal((2, 100, 64, 7)).astype(np.float32) * 5 - 40
    audio = noise(3.0, 2)[None, : 3 * 24000 - 1000]  # 29 full label frames + 1400 samples to trim
    np.savez(tmp_path / "in.npz", feats=feats, audio=audio)
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        m = tf.saved_model.load({vdir!r})
        d = np.load({str(tmp_path / 'in.npz')!r})
        a = m.signatures["serving_default"](features=tf.constant(d["feats"]))
        b = m.signatures["from_audio"](audio=tf.constant(d["audio"]))
        assert not any(k.startswith("dtbt_tf") for k in sys.modules), "dtbt_tf was imported"
        np.savez({str(tmp_path / 'out.npz')!r}, **{{"f_" + k: v.numpy() for k, v in a.items()}},
                 **{{"a_" + k: v.numpy() for k, v in b.items()}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path),
                   env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    got = np.load(tmp_path / "out.npz")
    ref = model(feats, training=False)
    assert got["f_doa"].shape == (2, 20, 2, 3) and got["f_activity"].shape == (2, 20, 2)
    np.testing.assert_allclose(got["f_doa"], ref["doa"], atol=1e-5)
    np.testing.assert_allclose(got["f_activity"], ref["activity"], atol=1e-5)
    trimmed = audio[:, : 29 * 2400]
    ref_a = model(extract_features(trimmed, FeatureConfig(fmt="foa")), training=False)
    assert got["a_doa"].shape == (1, 29, 2, 3)
    np.testing.assert_allclose(got["a_doa"], ref_a["doa"], atol=1e-5)
    np.testing.assert_allclose(got["a_activity"], ref_a["activity"], atol=1e-5)


def test_fixed_shape_copy_same_outputs(foa_model):
    model = foa_model[0]
    copy = fixed_shape_copy(model, WINDOW, unroll=True)
    assert tuple(copy.inputs[0].shape) == (1, WINDOW, 64, 7)
    x = np.random.default_rng(3).standard_normal((1, WINDOW, 64, 7)).astype(np.float32) * 5 - 40
    a, b = model(x, training=False), copy(x, training=False)
    np.testing.assert_allclose(a["doa"], b["doa"], atol=1e-6)
    np.testing.assert_allclose(a["activity"], b["activity"], atol=1e-6)


def _run_tflite(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = {len(d["shape"]): it.get_tensor(d["index"]) for d in it.get_output_details()}
    return out[4], out[3]


@pytest.fixture(scope="module")
def tflite_paths(foa, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    return {q: export_tflite(foa[0], str(out / f"m_{q}.tflite"), q, window_frames=WINDOW) for q in TOL}


@pytest.mark.slow  # TFLite conversions (tflite_paths: three quantisations, ~50 s)
@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8"])
def test_tflite_builtin_ops_and_parity(foa, tflite_paths, quant):
    model, path = foa[0], tflite_paths[quant]
    ops = tflite_op_names(path)
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops
    assert {"FULLY_CONNECTED", "CONV_2D", "WHILE"} <= ops
    side = json.load(open(tflite_sidecar_path(path)))
    assert side["quantization"] == quant and side["window_frames"] == WINDOW and side["input_kind"] == "features"
    x = np.random.default_rng(4).standard_normal((1, WINDOW, 64, 7)).astype(np.float32) * 5 - 40
    doa, act = _run_tflite(path, x)
    ref = model(x, training=False)
    assert doa.shape == (1, WINDOW // 5, 2, 3) and act.shape == (1, WINDOW // 5, 2)
    np.testing.assert_allclose(np.linalg.norm(doa, axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(doa, ref["doa"], atol=TOL[quant])
    np.testing.assert_allclose(act, ref["activity"], atol=TOL[quant])


@pytest.mark.slow  # TFLite conversion
def test_tflite_unrolled_gru_has_no_loop(foa, tmp_path):
    model = foa[0]
    path = export_tflite(model, str(tmp_path / "unrolled.tflite"), "int8", window_frames=WINDOW, unroll=True)
    ops = tflite_op_names(path)
    assert "WHILE" not in ops and "FULLY_CONNECTED" in ops and not any(o.startswith("Flex") for o in ops)
    x = np.random.default_rng(6).standard_normal((1, WINDOW, 64, 7)).astype(np.float32) * 5 - 40
    doa, act = _run_tflite(path, x)
    ref = model(x, training=False)
    np.testing.assert_allclose(doa, ref["doa"], atol=TOL["int8"])
    np.testing.assert_allclose(act, ref["activity"], atol=TOL["int8"])


@pytest.mark.slow  # TFLite conversion
def test_tflite_audio_in_matches_from_audio(foa, tmp_path, noise):
    model, cfg, out, vdir = foa
    path = export_tflite(model, str(tmp_path / "audio.tflite"), "fp32", window_frames=WINDOW, input_kind="audio")
    ops = tflite_op_names(path)
    assert "RFFT2D" in ops and not any(o.startswith("Flex") or o == "CUSTOM" for o in ops)
    audio = noise(WINDOW * 480 / 24000, 5)[None]
    doa, act = _run_tflite(path, audio)
    ref = tf.saved_model.load(vdir).signatures["from_audio"](audio=tf.constant(audio))
    np.testing.assert_allclose(doa, ref["doa"], atol=1e-3)
    np.testing.assert_allclose(act, ref["activity"], atol=1e-3)


def test_tflite_bad_arguments(foa_model, tmp_path):
    model = foa_model[0]
    with pytest.raises(ConfigError, match="quantization"):
        export_tflite(model, str(tmp_path / "x.tflite"), "int4", window_frames=WINDOW)
    with pytest.raises(ConfigError, match="multiple of 5"):
        export_tflite(model, str(tmp_path / "x.tflite"), window_frames=52)
    assert not os.path.exists(tmp_path / "x.tflite")


@pytest.mark.slow  # TFLite conversions (tflite_paths)
def test_quantization_report_on_a_tiny_split(tflite_paths, tmp_path, noise):
    root = tmp_path / "data"
    (root / "foa_dev").mkdir(parents=True)
    (root / "metadata_dev").mkdir()
    for mix in range(2):
        stem = format_name(1, 1, mix + 1, 1)
        write_audio(str(root / "foa_dev" / f"{stem}.wav"), noise(6.0, 10 + mix))
        frames = np.arange(5, 40)
        doa = np.tile([[1.0, 0.0, 0.0]], (frames.size, 1))
        write_metadata(str(root / "metadata_dev" / f"{stem}.csv"),
                       Metadata(frames, np.zeros_like(frames), np.zeros_like(frames), doa))
    paths = {q: tflite_paths[q] for q in ("fp32", "int8")}
    rep = quantization_report(paths, str(root), split="test")
    assert rep["files"] == 2 and set(rep["metrics"]) == {"fp32", "int8"} and set(rep["delta"]) == {"int8"}
    for key in ("LE", "LF1"):
        want = rep["metrics"]["int8"][key] - rep["metrics"]["fp32"][key]
        assert rep["delta"]["int8"][key] == pytest.approx(want, nan_ok=True)
    assert 0.0 <= rep["metrics"]["fp32"]["LR"] <= 1.0
    with pytest.raises(ConfigError, match="fp32"):
        quantization_report({"int8": paths["int8"]}, str(root))


@pytest.mark.slow  # TFLite conversions (tflite_paths)
def test_quantised_variants_hold_quantised_weights(tflite_paths):
    from ai_edge_litert.interpreter import Interpreter

    dtypes = {q: {d["dtype"] for d in Interpreter(model_path=p).get_tensor_details()} for q, p in tflite_paths.items()}
    assert np.int8 in dtypes["int8"] and np.float16 not in dtypes["int8"]
    assert np.float16 in dtypes["fp16"] and np.int8 not in dtypes["fp16"]
    assert np.int8 not in dtypes["fp32"] and np.float16 not in dtypes["fp32"]
    sizes = {q: os.path.getsize(p) for q, p in tflite_paths.items()}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"], sizes


@pytest.mark.slow  # a SavedModel export and a TFLite conversion (~30 s)
def test_export_from_run_folder_keeps_run_configs_and_provenance(tmp_path, tiny_doanet):
    from dtbt_tf.config import InferenceConfig, LossConfig, RunConfig, TrainSettings

    model, dcfg = tiny_doanet("foa", seed=3)
    run, data = tmp_path / "run", tmp_path / "features"
    run.mkdir()
    data.mkdir()
    model.save(str(run / "best.keras"))
    fcfg = FeatureConfig(fmt="foa", seq_frames=500)  # not the default: must come from the run, not the shapes
    save_run_config(str(run), RunConfig(fcfg, dcfg, LossConfig(), TrainSettings(), InferenceConfig(threshold=0.7),
                                        data_dir=str(data)))
    (data / "manifest.json").write_text(json.dumps({"source": {"root": "/data/dcase", "format": "foa"}}))
    vdir = export_saved_model(str(run), str(tmp_path / "out"))
    info = json.load(open(os.path.join(vdir, "assets.extra", "dtbt_tf.json")))
    assert info["feature_config"]["seq_frames"] == 500 and info["doanet_config"]["conv_filters"] == 12
    assert info["source_run"] == str(run) and info["data_root"] == "/data/dcase"
    assert load_model(str(run)).window_frames == load_model(vdir).window_frames == 500  # windows = training length
    # the run's threshold travels into every export and inference uses it
    assert info["inference_config"] == {"threshold": 0.7, "use_activity": True, "tracking": "continuity",
                                        "merge_deg": 20.0, "gate_deg": 60.0, "bridge_frames": 5}
    assert load_model(vdir).inference.threshold == 0.7
    (tfl,) = export_all(str(run), str(tmp_path / "lite"), tflite="fp32", window_frames=50, saved_model=False)
    assert load_model(tfl).inference == InferenceConfig(threshold=0.7)


def test_export_refuses_bad_window_before_writing(tmp_path, tiny_doanet):
    model, _ = tiny_doanet("foa", seed=3)
    model.save(str(tmp_path / "m.keras"))
    with pytest.raises(ConfigError, match="multiple of 5"):
        export_all(str(tmp_path / "m.keras"), str(tmp_path / "out"), tflite="fp32", window_frames=7)
    assert not (tmp_path / "out").exists()  # nothing written, not even the version folder


@pytest.mark.slow  # a SavedModel export with both signatures (~10-25 s)
def test_export_removes_what_a_killed_export_left(tmp_path, tiny_doanet):
    model, _ = tiny_doanet("foa", seed=3)
    model.save(str(tmp_path / "m.keras"))
    (tmp_path / "out" / ".1.tmpab12").mkdir(parents=True)  # a killed export's temporary folder
    export_all(str(tmp_path / "m.keras"), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["1"]
