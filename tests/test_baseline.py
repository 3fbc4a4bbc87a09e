"""Tests of dtbt_tf.baseline and scripts/baseline.py on synthetic free-field scenes built here.

Scene (3 s, 30 label frames): frames 0-9 background noise only, 10-19 source 1, 20-29 sources 1 and 2
(incoherent band noises, 300-1500 Hz and 1800-3400 Hz, at well-separated directions). FOA: plane waves encoded
with the SN3D gains (1, y, z, x) in ACN order; MIC: exact (frequency-domain) delays at the capsule positions.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from dtbt_tf.baseline import BaselineConfig, assign_tracks, make_locator, reference_counts
from dtbt_tf.data.dcase import Metadata, read_metadata, write_audio, write_metadata
from dtbt_tf.geometry import SPEED_OF_SOUND, angular_distance_deg, mic_capsule_positions, polar_to_unit
from dtbt_tf.metrics import compute_metrics, tracks_from_metadata

FS = 24000
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "baseline.py")
DIRS = ((30.0, 10.0), (-100.0, -20.0))  # (azimuth, elevation) of sources 1 and 2, degrees
TOL_DEG = 3.0
N = 3 * FS
# frames judged: 3 or more away from a change of the source count (2 frames of context + STFT smoothing)
STEADY = {0: range(0, 7), 1: range(13, 17), 2: range(23, 30)}


def _sources(rng):
    out = []
    for (lo, hi), start in (((300, 1500), 1 * FS), ((1800, 3400), 2 * FS)):
        x = sosfilt(butter(6, [lo, hi], btype="band", fs=FS, output="sos"), rng.normal(size=N))
        x[:start] = 0.0
        out.append(x / x[start:].std())
    return out


def _scene(fmt, seed=0):
    """(samples, 4) float32 audio of the scene and its reference Metadata."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((N, 4))
    freqs = np.fft.rfftfreq(N, 1 / FS)
    for s, (az, el) in zip(_sources(rng), DIRS):
        u = polar_to_unit(az, el)
        if fmt == "foa":
            audio += s[:, None] * np.array([1.0, u[1], u[2], u[0]])  # W, Y, Z, X (SN3D)
        else:  # a capsule at r hears the plane wave (r . u) / c earlier than the array centre
            spec = np.fft.rfft(s)
            for m, r in enumerate(mic_capsule_positions()):
                audio[:, m] += np.fft.irfft(spec * np.exp(2j * np.pi * freqs * (r @ u) / SPEED_OF_SOUND), N)
    gains = [1, 3 ** -0.5, 3 ** -0.5, 3 ** -0.5] if fmt == "foa" else [1, 1, 1, 1]  # isotropic background
    audio += 0.03 * rng.normal(size=(N, 4)) * np.array(gains)
    rows = [(t, 0, 0, *DIRS[0]) for t in range(10, 30)] + [(t, 1, 1, *DIRS[1]) for t in range(20, 30)]
    frame, cls, track, az, el = (np.array(c) for c in zip(*rows))
    return (0.1 * audio).astype(np.float32), Metadata(frame, cls, track, polar_to_unit(az, el))


def _errors(doas, want):
    """Angular errors (deg) of a frame's DOAs against the wanted directions, best assignment (<= 2 sources)."""
    ref = polar_to_unit(*np.array(want).T).reshape(-1, 3)
    d = angular_distance_deg(np.asarray(doas)[:, None], ref[None])
    if d.shape == (2, 2):
        return d.diagonal() if np.trace(d) <= d[0, 1] + d[1, 0] else np.array([d[0, 1], d[1, 0]])
    return d.min(axis=1)


@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_oracle_count_recovers_directions(fmt):
    audio, meta = _scene(fmt)
    counts = reference_counts(meta, 30, "ref")
    assert list(counts) == [0] * 10 + [1] * 10 + [2] * 10
    doas = make_locator(BaselineConfig(fmt=fmt)).locate(audio, counts)
    assert [len(d) for d in doas] == list(counts)
    for k in (1, 2):
        for t in STEADY[k]:
            assert np.all(_errors(doas[t], DIRS[:k]) < TOL_DEG), (t, _errors(doas[t], DIRS[:k]))


@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_detection_threshold_counts_and_directions(fmt):
    audio, _ = _scene(fmt)
    doas = make_locator(BaselineConfig(fmt=fmt)).locate(audio)
    for k, frames in STEADY.items():
        for t in frames:
            assert len(doas[t]) == k, (t, len(doas[t]))
            assert np.all(_errors(doas[t], DIRS[:k]) < TOL_DEG) if k else True
    one = make_locator(BaselineConfig(fmt=fmt, max_sources=1)).locate(audio)
    assert all(len(one[t]) == 1 for t in STEADY[2])


def test_assign_tracks_keeps_ids_by_nearest_direction():
    a, b, c = polar_to_unit([0, 90, -150], [0, 0, 0])
    meta = assign_tracks([np.stack([a, b]), np.stack([b, a]), b[None], np.zeros((0, 3)), b[None], c[None]])
    assert meta.frame.tolist() == [0, 0, 1, 1, 2, 4, 5]
    assert meta.track.tolist() == [0, 1, 1, 0, 1, 2, 3]  # order-independent ids; a gap or a far jump: new id
    assert np.all(meta.cls == 0)
    meta = assign_tracks([a[None], polar_to_unit(30, 0)[None]], gate_deg=45)
    assert meta.track.tolist() == [0, 0]


def test_reference_rows_beyond_the_audio_are_an_error():
    meta = Metadata(np.array([0, 40]), np.zeros(2, np.int64), np.zeros(2, np.int64), np.eye(3)[:2])
    with pytest.raises(ValueError, match="ref.csv: frame 40 is beyond the audio"):
        reference_counts(meta, 30, "ref.csv")


# ----------------------------------------------------------------------------------------------------------
# Script


def _script():
    spec = importlib.util.spec_from_file_location("baseline_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fail(capsys, args, *parts):
    assert _script().main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for part in parts:
        assert part in err[0], err[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A DCASE-layout folder with one FOA scene, its metadata and a 2-channel wav."""
    root = tmp_path_factory.mktemp("scene")
    for sub in ("foa", "meta", "bad", "other"):
        (root / sub).mkdir()
    audio, meta = _scene("foa")
    write_audio(str(root / "foa" / "fold1_room1_mix001_ov2.wav"), audio)
    write_audio(str(root / "other" / "fold1_room1_mix001_ov2.wav"), audio)
    write_metadata(str(root / "meta" / "fold1_room1_mix001_ov2.csv"), meta)
    write_audio(str(root / "bad" / "fold1_room1_mix002_ov1.wav"), audio[:, :2])
    return root


def test_script_oracle_and_detection_write_scored_csvs(files, tmp_path):
    wav = str(files / "foa" / "fold1_room1_mix001_ov2.wav")
    ref = tracks_from_metadata(read_metadata(str(files / "meta" / "fold1_room1_mix001_ov2.csv")))
    for extra, min_lr in ((["--ref", str(files / "meta")], 1.0), ([], 0.85)):
        out = tmp_path / ("oracle" if extra else "detect")
        assert _script().main([wav, "--format", "foa", "--out", str(out), *extra]) == 0
        assert os.listdir(out) == ["fold1_room1_mix001_ov2.csv"]
        pred = read_metadata(str(out / "fold1_room1_mix001_ov2.csv"))
        assert np.all(pred.cls == 0) and pred.frame.max() < 30
        m = compute_metrics({"a": tracks_from_metadata(pred)}, {"a": ref}, by_polyphony=True)
        assert m["LR"] >= min_lr and m["LE"] < TOL_DEG and m["LE_poly2"] < TOL_DEG, m


def test_script_user_errors_are_one_line(files, tmp_path, capsys):
    wav = str(files / "foa" / "fold1_room1_mix001_ov2.wav")
    out = tmp_path / "out"
    _fail(capsys, [str(files / "bad" / "fold1_room1_mix002_ov1.wav"), "--out", str(out)], "2 channels, expected 4")
    _fail(capsys, [wav, str(tmp_path / "missing.wav"), "--out", str(out)], "missing.wav: file not found")
    _fail(capsys, [wav, "--out", str(out), "--ref", str(files / "bad")],
          "fold1_room1_mix001_ov2.csv: reference metadata not found")
    _fail(capsys, [wav, "--out", str(out), "--ref", str(tmp_path / "nowhere")], "nowhere: reference metadata folder")
    _fail(capsys, [wav, str(files / "other" / "fold1_room1_mix001_ov2.wav"), "--out", str(out)], "same output name")
    _fail(capsys, [wav, "--out", str(out), "--ref", str(files / "meta"), "--threshold", "0.2"], "apply without --ref")
    assert not out.exists()  # nothing written before every input is checked
    with pytest.raises(SystemExit) as e:
        _script().main([wav, "--out", str(out), "--threshold", "2"])
    assert e.value.code == 2


def test_script_never_imports_tensorflow(files, tmp_path):
    wav = str(files / "foa" / "fold1_room1_mix001_ov2.wav")
    code = ("import runpy, sys\n"
            "sys.argv = [sys.argv[1]] + sys.argv[2:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('tensorflow' in sys.modules)\n")
    for args in (["--help"], [wav, "--format", "mic", "--out", str(tmp_path / "o")]):
        res = subprocess.run([sys.executable, "-c", code, SCRIPT, *args], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().splitlines()[-1] == "False"
    assert os.listdir(tmp_path / "o") == ["fold1_room1_mix001_ov2.csv"]
