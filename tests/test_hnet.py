"""Hnet model, data generator, metrics, training/resume, export, the two Hnet scripts and the shipped models."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import dtbt_tf.hnet
from dtbt_tf import cli
from dtbt_tf.artifacts import SHIPPED_DIR
from dtbt_tf.association import exact_association
from dtbt_tf.geometry import unit_to_polar
from dtbt_tf.hnet.card import export_hnet
from dtbt_tf.hnet.config import HnetTrainConfig
from dtbt_tf.hnet.data import load_or_make_hnet_data, make_hnet_data, sample_directions, training_data
from dtbt_tf.hnet.evaluation import AssociationF1, ExactMatch, association_scores, evaluate_hnet
from dtbt_tf.hnet.training import train_hnet
from dtbt_tf.models.hnet import apply_hnet, build_hnet, load_hnet, paper_hnet_options

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n", [2, 3])
def test_build_hnet_shapes_and_ranges(n):
    model = build_hnet(n, units=8)
    out = model(np.random.default_rng(0).uniform(0, 2, (5, n, n)).astype(np.float32))
    assert set(out) == {"association", "row_max", "col_max"}
    assert out["association"].shape == (5, n, n)
    assert out["row_max"].shape == (5, n) and out["col_max"].shape == (5, n)
    a = out["association"].numpy()
    assert np.all((a > 0) & (a < 1))


def test_max_heads_are_sigmoid_of_logit_maxima():
    model = build_hnet(3, units=8)
    logits_model = keras.Model(model.inputs[0], model.get_layer("logits").output)
    D = np.random.default_rng(1).uniform(0, 2, (4, 3, 3)).astype(np.float32)
    logits = logits_model(D).numpy()
    out = model(D)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(out["row_max"].numpy(), sig(logits.max(axis=-1)), atol=1e-6)
    np.testing.assert_allclose(out["col_max"].numpy(), sig(logits.max(axis=-2)), atol=1e-6)
    np.testing.assert_allclose(out["association"].numpy(), sig(logits), atol=1e-6)


def test_padding_value_does_not_matter():
    """Random pads of the generator and the constant 10 of DOAnet training look the same to the model."""
    model = build_hnet(2, units=8)
    D = np.array([[[0.3, 10.0], [1.2, 10.0]]], np.float32)
    D2 = np.array([[[0.3, 4.5], [1.2, 19.0]]], np.float32)
    np.testing.assert_array_equal(model(D)["association"].numpy(), model(D2)["association"].numpy())


def test_build_hnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_max"):
        build_hnet(0)
    with pytest.raises(ValueError, match="clip_distance"):
        build_hnet(2, clip_distance=1.5)
    with pytest.raises(ValueError, match="input_scale"):
        build_hnet(2, input_scale=0.0)
    with pytest.raises(ValueError, match="head_layers"):
        build_hnet(2, head_layers=-1)


def test_paper_architecture_and_options():
    """paper_hnet_options() gives the paper's net: one-way GRU on D (N features per row), no ReLU layer;
    the default reads 3N features per row (D, D - column minima, D - row minima) and has one ReLU layer."""
    paper = build_hnet(3, units=8, **paper_hnet_options())
    default = build_hnet(3, units=8)
    assert paper.get_layer("gru").input.shape[-1] == 3
    assert default.get_layer("bigru").input.shape[-1] == 9
    assert "head_0" not in [layer.name for layer in paper.layers]
    assert default.get_layer("head_0").activation.__name__ == "relu"
    # the relative inputs are differences to the minima: a constant added to a row or a column of D changes
    # only the D channel, so the two relative channels of the GRU input stay the same
    inputs = keras.Model(default.inputs[0], default.get_layer("bigru").input)
    D = np.random.default_rng(5).uniform(0, 2, (4, 3, 3)).astype(np.float32)
    shifted = D + np.array([0.0, 0.3, 0.0], np.float32)[None, None, :]  # column 1 + 0.3
    np.testing.assert_allclose(inputs(shifted).numpy()[..., 3:6], inputs(D).numpy()[..., 3:6], atol=1e-5)
    assert not np.allclose(inputs(shifted).numpy()[..., :3], inputs(D).numpy()[..., :3])


def test_hard_matrices_are_near_ties():
    """max_margin keeps only matrices whose second-best association is within the margin (seeded)."""
    from dtbt_tf.association import association_margin

    d = make_hnet_data(3, 500, seed=3, layout="training", directions="continuous", max_margin=0.05)
    assert d["distance"].shape == (500, 3, 3)
    margin = association_margin(d["distance"], d["row_active"], d["col_active"])
    assert np.all(margin < 0.05)
    np.testing.assert_array_equal(d["association"], exact_association(d["distance"], d["row_active"],
                                                                      d["col_active"]))
    again = make_hnet_data(3, 500, seed=3, layout="training", directions="continuous", max_margin=0.05)
    np.testing.assert_array_equal(again["distance"], d["distance"])
    plain = make_hnet_data(3, 500, seed=3, layout="training", directions="continuous")
    assert np.mean(association_margin(plain["distance"], plain["row_active"], plain["col_active"]) < 0.05) < 0.2
    with pytest.raises(ValueError, match="max_margin"):
        make_hnet_data(2, 10, seed=0, max_margin=0.0)


def test_keras_round_trip_and_load_hnet(tmp_path):
    model = build_hnet(2, units=8)
    path = tmp_path / "hnet.keras"
    model.save(path)
    D = np.random.default_rng(2).uniform(0, 2, (6, 2, 2)).astype(np.float32)
    full = load_hnet(path, outputs="all")
    np.testing.assert_allclose(full(D)["association"].numpy(), model(D)["association"].numpy(), atol=1e-6)
    frozen = load_hnet(tmp_path, n_max=2)  # a folder holding hnet.keras
    assert not frozen.trainable and not frozen.trainable_weights
    np.testing.assert_allclose(frozen(D).numpy(), model(D)["association"].numpy(), atol=1e-6)
    # leading axes (batch, T, N, N), differentiable w.r.t. D
    Dt = tf.Variable(np.random.default_rng(3).uniform(0, 2, (3, 4, 2, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        A = apply_hnet(frozen, Dt)
        s = tf.reduce_sum(A)
    assert A.shape == (3, 4, 2, 2)
    np.testing.assert_allclose(A.numpy()[1, 2], frozen(Dt.numpy()[1, 2][None]).numpy()[0], atol=1e-6)
    assert np.any(tape.gradient(s, Dt).numpy() != 0)
    # inside a traced graph with unknown batch and time
    traced = tf.function(lambda d: apply_hnet(frozen, d),  # noqa: E731
                         input_signature=[tf.TensorSpec((None, None, 2, 2), tf.float32)])
    np.testing.assert_allclose(traced(Dt).numpy(), A.numpy(), atol=1e-6)


def test_load_hnet_temperature_keeps_decisions_and_softens(tmp_path):
    """sigmoid(logits / T): the same side of 0.5 everywhere, entries pulled towards 0.5, gradients kept."""
    model = build_hnet(2, units=8)
    model.save(tmp_path / "hnet.keras")
    D = np.random.default_rng(4).uniform(0, 2, (256, 2, 2)).astype(np.float32)
    sharp = load_hnet(tmp_path).predict_on_batch(D)
    soft_model = load_hnet(tmp_path, temperature=4.0)
    assert not soft_model.trainable_weights
    soft = soft_model.predict_on_batch(D)
    logits = keras.Model(model.inputs[0], model.get_layer("logits").output).predict_on_batch(D)
    np.testing.assert_allclose(soft, 1.0 / (1.0 + np.exp(-logits / 4.0)), atol=1e-6)
    np.testing.assert_array_equal(soft > 0.5, sharp > 0.5)
    assert np.all(np.abs(soft - 0.5) <= np.abs(sharp - 0.5) + 1e-7)
    assert np.mean(np.abs(soft - 0.5)) < np.mean(np.abs(sharp - 0.5))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        load_hnet(tmp_path, temperature=0.0)
    with pytest.raises(ValueError, match="outputs='association' only"):
        load_hnet(tmp_path, outputs="all", temperature=2.0)


def test_load_hnet_errors(tmp_path):
    build_hnet(2, units=8).save(tmp_path / "hnet.keras")
    with pytest.raises(ValueError, match="n_max=2.*n_max=3"):
        load_hnet(tmp_path, n_max=3)
    with pytest.raises(ValueError, match="no Hnet found"):
        load_hnet(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        apply_hnet(load_hnet(tmp_path), tf.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        apply_hnet(load_hnet(tmp_path), tf.zeros((4, 2, 3)))


def test_export_saved_model_signature(tmp_path):
    model = build_hnet(3, units=8)
    info = {"config": {"n_max": 3, "units": 8, "train_size": 1, "val_size": 1, "seed": 0, "continuous_fraction": 0,
                       "loss_weights": [1, 1, 1], "batch_size": 1, "epochs": 1, "lr": 1e-3, "warmup_epochs": 1,
                       "final_lr_fraction": 0.1},
            "train_seconds": 1.0, "eval_size": 1, "command": "test",
            "metrics": {"generator/grid": {"f1": 1, "exact_match": 1, "optimal_match": 1,
                                           "exact_match_away_from_ties": 1, "near_tie_fraction": 0}}}
    out = export_hnet(model, tmp_path / "hnet_n3", info)
    assert {"saved_model.pb", "hnet.keras", "hnet_config.json", "MODEL_CARD.md"} <= {p.name for p in out.iterdir()}
    loaded = tf.saved_model.load(str(out))
    sig = loaded.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["distance"]
    D = np.random.default_rng(4).uniform(0, 2, (5, 3, 3)).astype(np.float32)
    res = sig(distance=tf.constant(D))
    assert list(res) == ["association"]
    np.testing.assert_allclose(res["association"].numpy(), model(D)["association"].numpy(), atol=1e-6)
    assert "| generator/grid | 100.000%" in (out / "MODEL_CARD.md").read_text()
    scores = evaluate_hnet(sig, 3, size=160)
    assert set(scores) == {"generator/grid", "training/grid", "generator/continuous", "training/continuous"}
    assert all(0.0 <= m["exact_match"] <= m["optimal_match"] <= 1.0 for m in scores.values())


@pytest.mark.parametrize("layout", ["generator", "training"])
def test_make_hnet_data_layouts(layout):
    n, size = 2, 900
    d = make_hnet_data(n, size, seed=7, layout=layout, directions="grid")
    D, A, ra, ca = d["distance"], d["association"], d["row_active"], d["col_active"]
    assert D.shape == A.shape == (size, n, n) and D.dtype == np.float32
    pair = ra[:, :, None] & ca[:, None, :]
    assert np.all(D[pair] <= 2.0 + 1e-6)
    if layout == "generator":
        assert np.all((D[~pair] >= 4.0) & (D[~pair] <= 20.0))
        counts = np.unique(ra.sum(1) * (n + 1) + ca.sum(1), return_counts=True)[1]
        assert len(counts) == (n + 1) ** 2 and counts.min() == counts.max() == size // (n + 1) ** 2
    else:
        assert np.all(ra) and np.all(D[~pair] == 10.0)
        assert set(np.unique(ca.sum(1))) == {0, 1, 2}
    # both active-slot positions occur (stable slots: slot 0 may be empty while slot 1 is active)
    assert np.any(ca[:, 1] & ~ca[:, 0])
    np.testing.assert_array_equal(A, exact_association(D, ra, ca))
    np.testing.assert_array_equal(make_hnet_data(n, size, seed=7, layout=layout)["distance"], D)


def test_grid_directions_lie_on_grids():
    az, el = unit_to_polar(sample_directions(np.random.default_rng(0), 2000, 2, "grid"))
    away_from_poles = np.abs(el) < 89.9  # azimuth is undefined at the poles
    assert np.allclose(az[away_from_poles], np.round(az[away_from_poles]), atol=1e-6)
    assert np.allclose(el, np.round(el), atol=1e-6)
    assert len(np.unique(np.round(el))) > 30  # fine grids are used too, not only the 30-degree one


def test_cache_round_trip(tmp_path):
    a = load_or_make_hnet_data(tmp_path, 2, 100, seed=1, layout="training")
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = load_or_make_hnet_data(tmp_path, 2, 100, seed=1, layout="training")
    np.testing.assert_array_equal(a["distance"], b["distance"])
    load_or_make_hnet_data(tmp_path, 2, 100, seed=2, layout="training")
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_scores_and_keras_metrics_agree():
    exact = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[1, 0], [0, 0]]], np.float32)
    pred = np.array([[[0.9, 0.2], [0.1, 0.8]], [[0.6, 0.7], [0.9, 0.1]], [[0.2, 0.1], [0.3, 0.1]]], np.float32)
    s = association_scores(pred, exact)
    assert s["exact_match"] == pytest.approx(1 / 3)
    # entries: tp=4, fp=1, fn=1, tn=6 -> F1(1)=0.8, F1(0)=6/7; weights 5/12, 7/12
    assert s["f1"] == pytest.approx((0.8 * 5 + 6 / 7 * 7) / 12)
    f1, em = AssociationF1(), ExactMatch()
    f1.update_state(exact, pred)
    em.update_state(exact, pred)
    assert float(f1.result()) == pytest.approx(s["f1"], abs=1e-6)
    assert float(em.result()) == pytest.approx(1 / 3, abs=1e-6)


def test_optimal_match_accepts_other_optimum_at_exact_ties():
    D = np.array([[[0.5, 0.7], [0.5, 0.7]]], np.float32)  # identical rows: both assignments cost 1.2
    exact = exact_association(D)
    other = 1.0 - exact
    s = association_scores(other, exact, distance=D)
    assert s["exact_match"] == 0.0 and s["optimal_match"] == 1.0


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise RuntimeError("simulated interruption")


@pytest.mark.slow  # four epochs on 3000 matrices, interrupted and resumed (~30-75 s)
def test_small_training_run_learns_and_resumes(tmp_path):
    """A tiny Hnet on 3000 N=2 matrices reaches >= 78% exact match within seconds (trivial cases plus
    learning the padding structure), and an interrupted run resumes at the next epoch."""
    cfg = HnetTrainConfig(n_max=2, train_size=3000, val_size=300, epochs=4, batch_size=50, lr=1e-2, units=32,
                          warmup_epochs=0.2, jit_compile=False)
    with pytest.raises(RuntimeError, match="simulated"):
        train_hnet(cfg, tmp_path / "run", cache_dir=tmp_path / "cache", verbose=0, callbacks=[_StopAfter(2)])
    model, info = train_hnet(cfg, tmp_path / "run", cache_dir=tmp_path / "cache", resume=True, verbose=0)
    epochs = [int(line.split(",")[0]) for line in (tmp_path / "run/history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(4))
    assert info["train_seconds"] > 0
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2, 3]
    assert all(0 <= h["val_association_exact_match"] <= 1 for h in info["history"])
    assert all(0 <= h["fresh_training_grid"] <= 1 for h in info["history"])  # per-epoch fresh-set scores
    fresh = make_hnet_data(2, 2000, seed=99)
    pred = model.predict(fresh["distance"], verbose=0)["association"]
    # measured 0.82; an all-zero output scores 0.56 (right only where nothing is active)
    assert association_scores(pred, fresh["association"])["exact_match"] >= 0.78
    with pytest.raises(ValueError, match="different config"):
        train_hnet(HnetTrainConfig(**{**cfg.__dict__, "lr": 1e-3}), tmp_path / "run",
                   cache_dir=tmp_path / "cache", resume=True, verbose=0)


def test_training_data_mixes_layouts_and_bad_init_from(tmp_path):
    cfg = HnetTrainConfig(n_max=2, train_size=90, val_size=10, training_layout_fraction=1 / 3,
                          init_from=str(tmp_path / "missing.keras"))
    data = training_data(cfg, tmp_path, 90, seed=1)
    assert data["distance"].shape == (90, 2, 2)
    assert np.all(data["row_active"][60:]) and np.all(data["distance"][60:][data["distance"][60:] > 2] == 10.0)
    assert not np.all(data["row_active"][:60])
    hard_cfg = HnetTrainConfig(n_max=2, training_layout_fraction=0.2, hard_fraction=0.5, hard_margin=0.02)
    hard = training_data(hard_cfg, tmp_path, 100, seed=1)
    assert hard["distance"].shape == (100, 2, 2) and np.all(hard["row_active"][30:])
    from dtbt_tf.association import association_margin

    assert np.all(association_margin(hard["distance"][50:], hard["row_active"][50:], hard["col_active"][50:])
                  < 0.02)
    with pytest.raises(ValueError, match="missing.keras: cannot start"):
        train_hnet(cfg, tmp_path / "run", cache_dir=tmp_path, verbose=0)


def test_train_config_validation():
    with pytest.raises(ValueError, match="n_max"):
        HnetTrainConfig(n_max=0)
    with pytest.raises(ValueError, match="training_layout_fraction"):
        HnetTrainConfig(training_layout_fraction=1.5)
    with pytest.raises(ValueError, match="loss_weights"):
        HnetTrainConfig(loss_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="hard_fraction must be <= 1"):
        HnetTrainConfig(training_layout_fraction=0.6, hard_fraction=0.6)
    with pytest.raises(ValueError, match="hard_margin"):
        HnetTrainConfig(hard_margin=0.0)


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_error_line(capsys, main, argv) -> str:
    """Run a script's main through the shared error wrapper: exit 2 and exactly one `error:` line."""
    assert cli.run(lambda: main(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_train_hnet_cli_bad_input_exits_2(capsys, tmp_path):
    main = _load_script("train_hnet").main
    assert _one_error_line(capsys, main, ["--n-max", "0", "--work-dir", "/nonexistent/x"]).startswith(
        "error: n_max must be >= 1")
    # the export replaces --out as a whole, so a work folder inside it is refused before anything is written
    out = tmp_path / "export"
    err = _one_error_line(capsys, main, ["--out", str(out), "--work-dir", str(out / "work")])
    assert err.startswith(f"error: {out / 'work'}: the work folder must lie outside")
    assert not out.exists()


def test_package_names_load_their_modules():
    assert dtbt_tf.hnet.train_hnet is train_hnet and dtbt_tf.hnet.export_hnet is export_hnet
    assert set(dtbt_tf.hnet.__all__) >= {"HnetTrainConfig", "make_hnet_data", "evaluate_hnet", "model_card"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dtbt_tf.hnet.nope  # noqa: B018


@pytest.mark.parametrize("script", ["train_hnet", "evaluate_hnet"])
def test_script_help_does_not_import_tensorflow(script):
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(REPO / 'scripts' / (script + '.py'))!r}, '--help']\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print('heavy modules:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
    assert proc.stdout.rstrip().endswith("heavy modules: []")


def test_evaluate_hnet_cli_errors_are_one_line(capsys, tmp_path):
    main = _load_script("evaluate_hnet").main
    hnet_dir = str(SHIPPED_DIR / "hnet_n2")
    assert _one_error_line(capsys, main, [hnet_dir, "--size", "0"]) == "error: --size: must be >= 1, got 0\n"
    missing = tmp_path / "missing"
    assert _one_error_line(capsys, main, [str(missing)]).startswith(f"error: {missing}: not an exported Hnet")
    doanet = SHIPPED_DIR / "doanet_foa"
    for folder in (doanet, doanet / "1"):  # the export folder and its SavedModel version folder
        if folder.is_dir():
            assert _one_error_line(capsys, main, [str(folder)]).startswith(f"error: {folder}: not an exported Hnet")
    # a SavedModel with a config file but another signature
    other = tf.Module()
    other.f = tf.function(lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.f})
    (tmp_path / "other" / "hnet_config.json").write_text("{}")
    assert _one_error_line(capsys, main, [str(tmp_path / "other")]) == (
        f"error: {tmp_path / 'other'}: serving_default does not take `distance` (batch, N, N)\n")


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_train_hnet_cli_default_export_is_under_runs(tmp_path):
    """The README's command (no --out), run from a folder: exports runs/hnet_n2 there, the work folder sits beside
    it, and saved_models/ is not written (neither in that folder nor the shipped one)."""
    shipped = SHIPPED_DIR.resolve()
    before = _files(shipped)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/train_hnet.py"), "--n-max", "2", "--train-size", "300",
         "--val-size", "30", "--epochs", "1", "--eval-size", "50", "--fresh-size", "20", "--no-jit-compile"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported runs/hnet_n2" in proc.stdout
    assert (tmp_path / "runs/hnet_n2/saved_model.pb").is_file()
    assert (tmp_path / "runs/hnet_n2/MODEL_CARD.md").is_file()
    assert (tmp_path / "runs/hnet_n2_work/history.csv").is_file()
    assert not (tmp_path / "saved_models").exists()
    assert _files(shipped) == before


@pytest.mark.parametrize("n,min_exact", [(2, 0.995), (3, 0.98)])
def test_shipped_hnet_accuracy_on_fresh_matrices(n, min_exact):
    """The shipped SavedModel loads with tf.saved_model.load alone and matches Hungarian on fresh
    continuous training-layout matrices (full figures in saved_models/hnet_n{N}/MODEL_CARD.md)."""
    path = SHIPPED_DIR / f"hnet_n{n}"
    assert (path / "saved_model.pb").is_file(), f"{path}: shipped Hnet missing"
    sig = tf.saved_model.load(str(path)).signatures["serving_default"]
    fresh = make_hnet_data(n, 3000, seed=2024, layout="training", directions="continuous")
    pred = sig(distance=tf.constant(fresh["distance"]))["association"].numpy()
    assert association_scores(pred, fresh["association"])["exact_match"] >= min_exact
    cfg = json.loads((path / "hnet_config.json").read_text())
    assert cfg["config"]["n_max"] == n
    frozen = load_hnet(n)
    np.testing.assert_allclose(frozen(fresh["distance"][:64]).numpy(), pred[:64], atol=1e-5)
