"""tf.data reader (dtbt_tf.data.pipeline) on a tiny feature folder extracted here."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf.config import ConfigError, FeatureConfig
from dtbt_tf.data import pipeline
from dtbt_tf.data.dcase import DataError
from dtbt_tf.data.tfrecord import extract_dataset


@pytest.fixture(scope="module")
def feat_dir(tmp_path_factory, write_tiny_dataset):
    root = write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    out = str(tmp_path_factory.mktemp("feat"))
    extract_dataset(root, "foa", out, n_max=2, shard_files=2, progress=False)
    return out


@pytest.fixture(scope="module")
def recordings(feat_dir):
    return {s: list(pipeline.iter_recordings(feat_dir, s)) for s in ("train", "val", "test")}


def _epoch(ds):
    feats, labels = [], {"doa": [], "active": [], "track_id": []}
    for x, y in ds:
        feats.append(x.numpy())
        for k in labels:
            labels[k].append(y[k].numpy())
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in labels.items()}


def test_iter_recordings_name_order_and_shapes(feat_dir, recordings):
    man = pipeline.load_manifest(feat_dir)
    for split, recs in recordings.items():
        names = [r[0] for r in recs]
        assert names == sorted(names) == man["splits"][split]["files"]
        for _, feats, labels in recs:
            n_lab = feats.shape[0] // 5
            assert feats.dtype == np.float32 and feats.shape[1:] == (64, 7)
            assert labels["doa"].shape == (n_lab, 2, 3) and labels["doa"].dtype == np.float32
            assert labels["active"].shape == (n_lab, 2) and labels["track_id"].dtype == np.int32


def test_sequences_shapes_dtypes_and_padding(feat_dir, recordings):
    ds = pipeline.make_sequence_dataset(feat_dir, "train", batch_size=3, shuffle=False, seq_frames=50)
    assert ds.element_spec[0].shape.as_list() == [None, 50, 64, 7]
    assert ds.element_spec[1]["track_id"].dtype == tf.int32
    batches = list(ds)
    x, y = _epoch(ds)
    n_seq = sum(-(-(f.shape[0] // 5) // 10) for _, f, _ in recordings["train"])
    assert x.shape == (n_seq, 50, 64, 7) and x.dtype == np.float32
    assert y["doa"].shape == (n_seq, 10, 2, 3) and y["active"].shape == (n_seq, 10, 2)
    assert [b[0].shape[0] for b in batches] == [3] * (n_seq // 3) + ([n_seq % 3] if n_seq % 3 else [])
    # Unshuffled: the sequences of each file, concatenated, are the file (truncated to 5F) then padding.
    i, n_padded = 0, 0
    for _, feats, labels in recordings["train"]:
        n_lab = feats.shape[0] // 5
        k = -(-n_lab // 10)
        got = x[i:i + k].reshape(-1, 64, 7)
        np.testing.assert_array_equal(got[:5 * n_lab], feats[:5 * n_lab])
        assert not got[5 * n_lab:].any()
        for key, pad in (("doa", 10.0), ("active", 0.0), ("track_id", -1)):
            lab = y[key][i:i + k].reshape((-1,) + labels[key].shape[1:])
            np.testing.assert_array_equal(lab[:n_lab], labels[key])
            assert (lab[n_lab:] == pad).all()
        n_padded += len(lab) > n_lab
        i += k
    assert i == n_seq and n_padded == 3  # the 1.0 s and 2.0 s files fill their windows exactly


def test_overlapping_windows(feat_dir, recordings):
    _, feats, labels = recordings["test"][0]  # 1.0 s: 50 frames, 10 label frames
    ds = pipeline.make_sequence_dataset(feat_dir, "test", batch_size=8, shuffle=False, seq_frames=20, seq_hop=10)
    x, y = _epoch(ds)
    assert x.shape[0] == 1 + (10 - 4 + 1) // 2  # windows at label frames 0, 2, 4, 6
    for k in range(x.shape[0]):
        np.testing.assert_array_equal(x[k], feats[10 * k:10 * k + 20])
        np.testing.assert_array_equal(y["active"][k], labels["active"][2 * k:2 * k + 4])


def test_shuffled_epochs_cover_every_frame_once_with_moving_windows(feat_dir, recordings):
    ds = pipeline.make_sequence_dataset(feat_dir, "train", batch_size=4, shuffle=True, seed=3, seq_frames=50)
    want = np.concatenate([f[:5 * (f.shape[0] // 5)] for _, f, _ in recordings["train"]]).reshape(-1, 64 * 7)
    want_active = sum(lab["active"].sum() for _, _, lab in recordings["train"])
    epochs = [_epoch(ds) for _ in range(2)]
    for x, y in epochs:
        frames = x.reshape(-1, 64 * 7)
        frames = frames[frames.any(axis=1)]  # drop padding
        np.testing.assert_array_equal(np.unique(frames, axis=0), np.unique(want, axis=0))
        assert frames.shape[0] == want.shape[0] and y["active"].sum() == want_active
    assert epochs[0][0].shape != epochs[1][0].shape or not np.array_equal(epochs[0][0], epochs[1][0])
    # random offsets: some windows start with padding (never the case unshuffled)
    assert all((~x.reshape(len(x), 50, -1).any(axis=2))[:, 0].any() for x, _ in epochs)
    again = pipeline.make_sequence_dataset(feat_dir, "train", batch_size=4, shuffle=True, seed=3, seq_frames=50)
    np.testing.assert_array_equal(_epoch(again)[0], epochs[0][0])  # seeded: reproducible


def test_repeat_and_drop_remainder(feat_dir):
    ds = pipeline.make_sequence_dataset(feat_dir, "val", batch_size=2, seq_frames=50, repeat=True,
                                        drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [2, 50, 64, 7]
    assert len(list(ds.take(5))) == 5  # the val split has 3 sequences: repeats


def test_default_sequence_length(feat_dir):
    x, y = next(iter(pipeline.make_sequence_dataset(feat_dir, "train", batch_size=2)))
    assert x.shape == (2, 250, 64, 7) and y["doa"].shape == (2, 50, 2, 3) and y["track_id"].shape == (2, 50, 2)


def test_bad_sequence_length_and_split(feat_dir):
    with pytest.raises(ConfigError, match="seq_frames=52"):
        pipeline.make_sequence_dataset(feat_dir, "train", 2, seq_frames=52)
    with pytest.raises(DataError, match="no split 'dev'"):
        pipeline.make_sequence_dataset(feat_dir, "dev", 2)


def test_normalization_stats(feat_dir):
    mean, std = pipeline.normalization_stats(pipeline.load_manifest(feat_dir))
    assert mean.shape == std.shape == (64, 7) and mean.dtype == std.dtype == np.float32
    assert (std > 0).all() and np.isfinite(mean).all()


def test_check_manifest_names_folder_and_fields(feat_dir):
    man = pipeline.load_manifest(feat_dir)
    pipeline.check_manifest(man, FeatureConfig("foa"), 2, feat_dir)
    with pytest.raises(ConfigError) as e:
        pipeline.check_manifest(man, FeatureConfig("mic", n_mels=32), 3, feat_dir)
    msg = str(e.value)
    assert msg.startswith(feat_dir) and "\n" not in msg
    assert "fmt='foa' (expected 'mic')" in msg and "n_mels=64 (expected 32)" in msg and "n_max=2 (expected 3)" in msg


def test_load_manifest_errors(feat_dir, tmp_path):
    with pytest.raises(DataError, match="manifest.json: not found"):
        pipeline.load_manifest(str(tmp_path))
    bad = tmp_path / "bad"
    shutil.copytree(feat_dir, bad)
    man_path = bad / "manifest.json"
    man = json.loads(man_path.read_text())
    man_path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read manifest"):
        pipeline.load_manifest(str(bad))
    man_path.write_text(json.dumps({k: v for k, v in man.items() if k != "normalization"}))
    with pytest.raises(DataError, match=r"missing \['normalization'\]"):
        pipeline.load_manifest(str(bad))
    man_path.write_text(json.dumps(dict(man, feature_config=dict(man["feature_config"], fmt="xyz"))))
    with pytest.raises(DataError, match="malformed manifest"):
        pipeline.load_manifest(str(bad))
    man_path.write_text(json.dumps(man))
    os.remove(bad / man["splits"]["val"]["shards"][0])
    with pytest.raises(DataError, match="val-00000-of-00001.tfrecord: shard of split 'val'"):
        pipeline.load_manifest(str(bad))
