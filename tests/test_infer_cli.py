"""scripts/infer.py and scripts/export.py end to end on a tiny random DOAnet."""
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from dtbt_tf.data.dcase import Metadata, format_name, read_metadata, write_audio, write_metadata

pytestmark = pytest.mark.slow  # every test needs `exported`: scripts/export.py with a TFLite conversion (~35 s)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(REPO, "scripts", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_doanet, noise):
    """scripts/export.py on a .keras DOAnet: SavedModel version 1 + an fp32 TFLite with a short window."""
    root = tmp_path_factory.mktemp("cli")
    model, _ = tiny_doanet("foa", seed=2)
    model.save(str(root / "doanet.keras"))
    out = root / "doanet_foa"
    assert _script("export").main(["--model", str(root / "doanet.keras"), "--out", str(out), "--tflite", "fp32",
                                   "--window", "50"]) == 0
    wavs = []
    for mix, seconds in ((1, 7.3), (2, 2.0)):
        path = root / "audio" / (format_name(1, 1, mix, 1) + ".wav")
        path.parent.mkdir(exist_ok=True)
        write_audio(str(path), noise(seconds, 20 + mix))
        wavs.append(str(path))
    ref = root / "ref"
    ref.mkdir()
    frames = np.arange(10, 60)
    write_metadata(str(ref / (format_name(1, 1, 1, 1) + ".csv")),
                   Metadata(frames, np.zeros_like(frames), np.zeros_like(frames), np.tile([[0.0, 1.0, 0.0]], (50, 1))))
    return root, str(out), wavs, str(ref)


def test_export_cli_layout_and_refusals(exported, capsys):
    root, out, _, _ = exported
    assert sorted(os.listdir(out)) == ["1", "tflite"]
    assert sorted(os.listdir(os.path.join(out, "tflite"))) == ["doanet_foa_fp32.json", "doanet_foa_fp32.tflite"]
    export = _script("export")
    assert export.main(["--model", str(root / "doanet.keras"), "--out", out]) == 2  # version 1 exists
    assert export.main(["--model", str(root / "doanet.keras"), "--out", out, "--version", "2",
                        "--tflite", "int4"]) == 2
    assert export.main(["--model", str(root / "missing"), "--out", out, "--version", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "already exists" in err[0] and "int4" in err[1] and "missing" in err[2]
    assert sorted(os.listdir(out)) == ["1", "tflite"]


def test_infer_saved_model_csv_and_plot(exported, tmp_path, capsys):
    root, out, wavs, ref = exported
    res = tmp_path / "pred"
    assert _script("infer").main(wavs + ["--model", out, "--out", str(res), "--plot", "--ref", ref,
                                         "--threshold", "0.3"]) == 0
    stems = [os.path.splitext(os.path.basename(w))[0] for w in wavs]
    assert sorted(os.listdir(res)) == sorted(f"{s}.{e}" for s in stems for e in ("csv", "png"))
    for stem, n_label in zip(stems, (73, 20)):
        lines = open(res / f"{stem}.csv").read().splitlines()
        assert lines  # the tiny model's activities are 0.40-0.47 > 0.3: the loop below checks rows
        for line in lines:
            frame, cls, track, az, el = (int(v) for v in line.split(","))  # integers only
            assert 0 <= frame < n_label and cls == 0 and track in (0, 1) and -180 <= az < 180 and -90 <= el <= 90
        meta = read_metadata(str(res / f"{stem}.csv"))
        assert meta.frame.size == len(lines)
    assert len(capsys.readouterr().out.split()) == 4  # the written paths


def test_infer_tflite_never_imports_tensorflow(exported, tmp_path):
    root, out, wavs, _ = exported
    model = os.path.join(out, "tflite", "doanet_foa_fp32.tflite")
    res = tmp_path / "pred"
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["infer.py", {wavs[0]!r}, "--model", {model!r}, "--out", {str(res)!r}, "--threshold", "0.3"]
        try:
            runpy.run_path({os.path.join(REPO, 'scripts', 'infer.py')!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "librosa", "numba"))
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert os.listdir(res) == [os.path.basename(wavs[0])[:-4] + ".csv"]


@pytest.mark.parametrize("problem", ["channels", "empty", "truncated"])
def test_infer_bad_audio_one_line_error_nothing_written(exported, tmp_path, capsys, problem, noise):
    root, out, wavs, _ = exported
    bad = tmp_path / "bad.wav"
    if problem == "channels":
        sf.write(str(bad), noise(1.0, 3)[:, :2], 24000)
    elif problem == "empty":
        sf.write(str(bad), np.zeros((0, 4), np.float32), 24000)
    else:  # the header promises more samples than the file holds
        sf.write(str(bad), noise(1.0, 3), 24000, subtype="FLOAT")
        with open(bad, "r+b") as f:
            f.truncate(os.path.getsize(bad) // 2)
    res = tmp_path / "pred"
    model = os.path.join(out, "tflite", "doanet_foa_fp32.tflite")
    assert _script("infer").main([wavs[0], str(bad), "--model", model, "--out", str(res)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.wav" in err[0]
    assert {"channels": "2 channels", "empty": "no audio samples", "truncated": "truncated"}[problem] in err[0]
    assert not res.exists() or os.listdir(res) == []


def test_infer_resamples_a_48khz_copy_and_says_so(exported, tmp_path, capsys):
    """A 48 kHz copy of a scene gives (nearly) the same tracks as the 24 kHz original, with one line saying so."""
    import soxr

    _, out, wavs, _ = exported
    audio, rate = sf.read(wavs[0], dtype="float32")
    copy = tmp_path / "copy48k.wav"
    sf.write(str(copy), soxr.resample(audio, rate, 48000), 48000, subtype="FLOAT")
    model = os.path.join(out, "tflite", "doanet_foa_fp32.tflite")
    assert _script("infer").main([wavs[0], str(copy), "--model", model, "--out", str(tmp_path / "p")]) == 0
    assert "copy48k.wav: resampled 48000 -> 24000 Hz (soxr)" in capsys.readouterr().err
    a = read_metadata(str(tmp_path / "p" / (os.path.basename(wavs[0])[:-4] + ".csv")))
    b = read_metadata(str(tmp_path / "p" / "copy48k.csv"))
    assert abs(len(a.frame) - len(b.frame)) <= 0.05 * len(a.frame)  # the same detections up to a few at threshold


def test_infer_refuses_two_inputs_with_one_output_name(exported, tmp_path, capsys):
    _, out, wavs, _ = exported
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        shutil.copy(wavs[0], tmp_path / d / "x.wav")
    model = os.path.join(out, "tflite", "doanet_foa_fp32.tflite")
    args = [str(tmp_path / "a" / "x.wav"), str(tmp_path / "b" / "x.wav"), "--model", model, "--out", str(tmp_path / "o")]
    assert _script("infer").main(args) == 2
    assert "same output name 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_infer_bad_model_path(exported, tmp_path, capsys):
    _, _, wavs, _ = exported
    assert _script("infer").main([wavs[0], "--model", str(tmp_path / "x.tflite"), "--out", str(tmp_path)]) == 2
    assert "x.tflite" in capsys.readouterr().err


class _PredictHandler(__import__("http.server").server.BaseHTTPRequestHandler):
    """Stand-in for TF Serving's REST predict API (columnar "inputs" -> "outputs") over the exported SavedModel."""

    signatures = None

    def do_POST(self):
        import json

        import tensorflow as tf

        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/models/doanet_foa:predict":
            self.send_error(404, "no such model")
            return
        fn = self.signatures[req.get("signature_name", "serving_default")]
        out = fn(**{k: tf.constant(v, tf.float32) for k, v in req["inputs"].items()})
        body = json.dumps({"outputs": {k: v.numpy().tolist() for k, v in out.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_serving_client_rest_roundtrip_and_dry_run(exported, tmp_path, capsys):
    import json
    import threading
    from http.server import HTTPServer

    import tensorflow as tf

    root, out, wavs, _ = exported
    loaded = tf.saved_model.load(os.path.join(out, "1"))
    _PredictHandler.signatures = loaded.signatures
    server = HTTPServer(("127.0.0.1", 0), _PredictHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = _script("serving_client")
    try:
        csv = tmp_path / "served.csv"
        assert client.main([wavs[1], "--port", str(server.server_port), "--host", "127.0.0.1", "--out", str(csv),
                            "--threshold", "0.3"]) == 0
        assert client.main([wavs[1], "--port", str(server.server_port), "--host", "127.0.0.1",
                            "--model-name", "other"]) == 2
    finally:
        server.shutdown()
    audio = sf.read(wavs[1], dtype="float32")[0]
    ref = loaded.signatures["from_audio"](audio=tf.constant(audio[None]))
    act = ref["activity"].numpy()[0]
    got = read_metadata(str(csv))
    frame, slot = np.nonzero(act > 0.3)
    assert frame.size > 0  # not two empty lists
    assert got.frame.tolist() == frame.tolist() and got.track.tolist() == slot.tolist()  # same rows as a direct call
    captured = capsys.readouterr()
    assert "HTTP 404" in captured.err
    assert client.main([wavs[1], "--dry-run", "--model-name", "m1"]) == 0
    first, body = capsys.readouterr().out.split("\n", 1)
    assert first == "POST http://localhost:8501/v1/models/m1:predict"
    req = json.loads(body)
    assert req["signature_name"] == "from_audio" and np.shape(req["inputs"]["audio"]) == (1, 48000, 4)
