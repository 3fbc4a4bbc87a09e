import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from dtbt_tf.data import augment, dcase
from dtbt_tf.geometry import polar_to_unit

SR = 24000
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT_DIR, "scripts", "augment.py")
LOUD = (3, 1)  # (fold, room) whose ov1 recordings all peak at 0.6 at one sample: every mix of them must be rescaled


def _meta(rows):
    """rows (frame, class, track, azimuth, elevation) -> Metadata."""
    rows = np.asarray(rows, np.float64).reshape(-1, 5)
    return dcase.Metadata(rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64),
                          polar_to_unit(rows[:, 3], rows[:, 4]).reshape(-1, 3))


def _write_recording(root, fold, room, mix, ov, rng, seconds=1.0, sr=SR, cartesian=False):
    stem = dcase.format_name(fold, room, mix, ov)
    n = int(seconds * sr)
    for fmt in ("foa", "mic"):
        audio = (0.2 * rng.standard_normal((n, 4))).clip(-0.45, 0.45)
        if (fold, room) == LOUD and ov == 1:
            audio[100] = 0.6
        dcase.write_audio(os.path.join(root, f"{fmt}_dev", stem + ".wav"), audio, sr)
    if ov == 1:  # class 0 at frames 0-3 in every ov1 recording (so every mix shares a class), another event later
        rows = [(f, 0, 0, -60 + 10 * mix, 10) for f in range(4)]
        rows += [(f, int(rng.integers(1, 4)), 1, 30, -20 + fold) for f in range(5, 9)]
    else:
        rows = [(f, c, 0, az, 0) for f in range(6) for c, az in ((4, 90), (5, -90))]
    dcase.write_metadata(os.path.join(root, "metadata_dev", stem + ".csv"), _meta(rows), cartesian=cartesian)


def make_dataset(root, n_ov1=(4, 3), n_ov2=1, folds=range(1, 7), seed=0):
    """DCASE-layout root: per fold, rooms 1.. with n_ov1[room-1] ov1 recordings, plus n_ov2 ov2 ones in room 1.
    Fold 6 metadata is written in the Cartesian variant."""
    rng = np.random.default_rng(seed)
    for d in ("foa_dev", "mic_dev", "metadata_dev"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for fold in folds:
        mix = 1
        for room, n in enumerate(n_ov1, start=1):
            for _ in range(n):
                _write_recording(root, fold, room, mix, 1, rng, cartesian=fold == 6)
                mix += 1
        for _ in range(n_ov2):
            _write_recording(root, fold, 1, mix, 2, rng, cartesian=fold == 6)
            mix += 1
    return str(root)


def tree_hashes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _read(path):
    return sf.read(path, dtype="float32", always_2d=True)[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def augmented(source, tmp_path_factory):
    before = tree_hashes(source)
    out = str(tmp_path_factory.mktemp("aug") / "aug")
    summary = augment.augment_dataset(source, out, factor=4, seed=0, progress=False)
    assert tree_hashes(source) == before  # the source is never modified
    return out, summary


def test_round_robin_pairs_cover_all_pairs_in_balanced_rounds():
    for n in (2, 3, 6, 7):
        pairs = augment.round_robin_pairs(list(range(n)))
        assert sorted(tuple(sorted(p)) for p in pairs) == [(i, j) for i in range(n) for j in range(i + 1, n)]
        first_round = [x for p in pairs[:n // 2] for x in p]
        assert len(set(first_round)) == len(first_round)


def test_counting_rule_names_and_balance(source, augmented):
    out, summary = augmented
    # training folds 3-6: 7 ov1 and 1 ov2 each -> 4 ov2; factor 4 -> 3 x 4 = 12 new mixes, 16 two-source in all
    assert summary["train_ov2_original"] == 4 and summary["train_ov1"] == 28
    assert summary["new_mixes"] == 12 == (4 - 1) * 4
    recs = {fmt: dcase.discover(out, fmt) for fmt in ("foa", "mic")}
    assert [r.stem for r in recs["foa"]] == [r.stem for r in recs["mic"]]
    train = dcase.split_recordings(recs["foa"], "train")
    assert sum(r.overlap == 2 for r in train) == 16 == summary["train_two_source_total"]
    src = {r.stem: r for r in dcase.discover(source, "foa")}
    new = [r for r in recs["foa"] if r.stem not in src]
    assert len(new) == 12 and all(r.overlap == 2 and r.mix >= 500 and r.fold in (3, 4, 5, 6) for r in new)
    assert len({r.mix for r in new}) == 12
    pairs = set()
    for m in summary["mixes"]:
        a, b, r = src[m["a"]], src[m["b"]], dcase.parse_name(m["name"])
        assert a.overlap == b.overlap == 1 and (a.fold, a.room) == (b.fold, b.room) == r[:2]
        pairs.add(frozenset((m["a"], m["b"])))
    assert len(pairs) == 12
    assert summary["ov1_use_max"] - summary["ov1_use_min"] <= 1
    assert json.load(open(os.path.join(out, augment.SUMMARY_NAME)))["new_mixes"] == 12
    assert not [f for f in tree_hashes(out) if ".tmp" in f or f.startswith(".augment")]
    assert not os.path.exists(out + ".partial")


def test_mix_audio_is_sum_of_sources(source, augmented):
    out, summary = augmented
    q = 1.5 / 32768  # one 16-bit step after rescaling
    n_loud = 0
    for m in summary["mixes"]:
        fold, room = dcase.parse_name(m["name"])[:2]
        for fmt in ("foa", "mic"):
            a = _read(os.path.join(source, f"{fmt}_dev", m["a"] + ".wav"))
            b = _read(os.path.join(source, f"{fmt}_dev", m["b"] + ".wav"))
            mixed = _read(os.path.join(out, f"{fmt}_dev", m["name"] + ".wav"))
            np.testing.assert_allclose(mixed, m["gain"] * (a + b), atol=q, rtol=0)
            assert np.abs(mixed).max() <= augment.PEAK_LIMIT + q
        if (fold, room) == LOUD:
            n_loud += 1
            assert m["gain"] == pytest.approx(augment.PEAK_LIMIT / 1.2, rel=1e-4)  # 0.6 after 16-bit rounding
        else:
            assert m["gain"] == 1.0
            np.testing.assert_array_equal(mixed, a + b)  # exact without rescale
    assert n_loud > 0 and summary["rescaled"] == n_loud


def test_merged_metadata_keeps_tracks_distinct(source, augmented):
    out, summary = augmented
    for m in summary["mixes"]:
        merged_path = os.path.join(out, "metadata_dev", m["name"] + ".csv")
        merged = dcase.read_metadata(merged_path)
        a = dcase.read_metadata(os.path.join(source, "metadata_dev", m["a"] + ".csv"))
        b = dcase.read_metadata(os.path.join(source, "metadata_dev", m["b"] + ".csv"))
        assert merged.frame.size == a.frame.size + b.frame.size
        # both sources have class 0 at frames 0-3: two rows there with different tracks and the two DOAs
        for f in range(4):
            sel = (merged.frame == f) & (merged.cls == 0)
            assert sel.sum() == 2 and len(set(merged.track[sel])) == 2
        got = sorted(map(tuple, np.round(merged.doa, 3)))
        want = sorted(map(tuple, np.round(np.concatenate([a.doa, b.doa]), 3)))
        assert got == want
        doa, active, track_id = dcase.metadata_to_labels(merged, 10, 2, merged_path)
        assert (active[:4] == 1).all() and (track_id[:4, 0] != track_id[:4, 1]).all()
        with open(merged_path) as fh:
            n_cols = fh.readline().count(",") + 1
        assert n_cols == (6 if m["name"].startswith("fold6_") else 5)


def test_val_test_and_originals_are_byte_identical(source, augmented):
    out, _ = augmented
    src, dst = tree_hashes(source), tree_hashes(out)
    assert all(dst[k] == v for k, v in src.items())
    for fold in (1, 2):
        prefix = f"fold{fold}_"
        assert ({k for k in dst if os.path.basename(k).startswith(prefix)}
                == {k for k in src if os.path.basename(k).startswith(prefix)})


def test_deterministic_given_seed(source, augmented, tmp_path):
    out, summary = augmented
    again = augment.augment_dataset(source, str(tmp_path / "again"), factor=4, seed=0, progress=False)
    assert tree_hashes(str(tmp_path / "again")) == tree_hashes(out)
    assert again["run"]["written"] == 12
    other = augment.augment_dataset(source, str(tmp_path / "other"), factor=4, seed=1, progress=False)
    assert [(m["a"], m["b"]) for m in other["mixes"]] != [(m["a"], m["b"]) for m in summary["mixes"]]


def test_finished_output_is_reused_and_foreign_output_refused(source, augmented):
    out, _ = augmented
    before = tree_hashes(out)
    again = augment.augment_dataset(source, out, factor=4, seed=0, progress=False)
    assert again["run"]["already_complete"] and tree_hashes(out) == before
    with pytest.raises(dcase.DataError, match="already exists"):
        augment.augment_dataset(source, out, factor=4, seed=5, progress=False)


def test_resume_after_failure_mid_run(source, augmented, tmp_path):
    ref_out, ref = augmented
    data = str(tmp_path / "data")
    shutil.copytree(source, data)
    # poison a source of the last mix (not of the first): valid header, NaN samples -> fails when mixed
    victim = next(s for s in (ref["mixes"][-1]["a"], ref["mixes"][-1]["b"])
                  if s not in (ref["mixes"][0]["a"], ref["mixes"][0]["b"]))
    victim_path = os.path.join(data, "foa_dev", victim + ".wav")
    bad = np.full((SR, 4), np.nan, np.float32)
    with sf.SoundFile(victim_path, "w", SR, 4, subtype="FLOAT") as fh:  # same inode, so links see the repair
        fh.write(bad)
    out = str(tmp_path / "aug")
    with pytest.raises(dcase.DataError, match="NaN"):
        augment.augment_dataset(data, out, factor=4, seed=0, progress=False)
    assert not os.path.exists(out)  # nothing that could pass for a finished output
    partial = out + ".partial"
    assert not [f for f in tree_hashes(partial) if ".tmp" in f]
    stray = os.path.join(partial, "foa_dev", "x.wav.tmp123.wav")
    open(stray, "w").close()  # what a killed writer leaves behind
    shutil.copyfile(os.path.join(source, "foa_dev", victim + ".wav"), victim_path)
    summary = augment.augment_dataset(data, out, factor=4, seed=0, progress=False)
    assert summary["run"]["reused"] > 0 and summary["run"]["reused"] + summary["run"]["written"] == 12
    assert summary["run"]["files_reused"] > 0
    assert not os.path.exists(partial) and not os.path.exists(stray.replace(partial, out))
    got, want = tree_hashes(out), tree_hashes(ref_out)
    assert got.keys() == want.keys()
    assert all(got[k] == want[k] for k in want if k != augment.SUMMARY_NAME)
    strip = ("source", "run")
    assert {k: v for k, v in summary.items() if k not in strip} == {k: v for k, v in ref.items() if k not in strip}


def test_factor_one_only_copies(source, tmp_path):
    summary = augment.augment_dataset(source, str(tmp_path / "o"), factor=1, progress=False)
    assert summary["new_mixes"] == 0
    got = tree_hashes(str(tmp_path / "o"))
    assert got.pop(augment.SUMMARY_NAME) and got == tree_hashes(source)


def test_plan_pairs_refuses_more_than_distinct_pairs():
    groups = {(3, 1): ["a", "b", "c"], (4, 1): ["d", "e"], (4, 2): ["f"]}
    assert len(augment.plan_pairs(groups, 4, seed=0)) == 4
    with pytest.raises(dcase.DataError, match="cannot make 5 distinct mixes"):
        augment.plan_pairs(groups, 5, seed=0)


def test_merge_metadata_rejects_three_events():
    a = _meta([(0, 1, 0, 0, 0), (0, 2, 0, 90, 0)])
    b = _meta([(0, 1, 0, 45, 0)])
    with pytest.raises(dcase.DataError, match="3 events"):
        augment.merge_metadata(a, b, "m")
    merged = augment.merge_metadata(_meta([(0, 1, 2, 0, 0)]), b, "m")  # shared class 1: B's track 0 -> 3
    np.testing.assert_array_equal(merged.track, [2, 3])


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr naming the problem, exit code 2, nothing written


def _break_lengths(root):
    p = os.path.join(root, "mic_dev", "fold4_room1_mix002_ov1.wav")
    dcase.write_audio(p, np.zeros((SR // 2, 4)))
    return ["fold4_room1_mix001_ov1.wav", "fold4_room1_mix002_ov1.wav", "different lengths"]


def _break_rate(root):
    p = os.path.join(root, "foa_dev", "fold5_room1_mix002_ov1.wav")
    dcase.write_audio(p, np.zeros((SR, 4)), 16000)
    return ["fold5_room1_mix001_ov1.wav", "fold5_room1_mix002_ov1.wav", "different sample rates"]


def _break_metadata(root):
    os.remove(os.path.join(root, "metadata_dev", "fold3_room1_mix002_ov1.csv"))
    return ["fold3_room1_mix002_ov1.wav", "metadata missing"]


def _break_no_ov1(root):
    for d in ("foa_dev", "mic_dev", "metadata_dev"):
        for f in os.listdir(os.path.join(root, d)):
            if "_ov1" in f and not f.startswith(("fold1_", "fold2_")):
                os.remove(os.path.join(root, d, f))
    return ["no single-source (ov1) training recordings"]


def _break_polyphony(root):
    p = os.path.join(root, "metadata_dev", "fold3_room1_mix001_ov1.csv")
    with open(p, "a") as fh:
        fh.write("0,7,0,10,10\n")
    return ["fold3_room1_mix001_ov1.csv", "frame 0 has 2 active events"]


def _break_root(root):
    shutil.rmtree(root)
    return [root, "dataset root not found"]


def _break_layout(root):
    for d in ("foa_dev", "mic_dev"):
        shutil.rmtree(os.path.join(root, d))
    return ["not a DCASE-layout root"]


def _break_mic_twin(root):
    os.remove(os.path.join(root, "mic_dev", "fold6_room1_mix001_ov1.wav"))
    return ["fold6_room1_mix001_ov1.wav", "no mic version"]


@pytest.mark.parametrize("breaker,args", [
    (_break_lengths, []), (_break_rate, []), (_break_metadata, []), (_break_no_ov1, []), (_break_polyphony, []),
    (_break_root, []), (_break_layout, []), (_break_mic_twin, []),
    (None, ["--factor", "9"]), (None, ["--factor", "0"]),
])  # the intact dataset: folds 1-6 with 2 ov1 + 1 ov2 each -> 4 distinct pairs, --factor 2 needs 4
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, breaker, args):
    root = make_dataset(tmp_path / "data", n_ov1=(2,), n_ov2=1)
    if breaker:
        expect = breaker(root)
    elif "9" in args:
        expect = ["needs 32 new mixes", "only 4 distinct", "largest possible --factor is 2"]
    else:
        expect = ["factor must be an integer >= 1"]
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, CLI, "--data", root, "--out", out, "--no-progress", "--factor", "2", *args],
                          capture_output=True, text=True, cwd=ROOT_DIR, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for fragment in expect:
        assert fragment in err, err
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_cli_success_and_occupied_output(tmp_path):
    root = make_dataset(tmp_path / "data", n_ov1=(3,), n_ov2=1)
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, CLI, "--data", root, "--out", out, "--factor", "2", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT_DIR, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 new two-source training recordings" in proc.stdout
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, CLI, "--data", root, "--out", str(foreign), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT_DIR, timeout=120)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert os.listdir(foreign) == ["notes.txt"]
