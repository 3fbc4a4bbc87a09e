"""One job per folder and no silent loss for feature extraction, augmentation, synthetic datasets and Hnet
training (issue 14): the folder lock, a finished feature folder of another dataset, metadata past the end of the
audio, leftover temporaries."""
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from dtbt_tf.artifacts import LOCK_FILE, FolderLock
from dtbt_tf.config import ConfigError
from dtbt_tf.data import dcase

SMALL = [(1, 1.0), (2, 1.0), (3, 1.0)]  # one file per split (test, val, train), 10 label frames each
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "extract_features.py")
_HOLDER = """import sys
from dtbt_tf.artifacts import FolderLock
with FolderLock(sys.argv[1], "test job"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(folder):
    """The folder's lock held by a live child process (a lock of this process would be its own to retake)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_stale_lock(folder, pid):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_FILE), "w") as f:
        f.write(f"{pid} {socket.gethostname()}\n")


def write_dataset(root, files=SMALL, seed=0):
    """A DCASE2020-layout root (foa_dev, metadata_dev): per (fold, seconds) one noise recording (4 channels,
    24 kHz) with one moving source over label frames 1 .. n-2 (named ov1)."""
    from dtbt_tf.geometry import polar_to_unit

    rng = np.random.default_rng(seed)
    for sub in ("foa_dev", "metadata_dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, (fold, seconds) in enumerate(files):
        stem = dcase.format_name(fold, 1, i + 1, 1)
        dcase.write_audio(os.path.join(root, "foa_dev", stem + ".wav"),
                          0.05 * rng.standard_normal((int(seconds * 24000), 4)))
        frames = np.arange(1, int(seconds * 10) - 1)
        meta = dcase.Metadata(frames, 0 * frames, 0 * frames, polar_to_unit(-60.0 + 5 * frames, 0.0 * frames))
        dcase.write_metadata(os.path.join(root, "metadata_dev", stem + ".csv"), meta)
    return str(root)


def _manifest(out):
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def extract():
    from dtbt_tf.data.tfrecord import extract_dataset

    return lambda root, out, **kw: extract_dataset(root, "foa", str(out), progress=False, workers=1, **kw)


# ----------------------------------------------------------------------------------------------------------
# FolderLock


def test_folder_lock_holds_pid_and_is_released(tmp_path):
    folder = tmp_path / "job"
    with FolderLock(str(folder), "test job") as lock:
        assert lock.held
        with open(folder / LOCK_FILE) as f:
            assert f.read().split() == [str(os.getpid()), socket.gethostname()]
    assert not (folder / LOCK_FILE).exists() and not lock.held
    lock.release()  # a second release is harmless


def test_folder_lock_of_a_live_process_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "job"
    with held_by_another_process(folder) as pid:
        with pytest.raises(ConfigError) as e:
            FolderLock(str(folder), "feature extraction").acquire()
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{folder}: in use by another feature extraction")
        assert f"process {pid}" in msg
        assert (folder / LOCK_FILE).read_text().split()[0] == str(pid)  # the holder's lock is untouched
    assert not (folder / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    folder = tmp_path / "job"
    pid = dead_pid()
    write_stale_lock(folder, pid)
    said = []
    with FolderLock(str(folder), "test job", log=said.append):
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert said == [f"{folder}: taking over the stale lock of process {pid} (no longer running)"]


# ----------------------------------------------------------------------------------------------------------
# Feature extraction


def test_concurrent_extract_is_refused_at_once_and_writes_nothing(tiny, extract, tmp_path):
    out = tmp_path / "feat"
    with held_by_another_process(out) as pid:
        with pytest.raises(ConfigError, match=f"in use by another feature extraction \\(process {pid}"):
            extract(tiny, out)
        assert os.listdir(out) == [LOCK_FILE]


def test_concurrent_extract_cli_is_one_error_line_exit_2(tiny, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("extract_features_cli", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "feat"
    with held_by_another_process(out):
        rc = mod.main(["--data", tiny, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {out}: in use by another feature extraction")


def test_stale_lock_is_taken_over_and_leftover_temporaries_removed(tiny, extract, tmp_path, capsys):
    out = tmp_path / "feat"
    extract(tiny, out)
    before = _manifest(out)
    leftovers = ["manifest.json.tmp4242", "train-00000-of-00001.tfrecord.tmp4242",
                 "train-00000-of-00001.tfrecord.json.tmp4242"]
    for name in leftovers:
        (out / name).write_text("left by a killed run")
    pid = dead_pid()
    write_stale_lock(out, pid)
    extract(tiny, out)
    assert f"taking over the stale lock of process {pid}" in capsys.readouterr().err
    assert _manifest(out) == before
    assert not [f for f in os.listdir(out) if ".tmp" in f or f == LOCK_FILE]


def test_other_dataset_is_refused_unless_overwrite(tiny, extract, tmp_path):
    out = tmp_path / "feat"
    extract(tiny, out)
    before = _manifest(out)
    other = str(tmp_path / "other")
    shutil.copytree(tiny, other)  # same files, another dataset root
    with pytest.raises(ConfigError) as e:
        extract(other, out)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(out / "manifest.json"))
    assert "another dataset" in msg and "--overwrite" in msg
    with pytest.raises(ConfigError, match="other splits"):  # same recordings, another split plan
        extract(tiny, out, splits={"test": (1,), "val": (2,), "train": (3,)})
    assert _manifest(out) == before
    extract(tiny, out)  # the same job again is fine
    extract(other, out, overwrite=True)
    assert _manifest(out)["source"]["root"] == os.path.abspath(other)
    assert _manifest(out)["normalization"] == before["normalization"]


def test_metadata_past_the_end_of_the_audio_is_refused(tmp_path, extract):
    root = write_dataset(tmp_path / "data")
    rec = [r for r in dcase.discover(root, "foa") if r.fold == 3][0]
    with open(rec.metadata_path, "a") as f:
        f.write("10,1,0,20,0\n")  # a 1 s file has label frames 0-9
    out = tmp_path / "feat"
    with pytest.raises(dcase.DataError) as e:
        extract(root, out)
    assert str(e.value) == f"{rec.metadata_path}: frame 10 lies past the end of the audio (10 label frames)"
    assert not out.exists()


def test_metadata_to_labels_refuses_rows_past_the_end():
    meta = dcase.Metadata(np.array([0, 4]), np.array([1, 1]), np.array([0, 0]), np.eye(3)[:2])
    assert dcase.metadata_to_labels(meta, 5, 2)[1].sum() == 2
    with pytest.raises(dcase.DataError, match="x.csv: frame 4 lies past the end"):
        dcase.metadata_to_labels(meta, 4, 2, path="x.csv")


# ----------------------------------------------------------------------------------------------------------
# Augmentation


def test_concurrent_augment_is_refused_and_writes_nothing(tiny, tmp_path):
    from dtbt_tf.data.augment import augment_dataset

    out = str(tmp_path / "aug")
    with held_by_another_process(out + ".partial") as pid:
        with pytest.raises(ConfigError, match=f"in use by another augmentation \\(process {pid}"):
            augment_dataset(tiny, out, factor=1, progress=False)
        assert os.listdir(out + ".partial") == [LOCK_FILE]
    assert not os.path.exists(out)


def test_augment_takes_over_a_stale_lock_and_leaves_no_lock(tiny, tmp_path, capsys):
    from dtbt_tf.data.augment import SUMMARY_NAME, augment_dataset

    out = str(tmp_path / "aug")
    pid = dead_pid()
    write_stale_lock(out + ".partial", pid)
    summary = augment_dataset(tiny, out, factor=1, progress=False)
    assert f"taking over the stale lock of process {pid}" in capsys.readouterr().err
    assert summary["new_mixes"] == 0 and os.path.isfile(os.path.join(out, SUMMARY_NAME))
    assert not os.path.exists(out + ".partial") and LOCK_FILE not in os.listdir(out)


# ----------------------------------------------------------------------------------------------------------
# Synthetic datasets and Hnet training


def test_make_dataset_holds_the_folder_lock_and_releases_it(tmp_path):
    from dtbt_tf.data.synth import get_preset, make_dataset

    cfg = get_preset("tiny").replace(name="one", n_folds=1, scenes_per_fold=1, scene_seconds=2.0)
    out = tmp_path / "synth"
    with held_by_another_process(out) as pid:
        with pytest.raises(ConfigError, match=f"in use by another dataset job \\(process {pid}"):
            make_dataset(cfg, out=str(out), fmt="foa", workers=1, progress=False)
        assert os.listdir(out) == [LOCK_FILE]  # the lock alone: not "a folder of other files"
    make_dataset(cfg, out=str(out), fmt="foa", workers=1, progress=False)
    assert LOCK_FILE not in os.listdir(out) and (out / "synth_config.json").is_file()


def test_killed_hnet_export_temporaries_are_removed_live_ones_kept(tmp_path):
    from dtbt_tf.hnet.training import _remove_dead_exports

    out = tmp_path / "hnet_n2"
    dead, live = dead_pid(), os.getpid()
    for name in (f"hnet_n2.tmp{dead}", f"hnet_n2.old{dead}", f"hnet_n2.tmp{live}", f"hnet_n3.tmp{dead}"):
        (tmp_path / name).mkdir()
    _remove_dead_exports(out)
    assert sorted(os.listdir(tmp_path)) == sorted([f"hnet_n2.tmp{live}", f"hnet_n3.tmp{dead}"])


def test_a_training_waits_for_another_job_on_its_feature_folder_then_reuses_it(tiny, extract, tmp_path):
    """Two trainings started together on one DCASE root: the second waits for the first's extraction (here a
    holder that releases the lock after a moment) instead of failing, then reuses the finished folder."""
    import threading

    from dtbt_tf.data.resolve import resolve_data

    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    out = f"{root}_features_foa_n2"
    extract(str(root), out)
    said = []
    with held_by_another_process(out) as pid:
        proc_done = threading.Event()
        result = {}

        def second():
            result["dir"] = resolve_data(str(root), "foa", 2, progress=False, log=said.append)
            proc_done.set()

        t = threading.Thread(target=second)
        t.start()
        assert not proc_done.wait(3.0)  # still waiting while the other job holds the folder
    t.join(timeout=120)
    assert result["dir"] == out and os.path.isfile(os.path.join(out, "manifest.json"))
    assert len(said) == 1 and f"process {pid}" in said[0] and said[0].endswith("waiting for it to finish")
