"""Render scenes to FOA / MIC audio and write a synthetic dataset in the DCASE2020 layout (cached, restartable).

Per event: the dry signal is spatialised by time-variant convolution with the room's RIR bank. The trajectory
is evaluated at every sample and bilinearly interpolated between the four surrounding grid directions, so each
touched grid RIR filters the signal times its (piecewise-linear, continuous) interpolation weight; the sum is a
smooth crossfade between neighbouring RIRs. The diffuse tail variant of the event is added from the mixing time
on. Ambient noise: isotropic diffuse coloured noise (`diffuse_noise`), scaled to the scene's SNR relative to the
W-channel power of the events over the samples where at least one event is active.
Each format is peak-normalised to 0.9 and written as 16-bit wav.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import re

import numpy as np
import scipy.signal

from dtbt_tf.artifacts import LOCK_FILE, FolderLock, pid_alive
from dtbt_tf.config import ConfigError, load_json, save_json
from dtbt_tf.data.dcase import write_audio, write_metadata

from .presets import GENERATOR_VERSION, SynthConfig, config_from_dict, get_preset
from .rooms import CHANNELS, FS, RirBank, RoomSpec, build_bank, complex_gaussian, isotropic_field, make_rooms
from .scenes import Scene, plan_scenes
from .signals import ClipLibrary, procedural

PEAK = 0.9
CONFIG_FILE = "synth_config.json"


def _event_signal(event, n: int, clips: ClipLibrary | None) -> np.ndarray:
    if event.source[0] == "proc":
        return procedural(event.cls, n, event.source[1])
    if event.source[0] == "clips":
        return clips.joined(event.source[1], n, event.source[2])
    _, index, start, seed = event.source
    return clips.excerpt(index, start, n, seed)


def _add(out: np.ndarray, start: int, y: np.ndarray) -> None:
    stop = min(start + y.shape[0], out.shape[0])
    if stop > start:
        out[start:stop] += y[:stop - start]


def _grid_segments(idx: np.ndarray, w: np.ndarray):
    """Per touched grid point g: (g, first sample, its weight over samples first..last) from the per-sample
    corner indices / weights (n, 4) of `RirBank.grid_weights`."""
    keep = w.ravel() > 0
    flat, weight = idx.ravel()[keep], w.ravel()[keep]
    sample = np.repeat(np.arange(idx.shape[0]), idx.shape[1])[keep]
    order = np.argsort(flat, kind="stable")
    flat, weight, sample = flat[order], weight[order], sample[order]
    bounds = np.flatnonzero(np.diff(flat)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, flat.size]):
        a, b = sample[lo], sample[hi - 1] + 1
        yield int(flat[lo]), int(a), np.bincount(sample[lo:hi] - a, weights=weight[lo:hi], minlength=b - a)


def diffuse_noise(n: int, seed: int, formats) -> dict:
    """Ambient noise per format {'foa' | 'mic': (n, 4)}: an isotropic diffuse field (`rooms.isotropic_field`) of
    Gaussian noise with a 1/f^a power spectrum (a in [0.5, 1.5]; flat from 20 to 50 Hz, nothing below 20 Hz),
    normalised to unit power of W (FOA) or of the mean capsule (MIC). Each format has its own random stream,
    so its noise does not depend on which other formats are rendered."""
    freqs = np.fft.rfftfreq(n, 1.0 / FS)
    tilt = np.random.default_rng([seed, 0]).uniform(0.5, 1.5)
    shape = (np.maximum(freqs, 50.0) ** (-tilt / 2) * (freqs >= 20.0)).astype(np.float32)[:, None]
    out = {}
    for f in formats:
        rng = np.random.default_rng([seed, 1 + list(CHANNELS).index(f)])
        x = isotropic_field(complex_gaussian(rng, (freqs.size, 4)) * shape, n, f)
        out[f] = x / np.sqrt(np.mean(x[:, 0] ** 2) if f == "foa" else np.mean(x ** 2))
    return out


def render_scene(scene: Scene, bank: RirBank, formats, clips: ClipLibrary | None = None) -> dict:
    """Audio of `scene` per format: {'foa' | 'mic': (n_samples, 4) float32}, peak-normalised."""
    chans = sorted({0}.union(*(CHANNELS[f] for f in formats)))  # W always: the SNR reference
    n = scene.n_samples
    out = np.zeros((n, len(chans)))
    active = np.zeros(n, bool)
    n_rir = bank.early.shape[-2]
    for e in scene.events:
        start = int(round(e.onset * FS))
        n_ev = min(int(round(e.duration * FS)), n - start)
        active[start:start + n_ev] = True
        x = (_event_signal(e, n_ev, clips) * 10 ** (e.level_db / 20)).astype(np.float32)  # float32 FFTs
        early = bank.early[e.distance_index].reshape(-1, n_rir, bank.early.shape[-1])
        for g, a, wg in _grid_segments(*bank.grid_weights(*scene.doa(e, np.arange(n_ev) / FS))):
            seg = (x[a:a + wg.size] * wg.astype(np.float32))[:, None]
            y = scipy.signal.fftconvolve(seg, early[g][:, chans], axes=0)
            _add(out, start + a, y)
        if bank.tails.shape[0]:
            y = scipy.signal.fftconvolve(x[:, None], bank.tails[e.tail_index][:, chans], axes=0)
            _add(out, start + bank.tail_start, y)
    if scene.snr_db is not None and active.any():
        gain = np.sqrt(np.mean(out[active, 0] ** 2) / 10 ** (scene.snr_db / 10))
        for f, noise in diffuse_noise(n, scene.noise_seed, formats).items():
            out[:, [chans.index(c) for c in CHANNELS[f]]] += noise * gain
    audio = {}
    for f in formats:
        x = out[:, [chans.index(c) for c in CHANNELS[f]]]
        peak = np.abs(x).max()
        audio[f] = (x * (PEAK / peak if peak > 0 else 1.0)).astype(np.float32)
    return audio


# ----------------------------------------------------------------------------------------------------------
# Dataset writing


_BANKS: collections.OrderedDict = collections.OrderedDict()  # per-process cache of the last RIR banks


def _bank(room: RoomSpec, cfg: SynthConfig, seed: int) -> RirBank:
    key = (room, cfg, seed)
    if key not in _BANKS:
        _BANKS[key] = build_bank(room, cfg, seed)
        while len(_BANKS) > 2:
            _BANKS.popitem(last=False)
    return _BANKS[key]


def _paths(root: str, name: str) -> dict:
    return {"foa": os.path.join(root, "foa_dev", name + ".wav"), "mic": os.path.join(root, "mic_dev", name + ".wav"),
            "csv": os.path.join(root, "metadata_dev", name + ".csv")}


def _render_task(task) -> str:
    """Render the missing formats of one scene, then (last) its metadata: a scene with a CSV is complete."""
    root, scene, room, cfg, seed, clips, formats = task
    paths = _paths(root, scene.name)
    for f, x in render_scene(scene, _bank(room, cfg, seed), formats, clips).items():
        write_audio(paths[f], x, FS)
    write_metadata(paths["csv"], scene.metadata())
    return scene.name


def _formats(fmt: str) -> tuple:
    if fmt == "both":
        return ("foa", "mic")
    if fmt in CHANNELS:
        return (fmt,)
    raise ConfigError(f"unknown format {fmt!r}; expected 'foa', 'mic' or 'both'")


def _describe_sources(sources) -> str:
    if isinstance(sources, dict):
        return f"clip library {sources.get('clip_library_manifest_hash', '?')[:12]}"
    return "procedural" if sources is None else f"{len(sources)} clips from a folder"


def _check_record(path: str, old: dict, new: dict) -> None:
    diffs = []
    for key in ("generator_version", "seed"):
        if old.get(key) != new[key]:
            diffs.append(f"{key}={old.get(key)!r} (requested {new[key]!r})")
    if old.get("sources") != new["sources"]:
        diffs.append(f"sources={_describe_sources(old.get('sources'))} (requested {_describe_sources(new['sources'])})")
    try:
        old_cfg = config_from_dict(old.get("config", {}))
        new_cfg = config_from_dict(new["config"])
        diffs += [f"{f.name}={getattr(old_cfg, f.name)!r} (requested {getattr(new_cfg, f.name)!r})"
                  for f in dataclasses.fields(SynthConfig) if getattr(old_cfg, f.name) != getattr(new_cfg, f.name)]
    except (ConfigError, TypeError):
        diffs.append("config (unreadable)")
    if diffs:
        raise ConfigError(f"{path}: the dataset there was made differently: {', '.join(diffs)}; "
                          "delete that folder or choose another output folder")


def _remove_temp_files(root: str) -> None:
    """Delete temporary files (`<name>.tmp<pid>...`) left by killed writers; those of live processes stay."""
    for sub in ("foa_dev", "mic_dev", "metadata_dev"):
        d = os.path.join(root, sub)
        for f in os.listdir(d) if os.path.isdir(d) else ():
            m = re.search(r"\.tmp(\d+)", f)
            if m and not pid_alive(int(m.group(1))):
                os.remove(os.path.join(d, f))


def make_dataset(preset="quick", out: str | None = None, fmt: str = "both", seed: int = 0,
                 sources_dir: str | None = None, workers: int | None = None, progress: bool = True) -> str:
    """Make (or reuse) a synthetic dataset in the DCASE2020 layout and return its root folder.

    preset: 'quick' | 'paper' or a SynthConfig; out: root folder (default ``data/synth_<name>_seed<seed>``);
    fmt: 'foa' | 'mic' | 'both'; sources_dir: folder of mono wav clips, or a clip library with its manifest
    (scripts/build_clip_library.py), instead of procedural signals (mixed with them where
    ``recorded_fraction`` < 1); workers: processes (default: all CPUs). The default folder of a dataset with
    clips is ``data/synth_<name>-clips<8 hex digits of the clip set>_seed<seed>``. The resolved config is
    saved as ``synth_config.json`` (with the library's manifest hash); a folder made with another config,
    seed or clip set is a ConfigError. Finished scenes are kept, so a second call
    returns at once and a killed job resumes; formats can be added later from the same scene descriptions.
    Rendering holds the folder's :class:`~dtbt_tf.artifacts.FolderLock`: a second job on it stops at once.
    """
    if isinstance(preset, SynthConfig):
        cfg = preset
    elif isinstance(preset, str):
        cfg = get_preset(preset)
    else:
        raise ConfigError(f"preset must be a preset name or a SynthConfig, got {type(preset).__name__}")
    formats = _formats(fmt)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    clips = ClipLibrary.from_dir(sources_dir) if sources_dir else None
    if clips is None and cfg.recorded_fraction < 1.0:
        raise ConfigError(f"recorded_fraction={cfg.recorded_fraction} mixes recorded and procedural sources: "
                          "it needs sources_dir (a clip library)")
    tag = f"-clips{clips.identity()}" if clips else ""
    root = out or os.path.join("data", f"synth_{cfg.name}{tag}_seed{seed}")
    record = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": dataclasses.asdict(cfg),
              "sources": clips.fingerprint() if clips else None}
    record_path = os.path.join(root, CONFIG_FILE)
    if os.path.isfile(record_path):
        old = load_json(record_path)
        _check_record(record_path, old, record)
        if set(formats) <= set(old.get("formats", ())) and old.get("scenes") and all(
                os.path.isfile(p) for name in old["scenes"] for k, p in _paths(root, name).items()
                if k == "csv" or k in formats):
            return root  # complete: nothing to plan or render
        formats = tuple(f for f in ("foa", "mic") if f in formats or f in old.get("formats", ()))
    elif os.path.isdir(root) and set(os.listdir(root)) - {LOCK_FILE}:
        raise ConfigError(f"{root}: folder is not empty and holds no {CONFIG_FILE}; choose another output folder")
    with FolderLock(root, "dataset job"):  # one job per folder; a second one stops here at once
        rooms = make_rooms(cfg, int(seed))
        scenes = plan_scenes(cfg, rooms, int(seed), clips)
        for sub in [f"{f}_dev" for f in formats] + ["metadata_dev"]:
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        save_json({**record, "preset": cfg.name, "formats": list(formats),
                   "rooms": [dataclasses.asdict(r) for r in rooms], "scenes": [s.name for s in scenes]}, record_path)
        _remove_temp_files(root)
        room_of = {r.room_id: r for r in rooms}
        tasks = []
        for s in sorted(scenes, key=lambda s: (s.room, s.fold, s.mix)):
            paths = _paths(root, s.name)
            missing = tuple(f for f in formats if not os.path.isfile(paths[f]))
            if missing or not os.path.isfile(paths["csv"]):
                tasks.append((root, s, room_of[s.room], cfg, int(seed), clips, missing))
        if not tasks:
            return root
        from dtbt_tf.progress import progress_bar

        n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        n_workers = min(workers or n_cpu, len(tasks))
        bar = progress_bar(len(scenes), desc=f"synth {cfg.name}", unit="scene", initial=len(scenes) - len(tasks),
                           enabled=progress)
        try:
            if n_workers <= 1:
                for t in tasks:
                    _render_task(t)
                    bar.update()
            else:
                fork = "fork" in multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if fork else "spawn")
                if fork:  # build each needed bank once, in parallel; the scene workers inherit them
                    needed = sorted({t[2] for t in tasks}, key=lambda r: r.room_id)
                    with ctx.Pool(min(n_workers, len(needed))) as pool:
                        banks = pool.starmap(build_bank, [(r, cfg, int(seed)) for r in needed])
                    _BANKS.update({(r, cfg, int(seed)): b for r, b in zip(needed, banks)})
                with ctx.Pool(n_workers) as pool:
                    for _ in pool.imap_unordered(_render_task, tasks):
                        bar.update()
        finally:
            bar.close()
            _BANKS.clear()
        return root
