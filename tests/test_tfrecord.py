"""Feature extraction job (dtbt_tf.data.tfrecord) on a tiny DCASE-layout folder written here."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf import __version__
from dtbt_tf.config import ConfigError, FeatureConfig, to_dict
from dtbt_tf.data import dcase
from dtbt_tf.data.tfrecord import extract_dataset
from dtbt_tf.features.tf_features import extract_features


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, write_tiny_dataset):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def extracted(tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("feat"))
    extract_dataset(tiny, "foa", out, n_max=2, shard_files=2, workers=2, progress=False)
    return out


def _read_shard(path):
    out = []
    for rec in tf.data.TFRecordDataset(path):
        f = tf.train.Example.FromString(rec.numpy()).features.feature
        tensor = lambda k, dt: tf.io.parse_tensor(f[k].bytes_list.value[0], dt).numpy()  # noqa: E731
        out.append(dict(name=f["name"].bytes_list.value[0].decode(), fold=f["fold"].int64_list.value[0],
                        n_frames=f["n_frames"].int64_list.value[0], features=tensor("features", tf.float32),
                        doa=tensor("doa", tf.float32), active=tensor("active", tf.float32),
                        track_id=tensor("track_id", tf.int32)))
    return out


def _manifest(out):
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def test_roundtrip_features_and_labels(tiny, extracted):
    man = _manifest(extracted)
    recs = {r.stem: r for r in dcase.discover(tiny, "foa")}
    seen = []
    for split, info in man["splits"].items():
        for shard in info["shards"]:
            for ex in _read_shard(os.path.join(extracted, shard)):
                rec = recs[ex["name"]]
                seen.append(ex["name"])
                assert rec.fold in dcase.DEFAULT_SPLITS[split] and ex["fold"] == rec.fold
                want = extract_features(dcase.load_audio(rec.audio_path), FeatureConfig("foa")).numpy()
                assert ex["features"].dtype == np.float32 and ex["features"].shape == want.shape
                assert ex["n_frames"] == want.shape[0] == len(dcase.load_audio(rec.audio_path)) // 480
                np.testing.assert_allclose(ex["features"], want, rtol=1e-5, atol=1e-4)
                labels = dcase.metadata_to_labels(dcase.read_metadata(rec.metadata_path), want.shape[0] // 5, 2)
                for got, ref in zip((ex["doa"], ex["active"], ex["track_id"]), labels):
                    assert got.dtype == ref.dtype
                    np.testing.assert_array_equal(got, ref)
    assert sorted(seen) == sorted(recs)


def test_manifest_contents_and_train_statistics(tiny, extracted):
    man = _manifest(extracted)
    assert man["dtbt_tf_version"] == __version__
    assert man["feature_config"] == to_dict(FeatureConfig("foa")) and man["n_max"] == 2
    assert man["source"] == {"root": os.path.abspath(tiny), "format": "foa"}
    recs = dcase.discover(tiny, "foa")
    for split, folds in dcase.DEFAULT_SPLITS.items():
        info = man["splits"][split]
        names = [r.stem for r in recs if r.fold in folds]
        frames = [len(dcase.load_audio(r.audio_path)) // 480 for r in recs if r.fold in folds]
        assert info["files"] == names and info["n_files"] == len(names) and info["folds"] == list(folds)
        assert info["n_frames"] == sum(frames) and info["n_label_frames"] == sum(t // 5 for t in frames)
        assert len(info["shards"]) == -(-len(names) // 2)
        assert all(os.path.isfile(os.path.join(extracted, s)) for s in info["shards"])
    assert man["splits"]["train"]["shards"][0] == "train-00000-of-00003.tfrecord"
    train = np.concatenate([extract_features(dcase.load_audio(r.audio_path), FeatureConfig("foa")).numpy()
                            for r in recs if r.fold >= 3]).astype(np.float64)
    norm = man["normalization"]
    assert norm["split"] == "train" and norm["n_frames"] == train.shape[0]
    np.testing.assert_allclose(norm["mean"], train.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm["std"], train.std(0), rtol=1e-4, atol=1e-5)
    assert np.asarray(norm["mean"]).shape == (64, 7)


def test_statistics_ignore_test_and_val_data(tiny, extracted, tmp_path):
    loud = str(tmp_path / "loud")
    shutil.copytree(tiny, loud)
    for rec in dcase.discover(loud, "foa"):
        if rec.fold in (1, 2):  # test and validation files 15x louder
            dcase.write_audio(rec.audio_path, 15 * dcase.load_audio(rec.audio_path))
    out = str(tmp_path / "feat")
    extract_dataset(loud, "foa", out, shard_files=2, progress=False)
    new, old = _manifest(out), _manifest(extracted)
    assert new["normalization"] == old["normalization"]
    assert new["splits"]["test"]["n_frames"] == old["splits"]["test"]["n_frames"]
    loud_test = _read_shard(os.path.join(out, new["splits"]["test"]["shards"][0]))[0]["features"]
    orig_test = _read_shard(os.path.join(extracted, old["splits"]["test"]["shards"][0]))[0]["features"]
    assert loud_test[..., :4].mean() > orig_test[..., :4].mean() + 20  # +23.5 dB in the log-mel channels


def test_resume_rewrites_only_missing_shard(tiny, tmp_path):
    out = str(tmp_path / "feat")
    extract_dataset(tiny, "foa", out, shard_files=2, progress=False)
    before = _manifest(out)
    shards = [s for info in before["splits"].values() for s in info["shards"]]
    mtimes = {s: os.stat(os.path.join(out, s)).st_mtime_ns for s in shards}
    victim = "train-00001-of-00003.tfrecord"
    os.remove(os.path.join(out, victim))
    corrupt = "val-00000-of-00001.tfrecord"  # a truncated shard (size differs from its index) is redone too
    with open(os.path.join(out, corrupt), "r+b") as f:
        f.truncate(100)
    with open(os.path.join(out, "test-00000-of-00001.tfrecord.tmp999"), "w") as f:
        f.write("left by a killed run")
    extract_dataset(tiny, "foa", out, shard_files=2, progress=False)
    after = {s: os.stat(os.path.join(out, s)).st_mtime_ns for s in shards}
    redone = {s for s in shards if after[s] != mtimes[s]}
    assert redone == {victim, corrupt}
    assert _manifest(out) == before
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_rerun_on_finished_folder_never_removes_its_manifest(tiny, tmp_path, monkeypatch):
    """A second job reusing a finished folder (train.py reruns extraction) must not make the manifest vanish
    under a job that is reading it."""
    out = str(tmp_path / "feat")
    extract_dataset(tiny, "foa", out, shard_files=2, progress=False)
    before = _manifest(out)
    shards = [s for info in before["splits"].values() for s in info["shards"]]
    mtimes = {s: os.stat(os.path.join(out, s)).st_mtime_ns for s in shards}
    remove = os.remove

    def guarded_remove(path, *a, **kw):
        assert os.path.basename(path) != "manifest.json", "manifest removed on a finished folder"
        remove(path, *a, **kw)

    monkeypatch.setattr(os, "remove", guarded_remove)
    extract_dataset(tiny, "foa", out, shard_files=2, progress=False)
    assert _manifest(out) == before
    assert {s: os.stat(os.path.join(out, s)).st_mtime_ns for s in shards} == mtimes


def test_one_thread_and_two_threads_write_identical_shards(tiny, extracted, tmp_path):
    out = str(tmp_path / "feat")
    extract_dataset(tiny, "foa", out, n_max=2, shard_files=2, workers=1, progress=False)
    shards = [s for info in _manifest(out)["splits"].values() for s in info["shards"]]
    assert len(shards) == 5
    for s in shards:
        with open(os.path.join(out, s), "rb") as a, open(os.path.join(extracted, s), "rb") as b:
            assert a.read() == b.read(), s


def test_changed_shard_plan_replaces_old_shards(tiny, tmp_path):
    out = str(tmp_path / "feat")
    extract_dataset(tiny, "foa", out, shard_files=2, progress=False)
    extract_dataset(tiny, "foa", out, shard_files=8, progress=False)
    man = _manifest(out)
    assert man["splits"]["train"]["shards"] == ["train-00000-of-00001.tfrecord"]
    want = {s for info in man["splits"].values() for s in info["shards"]}
    assert set(os.listdir(out)) == want | {s + ".json" for s in want} | {"manifest.json"}


def test_folder_of_another_config_is_refused(tiny, extracted):
    before = sorted(os.listdir(extracted))
    with pytest.raises(ConfigError, match="another job"):
        extract_dataset(tiny, "foa", extracted, n_max=3, shard_files=2, progress=False)
    assert sorted(os.listdir(extracted)) == before


def _break(root, what):
    recs = dcase.discover(root, "foa")
    rec = [r for r in recs if r.fold == 4][0]
    if what == "channels":
        dcase.write_audio(rec.audio_path, np.zeros((24000, 3)))
        return rec.audio_path, "3 channels"
    if what == "rate":
        dcase.write_audio(rec.audio_path, np.zeros((24000, 4)), sample_rate=16000)
        return rec.audio_path, "sample rate 16000"
    if what == "csv":
        with open(rec.metadata_path, "a") as f:
            f.write("12,1,0,400,0\n")
        return rec.metadata_path, "out of range"
    if what == "no_csv":
        os.remove(rec.metadata_path)
        return rec.audio_path, "no metadata"
    if what == "sources":  # three simultaneous sources with n_max = 2
        with open(rec.metadata_path, "a") as f:
            f.write("5,7,3,0,0\n")
        return rec.metadata_path, "n_max=2"
    if what == "empty_split":
        for r in recs:
            if r.fold == 2:
                os.remove(r.audio_path)
        return root, "split 'val'"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["channels", "rate", "csv", "no_csv", "sources", "empty_split"])
def test_bad_input_names_file_and_writes_nothing(tmp_path, what, write_tiny_dataset):
    root = write_tiny_dataset(tmp_path / "data", files=[(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)])
    path, msg = _break(root, what)
    out = tmp_path / "feat"
    with pytest.raises(dcase.DataError, match=msg) as e:
        extract_dataset(root, "foa", str(out), progress=False)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)
    assert not out.exists()


def test_unknown_format_and_missing_root(tmp_path):
    with pytest.raises(dcase.DataError, match="unknown format"):
        extract_dataset(str(tmp_path), "stereo", str(tmp_path / "o"), progress=False)
    with pytest.raises(dcase.DataError, match="not found"):
        extract_dataset(str(tmp_path / "nope"), "mic", str(tmp_path / "o"), progress=False)
    assert not (tmp_path / "o").exists()


def test_custom_splits(tiny, tmp_path):
    out = str(tmp_path / "feat")
    extract_dataset(tiny, "foa", out, splits={"train": (2, 3, 4, 5, 6), "test": (1,)}, progress=False)
    man = _manifest(out)
    assert sorted(man["splits"]) == ["test", "train"] and man["splits"]["train"]["n_files"] == 6
    with pytest.raises(ConfigError, match="fold 2 is in both"):
        extract_dataset(tiny, "foa", str(tmp_path / "o"), splits={"train": (2, 3), "val": (2,)}, progress=False)
    with pytest.raises(ConfigError, match="no 'train' split"):
        extract_dataset(tiny, "foa", str(tmp_path / "o"), splits={"test": (1,)}, progress=False)
    assert not (tmp_path / "o").exists()
