"""benchmarks/recorded_sources.py: the 3 x 2 matrix end to end on the tiny preset with a fake clip library, the
shared layout of its three renders, and its one-line error for a missing library."""
import glob
import importlib.util
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("recorded_sources",
                                                  os.path.join(REPO, "benchmarks", "recorded_sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_library(root):
    """A plain clip folder (subfolders = classes 0, 1, 2; every clip usable in every fold): decaying tones and
    noise bursts of 0.4-1.3 s at 24 kHz and 16 kHz, shorter than many tiny events, so clips get joined."""
    rng = np.random.default_rng(0)
    for cls, kind in enumerate(("tone", "noise", "clicks")):
        os.makedirs(os.path.join(root, f"{cls}_{kind}"))
        for k, (seconds, sr) in enumerate(((0.4, 24000), (0.9, 16000), (1.3, 24000))):
            t = np.arange(int(seconds * sr)) / sr
            if kind == "tone":
                x = np.sin(2 * np.pi * rng.uniform(200, 900) * t)
            elif kind == "noise":
                x = rng.standard_normal(t.size)
            else:
                x = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 6 * t) > 0.7)
            sf.write(os.path.join(root, f"{cls}_{kind}", f"clip{k}.wav"), 0.3 * x * np.exp(-t), sr)
    return str(root)


def _layout(path):
    """(frame, azimuth, elevation) rows of a metadata CSV, sorted: the class and track columns left out."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)[:, [0, 3, 4]]
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.slow
def test_matrix_on_tiny_renders_with_a_fake_library(tmp_path, capsys):
    bench = _bench()
    lib = _fake_library(tmp_path / "clips")
    out_json, out_md = str(tmp_path / "rs.json"), str(tmp_path / "rs.md")
    argv = ["--preset", "tiny", "--format", "foa", "--sources-dir", lib, "--data-root", str(tmp_path / "data"),
            "--work", str(tmp_path / "work"), "--epochs", "1", "--batch-size", "4", "--conv-filters", "4",
            "--rnn-units", "4", "--fc-units", "4", "--workers", "1", "--no-progress", "--json", out_json,
            "--md", out_md]
    assert bench.main(argv) == 0
    result = json.load(open(out_json))
    assert set(result["matrix"]) == {"procedural", "recorded", "mixed"}
    for train, row in result["matrix"].items():
        assert set(row) == {"procedural", "recorded"}, train
        for test, m in row.items():
            assert m["files"] == 6
            for key in ("LE", "LE_poly1", "LE_poly2", "LF1"):
                assert m[key] is not None and math.isfinite(m[key]), (train, test, key, m[key])
    assert len(result["rows"]) == 6 and result["command"].startswith("python benchmarks/recorded_sources.py")
    md = open(out_md).read()
    assert all(f"| {name} |" in md for name in ("procedural", "recorded", "mixed"))

    # the three renders share their layout (checked here independently of the script): same files, same label
    # frames and directions, same rooms; the signals differ
    roots = result["datasets"]
    assert result["layout"]["identical"] and result["layout"]["files"] == 18
    names = sorted(os.listdir(os.path.join(roots["procedural"], "metadata_dev")))
    assert len(names) == 18
    for key in ("recorded", "mixed"):
        assert sorted(os.listdir(os.path.join(roots[key], "metadata_dev"))) == names
        for n in names:
            np.testing.assert_array_equal(_layout(os.path.join(roots["procedural"], "metadata_dev", n)),
                                          _layout(os.path.join(roots[key], "metadata_dev", n)), err_msg=n)
        configs = [json.load(open(os.path.join(roots[k], "synth_config.json"))) for k in ("procedural", key)]
        assert configs[0]["rooms"] == configs[1]["rooms"]
        wav = os.path.join("foa_dev", names[0].replace(".csv", ".wav"))
        assert open(os.path.join(roots["procedural"], wav), "rb").read() != open(os.path.join(roots[key], wav),
                                                                                 "rb").read()
    shares = result["signals"]
    assert shares["procedural"]["test"]["recorded"] == 0
    assert shares["recorded"]["test"]["recorded"] == shares["recorded"]["test"]["events"] > 0
    assert 0 < shares["mixed"]["train"]["recorded"] < shares["mixed"]["train"]["events"]
    assert shares["recorded"]["train"]["joined_clips"] > 0

    # a second call reuses the renders, the runs and the predictions
    capsys.readouterr()
    stamps = {p: os.path.getmtime(p) for p in glob.glob(str(tmp_path / "work" / "*" / "test_*" / "*.csv"))}
    assert len(stamps) == 36
    assert bench.main(argv) == 0
    assert capsys.readouterr().out.count("reusing") == 3
    assert all(os.path.getmtime(p) == t for p, t in stamps.items())
    assert json.load(open(out_json))["matrix"] == result["matrix"]


def test_missing_clip_library_is_one_line_with_the_build_command(tmp_path, capsys):
    bench = _bench()
    missing = str(tmp_path / "no_clips")
    assert bench.main(["--sources-dir", missing, "--work", str(tmp_path / "w"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ")
    assert f"python scripts/build_clip_library.py --out {missing}" in err
    assert not os.path.exists(tmp_path / "w")
