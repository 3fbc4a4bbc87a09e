"""DoaTrainer (frozen Hnet, gradients, tf.distribute) and the train() job on tiny data."""
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import ConfigError, DoanetConfig, LossConfig
from dtbt_tf.data.dcase import DataError
from dtbt_tf.losses import compute_loss_terms
from dtbt_tf.metrics import METRIC_KEYS
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import build_hnet
from dtbt_tf.artifacts import FolderLock, load_trained
from dtbt_tf.config import FeatureConfig, InferenceConfig, RunConfig, TrainSettings
from dtbt_tf.jobs import main_job, train_run
from dtbt_tf.training import DoaTrainer

SMALL = dict(conv_filters=8, rnn_units=8, fc_units=8)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(loss, seed=0, lr=1e-2):
    keras.utils.set_random_seed(seed)
    doanet, hnet = build_doanet(DoanetConfig(**SMALL)), build_hnet(2, units=8)
    trainer = DoaTrainer(doanet, hnet, LossConfig(name=loss))
    trainer.compile(optimizer=keras.optimizers.Adam(lr))
    return trainer, doanet, hnet


@pytest.mark.parametrize("loss", ["full", "dmotp"])
def test_hnet_frozen_and_every_doanet_weight_trained(loss, random_batch):
    trainer, doanet, hnet = _trainer(loss)
    x, y = random_batch(np.random.default_rng(0))
    hnet_before = [w.copy() for w in hnet.get_weights()]
    doanet_before = {v.path: v.numpy().copy() for v in doanet.trainable_variables}
    assert hnet.trainable_variables == []
    assert {v.path for v in trainer.trainable_variables} == set(doanet_before)
    hist = trainer.fit(x, y, batch_size=2, epochs=2, verbose=0, shuffle=False)
    assert set(hist.history) == {"loss", "dmotp"} | ({"dmota", "activity"} if loss == "full" else set())
    for a, b in zip(hnet_before, hnet.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit-identical
    changed = {v.path: not np.array_equal(doanet_before[v.path], v.numpy()) for v in doanet.trainable_variables}
    activity_head = {p for p in changed if p.split("/")[0] in ("act_fc0", "act_fc1", "activity")}
    if loss == "full":
        assert all(changed.values()), [p for p, c in changed.items() if not c]
    else:  # no activity term: only the activity head is left untouched
        assert {p for p, c in changed.items() if not c} == activity_head


def test_gradients_through_frozen_hnet(random_batch):
    _, doanet, hnet = _trainer("full")
    x, y = random_batch(np.random.default_rng(1))
    with tf.GradientTape() as tape:
        loss = compute_loss_terms(doanet(x, training=True), y, hnet, LossConfig())["loss"]
    grads = tape.gradient(loss, doanet.trainable_variables + hnet.weights)
    n = len(doanet.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) and np.any(g != 0) for g in grads[:n])
    # the Hnet is differentiable (gradients exist w.r.t. its weights) but none of them is ever applied
    assert any(g is not None for g in grads[n:]) and hnet.trainable_weights == []


def test_evaluate_reports_the_loss_terms(random_batch):
    trainer, doanet, hnet = _trainer("full")
    x, y = random_batch(np.random.default_rng(2))
    logs = trainer.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    expected = compute_loss_terms(doanet(x, training=False), y, hnet, LossConfig())
    for k, v in expected.items():
        assert logs[k] == pytest.approx(float(v), rel=1e-4)


def test_trainer_rejects_hnet_of_other_n_max():
    with pytest.raises(ConfigError, match="n_max=3"):
        DoaTrainer(build_doanet(DoanetConfig(**SMALL)), build_hnet(3, units=8), LossConfig())


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(random_batch, tmp_path):
    """Two logical CPU devices need a fresh process: tests/_mirrored_worker.py trains one step with the default
    and the mirrored strategy on this batch."""
    x, y = random_batch(np.random.default_rng(0), B=4)
    np.savez(tmp_path / "batch.npz", x=x, **y)
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mirrored_worker.py")
    proc = subprocess.run([sys.executable, worker, str(tmp_path / "batch.npz"), json.dumps(SMALL)],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["default"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    assert out["mirrored"]["loss"] == pytest.approx(out["default"]["loss"], rel=1e-5)
    # gradients of the two half batches, scaled by the global batch size and all-reduced = the full-batch step
    for a, b in zip(out["default"]["weights"], out["mirrored"]["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The job


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, write_tiny_dcase):
    base = tmp_path_factory.mktemp("job")
    root = write_tiny_dcase(base / "dcase")
    hnet2 = str(base / "hnet2.keras")
    build_hnet(2, units=8).save(hnet2)
    return {"base": base, "root": root, "hnet": hnet2}


def run_config(hnet=None, fmt="foa", n_max=2, loss="full", model=None, **train) -> RunConfig:
    """A RunConfig of the tiny DOAnet (``SMALL``) trained for one epoch unless ``train`` says otherwise."""
    loss_cfg = LossConfig(loss)
    model = model or DoanetConfig(fmt=fmt, n_max=n_max, **SMALL)
    settings = TrainSettings(**{"epochs": 1, "batch_size": 2, "seq_hop": 50, **train})
    return RunConfig(FeatureConfig(fmt=fmt), model, loss_cfg, settings, InferenceConfig.for_loss(loss_cfg), hnet=hnet)


QUIET = dict(verbose=0, log=lambda *a: None)


@pytest.fixture(scope="module")
def run(tiny):
    out = str(tiny["base"] / "run")
    res = main_job(run_config(tiny["hnet"]), out=out, data=tiny["root"], **QUIET)
    return out, res


def _tags(folder):
    tags = set()
    for f in os.listdir(folder):
        for ev in tf.compat.v1.train.summary_iterator(os.path.join(folder, f)):
            tags |= {v.tag for v in ev.summary.value}
    return tags


@pytest.mark.slow  # `run`: the whole job (extract, train, evaluate, export), ~45 s
def test_run_folder_layout(run, tiny):
    out, res = run
    for name in ("run_config.json", "best.keras", "ckpt/checkpoint", "test_metrics.json", "export/1/saved_model.pb",
                 "predictions/fold1_room1_mix001_ov1.csv", "val_tracks.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, ".lock"))  # released at the end
    assert os.listdir(os.path.join(out, "predictions")) == ["fold1_room1_mix001_ov1.csv"]  # the test split
    cfg = json.load(open(os.path.join(out, "run_config.json")))
    assert cfg["loss_config"]["name"] == "full" and cfg["doanet_config"]["conv_filters"] == 8
    assert cfg["data_dir"].endswith("dcase_features_foa_n2") and cfg["hnet"] == os.path.abspath(tiny["hnet"])
    assert cfg["inference_config"] == dataclasses.asdict(InferenceConfig())  # a new run: the continuity rule
    assert cfg["inference_config"]["tracking"] == "continuity"
    assert set(METRIC_KEYS) | {"LE_poly1", "frames_poly1"} <= set(json.load(open(os.path.join(out, "test_metrics.json"))))
    assert set(METRIC_KEYS) <= set(res["test_metrics"]) and res["best_epoch"] == 1
    assert {"epoch_loss", "epoch_dmotp", "epoch_dmota", "epoch_activity"} <= _tags(os.path.join(out, "tb", "train"))
    assert {"epoch_LE", "epoch_LR", "epoch_MOTA", "epoch_loss"} <= _tags(os.path.join(out, "tb", "validation"))
    assert "validation_tracks" in _tags(os.path.join(out, "tb", "images"))


@pytest.mark.slow  # `run`
def test_load_trained_and_export_agree(run):
    out, _ = run
    model, cfg = load_trained(out)
    assert (cfg.feature.fmt, cfg.model.conv_filters, cfg.loss.name) == ("foa", 8, "full")
    assert model.get_layer("normalization") is not None
    x = np.random.default_rng(0).normal(-20, 10, (1, 75, 64, 7)).astype(np.float32)
    loaded = tf.saved_model.load(os.path.join(out, "export", "1"))
    assert {"serving_default", "from_audio"} <= set(loaded.signatures)
    serve = loaded.signatures["serving_default"]
    got = serve(features=tf.constant(x))
    ref = model(x)
    for k in ("doa", "activity"):
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), atol=1e-5)
    assert got["doa"].shape == (1, 15, 2, 3)


@pytest.mark.slow  # `run` and a second epoch
def test_resume_continues_from_checkpoint(run, tiny):
    out, _ = run
    reader = tf.train.load_checkpoint(os.path.join(out, "ckpt"))
    it_key = next(k for k in reader.get_variable_to_shape_map() if "optimizer" in k and "iteration" in k)
    steps_1 = int(reader.get_tensor(it_key))
    logs = []
    res = train_run(out=out, resume=True, changes={"train.epochs": 2}, verbose=0, log=logs.append)
    assert any("after epoch 1" in m for m in logs)
    reader = tf.train.load_checkpoint(os.path.join(out, "ckpt"))
    assert int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    assert int(reader.get_tensor(it_key)) == 2 * steps_1  # the optimizer state was restored, not restarted
    assert res["best_epoch"] in (1, 2) and load_trained(out)[1].train.epochs == 2
    with pytest.raises(ConfigError, match="already holds a run"):
        train_run(run_config(tiny["hnet"]), out=out, data=tiny["root"], **QUIET)


@pytest.mark.slow  # `run`
def test_resume_refuses_changed_settings_by_name(run):
    out, _ = run
    before = open(os.path.join(out, "run_config.json")).read()
    with pytest.raises(ConfigError, match=r"train\.lr \(run: 0\.001, given: 0\.002\).*model\.dropout"):
        train_run(out=out, resume=True, changes={"train.lr": 0.002, "model.dropout": 0.1,
                                                 "train.seed": 0}, **QUIET)  # seed is unchanged: not named
    assert open(os.path.join(out, "run_config.json")).read() == before


class _FailAt(keras.callbacks.Callback):
    """Raise in the given (0-based) epoch after ``batch`` batches: a job killed mid-epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise RuntimeError("injected failure")


@pytest.mark.slow  # two three-epoch trainings
def test_resumed_run_equals_the_uninterrupted_run(tiny, tmp_path, capsys):
    """Killed in epoch 2 of 3 and resumed with no other flag: the same weights and best epoch as without the kill.
    The progress lines count the run's epochs ("Epoch 2/3"), though fit runs one epoch at a time."""
    cfg = run_config(tiny["hnet"], epochs=3, batch_size=1)  # several steps per epoch
    clean = str(tmp_path / "clean")
    train_run(cfg, out=clean, data=tiny["root"], verbose=2, log=lambda *a: None)
    printed = capsys.readouterr().out
    assert all(f"Epoch {e}/3" in printed for e in (1, 2, 3)), printed[-2000:]
    broken = str(tmp_path / "broken")
    with pytest.raises(RuntimeError, match="injected"):
        train_run(cfg, out=broken, data=tiny["root"], callbacks=[_FailAt(1, 1)], **QUIET)
    assert not os.path.exists(os.path.join(broken, ".lock"))
    res = train_run(out=broken, resume=True, **QUIET)
    a, b = load_trained(clean)[0], load_trained(broken)[0]
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    reader_a = tf.train.load_checkpoint(os.path.join(clean, "ckpt"))
    reader_b = tf.train.load_checkpoint(os.path.join(broken, "ckpt"))
    for key in ("best_le/.ATTRIBUTES/VARIABLE_VALUE", "best_epoch/.ATTRIBUTES/VARIABLE_VALUE"):
        assert reader_a.get_tensor(key) == reader_b.get_tensor(key)
    assert res["best_epoch"] == int(reader_a.get_tensor("best_epoch/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow  # the job up to its first training step: feature extraction, model build, trace (~10-15 s)
def test_failed_start_leaves_no_run_behind(tiny, tmp_path):
    out = str(tmp_path / "failed")
    with pytest.raises(RuntimeError, match="injected"):
        train_run(run_config(tiny["hnet"]), out=out, data=tiny["root"], callbacks=[_FailAt(0, 0)], **QUIET)
    assert not os.path.exists(out)  # the corrected command is not refused as "already holds a run"
    with pytest.raises(ConfigError, match="dropout"):
        run_config(tiny["hnet"], model=DoanetConfig(dropout=1.5, **SMALL))


def test_a_locked_run_folder_is_refused(tiny, tmp_path):
    out = tmp_path / "busy"
    with FolderLock(str(out), "training"):
        with pytest.raises(ConfigError, match="in use by another training"):
            train_run(run_config(tiny["hnet"]), out=str(out), data=tiny["root"], **QUIET)
    assert os.listdir(out) == []


@pytest.mark.slow  # `run`
def test_bad_inputs(run, tiny, tmp_path, write_tiny_dcase):
    out, _ = run
    feats = json.load(open(os.path.join(out, "run_config.json")))["data_dir"]
    hnet = tiny["hnet"]
    with pytest.raises(ConfigError, match=r"feature folder does not match.*fmt='foa'"):
        train_run(run_config(hnet, fmt="mic"), out=str(tmp_path / "a"), data=feats, **QUIET)
    with pytest.raises(ConfigError, match=r"n_max=2 \(expected 3\)"):
        hnet3 = str(tmp_path / "hnet3.keras")
        build_hnet(3, units=8).save(hnet3)
        train_run(run_config(hnet3, n_max=3), out=str(tmp_path / "b"), data=feats, **QUIET)
    with pytest.raises(ValueError, match="trained for n_max=2"):
        train_run(run_config(hnet, n_max=3), out=str(tmp_path / "c"), data=feats, **QUIET)
    # a feature folder whose statistics are NaN (NaN features in the training split)
    bad = tmp_path / "nan_feats"
    bad.mkdir()
    for f in os.listdir(feats):
        os.symlink(os.path.join(feats, f), bad / f)
    manifest = json.load(open(os.path.join(feats, "manifest.json")))
    manifest["normalization"]["mean"][0][0] = float("nan")
    os.remove(bad / "manifest.json")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="NaN"):
        train_run(run_config(hnet), out=str(tmp_path / "d"), data=str(bad), **QUIET)
    # a DCASE folder without a validation fold
    root = write_tiny_dcase(tmp_path / "noval", folds=(1, 3))
    with pytest.raises(ValueError, match="val"):
        train_run(run_config(hnet), out=str(tmp_path / "e"), data=root, **QUIET)
    # an edited manifest n_max: caught before training starts
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in os.listdir(feats):
        os.symlink(os.path.join(feats, f), edited / f)
    manifest = json.load(open(os.path.join(feats, "manifest.json")))
    manifest["n_max"] = 3
    os.remove(edited / "manifest.json")
    (edited / "manifest.json").write_text(json.dumps(manifest))
    hnet3 = str(tmp_path / "hnet3.keras")
    with pytest.raises(DataError, match="manifest.json: n_max=3, but shard .* was extracted with n_max=2"):
        train_run(run_config(hnet3, n_max=3), out=str(tmp_path / "f"), data=str(edited), **QUIET)
    assert not any(os.path.exists(tmp_path / n) for n in "abcdef")  # no run folder left by a refused start
