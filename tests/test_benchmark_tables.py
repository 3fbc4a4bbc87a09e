"""The Table I and Nmax = 3 markdown tables carry the LE of 1- and 2-source frames (issue 16 point 1)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(loss, **extra):
    return {"loss": loss, "LE": 20.0, "MOTA": 0.5, "IDS": 10, "IDS_onsets": 12, "LR": 0.8, "LP": 0.9, "LF1": 0.85,
            "train_min": 3.0, **extra}


def test_table1_rows_show_polyphony_le_or_a_gap_for_old_evaluations():
    table1 = _load("table1")
    md = table1.markdown({"foa": {"base": [_row("full", LE_poly1=8.25, LE_poly2=31.5), _row("mse")]}})
    header, _, full, mse = md.strip().splitlines()
    assert "LE 1-src | LE 2-src" in header and header.count("|") == full.count("|") == mse.count("|")
    assert "| 20.0 | 8.2 | 31.5 | 50.0 |" in full  # LE, 1-src, 2-src, then MOTA
    assert "| 20.0 | ~ | ~ | (50.0) |" in mse  # an evaluation without polyphony keys; no-activity rows bracketed


def test_nmax3_rows_show_polyphony_le():
    nmax3 = _load("nmax3")
    scores = {"all": {"files": 4, "LE": 20.0, "LE_poly1": 10.0, "LE_poly2": 25.0, "LE_poly3": 40.0, "LR": 0.8,
                      "LP": 0.9, "LF1": 0.85, "MOTA": 0.5, "IDS": 10, "IDS_onsets": 12},
              "ov1": {"files": 2, "LE": 10.0, "LE_poly1": 10.0, "LE_poly2": None, "LE_poly3": None, "LR": 0.8,
                      "LP": 0.9, "LF1": 0.85, "MOTA": 0.5, "IDS": 10, "IDS_onsets": 12}}
    md = nmax3.markdown({"n3": {"scores": scores, "train_min": 5.0}})
    header, _, every, ov1 = md.strip().splitlines()
    assert "LE 1-src | LE 2-src | LE 3-src" in header and header.count("|") == every.count("|") == ov1.count("|")
    assert "| 20.0 | 10.0 | 25.0 | 40.0 | 80.0 |" in every and "| 10.0 | 10.0 | - | - | 80.0 |" in ov1


def test_table1_spread_is_mean_and_sample_std_over_seeds():
    table1 = _load("table1")
    rows = {0: {"full": _row("full", LE=20.0, LE_poly2=30.0), "pit": _row("pit", LE=18.0)},
            1: {"full": _row("full", LE=22.0, LE_poly2=34.0), "pit": _row("pit", LE=19.0)},
            2: {"full": _row("full", LE=24.0, LE_poly2=None)}}
    spread = table1.spread(rows)
    assert list(spread) == ["full", "pit"]
    full, pit = spread["full"], spread["pit"]
    assert full["seeds"] == [0, 1, 2] and pit["seeds"] == [0, 1]
    assert full["LE_mean"] == 22.0 and abs(full["LE_std"] - 2.0) < 1e-12  # sample std of 20, 22, 24
    assert full["LE_poly2_runs"] == [30.0, 34.0] and full["LE_poly2_mean"] == 32.0  # a missing value is skipped
    assert pit["LE_mean"] == 18.5 and abs(pit["LE_std"] - 0.5 ** 0.5) < 1e-12
    md = table1.spread_markdown({("foa", "quick", "base"): spread})
    header, _, full_line, pit_line = md.strip().splitlines()
    assert header.count("|") == full_line.count("|") == pit_line.count("|")
    assert "| FOA | quick | base | dMOTP+dMOTA+Act | 3 | 22.0 ± 2.0 |" in full_line
    assert "| 32.0 ± 2.8 (n=2) |" in full_line and "| 50.0 ± 0.0 |" in full_line  # MOTA in percent


def test_table1_names_runs_and_results_by_preset_and_seed_and_refuses_mixed_settings(tmp_path, monkeypatch):
    table1 = _load("table1")
    assert table1.group_suffix("quick") == "" and table1.group_suffix("quick", 0) == ""
    assert table1.group_suffix("standard", 2) == "_standard_seed2"
    args = table1.parse_args(["--preset", "standard", "--seeds", "0", "1"])
    assert (args.epochs, args.batch_size) == (12, 32)  # the preset's budget unless given
    monkeypatch.setattr(table1, "RESULTS", str(tmp_path))
    table1._save_row(_row("full"), "data/x", args, 1)
    assert (tmp_path / "table1_foa_standard_seed1.json").is_file()
    assert list(table1._saved_rows(args, 1)) == ["full"] and table1._saved_rows(args, 0) == {}
    other = table1.parse_args(["--preset", "standard", "--epochs", "5", "--seeds", "0", "1"])
    try:
        table1._saved_rows(other, 1)
    except ValueError as e:
        assert "epochs 12, not 5" in str(e)
    else:
        raise AssertionError("a results file of another budget was mixed in")


def test_table1_refuses_a_finished_run_of_a_larger_budget(tmp_path):
    from dtbt_tf.artifacts import save_run_config

    table1 = _load("table1")
    args = table1.parse_args(["--epochs", "5"])
    run_dir = tmp_path / "full"
    run_dir.mkdir()
    save_run_config(str(run_dir), table1.run_config("full", args, 0))
    (run_dir / "test_metrics.json").write_text("{}")
    (run_dir / "table1_time.json").write_text('{"seconds": 1.0}')
    smaller = table1.parse_args(["--epochs", "3"])
    try:
        table1._run_one("full", "data/x", smaller, str(run_dir), 0)
    except ValueError as e:
        assert "trained for 5 epochs, more than --epochs 3" in str(e)
    else:
        raise AssertionError("a 5-epoch run was reported as a 3-epoch row")
