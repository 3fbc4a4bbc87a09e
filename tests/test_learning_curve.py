"""benchmarks/learning_curve.py: training-audio subsets of a feature folder, and the curve end to end."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "learning_curve.py")


def _module():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    res = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return res.returncode, res.stdout, res.stderr


def test_shard_order_is_spread_and_nested():
    lc = _module()
    assert lc.spread_order(6) == [0, 4, 2, 1, 5, 3] and lc.spread_order(1) == [0]
    order = lc.spread_order(48)
    assert sorted(order) == list(range(48)) and order[:4] == [0, 32, 16, 8]
    shards = [{"name": f"s{i}", "hours": 0.25, "files": [f"f{i}"]} for i in range(8)]
    pick = lambda h, o="spread": [s["name"] for s in lc.choose_shards(shards, h, o)]  # noqa: E731
    assert pick("0.1") == ["s0"]  # at least one shard
    assert pick("0.6") == ["s0", "s4"]  # nearest achievable: 0.5 h
    assert pick("0.6", "prefix") == ["s0", "s1"]
    assert set(pick("0.6")) <= set(pick("1.1")) and len(pick("1.1")) == 4
    assert pick("all") == pick("100") == [f"s{i}" for i in range(8)]


def test_readme_regeneration_keeps_the_hand_written_block(tmp_path):
    """benchmarks/run.py rewrites results/README.md from the JSON files but keeps the block that describes the
    benchmarks run on their own (this one among them)."""
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(ROOT, "benchmarks", "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    block = f"{run.KEPT_BEGIN}\n## learning_curve\n\ncommand\n{run.KEPT_END}"
    (tmp_path / "README.md").write_text(f"# old\n\n{block}\n\n## stale section\n")
    run.write_readme(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert block in text and "stale section" not in text and text.startswith("# Benchmark results")
    current = open(os.path.join(ROOT, "benchmarks", "results", "README.md")).read()
    assert run.kept_block(tmp_path / "README.md") and "learning_curve.py" in current.split(run.KEPT_END)[0]


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, needle in ([["--steps", "5", "--eval-every", "2"], "not a multiple of --eval-every"],
                         [["--hours", "0.5,x"], "not a number of hours"],
                         [["--hours", "1,1"], "given twice"],
                         [["--val-shards", "0"], "must be >= 1"]):
        rc, _, err = _run("--data", str(tmp_path), *args)
        assert rc == 2 and needle in err.strip().splitlines()[-1], (args, err)
    rc, _, err = _run("--data", str(tmp_path), "--out", str(tmp_path / "out"))
    assert rc == 2 and "manifest.json: not found" in err


@pytest.fixture(scope="module")
def features(tmp_path_factory, write_tiny_dcase):
    """A feature folder with one 3 s two-source recording per shard: 4 training shards, 1 val, 1 test."""
    from dtbt_tf.data.tfrecord import extract_dataset
    from dtbt_tf.models.hnet import build_hnet

    base = tmp_path_factory.mktemp("lc")
    root = write_tiny_dcase(base / "dcase", seconds=3.0, folds=(1, 2, 3, 4, 5, 6), n_sources=2)
    extract_dataset(root, "foa", str(base / "features"), shard_files=1, progress=False)
    hnet = str(base / "hnet2.keras")
    build_hnet(2, units=8).save(hnet)
    return base, str(base / "features"), hnet


@pytest.mark.slow  # two tiny trainings of 4 steps, two test evaluations each: ~40 s of CPU in three processes
def test_curve_per_budget_and_reuse(features):
    base, data, hnet = features
    out, result_path, png = str(base / "out"), str(base / "lc.json"), str(base / "lc.png")
    args = ["--data", data, "--hours", "0.0017,all", "--steps", "4", "--eval-every", "2", "--batch-size", "2",
            "--conv-filters", "8", "--rnn-units", "8", "--fc-units", "8", "--hnet", hnet, "--threshold", "0.2",
            "--threads", "1", "--no-progress", "--out", out, "--json", result_path, "--plot", png]
    rc, stdout, err = _run(*args)
    assert rc == 0, err[-3000:]
    result = json.load(open(result_path))
    assert result["name"] == "lc" and result["command"].startswith("python benchmarks/learning_curve.py")
    assert result["data"]["train_files"] == 4 and len(result["data"]["manifest_sha256"]) == 64
    small, full = result["budgets"]
    assert (small["hours_requested"], full["hours_requested"]) == ("0.0017", "all")
    assert small["train_files"] == 2 and full["train_files"] == 4 and small["hours"] < full["hours"]
    for b in result["budgets"]:
        assert b["steps"] == [2, 4]  # epochs of --eval-every steps, whatever the subset's size
        for p in b["curve"]:
            assert math.isfinite(p["LE"]) and math.isfinite(p["LE_poly2"]) and 0 <= p["LE"] <= 180
            assert math.isfinite(p["LF1"]) and math.isfinite(p["MOTA"]) and p["train_wall_s"] > 0
        assert b["wall_s"] >= b["eval_wall_s"] > 0 and b["cpu_s"] > 0
    assert [r["step"] for r in result["rows"]] == [2, 4, 2, 4]
    assert os.path.getsize(png) > 0
    # the subset folder really lists fewer training recordings, and the source's test split
    sub = json.load(open(os.path.join(small["subset_dir"], "manifest.json")))
    src = json.load(open(os.path.join(data, "manifest.json")))
    assert sub["splits"]["train"]["n_files"] == 2 < src["splits"]["train"]["n_files"]
    assert sub["splits"]["test"] == src["splits"]["test"] and sub["normalization"] == src["normalization"]
    assert all(os.path.islink(os.path.join(small["subset_dir"], s)) for s in sub["splits"]["train"]["shards"])
    # a finished budget is reused, not retrained; a changed setting is refused by name
    rc, stdout, err = _run(*args)
    assert rc == 0 and stdout.count("reusing") == 2, err[-3000:]
    assert json.load(open(result_path))["budgets"][0]["curve"] == small["curve"]
    rc, _, err = _run(*(a if a != "4" else "6" for a in args))
    assert rc == 2 and "steps (run: 4, given: 6)" in err


def test_a_curve_saved_before_new_config_fields_is_resumable_but_a_changed_setting_is_not(tmp_path):
    lc = _module()
    args = lc.parse_args(["--data", "x", "--steps", "400", "--eval-every", "200"])
    settings = {"steps": 400, "eval_every": 200, **lc._flat(lc.run_config(args, 2, "foa").to_dict())}
    # a curve of before DoanetConfig.arch and InferenceConfig.tracking: those keys absent, the run used the
    # CRNN and the raw slots (the learning curve's own rule)
    old = {k: v for k, v in settings.items() if not k.startswith(("doanet_config.arch", "doanet_config.conformer",
                                                                 "doanet_config.attention", "inference_config."))}
    old.update({"inference_config.threshold": 0.5, "inference_config.use_activity": True})
    (tmp_path / lc.CURVE_FILE).write_text(json.dumps({"settings": old, "points": [{"step": 200}]}))
    assert lc.Budget(str(tmp_path), settings, started=True).state["points"] == [{"step": 200}]
    changed = {**settings, "doanet_config.arch": "resnet_conformer"}
    with pytest.raises(ValueError, match="doanet_config.arch"):
        lc.Budget(str(tmp_path), changed, started=True)
