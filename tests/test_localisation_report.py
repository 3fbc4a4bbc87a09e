"""benchmarks/localisation_report.py: runs a system once, reuses its finished folder, scores given folders."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "localisation_report.py")


def _report(*args):
    res = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, write_tiny_dcase):
    return write_tiny_dcase(tmp_path_factory.mktemp("report") / "d", seconds=3.0, folds=(1,), n_sources=2)


def test_baseline_rows_reuse_and_given_folders(dataset, tmp_path):
    work, out = str(tmp_path / "work"), str(tmp_path / "r.json")
    args = ["--data", f"tiny={dataset}", "--baseline", "--baseline-modes", "oracle", "--work", work, "--json", out]
    rc, stdout, err = _report(*args)
    assert rc == 0, err
    row = json.load(open(out))["rows"][0]
    assert row["system"] == "baseline foa oracle" and row["files"] == 1 and row["LR"] == 1.0
    assert row["frames_poly2"] > 0 and 0 <= row["LE_poly2"] <= 180
    pred = row["predictions"]
    assert os.path.isfile(os.path.join(pred, "done.json"))
    # a finished folder is scored again, not re-run; the same folder given with --pred scores the same
    stamp = os.path.getmtime(os.path.join(pred, os.listdir(os.path.join(dataset, "metadata_dev"))[0]))
    rc, stdout, err = _report(*args, "--pred", f"tiny:copy={pred}")
    assert rc == 0, err
    assert "reused" in stdout
    rows = json.load(open(out))["rows"]
    assert os.path.getmtime(os.path.join(pred, os.listdir(os.path.join(dataset, "metadata_dev"))[0])) == stamp
    assert [r["system"] for r in rows] == ["baseline foa oracle", "copy"]
    assert rows[0]["LE"] == rows[1]["LE"] == row["LE"] and rows[1]["wall_s"] is None


def test_bad_arguments_are_one_line_errors(dataset, tmp_path):
    for args, needle in ([["--data", "nameless"], "expected NAME=PATH"],
                         [["--data", f"t={tmp_path}"], "no foa_dev/fold1_*.wav"],
                         [["--data", f"t={dataset}", "--pred", "u:x=/nonexistent"], "DATASET one of --data"],
                         [["--data", f"t={dataset}", "--pred", "t:x=/nonexistent"], "no such folder"],
                         [["--data", f"t={dataset}", "--tracking", "slots,hungarian"], "expected some of"]):
        rc, stdout, err = _report(*args, "--work", str(tmp_path / "w"))
        assert rc != 0 and needle in err.strip().splitlines()[-1], (args, err)


def test_each_model_is_scored_with_each_tracking_rule(dataset, tmp_path, tiny_doanet):
    from dtbt_tf.export import export_saved_model

    model, _ = tiny_doanet("foa", seed=4)
    export_saved_model(model, str(tmp_path / "m"), version=1)
    out = str(tmp_path / "r.json")
    rc, stdout, err = _report("--data", f"tiny={dataset}", "--model", f"m={tmp_path / 'm'}", "--tracking",
                              "slots,continuity", "--work", str(tmp_path / "w"), "--json", out)
    assert rc == 0, err
    rows = json.load(open(out))["rows"]
    assert [r["system"] for r in rows] == ["m [slots]", "m [continuity]"]
    assert [os.path.basename(r["predictions"]) for r in rows] == ["m_slots", "m_continuity"]
    assert all(r["files"] == 1 for r in rows)
    for row in rows:  # each rule's CSVs are what infer.py --tracking writes, scored
        csvs = sorted(os.listdir(row["predictions"]))
        assert [c for c in csvs if c.endswith(".csv")] and "done.json" in csvs
