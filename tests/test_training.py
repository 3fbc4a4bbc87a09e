"""DoaTrainer (frozen Hnet, gradients, tf.distribute) and the train() job on tiny data."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import PAD_VALUE, ConfigError, DoanetConfig, LossConfig
from dtbt_tf.data.dcase import DataError, Metadata, format_name, write_audio, write_metadata
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.losses import compute_loss_terms
from dtbt_tf.metrics import METRIC_KEYS
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import build_hnet
from dtbt_tf.training import DoaTrainer, TrainSettings, load_trained, train

SMALL = dict(conv_filters=8, rnn_units=8, fc_units=8)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_tiny_dcase(root, seconds=2.0, folds=(1, 2, 3, 4), seed=0, n_sources=1):
    """A DCASE2020-layout folder (foa_dev, mic_dev, metadata_dev) with one noise recording per fold and
    ``n_sources`` simultaneous moving sources per file (120 degrees apart, track ids 0..n-1)."""
    rng = np.random.default_rng(seed)
    for sub in ("foa_dev", "mic_dev", "metadata_dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    n_lab = int(seconds * 10)
    for fold in folds:
        name = format_name(fold, 1, 1, n_sources)
        frames = np.arange(2, n_lab - 2)
        az = np.linspace(-60, 60, frames.size)
        meta = Metadata(np.tile(frames, n_sources), 0 * np.tile(frames, n_sources),
                        np.repeat(np.arange(n_sources), frames.size),
                        polar_to_unit(np.concatenate([(az + 120 * k + 180) % 360 - 180 for k in range(n_sources)]),
                                      np.zeros(n_sources * frames.size)))
        write_metadata(os.path.join(root, "metadata_dev", name + ".csv"), meta)
        for fmt in ("foa", "mic"):
            write_audio(os.path.join(root, f"{fmt}_dev", name + ".wav"),
                        0.1 * rng.standard_normal((int(seconds * 24000), 4)))
    return str(root)


def random_batch(rng, B=4, T=20, N=2, C=7):
    F = T // 5
    active = (rng.random((B, F, N)) < 0.7).astype(np.float32)
    doa = polar_to_unit(rng.uniform(-180, 180, (B, F, N)), rng.uniform(-45, 45, (B, F, N)))
    doa = np.where(active[..., None] > 0, doa, PAD_VALUE).astype(np.float32)
    track_id = np.where(active > 0, np.arange(N) + 1, -1).astype(np.int32)
    x = rng.standard_normal((B, T, 64, C)).astype(np.float32)
    return x, {"doa": doa, "active": active, "track_id": track_id}


def _trainer(loss, seed=0, lr=1e-2):
    keras.utils.set_random_seed(seed)
    doanet, hnet = build_doanet(DoanetConfig(**SMALL)), build_hnet(2, units=8)
    trainer = DoaTrainer(doanet, hnet, LossConfig(name=loss))
    trainer.compile(optimizer=keras.optimizers.Adam(lr))
    return trainer, doanet, hnet


@pytest.mark.parametrize("loss", ["full", "dmotp"])
def test_hnet_frozen_and_every_doanet_weight_trained(loss):
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


def test_gradients_through_frozen_hnet():
    _, doanet, hnet = _trainer("full")
    x, y = random_batch(np.random.default_rng(1))
    with tf.GradientTape() as tape:
        loss = compute_loss_terms(doanet(x, training=True), y, hnet, LossConfig())["loss"]
    grads = tape.gradient(loss, doanet.trainable_variables + hnet.weights)
    n = len(doanet.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) and np.any(g != 0) for g in grads[:n])
    # the Hnet is differentiable (gradients exist w.r.t. its weights) but none of them is ever applied
    assert any(g is not None for g in grads[n:]) and hnet.trainable_weights == []


def test_evaluate_reports_the_loss_terms():
    trainer, doanet, hnet = _trainer("full")
    x, y = random_batch(np.random.default_rng(2))
    logs = trainer.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    expected = compute_loss_terms(doanet(x, training=False), y, hnet, LossConfig())
    for k, v in expected.items():
        assert logs[k] == pytest.approx(float(v), rel=1e-4)


def test_trainer_rejects_hnet_of_other_n_max():
    with pytest.raises(ConfigError, match="n_max=3"):
        DoaTrainer(build_doanet(DoanetConfig(**SMALL)), build_hnet(3, units=8), LossConfig())


_MIRRORED = r"""
import json, os
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from dtbt_tf.config import DoanetConfig, LossConfig
from dtbt_tf.models.doanet import build_doanet
from dtbt_tf.models.hnet import build_hnet
from dtbt_tf.training import DoaTrainer, make_strategy
from test_training import SMALL, random_batch

x, y = random_batch(np.random.default_rng(0), B=4)
hnet = build_hnet(2, units=8)
out = {}
for name in ("default", "mirrored"):
    strategy = make_strategy(name)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        doanet = build_doanet(DoanetConfig(**SMALL))
        for layer in doanet.layers:  # frozen BN: per-replica batch statistics would differ from the full batch
            if layer.name.startswith("bn"):
                layer.trainable = False
        trainer = DoaTrainer(doanet, hnet, LossConfig())
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    hist = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": hist.history["loss"][0],
                 "weights": [w.tolist() for w in doanet.get_weights()]}
print(json.dumps(out))
"""


def test_mirrored_strategy_matches_single_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    proc = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True, env=env, cwd=REPO,
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
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("job")
    root = write_tiny_dcase(base / "dcase")
    hnet2 = str(base / "hnet2.keras")
    build_hnet(2, units=8).save(hnet2)
    return {"base": base, "root": root, "hnet": hnet2}


@pytest.fixture(scope="module")
def run(tiny):
    out = str(tiny["base"] / "run")
    res = train(tiny["root"], "foa", LossConfig("full"), hnet=tiny["hnet"], out=out, verbose=0,
                settings=TrainSettings(epochs=1, batch_size=2, seq_hop=50),
                doanet_cfg=DoanetConfig(**SMALL), log=lambda *a: None)
    return out, res


def _tags(folder):
    tags = set()
    for f in os.listdir(folder):
        for ev in tf.compat.v1.train.summary_iterator(os.path.join(folder, f)):
            tags |= {v.tag for v in ev.summary.value}
    return tags


def test_run_folder_layout(run, tiny):
    out, res = run
    for name in ("run_config.json", "best.keras", "ckpt/checkpoint", "test_metrics.json", "export/1/saved_model.pb",
                 "predictions/fold1_room1_mix001_ov1.csv", "val_tracks.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "predictions")) == ["fold1_room1_mix001_ov1.csv"]  # the test split
    cfg = json.load(open(os.path.join(out, "run_config.json")))
    assert cfg["loss_config"]["name"] == "full" and cfg["doanet_config"]["conv_filters"] == 8
    assert cfg["data_dir"].endswith("dcase_features_foa_n2") and cfg["hnet"] == os.path.abspath(tiny["hnet"])
    assert set(json.load(open(os.path.join(out, "test_metrics.json")))) == set(METRIC_KEYS)
    assert set(res["test_metrics"]) == set(METRIC_KEYS) and res["best_epoch"] == 1
    assert {"epoch_loss", "epoch_dmotp", "epoch_dmota", "epoch_activity"} <= _tags(os.path.join(out, "tb", "train"))
    assert {"epoch_LE", "epoch_LR", "epoch_MOTA", "epoch_loss"} <= _tags(os.path.join(out, "tb", "validation"))
    assert "validation_tracks" in _tags(os.path.join(out, "tb", "images"))


def test_load_trained_and_export_agree(run):
    out, _ = run
    model, fcfg, dcfg, lcfg = load_trained(out)
    assert (fcfg.fmt, dcfg.conv_filters, lcfg.name) == ("foa", 8, "full")
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


def test_resume_continues_from_checkpoint(run, tiny):
    out, _ = run
    reader = tf.train.load_checkpoint(os.path.join(out, "ckpt"))
    it_key = next(k for k in reader.get_variable_to_shape_map() if "optimizer" in k and "iteration" in k)
    steps_1 = int(reader.get_tensor(it_key))
    logs = []
    res = train(out=out, resume=True, settings=TrainSettings(epochs=2), verbose=0, log=logs.append)
    assert any("after epoch 1" in m for m in logs)
    reader = tf.train.load_checkpoint(os.path.join(out, "ckpt"))
    assert int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    assert int(reader.get_tensor(it_key)) == 2 * steps_1  # the optimizer state was restored, not restarted
    assert res["best_epoch"] in (1, 2)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny["root"], out=out, hnet=tiny["hnet"], verbose=0)


def test_bad_inputs(run, tiny, tmp_path):
    out, _ = run
    feats = json.load(open(os.path.join(out, "run_config.json")))["data_dir"]
    kw = dict(hnet=tiny["hnet"], verbose=0, settings=TrainSettings(epochs=1), doanet_cfg=None)
    with pytest.raises(ConfigError, match=r"feature folder does not match.*fmt='foa'"):
        train(feats, "mic", out=str(tmp_path / "a"), **kw)
    with pytest.raises(ConfigError, match=r"n_max=2 \(expected 3\)"):
        hnet3 = str(tmp_path / "hnet3.keras")
        build_hnet(3, units=8).save(hnet3)
        train(feats, "foa", n_max=3, out=str(tmp_path / "b"), **dict(kw, hnet=hnet3))
    with pytest.raises(ValueError, match="trained for n_max=2"):
        train(feats, "foa", n_max=3, out=str(tmp_path / "c"), **kw)
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
        train(str(bad), "foa", out=str(tmp_path / "d"), **kw)
    # a DCASE folder without a validation fold
    root = write_tiny_dcase(tmp_path / "noval", folds=(1, 3))
    with pytest.raises(ValueError, match="val"):
        train(root, "foa", out=str(tmp_path / "e"), **kw)
    assert not any(os.path.exists(tmp_path / n / "best.keras") for n in "abcde")
