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
