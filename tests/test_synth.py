"""Synthetic scene generator: layout, determinism, cache, ground truth of the rendered directions, errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from dtbt_tf.config import ConfigError
from dtbt_tf.data import dcase
from dtbt_tf.data.synth import SynthConfig, get_preset, make_dataset
from dtbt_tf.data.synth.render import diffuse_noise, render_scene
from dtbt_tf.data.synth.rooms import FS, build_bank, make_rooms
from dtbt_tf.data.synth.scenes import plan_scenes
from dtbt_tf.data.synth.signals import ClipLibrary
from dtbt_tf.data.synth.stats import plot_statistics
from dtbt_tf.geometry import angular_distance_deg, mic_capsule_positions, polar_to_unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny but complete: 6 folds x 2 scenes (ov1, ov2) x 2 s, coarse grid, low ISM order.
TINY = SynthConfig(name="tiny", n_folds=6, scenes_per_fold=2, scene_seconds=2.0, event_seconds=(0.5, 1.0),
                   gap_seconds=(0.1, 0.4), azimuth_step_deg=30.0, elevations_deg=(-30.0, 0.0, 30.0),
                   distances_m=(1.0,), ism_order=2, rt60_s=(0.2, 0.4))
ONE = TINY.replace(name="one", n_folds=1)
# Direct path only, no noise, one source at a time, on the default 10-degree grid.
ANECHOIC = get_preset("quick").replace(name="anechoic", n_folds=1, scenes_per_fold=1, scene_seconds=8.0,
                                       anechoic=True, snr_db=None, max_polyphony=1, moving_fraction=0.0,
                                       distances_m=(1.5,), event_seconds=(1.0, 2.0), gap_seconds=(0.2, 0.4))


def _bytes(root, *parts):
    with open(os.path.join(root, *parts), "rb") as f:
        return f.read()


def _files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.endswith(".json"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(TINY, out=str(tmp_path_factory.mktemp("synth") / "tiny"), seed=3, workers=1, progress=False)


def _render(cfg, seed=0, clips=None, formats=("foa", "mic")):
    rooms = make_rooms(cfg, seed)
    bank = build_bank(rooms[0], cfg, seed)
    scene = plan_scenes(cfg, rooms, seed, clips)[0]
    return scene, render_scene(scene, bank, formats, clips)


def _intensity_direction(foa):
    """Broadband active-intensity direction of FOA (n, 4) ACN: sum of Re(conj(W) [X, Y, Z]) over the STFT."""
    _, _, s = scipy.signal.stft(foa.T, nperseg=512)
    i = np.real(np.conj(s[0])[None] * s[1:]).sum(axis=(1, 2))  # Y, Z, X
    return np.array([i[2], i[0], i[1]])


# ----------------------------------------------------------------------------------------------------------
# Layout and loader


def test_layout_is_read_by_the_dcase_loader(tiny):
    foa, mic = dcase.discover(tiny, "foa"), dcase.discover(tiny, "mic")
    assert [r.stem for r in foa] == [r.stem for r in mic] and len(foa) == 12
    for split, folds in dcase.DEFAULT_SPLITS.items():
        assert {r.fold for r in dcase.split_recordings(foa, split)} == set(folds)
    rooms_by_fold = {}
    for r in foa + mic:
        x = dcase.load_audio(r.audio_path)
        assert x.shape == (2 * FS, 4) and 0.5 < np.abs(x).max() <= 0.91
        assert sf.info(r.audio_path).subtype == "PCM_16"
        meta = dcase.read_metadata(r.metadata_path)
        doa, active, _ = dcase.metadata_to_labels(meta, 20, r.overlap, r.metadata_path)
        assert active.sum(axis=1).max() == r.overlap  # name's ov field = max polyphony of the scene
        assert np.allclose(np.linalg.norm(doa[active > 0], axis=-1), 1, atol=1e-6)
        el = np.rad2deg(np.arcsin(meta.doa[:, 2]))
        assert np.all(np.abs(el) <= 30.5)
        rooms_by_fold.setdefault(r.fold, set()).add(r.room)
    all_rooms = [room for rs in rooms_by_fold.values() for room in rs]
    assert len(all_rooms) == len(set(all_rooms)) == 6  # no room shared between folds


def test_statistics_figure(tiny, tmp_path):
    summary = plot_statistics(tiny, str(tmp_path / "stats.png"))
    assert summary["n_files"] == 12 and abs(summary["hours"] - 12 * 2 / 3600) < 1e-6
    assert len(summary["polyphony_fraction"]) == 3 and abs(sum(summary["polyphony_fraction"]) - 1) < 1e-9
    with open(tmp_path / "stats.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------
# Determinism, cache, restart


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = make_dataset(ONE, out=str(tmp_path / "a"), seed=1, workers=1, progress=False)
    b = make_dataset(ONE, out=str(tmp_path / "b"), seed=1, workers=2, progress=False)
    c = make_dataset(ONE, out=str(tmp_path / "c"), seed=2, workers=1, progress=False)
    fa = [os.path.relpath(p, a) for p in _files(a)]
    assert fa == [os.path.relpath(p, b) for p in _files(b)] and len(fa) == 6
    for rel in fa:
        assert _bytes(a, rel) == _bytes(b, rel)
    wav = dcase.discover(c, "foa")[0].audio_path
    assert _bytes(c, wav) != _bytes(a, os.path.relpath(dcase.discover(a, "foa")[0].audio_path, a))


def test_cache_reuse_and_changed_config_is_an_error(tmp_path):
    out = str(tmp_path / "d")
    make_dataset(ONE, out=out, seed=1, workers=1, progress=False)
    stamps = {p: os.stat(p).st_mtime_ns for p in _files(out)}
    assert make_dataset(ONE, out=out, seed=1, workers=1, progress=False) == out
    assert {p: os.stat(p).st_mtime_ns for p in _files(out)} == stamps
    with pytest.raises(ConfigError, match="scene_seconds"):
        make_dataset(ONE.replace(scene_seconds=3.0), out=out, seed=1, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        make_dataset(ONE, out=out, seed=2, progress=False)
    os.makedirs(tmp_path / "other")
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="synth_config.json"):
        make_dataset(ONE, out=str(tmp_path / "other"), progress=False)


def test_default_folder_is_named_after_preset_and_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_dataset(ONE, seed=4, fmt="foa", workers=1, progress=False)
    assert root == os.path.join("data", "synth_one_seed4") and os.path.isdir(os.path.join(root, "foa_dev"))
    assert not os.path.exists(os.path.join(root, "mic_dev"))


def test_restart_rerenders_only_missing_scenes_and_formats_can_be_added(tmp_path):
    out = str(tmp_path / "r")
    make_dataset(ONE, out=out, fmt="foa", seed=1, workers=1, progress=False)
    recs = dcase.discover(out, "foa")
    victim, kept = recs[0], recs[1]
    original = _bytes(out, victim.audio_path)
    stamp = os.stat(kept.audio_path).st_mtime_ns
    os.remove(victim.audio_path)
    os.remove(victim.metadata_path)
    stale = victim.audio_path + ".tmp4194305.wav"  # writer pid above any pid_max: a killed job's leftover
    live = victim.audio_path + f".tmp{os.getppid()}.wav"  # a live writer's temporary file is left alone
    open(stale, "wb").close()
    open(live, "wb").close()
    make_dataset(ONE, out=out, fmt="mic", seed=1, workers=1, progress=False)  # restart + add a format
    assert _bytes(out, victim.audio_path) == original and not os.path.exists(stale) and os.path.exists(live)
    os.remove(live)
    assert os.stat(kept.audio_path).st_mtime_ns == stamp
    both = make_dataset(ONE, out=str(tmp_path / "both"), fmt="both", seed=1, workers=1, progress=False)
    for rel in [os.path.relpath(p, both) for p in _files(both)]:  # same bytes as rendering both at once
        assert _bytes(out, rel) == _bytes(both, rel)


# ----------------------------------------------------------------------------------------------------------
# Ground truth of the rendered directions


def test_anechoic_static_foa_intensity_matches_labels():
    scene, audio = _render(ANECHOIC)
    assert len(scene.events) >= 3
    for e in scene.events:
        a, b = int(e.onset * FS), int((e.onset + e.duration) * FS)
        err = angular_distance_deg(_intensity_direction(audio["foa"][a:b]), polar_to_unit(e.azimuth, e.elevation))
        assert err < 2.0, (e.azimuth, e.elevation, err)


def test_anechoic_mic_delays_match_label_geometry(tmp_path):
    sf.write(tmp_path / "white.wav", np.random.default_rng(0).standard_normal(16000 * 3) * 0.1, 16000)
    clips = ClipLibrary.from_dir(str(tmp_path))
    scene, audio = _render(ANECHOIC, clips=clips, formats=("mic",))
    caps = mic_capsule_positions()
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    for e in scene.events:
        a, b = int(e.onset * FS), int((e.onset + e.duration) * FS)
        x = audio["mic"][a:b].astype(np.float64)
        n = 2 * len(x)
        taus = []
        for i, j in pairs:  # lag of capsule j behind capsule i: cross-correlation peak, parabolic refinement
            cc = np.fft.irfft(np.fft.rfft(x[:, j], n) * np.conj(np.fft.rfft(x[:, i], n)), n)
            cc = np.r_[cc[-10:], cc[:11]]
            k = int(np.argmax(cc))
            taus.append(k - 10 + 0.5 * (cc[k - 1] - cc[k + 1]) / (cc[k - 1] - 2 * cc[k] + cc[k + 1]))
        label = polar_to_unit(e.azimuth, e.elevation)
        geom = np.array([caps[i] - caps[j] for i, j in pairs]) / 343.0 * FS  # plane wave: tau_ij = (q_i - q_j).u / c
        assert np.abs(np.array(taus) - geom @ label).max() < 0.25
        u = np.linalg.lstsq(geom, np.array(taus), rcond=None)[0]
        assert angular_distance_deg(u, label) < 3.0


def test_moving_source_labels_follow_configured_speed_and_rendering():
    cfg = ANECHOIC.replace(moving_fraction=1.0, speed_deg_s=(20.0, 20.0), elevation_drift_deg_s=0.0,
                           event_seconds=(2.0, 3.0))
    scene, audio = _render(cfg, formats=("foa",))
    meta = scene.metadata()
    errs = []
    for e in scene.events:
        assert e.moving and abs(e.azimuth_speed) == 20.0
    for cls, track in {(int(c), int(t)) for c, t in zip(meta.cls, meta.track)}:
        sel = np.flatnonzero((meta.cls == cls) & (meta.track == track))
        cont = np.diff(meta.frame[sel]) == 1
        step = angular_distance_deg(meta.doa[sel[1:]], meta.doa[sel[:-1]])[cont]
        el = np.arcsin(meta.doa[sel[1:], 2])[cont]
        assert np.allclose(step / np.cos(el), 2.0, atol=1e-3)  # 20 deg/s of azimuth = 2 deg per 100 ms
    for k, d in zip(meta.frame, meta.doa):
        errs.append(angular_distance_deg(_intensity_direction(audio["foa"][k * 2400:(k + 1) * 2400]), d))
    assert np.median(errs) < 1.0 and np.percentile(errs, 80) < 3.0


def test_reverberant_bank_decays_with_the_room_rt60():
    import pyroomacoustics as pra

    cfg = TINY.replace(rt60_s=(0.6, 0.6), n_folds=1)
    room = make_rooms(cfg, 0)[0]
    bank = build_bank(room, cfg, 0)
    h = np.zeros(bank.tail_start + bank.tails.shape[1])
    h[:bank.early.shape[-2]] += bank.early[0, 0, 1, :, 0]
    h[bank.tail_start:] += bank.tails[0, :, 0]
    assert abs(pra.experimental.measure_rt60(h, FS) - 0.6) < 0.1
    direct = np.argmax(np.abs(h))
    assert abs(direct - room.distances[0] / 343.0 * FS) <= 1  # direct path at the ring distance


def test_diffuse_noise_has_isotropic_statistics():
    noise = diffuse_noise(4 * FS, 7, ("foa", "mic"))
    foa, mic = np.cov(noise["foa"].T), np.cov(noise["mic"].T)
    assert np.allclose(np.diag(foa), [1, 1 / 3, 1 / 3, 1 / 3], rtol=0.1)  # 1/f noise: few effective samples
    assert np.abs(foa - np.diag(np.diag(foa))).max() < 0.05  # FOA channels uncorrelated
    assert np.allclose(np.diag(mic), 1, rtol=0.1)
    assert 0.3 < mic[0, 1] < 0.95  # nearby capsules: partly coherent (low frequencies)
    assert np.array_equal(diffuse_noise(4 * FS, 7, ("mic",))["mic"], noise["mic"])


# ----------------------------------------------------------------------------------------------------------
# Scene statistics and tracks (no rendering)


def test_polyphony_never_exceeds_the_maximum_and_tracks_are_dcase_style():
    cfg = get_preset("quick", max_polyphony=3, scenes_per_fold=12, scene_seconds=20.0)
    assert "max_polyphony3" in cfg.name
    scenes = plan_scenes(cfg, make_rooms(cfg, 0), 0)
    seen_second_track = False
    for s in scenes:
        poly = s.frame_activity().sum(axis=0)
        assert poly.max() <= 3 and s.max_polyphony == poly.max() and s.name.endswith(f"_ov{poly.max()}")
        meta = s.metadata()
        for f in np.unique(meta.frame):
            ids = [(c, t) for c, t in zip(meta.cls[meta.frame == f], meta.track[meta.frame == f])]
            assert len(ids) == len(set(ids))
        seen_second_track |= bool((meta.track > 0).any())
        for e in s.events:
            assert 0.5 <= e.duration <= 5.0 and abs(e.elevation) <= 40 and 0 <= e.cls < 14
    assert {s.max_polyphony for s in scenes} == {1, 2, 3} and seen_second_track


def test_static_sources_on_the_grid_or_at_continuous_positions():
    """static_continuous_fraction 0 keeps every static event on the DOA grid (and the quick preset's scenes
    unchanged); 1 puts them off the grid, anywhere within the grid's elevation range."""
    base = get_preset("quick").replace(name="static", scenes_per_fold=4, scene_seconds=20.0, moving_fraction=0.0)
    rooms = make_rooms(base, 0)

    def off_grid(cfg):
        events = [e for s in plan_scenes(cfg, rooms, 0) for e in s.events]
        assert events and not any(e.moving for e in events)
        assert all(-40 <= e.elevation <= 40 and -180 <= e.azimuth < 180 for e in events)
        return np.mean([(e.azimuth % 10 != 0) or (e.elevation % 10 != 0) for e in events])

    assert off_grid(base) == 0.0
    assert off_grid(base.replace(static_continuous_fraction=1.0)) > 0.95
    assert 0.3 < off_grid(base.replace(static_continuous_fraction=0.5)) < 0.7
    quick = get_preset("quick")
    assert plan_scenes(quick, make_rooms(quick, 0), 0) == plan_scenes(
        quick.replace(static_continuous_fraction=0.0), make_rooms(quick, 0), 0)


def test_standard_and_ood_presets_meet_their_specification():
    """standard: >= 6 h of training audio (folds 3-6), 3 rooms per fold, rings up to 3 m in some rooms, half the
    static events off the grid, ov1 and ov2 alternating; ood: rooms smaller and more reverberant than any
    training room, other SNRs."""
    std, ood = get_preset("standard"), get_preset("ood")
    assert 4 * std.scenes_per_fold * std.scene_seconds >= 6 * 3600 and std.rooms_per_fold >= 3
    assert std.static_continuous_fraction == 0.5 and std.max_polyphony == 2
    rooms = make_rooms(std, 0)
    assert len({r.room_id for r in rooms}) == 18 and max(max(r.distances) for r in rooms) >= 3.0
    assert all(min(r.distances) == 1.0 and r.rt60 <= 0.8 for r in rooms)
    ood_rooms = make_rooms(ood, 0)
    assert min(r.rt60 for r in ood_rooms) > max(r.rt60 for r in rooms)
    assert max(r.dims[0] * r.dims[1] for r in ood_rooms) < min(r.dims[0] * r.dims[1] for r in rooms)
    assert ood.snr_db[1] < std.snr_db[1] and ood.snr_db[0] < std.snr_db[0]


def test_rooms_too_small_for_the_rounded_ring_are_redrawn(monkeypatch):
    """A ring radius rounded up to the cm can exceed (width - 1) / 2 by 5 mm (standard seed 1, ood seeds 1 and
    3 crashed in numpy): such a room is redrawn. The check draws no random number, so a plan where it never
    fires (every seed 0) is the plan of before; a few values of seed 0 are pinned too."""
    from dtbt_tf.data.synth import rooms as rooms_module

    rejected = []

    def spy(*args, **kwargs):
        try:
            return make_room(*args, **kwargs)
        except ConfigError as e:
            rejected.append(str(e))
            raise

    make_room = rooms_module.make_room
    monkeypatch.setattr(rooms_module, "make_room", spy)

    def ring_rejections(cfg, seed):
        rejected.clear()
        rooms = make_rooms(cfg, seed)
        sin_el = np.sin(np.deg2rad(max(abs(e) for e in cfg.elevations_deg)))
        for r in rooms:  # every ring inside the room: 0.5 m from the walls, ~0.3 m from floor and ceiling
            d, p = max(r.distances), r.array_pos
            assert all(d + 0.499 <= p[a] <= r.dims[a] - d - 0.499 for a in range(2)), r
            assert d * sin_el + 0.29 <= p[2] <= r.dims[2] - d * sin_el - 0.29, r
        assert len(plan_scenes(cfg, rooms, seed)) == cfg.n_folds * cfg.scenes_per_fold
        return sum("source ring" in m for m in rejected)

    for name, seed in (("standard", 1), ("ood", 1), ("ood", 3)):
        assert ring_rejections(get_preset(name), seed) >= 1
    for name in ("tiny", "quick", "standard", "ood"):
        assert ring_rejections(get_preset(name), 0) == 0
    std, ood = make_rooms(get_preset("standard"), 0), make_rooms(get_preset("ood"), 0)
    assert std[13].dims == (11.73, 8.72, 5.33) and std[13].array_pos == (6.566, 5.18, 2.228)
    assert ood[0].dims == (5.5, 4.91, 2.54) and ood[0].array_pos == (2.355, 2.717, 1.276)
    assert ood[0].distances == (0.8, 1.5) and ood[0].absorption == 0.0827


# ----------------------------------------------------------------------------------------------------------
# Errors


def test_synthetic_preset_for_n_max():
    """The default dataset of a --n-max N job has up to N overlapping sources; N = 2 keeps the plain preset."""
    from dtbt_tf.data.synth import PRESETS, synthetic_preset_for

    assert synthetic_preset_for("quick", 2) is PRESETS["quick"]
    three = synthetic_preset_for("quick", 3)
    assert three.max_polyphony == 3 and three.name == "quick-max_polyphony3"
    assert three.replace(name="quick", max_polyphony=2) == PRESETS["quick"]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown synthetic preset 'nope'"):
        make_dataset("nope", out=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="format"):
        make_dataset(ONE, out=str(tmp_path / "x"), fmt="binaural")
    with pytest.raises(ConfigError, match="seed"):
        make_dataset(ONE, out=str(tmp_path / "x"), seed=-1)
    with pytest.raises(ConfigError, match="max_polyphony"):
        TINY.replace(max_polyphony=0)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(dcase.DataError, match="no .wav clips"):
        make_dataset(ONE, out=str(tmp_path / "x"), sources_dir=str(tmp_path / "empty"))
    with pytest.raises(dcase.DataError, match="not found"):
        make_dataset(ONE, out=str(tmp_path / "x"), sources_dir=str(tmp_path / "missing"))
    assert not os.path.exists(tmp_path / "x")


def test_clip_library_subfolders_are_classes_and_clips_are_resampled(tmp_path):
    rng = np.random.default_rng(1)
    for k, sub in enumerate(("dog", "bell")):
        os.makedirs(tmp_path / sub)
        sf.write(tmp_path / sub / "x.wav", rng.standard_normal((16000 * 2, 2)) * 0.1, 16000)  # stereo, 16 kHz
    lib = ClipLibrary.from_dir(str(tmp_path))
    expected = [(os.path.join("bell", "x.wav"), 0), (os.path.join("dog", "x.wav"), 1)]  # sorted subfolders
    assert [(c.relpath, c.cls) for c in lib.clips] == expected
    assert all(c.n_samples == 2 * FS for c in lib.clips)
    x = lib.excerpt(0, FS // 2, FS, seed=0)
    assert x.shape == (FS,) and abs(np.sqrt(np.mean(x ** 2)) - 1) < 1e-9
    scenes = plan_scenes(ONE, make_rooms(ONE, 0), 0, lib)
    assert {e.cls for s in scenes for e in s.events} <= {0, 1}
    assert all(e.source[0] == "clip" and e.duration <= 2.0 for s in scenes for e in s.events)
    sf.write(tmp_path / "bell" / "short.wav", np.zeros(1000), 16000)
    with pytest.raises(dcase.DataError, match="short.wav: clip is shorter"):
        ClipLibrary.from_dir(str(tmp_path))


def test_cli_exits_2_with_one_line_error(tmp_path):
    os.makedirs(tmp_path / "empty")
    script = os.path.join(REPO, "scripts", "make_dataset.py")
    for args, text in ((["--preset", "nope"], "unknown synthetic preset"),
                       (["--sources-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "no .wav clips")):
        p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and text in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
