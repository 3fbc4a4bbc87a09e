"""Streaming (issue 17, points 3-5): the stateful 100 ms step vs the causal model on the whole file, track ids,
the streaming TFLite export, scripts/stream.py (TensorFlow never imported with a .tflite model)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dtbt_tf.config import ConfigError, DoanetConfig, FeatureConfig, InferenceConfig
from dtbt_tf.data.dcase import format_name, read_metadata, write_audio
from dtbt_tf.features import features_numpy
from dtbt_tf.streaming import StreamingLocalizer, frames_to_metadata, load_streaming_model
from dtbt_tf.tracks import track_ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOA = FeatureConfig(fmt="foa")

# Tolerances against the causal Keras model run on the features of the whole file (doa and activity, max abs):
KERAS_STEP_ATOL = 1e-4  # measured ~2e-7 (float32 round-off of the per-step matmuls)
TFLITE_FP32_ATOL = 1e-4  # measured ~2e-7
TFLITE_INT8_ATOL = 0.05  # dynamic-range int8 weights; measured ~5e-3 on the tiny model


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(REPO, "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_causal(noise, fmt="foa", seed=0):
    """A small random causal DOAnet with noise-feature normalisation statistics and non-zero random biases."""
    import keras

    from dtbt_tf.models.doanet import build_doanet

    keras.utils.set_random_seed(seed)
    cfg = DoanetConfig(fmt=fmt, causal=True, conv_filters=12, rnn_units=16, fc_units=16)
    feats = features_numpy(noise(2.0, seed + 100), FeatureConfig(fmt=fmt))
    model = build_doanet(cfg, norm_mean=feats.mean(axis=0), norm_std=feats.std(axis=0) + 1e-3)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            if w.path.endswith("bias"):
                w.assign(rng.normal(0.0, 0.2, w.shape).astype(np.float32))
    return model


def _whole(model, audio, cfg=FOA):
    n = len(audio) // 2400 * 2400
    out = model(features_numpy(audio[:n], cfg)[None])
    return out["doa"].numpy()[0], out["activity"].numpy()[0]


class _FakeStep:
    """A TF-free step runner that records its features and plays back a given activity pattern."""

    def __init__(self, activity, cfg=FOA):
        self.feature_cfg, self.n_max = cfg, activity.shape[1]
        self.inference = InferenceConfig(threshold=0.5, tracking="slots")
        self.activity, self.seen, self.t = activity, [], 0

    def initial_states(self):
        return {"count": np.zeros((1,), np.float32)}

    def __call__(self, features, states):
        self.seen.append(features)
        act = self.activity[self.t]
        self.t += 1
        doa = np.tile([[1.0, 0.0, 0.0]], (self.n_max, 1)).astype(np.float32)
        return doa, act, {"count": states["count"] + 1}


def test_step_features_are_the_whole_file_features_and_tracks_follow_the_counter(noise):
    """Each step sees exactly features_numpy(whole file)[5t:5t+5] (the STFT overlap is carried), states are passed
    on, and track ids are TrackCounter's over the thresholded activity (a model whose sidecar says "slots")."""
    audio = noise(2.37, 3)  # 23 whole frames, a partial one dropped
    rng = np.random.default_rng(0)
    activity = rng.uniform(0, 1, (23, 3)).astype(np.float32)
    step = _FakeStep(activity)
    loc = StreamingLocalizer(step)
    frames = []
    for start in range(0, len(audio), 1000):  # blocks that do not line up with frames
        frames += loc.feed(audio[start:start + 1000])
    assert [f.index for f in frames] == list(range(23))
    whole = features_numpy(audio[:23 * 2400], FOA)
    np.testing.assert_allclose(np.concatenate(step.seen), whole, rtol=1e-5, atol=1e-4)
    assert loc._states["count"][0] == 23
    expected_ids = track_ids(activity > 0.5)
    np.testing.assert_array_equal(np.stack([f.track for f in frames]), expected_ids)
    meta = frames_to_metadata(frames)
    frame, slot = np.nonzero(activity > 0.5)
    assert sorted(zip(meta.frame, meta.track)) == sorted(zip(frame, expected_ids[frame, slot]))
    with pytest.raises(ValueError, match="2400"):
        loc.push(audio[:2000])


def test_streaming_keras_step_equals_the_causal_model_on_the_whole_file(noise):
    from dtbt_tf.streaming import KerasStep

    model = _tiny_causal(noise, seed=1)
    audio = noise(3.1, 7)
    loc = StreamingLocalizer(KerasStep(model, FOA, InferenceConfig()))
    doa, act, track = loc.run(audio)
    ref_doa, ref_act = _whole(model, audio)
    assert doa.shape == ref_doa.shape == (31, 2, 3)
    np.testing.assert_allclose(doa, ref_doa, atol=KERAS_STEP_ATOL)
    np.testing.assert_allclose(act, ref_act, atol=KERAS_STEP_ATOL)
    # the continuity rule (the default) gives the offline ids of the same outputs, frame by frame
    assert loc.inference.tracking == "continuity"
    np.testing.assert_array_equal(track, track_ids(act > 0.5, doa, act, loc.inference))
    # no lookahead: audio after the end of frame 14 changes nothing up to frame 14
    changed = audio.copy()
    changed[15 * 2400:] = noise(3.1, 8)[15 * 2400:]
    doa2, act2, _ = loc.run(changed)
    np.testing.assert_allclose(doa2[:15], doa[:15], atol=1e-6)
    np.testing.assert_allclose(act2[:15], act[:15], atol=1e-6)
    assert not np.allclose(act2[15:], act[15:])


def test_loading_refuses_a_bidirectional_model_and_missing_models(tmp_path, tiny_doanet):
    model, _ = tiny_doanet("foa", seed=0)
    path = str(tmp_path / "bidirectional.keras")
    model.save(path)
    with pytest.raises(ConfigError, match="not a causal DOAnet"):
        load_streaming_model(path)
    with pytest.raises(ConfigError, match="no streaming model"):
        load_streaming_model(str(tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        load_streaming_model(str(tmp_path / "missing.tflite"))


def test_stream_cli_realtime_paces_by_the_clock_and_prints_tracks(tmp_path, noise, capsys):
    """--realtime on a 1 s file takes about 1 s, prints track lines, and writes the CSV of the streamed frames."""
    model = _tiny_causal(noise, seed=2)
    keras_path = str(tmp_path / "causal.keras")
    model.save(keras_path)
    wav = str(tmp_path / (format_name(1, 1, 1, 1) + ".wav"))
    audio = noise(1.0, 9)
    write_audio(wav, audio)
    out = tmp_path / "out"
    t0 = time.monotonic()
    assert _script("stream").main([wav, "--model", keras_path, "--out", str(out), "--realtime",
                                   "--threshold", "0.3"]) == 0
    assert time.monotonic() - t0 >= 0.9
    printed = capsys.readouterr().out.splitlines()
    meta = read_metadata(str(out / (format_name(1, 1, 1, 1) + ".csv")))
    n_tracks = len(set(meta.track.tolist()))
    assert n_tracks >= 1, "the random model should be active somewhere at threshold 0.3"
    assert sum("starts: azimuth" in line for line in printed) == n_tracks
    assert printed[-1] == str(out / (format_name(1, 1, 1, 1) + ".csv"))


def test_stream_cli_one_line_errors(tmp_path, tiny_doanet, noise, capsys, monkeypatch):
    wav = str(tmp_path / "a.wav")
    write_audio(wav, noise(0.5, 1))
    model, _ = tiny_doanet("foa", seed=0)
    bidirectional = str(tmp_path / "bi.keras")
    model.save(bidirectional)
    stream = _script("stream")
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if not installed
    assert stream.main(["--device", "0", "--model", bidirectional, "--out", str(tmp_path / "o")]) == 2
    assert stream.main([wav, "--model", bidirectional, "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as e:
        stream.main(["--model", bidirectional])  # neither files nor a device: argparse's one line
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err
    assert "sounddevice" in err[0] and "pip install" in err[0]
    assert "bi.keras: not a causal DOAnet" in err[1]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------
# Streaming TFLite (slow: conversions)


@pytest.fixture(scope="module")
def stream_export(tmp_path_factory, noise):
    """scripts/export.py --stream on a tiny causal .keras model: fp32 and int8 streaming TFLite files."""
    root = tmp_path_factory.mktemp("stream")
    model = _tiny_causal(noise, seed=4)
    model.save(str(root / "causal.keras"))
    out = root / "doanet_foa_stream"
    assert _script("export").main(["--model", str(root / "causal.keras"), "--out", str(out), "--stream"]) == 0
    return root, model, out


@pytest.mark.slow
def test_streaming_tflite_matches_keras_builtin_ops_and_sidecar(stream_export, noise):
    from dtbt_tf.export import tflite_op_names

    root, model, out = stream_export
    assert sorted(os.listdir(out)) == ["doanet_foa_stream_fp32.json", "doanet_foa_stream_fp32.tflite",
                                       "doanet_foa_stream_int8.json", "doanet_foa_stream_int8.tflite"]
    audio = noise(4.0, 11)
    ref_doa, ref_act = _whole(model, audio)
    for variant, atol in (("fp32", TFLITE_FP32_ATOL), ("int8", TFLITE_INT8_ATOL)):
        path = str(out / f"doanet_foa_stream_{variant}.tflite")
        ops = tflite_op_names(path)
        assert ops and all(op.isupper() and "FLEX" not in op and op != "CUSTOM" for op in ops), ops
        assert "WHILE" not in ops  # the step's GRUs are unrolled
        info = json.loads((out / f"doanet_foa_stream_{variant}.json").read_text())
        assert info["streaming"] is True and info["quantization"] == variant and info["lookahead_samples"] == 0
        assert [s["name"] for s in info["states"]] == ["conv0", "conv1", "conv2", "gru0", "gru1"]
        assert info["doanet_config"]["causal"] is True
        doa, act, _ = StreamingLocalizer(load_streaming_model(path, num_threads=1)).run(audio)
        np.testing.assert_allclose(doa, ref_doa, atol=atol, err_msg=variant)
        np.testing.assert_allclose(act, ref_act, atol=atol, err_msg=variant)
    assert os.path.getsize(out / "doanet_foa_stream_int8.tflite") < os.path.getsize(
        out / "doanet_foa_stream_fp32.tflite")
    # the folder resolves to the int8 model
    assert load_streaming_model(str(out)).source.endswith("doanet_foa_stream_int8.tflite")
    # a second export into the same folder is refused, a bidirectional model too
    export = _script("export")
    assert export.main(["--model", str(root / "causal.keras"), "--out", str(out), "--stream"]) == 2


@pytest.mark.slow
def test_stream_cli_tflite_never_imports_tensorflow_and_writes_infer_csvs(stream_export, noise, tmp_path):
    root, model, out = stream_export
    wav = str(tmp_path / (format_name(1, 1, 3, 1) + ".wav"))
    audio = noise(3.3, 12)
    write_audio(wav, audio)
    res = tmp_path / "pred"
    tflite = str(out / "doanet_foa_stream_fp32.tflite")
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["stream.py", {wav!r}, "--model", {tflite!r}, "--out", {str(res)!r}, "--threshold", "0.3"]
        try:
            runpy.run_path({os.path.join(REPO, 'scripts', 'stream.py')!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "librosa", "numba"))
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert os.listdir(res) == [format_name(1, 1, 3, 1) + ".csv"]
    meta = read_metadata(str(res / (format_name(1, 1, 3, 1) + ".csv")))
    # the same rows as the causal Keras model on the whole file, thresholded, with the offline continuity ids
    # (streaming does not bridge gaps: only the detections themselves)
    ref_doa, ref_act = _whole(model, audio)
    ids = track_ids(ref_act > 0.3, ref_doa, ref_act, InferenceConfig(threshold=0.3))
    frame, slot = np.nonzero(ids >= 0)
    assert sorted(zip(meta.frame.tolist(), meta.track.tolist())) == sorted(zip(frame.tolist(),
                                                                               ids[frame, slot].tolist()))


@pytest.mark.slow
def test_train_causal_smoke_then_stream_export_and_stream(tmp_path, write_tiny_dcase, noise):
    """train.py --causal (1 epoch on tiny data) -> a causal run; export.py --stream from it; stream.py from the run
    folder (Keras step) and from the exported int8 file give the same frames' tracks."""
    from dtbt_tf.models.hnet import build_hnet

    root = write_tiny_dcase(tmp_path / "dcase", seconds=1.5)
    hnet = str(tmp_path / "hnet.keras")
    build_hnet(2, units=8).save(hnet)
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"), "--loss", "full", "--causal",
                           "--data", root, "--hnet", hnet, "--epochs", "1", "--batch-size", "2", "--seq-hop", "50",
                           "--conv-filters", "8", "--rnn-units", "8", "--fc-units", "8", "--out", str(run),
                           "--no-progress"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run_config.json").read_text())["doanet_config"]["causal"] is True
    assert _script("export").main(["--model", str(run), "--out", str(tmp_path / "exp"), "--stream",
                                   "--tflite", "fp32"]) == 0
    wav = str(tmp_path / "a.wav")
    write_audio(wav, noise(2.0, 13))
    a = StreamingLocalizer(load_streaming_model(str(run))).run(noise(2.0, 13))
    b = StreamingLocalizer(load_streaming_model(str(tmp_path / "exp"))).run(noise(2.0, 13))
    np.testing.assert_allclose(a[0], b[0], atol=TFLITE_FP32_ATOL)
    np.testing.assert_allclose(a[1], b[1], atol=TFLITE_FP32_ATOL)
    assert _script("stream").main([wav, "--model", str(run), "--out", str(tmp_path / "pred")]) == 0
    assert os.path.isfile(tmp_path / "pred" / "a.csv")


def test_track_events_wait_out_the_bridged_gaps():
    """A track missing for up to `hold` frames continues (no end/start lines); longer, it ends once."""
    from dtbt_tf.streaming import StreamFrame, TrackEvents

    seen = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    events, lines = TrackEvents(0.1, hold=2), []
    for t, on in enumerate(seen):
        track = np.array([0 if on else -1, -1])
        lines += events.events(StreamFrame(t, 0.1 * t, np.tile([[1.0, 0.0, 0.0]], (2, 1)), np.array([0.9, 0.1]),
                                           track >= 0, track))
    assert [line.split("s  ", 1)[1].split(":")[0] for line in lines] == ["track 0 starts", "track 0 ends (0.6 s)"]
    assert lines[1].strip().startswith("0.8 s")  # said at frame 8, the third frame missing after frame 5
    strict = TrackEvents(0.1, hold=0)
    n = sum(len(strict.events(StreamFrame(t, 0.1 * t, np.tile([[1.0, 0.0, 0.0]], (2, 1)), np.array([0.9, 0.1]),
                                          np.array([on, False]), np.array([0 if on else -1, -1]))))
            for t, on in enumerate(seen))
    assert n == 4  # starts, ends at frame 3, starts again at 5 (same id), ends at 6
