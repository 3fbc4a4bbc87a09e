import os

import numpy as np
import pytest

from dtbt_tf.data import dcase
from dtbt_tf.geometry import polar_to_unit


def _meta(rows):
    return dcase.parse_metadata("\n".join(",".join(str(v) for v in r) for r in rows))


def test_name_roundtrip_and_bad_name():
    name = dcase.format_name(3, 2, 7, 1)
    assert name == "fold3_room2_mix007_ov1"
    assert dcase.parse_name(f"/x/{name}.wav") == (3, 2, 7, 1)
    with pytest.raises(dcase.DataError, match="bad.wav"):
        dcase.parse_name("/x/bad.wav")


def test_polar_and_cartesian_rows_agree(tmp_path):
    polar = _meta([(0, 1, 0, 90, 0), (1, 1, 0, -45, 30)])
    x, y, z = polar_to_unit(-45, 30)
    cart = dcase.parse_metadata(f"0,1,0,0,1,0\n1,1,0,{x},{y},{z}\n")
    np.testing.assert_allclose(polar.doa, cart.doa, atol=1e-9)
    np.testing.assert_allclose(polar.doa[0], [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize("row,msg", [
    ("0,1,0,200,0", "out of range"),
    ("0,1,0,10", "5 or 6 columns"),
    ("0,a,0,10,0", "row 1"),
    ("0,1,0,nan,0", "non-finite"),
    ("0,1,0,3,3,3", "length"),
])
def test_malformed_rows_name_file_and_row(tmp_path, row, msg):
    p = tmp_path / "fold1_room1_mix001_ov1.csv"
    p.write_text(row + "\n")
    with pytest.raises(dcase.DataError, match=msg) as e:
        dcase.read_metadata(str(p))
    assert str(p) in str(e.value)


def test_write_read_roundtrip(tmp_path):
    meta = _meta([(0, 3, 0, 10, -20), (0, 5, 1, -170, 45), (2, 3, 0, 179, 0)])
    p = str(tmp_path / "m.csv")
    dcase.write_metadata(p, meta)
    back = dcase.read_metadata(p)
    np.testing.assert_array_equal(back.frame, meta.frame)
    np.testing.assert_allclose(back.doa, meta.doa, atol=1e-9)
    dcase.write_metadata(p, meta, cartesian=True)
    np.testing.assert_allclose(dcase.read_metadata(p).doa, meta.doa, atol=1e-3)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_stable_slots_and_new_runs():
    # track A (class 1, track 0) frames 0-4; B (class 2, track 0) frames 1-2; C (class 3) frames 3-4;
    # A again after a gap at frames 6-7 is a new run with a new id.
    rows = [(f, 1, 0, 0, 0) for f in range(5)] + [(f, 2, 0, 90, 0) for f in (1, 2)]
    rows += [(f, 3, 0, -90, 0) for f in (3, 4)] + [(f, 1, 0, 180, 0) for f in (6, 7)]
    doa, active, tid = dcase.metadata_to_labels(_meta(rows), 9, 2)
    assert doa.shape == (9, 2, 3) and active.shape == (9, 2) and tid.dtype == np.int32
    # A keeps slot 0 throughout; B takes slot 1; C reuses free slot 1 after B ended
    assert list(tid[:, 0]) == [0, 0, 0, 0, 0, -1, 3, 3, -1]
    assert list(tid[:, 1]) == [-1, 1, 1, 2, 2, -1, -1, -1, -1]
    np.testing.assert_allclose(doa[1, 1], [0, 1, 0], atol=1e-6)
    assert np.all(doa[5] == 10.0) and active[5].sum() == 0
    # when the slot-0 source ends, the slot-1 source must not move to slot 0
    rows = [(f, 1, 0, 0, 0) for f in range(2)] + [(f, 2, 0, 90, 0) for f in range(4)]
    _, active, tid = dcase.metadata_to_labels(_meta(rows), 4, 2)
    assert list(tid[:, 1]) == [1, 1, 1, 1] and list(active[:, 0]) == [1, 1, 0, 0]


def test_too_many_sources_is_an_error():
    rows = [(0, c, 0, 10 * c, 0) for c in range(3)]
    with pytest.raises(dcase.DataError, match="n_max=2"):
        dcase.metadata_to_labels(_meta(rows), 1, 2, path="x.csv")


def test_discover_splits_and_audio_checks(tmp_path):
    root = tmp_path / "ds"
    for d in ("foa_dev", "metadata_dev"):
        (root / d).mkdir(parents=True)
    sr = 24000
    for fold in (1, 2, 3):
        stem = dcase.format_name(fold, 1, 1, 1)
        dcase.write_audio(str(root / "foa_dev" / f"{stem}.wav"), np.zeros((sr // 10, 4)), sr)
        (root / "metadata_dev" / f"{stem}.csv").write_text("0,1,0,0,0\n")
    recs = dcase.discover(str(root), "foa")
    assert [r.fold for r in recs] == [1, 2, 3] and all(r.metadata_path for r in recs)
    assert [r.fold for r in dcase.split_recordings(recs, "train")] == [3]
    with pytest.raises(dcase.DataError, match="empty"):
        dcase.split_recordings(recs, "train", {"train": (5,)})
    with pytest.raises(dcase.DataError, match="mic"):
        dcase.discover(str(root), "mic")
    assert dcase.load_audio(recs[0].audio_path).shape == (sr // 10, 4)
    bad = str(tmp_path / "fold1_room1_mix001_ov1.wav")
    dcase.write_audio(bad, np.zeros((100, 2)), sr)
    with pytest.raises(dcase.DataError, match="2 channels"):
        dcase.load_audio(bad)
    dcase.write_audio(bad, np.zeros((100, 4)), 16000)
    with pytest.raises(dcase.DataError, match="16000"):
        dcase.load_audio(bad)


def test_eval_folder_mix_names_get_fold_zero(tmp_path):
    root = tmp_path / "ds"
    (root / "foa_eval").mkdir(parents=True)
    dcase.write_audio(str(root / "foa_eval" / "mix007.wav"), np.zeros((240, 4)))
    (rec,) = dcase.discover(str(root), "foa")
    assert (rec.fold, rec.mix, rec.metadata_path) == (0, 7, None)
