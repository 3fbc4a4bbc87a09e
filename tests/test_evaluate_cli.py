"""End-to-end tests of scripts/evaluate.py on tiny DCASE-format CSV folders."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "evaluate.py")

REF = "0,1,0,0,0\n1,1,0,0,0\n2,1,0,0,0\n1,4,1,90,10\n2,4,1,90,10\n"


def _write(folder, files):
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return str(folder)


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_end_to_end_table_and_json(tmp_path):
    ref = _write(tmp_path / "ref", {"fold1_room1_mix001_ov1.csv": REF, "fold1_room1_mix002_ov1.csv": REF})
    # file 1: perfect (polar); file 2: Cartesian, first source 10 deg off in azimuth, second source missed once
    pred2 = "0,0,0,0.9848,0.1736,0\n1,0,0,0.9848,0.1736,0\n2,0,0,0.9848,0.1736,0\n2,0,1,0,0.9848,0.1736\n"
    pred = _write(tmp_path / "pred", {"fold1_room1_mix001_ov1.csv": REF, "fold1_room1_mix002_ov1.csv": pred2,
                                      "fold2_room1_mix001_ov1.csv": REF})  # extra prediction: ignored
    out_json = tmp_path / "metrics.json"
    res = _run("--pred", pred, "--ref", ref, "--json", str(out_json))
    assert res.returncode == 0, res.stderr
    head, values, blank, poly_head, poly1, poly2 = res.stdout.strip().splitlines()
    assert head.split()[0:2] == ["LE", "(deg)"] and "IDS_onsets" in head
    assert blank == "" and poly_head.split()[:2] == ["sources", "frames"]
    metrics = json.loads(out_json.read_text())
    assert list(metrics) == ["LE", "LR", "LP", "LF1", "MOTA", "MOTP", "IDS", "IDS_onsets", "ER20", "F20",
                             "LE_CD", "LR_CD"] + [f"{m}_poly{k}" for k in (1, 2) for m in ("LE", "LR", "LP", "LF1",
                                                                                             "frames")]
    # 1-source frames: 2 per file (frame 0 of each), file 2's off by 10 deg; 2-source frames: 2 per file
    assert metrics["frames_poly1"] == 2 and metrics["frames_poly2"] == 4
    assert metrics["LE_poly1"] == pytest.approx(5, abs=0.01) and metrics["LR_poly1"] == 1
    assert metrics["LR_poly2"] == pytest.approx(7 / 8) and metrics["LE_poly2"] == pytest.approx(20 / 7, abs=0.01)
    assert poly1.split()[:3] == ["1", "2", "5.0"]
    # 10 references, 9 associated (LE: 3 pairs at 10 deg in file 2, the rest exact); no false alarms
    assert metrics["LR"] == pytest.approx(9 / 10) and metrics["LP"] == 1.0
    assert metrics["LE"] == pytest.approx(3 * 10 / 9, abs=0.01)
    assert metrics["MOTA"] == pytest.approx(1 - 1 / 10) and metrics["IDS"] == 0
    assert isinstance(metrics["IDS"], int)
    assert values.split()[0] == f"{metrics['LE']:.1f}"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_missing_prediction_file_is_named(tmp_path):
    ref = _write(tmp_path / "ref", {"fold1_room1_mix001_ov1.csv": REF, "fold1_room1_mix002_ov1.csv": REF})
    pred = _write(tmp_path / "pred", {"fold1_room1_mix001_ov1.csv": REF})
    res = _run("--pred", pred, "--ref", ref, "--json", str(tmp_path / "m.json"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fold1_room1_mix002_ov1.csv" in lines[0]
    assert not (tmp_path / "m.json").exists()


def test_malformed_row_is_named(tmp_path):
    ref = _write(tmp_path / "ref", {"fold1_room1_mix001_ov1.csv": REF})
    pred = _write(tmp_path / "pred", {"fold1_room1_mix001_ov1.csv": "0,0,0,10,5\n1,0,0,ten,5\n"})
    res = _run("--pred", pred, "--ref", ref)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "fold1_room1_mix001_ov1.csv" in lines[0] and "row 2" in lines[0]


def test_empty_or_missing_folders(tmp_path):
    empty = _write(tmp_path / "empty", {})
    res = _run("--pred", empty, "--ref", empty)
    assert res.returncode == 2 and "no .csv reference files" in res.stderr
    res = _run("--pred", empty, "--ref", str(tmp_path / "nope"))
    assert res.returncode == 2 and "nope: reference folder not found" in res.stderr


def test_help():
    res = _run("--help")
    assert res.returncode == 0 and "--pred" in res.stdout and "ER20" in res.stdout


def _one_line_error(res, *parts):
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_split_selects_reference_files_by_fold(tmp_path):
    """The README's pipeline: references of every fold, predictions of the test fold only."""
    names = ["fold1_room1_mix001_ov1.csv", "fold1_room1_mix002_ov1.csv", "fold2_room1_mix001_ov1.csv",
             "fold3_room2_mix001_ov1.csv"]
    ref = _write(tmp_path / "ref", dict.fromkeys(names, REF))
    pred = _write(tmp_path / "pred", dict.fromkeys(names[:2], REF))
    _one_line_error(_run("--pred", pred, "--ref", ref), "fold2_room1_mix001_ov1.csv", "--split")
    res = _run("--pred", pred, "--ref", ref, "--split", "test", "--json", str(tmp_path / "m.json"))
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["LE"] == pytest.approx(0, abs=1e-5) and metrics["frames_poly1"] == 2  # 2 files, 1 frame each
    _one_line_error(_run("--pred", pred, "--ref", ref, "--split", "val"), "fold2_room1_mix001_ov1.csv")
    _write(tmp_path / "ref", {"notdcase.csv": REF})
    _one_line_error(_run("--pred", pred, "--ref", ref, "--split", "test"), "notdcase.csv", "does not match")
    ref1 = _write(tmp_path / "ref1", dict.fromkeys(names[:2], REF))
    _one_line_error(_run("--pred", pred, "--ref", ref1, "--split", "train"), "split 'train'")
    res = _run("--pred", pred, "--ref", ref, "--split", "bogus")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_unwritable_json_is_one_line(tmp_path):
    ref = _write(tmp_path / "ref", {"fold1_room1_mix001_ov1.csv": REF})
    _one_line_error(_run("--pred", ref, "--ref", ref, "--json", str(tmp_path / "no" / "m.json")), "m.json")
    _one_line_error(_run("--pred", ref, "--ref", ref, "--json", ref), ref, "folder")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        _one_line_error(_run("--pred", ref, "--ref", ref, "--json", str(locked / "m.json")), "m.json",
                        "permission denied")


def test_permission_error_while_writing_json_is_one_line(tmp_path, monkeypatch, capsys):
    """A PermissionError when the JSON is written (e.g. a read-only file system) names the --json file."""
    import importlib.util

    import dtbt_tf.metrics

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", path + ".tmp1")

    monkeypatch.setattr(dtbt_tf.metrics, "atomic_write_text", refuse)
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ref = _write(tmp_path / "ref", {"fold1_room1_mix001_ov1.csv": REF})
    target = str(tmp_path / "m.json")
    assert script.main(["--pred", ref, "--ref", ref, "--json", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {target}: cannot write (Permission denied)"]
