"""scripts/train.py end to end on a tiny DCASE-layout folder, and its one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from dtbt_tf.metrics import METRIC_KEYS
from dtbt_tf.models.hnet import build_hnet

pytestmark = pytest.mark.slow  # every test runs scripts/train.py (a whole job) in subprocesses: 30-70 s each

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--conv-filters", "8", "--rnn-units", "8", "--fc-units", "8"]


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, write_tiny_dcase):
    base = tmp_path_factory.mktemp("cli")
    root = write_tiny_dcase(base / "dcase", seconds=1.5)
    hnet = str(base / "hnet.keras")
    build_hnet(2, units=8).save(hnet)
    return base, root, hnet


def test_cli_end_to_end(setup):
    base, root, hnet = setup
    out = base / "run"
    proc = _run(["--loss", "full", "--data", root, "--hnet", hnet, "--hnet-temperature", "3", "--epochs", "1",
                 "--batch-size", "2", "--seq-hop", "50", "--out", str(out), *SMALL], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run_config.json").read_text())["loss_config"]["hnet_temperature"] == 3.0
    assert "LE (deg)" in proc.stdout and "MOTA (%)" in proc.stdout  # the metric table
    for name in ("run_config.json", "best.keras", "ckpt", "tb", "test_metrics.json", "predictions", "export"):
        assert (out / name).exists(), name
    assert set(METRIC_KEYS) | {"LE_poly1", "frames_poly1"} <= set(json.loads((out / "test_metrics.json").read_text()))
    assert os.path.isdir(root + "_features_foa_n2")  # features cached next to the DCASE root


def test_cli_nmax3_end_to_end(setup, write_tiny_dcase):
    """--n-max 3 on three simultaneous sources: labels and features with three slots, DOAnet with three
    regressors through a Nmax = 3 Hnet, test-split evaluation, export; then the exported model's outputs,
    scripts/evaluate.py on its predictions and scripts/infer.py on a recording."""
    import numpy as np
    import tensorflow as tf

    from dtbt_tf.data.dcase import read_metadata

    base, _, _ = setup
    root = write_tiny_dcase(base / "dcase3", seconds=1.5, n_sources=3)
    hnet3 = str(base / "hnet3_e2e.keras")
    build_hnet(3, units=8).save(hnet3)
    out = base / "run_n3"
    proc = _run(["--n-max", "3", "--loss", "full", "--data", root, "--hnet", hnet3, "--epochs", "1",
                 "--batch-size", "2", "--seq-hop", "50", "--out", str(out), *SMALL], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LE (deg)" in proc.stdout
    manifest = json.loads(open(os.path.join(root + "_features_foa_n3", "manifest.json")).read())
    assert manifest["n_max"] == 3
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["doanet_config"]["n_max"] == 3 and cfg["hnet"] == os.path.abspath(hnet3)
    sig = tf.saved_model.load(str(out / "export" / "1")).signatures["serving_default"]
    res = sig(features=tf.zeros((1, 50, 64, 7)))
    assert res["doa"].shape == (1, 10, 3, 3) and res["activity"].shape == (1, 10, 3)
    pred = read_metadata(str(out / "predictions" / "fold1_room1_mix001_ov3.csv"))
    assert set(pred.track) <= {0, 1, 2}
    metrics_json, test_ref = base / "n3_metrics.json", base / "n3_test_ref"
    test_ref.mkdir()
    shutil.copy(os.path.join(root, "metadata_dev", "fold1_room1_mix001_ov3.csv"), test_ref)  # the test split
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), "--pred",
                           str(out / "predictions"), "--ref", str(test_ref), "--json",
                           str(metrics_json)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(METRIC_KEYS) | {"LE_poly1", "LE_poly3"} <= set(json.loads(metrics_json.read_text()))
    wav = os.path.join(root, "foa_dev", "fold1_room1_mix001_ov3.wav")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "infer.py"), wav, "--model",
                           str(out / "export"), "--out", str(base / "infer_n3")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    inferred = read_metadata(str(base / "infer_n3" / "fold1_room1_mix001_ov3.csv"))
    assert set(inferred.track) <= {0, 1, 2} and np.all(np.isfinite(inferred.doa))


def test_cli_bad_input_is_one_line_exit_2(setup):
    base, root, hnet = setup
    hnet3 = str(base / "hnet3.keras")
    build_hnet(3, units=8).save(hnet3)
    proc = _run(["--data", root, "--hnet", hnet3, "--out", str(base / "bad"), *SMALL], cwd=base)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "n_max=3" in lines[-1], proc.stderr[-2000:]
    assert not any(line.startswith("Traceback") for line in lines)
    proc = _run(["--data", str(base / "missing"), "--hnet", hnet, "--out", str(base / "bad2")], cwd=base)
    assert proc.returncode == 2 and "missing: data folder not found" in proc.stderr
    proc = _run(["--data", root, "--hnet", hnet, "--hnet-temperature", "0", "--out", str(base / "bad3")], cwd=base)
    assert proc.returncode == 2 and "error: hnet_temperature must be > 0" in proc.stderr


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_cli_multiworker_two_workers(setup):
    """--strategy multiworker: two local worker processes configured by TF_CONFIG train one model together;
    only the chief (worker 0) writes the run folder."""
    base, root, hnet = setup
    out = base / "mw_run"
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    args = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--strategy", "multiworker", "--data", root,
            "--hnet", hnet, "--epochs", "1", "--batch-size", "4", "--seq-hop", "50", "--out", str(out), *SMALL]
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=tf_config)
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=base))
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert "LE (deg)" in results[0][0] and "LE (deg)" not in results[1][0]  # the chief evaluates and reports
    for name in ("run_config.json", "best.keras", "ckpt", "test_metrics.json", "export"):
        assert (out / name).exists(), name


def test_cli_mixed_precision(setup):
    base, root, hnet = setup
    out = base / "mp_run"
    proc = _run(["--mixed-precision", "--data", root, "--hnet", hnet, "--epochs", "1", "--batch-size", "2",
                 "--seq-hop", "50", "--out", str(out), *SMALL], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["train"]["mixed_precision"] is True
    assert set(METRIC_KEYS) | {"LE_poly1", "frames_poly1"} <= set(json.loads((out / "test_metrics.json").read_text()))
