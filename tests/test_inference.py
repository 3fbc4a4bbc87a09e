"""Windowed inference, NumPy features, model loading and outputs (dtbt_tf.inference)."""
import os
import shutil

import numpy as np
import pytest

from dtbt_tf.artifacts import save_run_config, saved_model_version_dir, tflite_sidecar_path
from dtbt_tf.config import ConfigError, FeatureConfig, InferenceConfig, LossConfig, RunConfig, TrainSettings
from dtbt_tf.data.dcase import Metadata
from dtbt_tf.export import export_saved_model, export_tflite
from dtbt_tf.features.tf_features import extract_features
from dtbt_tf.inference import LoadedModel, load_model, localize, outputs_to_metadata
from dtbt_tf.plots import plot_tracks
from dtbt_tf.windowing import window_plan

SLOTS = InferenceConfig(tracking="slots")


@pytest.mark.parametrize("n_label", [1, 10, 49, 50, 51, 75, 600, 613])
def test_window_plan_covers_each_frame_once(n_label):
    window = 50
    plan = window_plan(n_label, window)
    cover = np.zeros(n_label, int)
    for start, lo, hi in plan:
        assert start <= lo < hi <= start + window
        cover[lo:hi] += 1
    assert np.all(cover == 1)
    assert all(b[0] - a[0] == 25 for a, b in zip(plan, plan[1:]))
    if len(plan) > 2:  # inner windows keep only their centre
        assert plan[1][1] - plan[1][0] == 12 and plan[1][2] - plan[1][0] == 37
    assert window_plan(0, window) == []


def test_localize_stitches_window_centres():
    """A model whose outputs encode (window start, position): the stitched file shows which window each frame
    came from."""
    cfg = FeatureConfig()
    starts = []

    def predict(x):
        b, t = x.shape[:2]
        first = x[:, 0, 0, 0].astype(int)  # feature frame index carried in the input
        starts.extend(first // 5)
        pos = np.arange(t // 5)[None, :]
        act = np.stack([first[:, None] // 5 + pos, np.broadcast_to(pos, (b, t // 5))], -1).astype(np.float32)
        return np.ones((b, t // 5, 2, 3), np.float32) / np.sqrt(3), act

    model = LoadedModel(predict, cfg, n_max=2, inference=InferenceConfig(), window_frames=250, max_batch=3)
    n_label = 137
    feats = np.broadcast_to(np.arange(n_label * 5, dtype=np.float32)[:, None, None], (n_label * 5, 64, 7))
    doa, act = localize(np.zeros((n_label * 2400 + 100, 4), np.float32), model, features=np.array(feats))
    assert doa.shape == (n_label, 2, 3) and act.shape == (n_label, 2)
    np.testing.assert_array_equal(act[:, 0], np.arange(n_label))  # every frame from the right place of its window
    plan = window_plan(n_label, 50)
    assert starts == [s for s, _, _ in plan]
    for s, lo, hi in plan:
        np.testing.assert_array_equal(act[lo:hi, 1], np.arange(lo - s, hi - s))


def test_outputs_to_metadata_thresholds_slots():
    doa = np.zeros((3, 2, 3), np.float32)
    doa[..., 0] = 1.0
    act = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]], np.float32)
    meta = outputs_to_metadata(doa, act, SLOTS)
    assert list(zip(meta.frame, meta.track)) == [(0, 0), (1, 0), (1, 1)]
    assert np.all(meta.cls == 0)
    assert outputs_to_metadata(doa, act, InferenceConfig(threshold=0.8, tracking="slots")).frame.tolist() == [0]


def test_outputs_to_metadata_track_column_is_a_track_id():
    """A new id each time a slot starts a track (dtbt_tf.tracks), not the slot: slot 0 on, off, on again."""
    doa = np.zeros((5, 2, 3), np.float32)
    doa[..., 2] = 1.0
    act = np.array([[0.9, 0.1], [0.1, 0.8], [0.9, 0.8], [0.9, 0.1], [0.9, 0.9]], np.float32)
    meta = outputs_to_metadata(doa, act, SLOTS)
    assert list(zip(meta.frame.tolist(), meta.track.tolist())) == [(0, 0), (1, 1), (2, 2), (2, 1), (3, 2),
                                                                   (4, 2), (4, 3)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_doanet):
    model, dcfg = tiny_doanet("foa", seed=1)
    root = tmp_path_factory.mktemp("models")
    export_saved_model(model, str(root / "sm"), version=1)
    shutil.copytree(root / "sm" / "1", root / "sm" / "3")  # a newer version: the loader must pick it
    tfl = export_tflite(model, str(root / "m.tflite"), "fp32", window_frames=250)
    run = root / "run"
    run.mkdir()
    model.save(str(run / "best.keras"))
    save_run_config(str(run), RunConfig(FeatureConfig(fmt="foa"), dcfg, LossConfig(), TrainSettings(),
                                        InferenceConfig(), data_dir=str(run)))
    return model, root, tfl, str(run)


@pytest.mark.slow  # `models`: a SavedModel export and a TFLite conversion (~20 s)
def test_load_model_kinds(models):
    model, root, tfl, run = models
    assert saved_model_version_dir(str(root / "sm")) == str(root / "sm" / "3")
    sm = load_model(str(root / "sm"))
    assert sm.source.endswith(os.path.join("sm", "3")) and sm.feature_cfg.fmt == "foa" and sm.n_max == 2
    lite = load_model(tfl)
    assert (lite.input_kind, lite.window_frames, lite.max_batch, lite.n_max) == ("features", 250, 1, 2)
    assert load_model(run).feature_cfg == FeatureConfig(fmt="foa")
    os.remove(tflite_sidecar_path(tfl))  # without its sidecar the format comes from the input channels
    assert load_model(tfl).feature_cfg == FeatureConfig(fmt="foa")
    for bad in (str(root / "missing.tflite"), str(root), str(root / "nothing")):
        with pytest.raises(ConfigError):
            load_model(bad)


@pytest.mark.slow  # `models`
def test_all_model_kinds_agree_on_a_long_file(models, noise):
    """12.3 s = 123 label frames = 4 overlapping windows; SavedModel (TF features), run folder and TFLite
    (NumPy features) give the same stitched outputs, and the first window equals a direct model call."""
    model, root, tfl, run = models
    audio = noise(12.3, 11)
    outs = {name: localize(audio, load_model(p)) for name, p in
            (("sm", str(root / "sm")), ("run", run), ("tflite", tfl))}
    for doa, act in outs.values():
        assert doa.shape == (123, 2, 3) and act.shape == (123, 2)
    for name in ("run", "tflite"):
        np.testing.assert_allclose(outs[name][0], outs["sm"][0], atol=1e-3)
        np.testing.assert_allclose(outs[name][1], outs["sm"][1], atol=1e-3)
    direct = model(extract_features(audio, FeatureConfig())[None, :250], training=False)
    np.testing.assert_allclose(outs["sm"][1][:37], direct["activity"][0, :37], atol=1e-5)


@pytest.mark.slow  # `models`
def test_short_file_is_padded_to_one_window(models, noise):
    model, root, tfl, run = models
    doa, act = localize(noise(1.04, 12), load_model(tfl))  # 10 label frames (+ 96 samples)
    assert doa.shape == (10, 2, 3) and np.all(np.isfinite(doa)) and np.all((act >= 0) & (act <= 1))
    doa, act = localize(noise(0.05, 12), load_model(tfl))  # shorter than one label frame
    assert doa.shape == (0, 2, 3) and act.shape == (0, 2)


def test_plot_tracks_writes_png(tmp_path):
    frames = np.arange(20)
    doa = np.stack([np.cos(frames / 10), np.sin(frames / 10), np.zeros(20)], -1)
    meta = Metadata(frames, np.zeros(20, int), frames % 2, doa)
    ref = Metadata(frames, np.zeros(20, int), np.zeros(20, int), doa)
    path = str(tmp_path / "p.png")
    plot_tracks(meta, path, ref, title="x")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["p.png"]


@pytest.mark.slow  # `models` and one more export
def test_models_without_activity_loss_count_every_slot(models, tmp_path, tiny_doanet, noise):
    """A run trained with mse / dmotp has an untrained activity head: loading it (run folder or its export)
    reports activity 1 for every slot, so every regressor always counts."""
    model, _, _, _ = models
    run = tmp_path / "run_mse"
    run.mkdir()
    model.save(str(run / "best.keras"))
    _, dcfg = tiny_doanet("foa", seed=1)
    mse = LossConfig(name="mse")
    save_run_config(str(run), RunConfig(FeatureConfig(fmt="foa"), dcfg, mse, TrainSettings(),
                                        InferenceConfig.for_loss(mse), data_dir=str(tmp_path)))
    export_saved_model(str(run), str(tmp_path / "sm_mse"), version=1)
    audio = noise(5.0, 3)
    for path in (str(run), str(tmp_path / "sm_mse")):
        loaded = load_model(path)
        assert not loaded.inference.use_activity
        _, act = localize(audio, loaded)
        assert act.shape == (50, 2) and np.all(act == 1.0)
    _, act = localize(audio, load_model(str(models[3])))  # the `full` run keeps its activity outputs
    assert not np.all(act == 1.0)
