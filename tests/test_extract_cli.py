"""scripts/extract_features.py: a real run, and bad input -> one `error:` line, exit code 2, nothing written."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dtbt_tf.data import dcase

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "extract_features.py")
SMALL = [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]


def _main():
    spec = importlib.util.spec_from_file_location("extract_features_cli", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_run_writes_manifest_and_shards(tmp_path, capsys, write_tiny_dataset):
    root = write_tiny_dataset(tmp_path / "data", fmt="mic", files=SMALL)
    out = tmp_path / "feat"
    rc = _main()(["--data", root, "--format", "mic", "--out", str(out), "--n-max", "3", "--shard-files", "1",
                  "--workers", "1", "--no-progress"])
    assert rc == 0 and capsys.readouterr().out.strip() == f"wrote {out / 'manifest.json'}"
    man = json.loads((out / "manifest.json").read_text())
    assert man["n_max"] == 3 and man["feature_config"]["fmt"] == "mic"
    assert man["splits"]["train"]["shards"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert np.asarray(man["normalization"]["mean"]).shape == (64, 10)


@pytest.mark.slow  # a fresh interpreter importing TensorFlow (~8 s); the in-process error tests below stay quick
def test_subprocess_error_exit_code(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    bad = subprocess.run([sys.executable, SCRIPT, "--data", str(tmp_path / "missing"), "--format", "mic",
                          "--out", str(tmp_path / "o2")], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2
    # TF 2.21 logs a few oneDNN/absl lines on import whatever TF_CPP_MIN_LOG_LEVEL says; ours is the last line
    assert bad.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: dataset root not found"
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "o2").exists()


def _wrong_channels(root):
    path = os.path.join(root, "foa_dev", dcase.format_name(3, 1, 3, 2) + ".wav")
    dcase.write_audio(path, np.zeros((24000, 2)))
    return path, "2 channels, expected 4"


def _wrong_rate(root):
    path = os.path.join(root, "foa_dev", dcase.format_name(2, 1, 2, 2) + ".wav")
    dcase.write_audio(path, np.zeros((48000, 4)), sample_rate=48000)
    return path, "sample rate 48000 Hz"


def _malformed_csv(root):
    path = os.path.join(root, "metadata_dev", dcase.format_name(4, 1, 4, 2) + ".csv")
    with open(path, "a") as f:
        f.write("3,1,x,10,10\n")
    return path, "row"


def _missing_split(root):
    os.remove(os.path.join(root, "foa_dev", dcase.format_name(1, 1, 1, 2) + ".wav"))
    return root, "split 'test' (folds [1]) is empty"


@pytest.mark.parametrize("breaker", [_wrong_channels, _wrong_rate, _malformed_csv, _missing_split])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, breaker, write_tiny_dataset):
    root = write_tiny_dataset(tmp_path / "data", files=SMALL)
    path, msg = breaker(root)
    out = tmp_path / "feat"
    rc = _main()(["--data", root, "--format", "foa", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and msg in err
    if path:
        assert err.startswith(f"error: {path}: ")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_unknown_format_is_a_usage_error(tmp_path, capsys, write_tiny_dataset):
    root = write_tiny_dataset(tmp_path / "data", files=SMALL)
    with pytest.raises(SystemExit) as e:
        _main()(["--data", root, "--format", "ambi", "--out", str(tmp_path / "feat")])
    assert e.value.code == 2
    assert "invalid choice: 'ambi'" in capsys.readouterr().err.splitlines()[-1]
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as e:
        _main()(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(opt in text for opt in ("--data", "--format", "--out", "--n-max", "--workers", "--shard-files"))
