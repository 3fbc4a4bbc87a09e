"""Scene descriptions: which events happen when, where they are and how they move, and their metadata labels.

A scene is pure data (no audio): both formats are rendered from the same description, and the labels are
computed from it. Labels follow DCASE2020: one row per active event per 100 ms frame; an event is active in
frame k if its onset <= (k + 0.5) * 0.1 s < its offset, and its DOA is the trajectory's direction at that frame
centre (the direction the renderer uses at that instant).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dtbt_tf.data.dcase import DataError, Metadata, format_name
from dtbt_tf.geometry import polar_to_unit

from .presets import SynthConfig
from .rooms import FS, RoomSpec
from .signals import MIN_CLIP_SECONDS, N_CLASSES, ClipLibrary

LABEL_HOP_S = 0.1
SCENE_STREAM = 2
SIGNAL_STREAM = 4  # signal choices of `paired_layout` scenes (rooms.py holds streams 1 and 3)


@dataclasses.dataclass(frozen=True)
class Event:
    """One sound event. Times in s, angles in degrees, speeds in deg/s; `source` is ('proc', seed),
    ('clip', clip index, start sample, seed) or, in `paired_layout` scenes, ('clips', ((clip index, start
    sample, samples), ...), seed): pieces of clips of the event's class joined to its length."""

    cls: int
    track: int
    onset: float
    duration: float
    azimuth: float
    elevation: float
    azimuth_speed: float
    elevation_speed: float
    distance_index: int
    level_db: float
    tail_index: int
    source: tuple

    @property
    def moving(self) -> bool:
        return self.azimuth_speed != 0.0 or self.elevation_speed != 0.0


@dataclasses.dataclass(frozen=True)
class Scene:
    """A scene: fold, room, mix number, length in samples, events, ambient SNR (None: no noise), noise seed."""

    fold: int
    room: int
    mix: int
    n_samples: int
    events: tuple
    snr_db: float | None
    noise_seed: int
    elevation_range: tuple

    @property
    def n_frames(self) -> int:
        return int(round(self.n_samples / (LABEL_HOP_S * FS)))

    def frame_activity(self) -> np.ndarray:
        """(n_events, n_frames) bool: event active at each label-frame centre."""
        centres = (np.arange(self.n_frames) + 0.5) * LABEL_HOP_S
        on = np.array([[e.onset] for e in self.events]).reshape(-1, 1)
        off = np.array([[e.onset + e.duration] for e in self.events]).reshape(-1, 1)
        return (centres[None, :] >= on) & (centres[None, :] < off)

    @property
    def max_polyphony(self) -> int:
        act = self.frame_activity()
        return int(act.sum(axis=0).max()) if act.size else 0

    @property
    def name(self) -> str:
        return format_name(self.fold, self.room, self.mix, self.max_polyphony)

    def doa(self, event: Event, t: np.ndarray):
        """Trajectory of `event` at times `t` (s, relative to its onset): azimuth in [-180, 180), elevation
        reflected back and forth inside the grid's elevation range."""
        az = (event.azimuth + event.azimuth_speed * t + 180.0) % 360.0 - 180.0
        lo, hi = self.elevation_range
        span = hi - lo
        if span <= 0:
            return az, np.full_like(az, lo)
        y = (event.elevation - lo + event.elevation_speed * t) % (2 * span)
        return az, lo + np.where(y > span, 2 * span - y, y)

    def metadata(self) -> Metadata:
        """The DCASE metadata rows of this scene."""
        act = self.frame_activity()
        centres = (np.arange(self.n_frames) + 0.5) * LABEL_HOP_S
        frames, classes, tracks, doas = [], [], [], []
        for e, a in zip(self.events, act):
            k = np.nonzero(a)[0]
            az, el = self.doa(e, centres[k] - e.onset)
            frames.append(k)
            classes.append(np.full(k.size, e.cls))
            tracks.append(np.full(k.size, e.track))
            doas.append(polar_to_unit(az, el))
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if frames else (lambda xs, dt: np.zeros(0, dt))
        return Metadata(cat(frames, np.int64), cat(classes, np.int64), cat(tracks, np.int64),
                        np.concatenate(doas).reshape(-1, 3) if doas else np.zeros((0, 3)))


def _assign_tracks(events: list[dict]) -> None:
    """DCASE track index per class: the smallest index not held by an overlapping or frame-adjacent event of
    the same class (so two instances of a class never merge into one contiguous identity)."""
    def frames(e):  # [first, last + 1) active label frames
        return tuple(int(np.ceil(x / LABEL_HOP_S - 0.5)) for x in (e["onset"], e["onset"] + e["duration"]))

    events.sort(key=lambda e: (e["onset"], e["cls"]))
    for i, e in enumerate(events):
        f0, f1 = frames(e)
        busy = {o["track"] for o in events[:i] if o["cls"] == e["cls"] and frames(o)[1] >= f0 and frames(o)[0] <= f1}
        e["track"] = min(t for t in range(len(busy) + 1) if t not in busy)


def _paired_signal(cls: int, n: int, proc_source: tuple, clips: ClipLibrary, fold: str | None,
                   recorded: list[int], fraction: float, rng: np.random.Generator) -> tuple[int, tuple]:
    """(class, source) of a `paired_layout` event of class `cls` and `n` samples. With probability `fraction`
    a recorded signal: clips of its class (a class without clips in this fold takes a class drawn from those
    with clips, and the event is labelled with that class), one excerpt when the clip is long enough, else
    whole clips joined until `n` samples; otherwise the procedural `proc_source`. The draws come from `rng`
    (one stream per event), so the same event takes the same clips at every fraction."""
    if not recorded or rng.uniform() >= fraction:
        return cls, proc_source
    if cls not in recorded:
        cls = int(rng.choice(recorded))
    choices = [i for i in clips.usable(fold) if clips.clips[i].cls == cls]
    pieces, need = [], n
    while need > 0:
        ci = int(rng.choice(choices))
        length = clips.clips[ci].n_samples
        if length >= need:
            pieces.append((ci, int(rng.integers(0, length - need + 1)), need))
            need = 0
        else:
            pieces.append((ci, 0, length))
            need -= length
    return cls, ("clips", tuple(pieces), int(rng.integers(2**31)))


def sample_scene(cfg: SynthConfig, room: RoomSpec, mix: int, n_layers: int, seed: int,
                 clips: ClipLibrary | None = None) -> Scene:
    """Sample a scene with `n_layers` event layers in `room` (deterministic in seed, fold, mix).

    With ``cfg.paired_layout`` the layout (event timing, classes drawn over the 14 ids, positions,
    trajectories, levels, distances, tails, SNR) takes the same random numbers as a procedural scene whatever
    the clips, and the signals are chosen afterwards from a stream of their own (:func:`_paired_signal`)."""
    rng = np.random.default_rng([seed, SCENE_STREAM, room.fold, mix])
    total = cfg.scene_seconds
    az_grid = -180.0 + cfg.azimuth_step_deg * np.arange(int(round(360 / cfg.azimuth_step_deg)))
    el_lo, el_hi = cfg.elevations_deg[0], cfg.elevations_deg[-1]
    fold = clips.fold_for(room.fold) if clips else None
    paired = cfg.paired_layout
    mixed = clips is not None and cfg.recorded_fraction < 1.0
    recorded = set(clips.classes(fold)) if clips else set()
    classes = sorted(recorded) if clips and not mixed and not paired else list(range(N_CLASSES))
    if not classes or (paired and clips and cfg.recorded_fraction > 0 and not recorded):
        hint = "recorded_fraction 0 keeps procedural sources" if paired else \
            "mix in procedural sources with recorded_fraction < 1"
        raise DataError(f"{clips.root}: the clip library has no clips of its {fold!r} fold, which dataset fold "
                        f"{room.fold} draws from ({hint})")
    min_dur = min(cfg.event_seconds[0], MIN_CLIP_SECONDS) if clips and not paired else cfg.event_seconds[0]
    events = []
    for _ in range(n_layers):
        t = rng.uniform(0.0, cfg.gap_seconds[1])
        while True:
            dur = rng.uniform(*cfg.event_seconds)
            cls = int(rng.choice(classes))
            use_clip = not paired and cls in recorded and (not mixed or rng.uniform() < cfg.recorded_fraction)
            if use_clip:
                choices = [i for i in clips.usable(fold) if clips.clips[i].cls == cls]
                ci = int(rng.choice(choices))
                dur = min(dur, clips.clips[ci].n_samples / FS)
            dur = min(dur, total - t)
            if dur < min_dur:
                break
            if rng.uniform() < cfg.moving_fraction:
                az, el = rng.uniform(-180.0, 180.0), rng.uniform(el_lo, el_hi)
                speed = rng.uniform(*cfg.speed_deg_s) * rng.choice([-1.0, 1.0])
                drift = rng.uniform(-cfg.elevation_drift_deg_s, cfg.elevation_drift_deg_s)
            elif cfg.static_continuous_fraction > 0 and rng.uniform() < cfg.static_continuous_fraction:
                az, el = rng.uniform(-180.0, 180.0), rng.uniform(el_lo, el_hi)
                speed = drift = 0.0
            else:
                az, el = float(rng.choice(az_grid)), float(rng.choice(cfg.elevations_deg))
                speed = drift = 0.0
            if use_clip:
                n_ev = int(round(dur * FS))
                start = int(rng.integers(0, max(clips.clips[ci].n_samples - n_ev, 0) + 1))
                source = ("clip", ci, start, int(rng.integers(2**31)))
            else:
                source = ("proc", int(rng.integers(2**31)))
            if paired and clips:
                sig_rng = np.random.default_rng([seed, SIGNAL_STREAM, room.fold, mix, len(events)])
                cls, source = _paired_signal(cls, int(round(round(float(dur), 4) * FS)), source, clips, fold,
                                             sorted(recorded), cfg.recorded_fraction, sig_rng)
            events.append(dict(cls=cls, onset=round(float(t), 4), duration=round(float(dur), 4),
                               azimuth=round(float(az), 3), elevation=round(float(el), 3),
                               azimuth_speed=round(float(speed), 3), elevation_speed=round(float(drift), 3),
                               distance_index=int(rng.integers(len(room.distances))),
                               level_db=round(float(rng.uniform(*cfg.event_level_db)), 2),
                               tail_index=int(rng.integers(4)), source=source))
            t += dur + rng.uniform(*cfg.gap_seconds)
    _assign_tracks(events)
    snr = None if cfg.snr_db is None else round(float(rng.uniform(*cfg.snr_db)), 2)
    return Scene(fold=room.fold, room=room.room_id, mix=mix, n_samples=int(round(total * FS)),
                 events=tuple(Event(**e) for e in events), snr_db=snr, noise_seed=int(rng.integers(2**31)),
                 elevation_range=(el_lo, el_hi))


def plan_scenes(cfg: SynthConfig, rooms: list[RoomSpec], seed: int, clips: ClipLibrary | None = None) -> list[Scene]:
    """All scenes of a dataset: per fold `scenes_per_fold` mixes numbered from 1, rooms of that fold in turn,
    layers 1 + (mix - 1) % max_polyphony (ov1, ov2, ... alternate)."""
    scenes = []
    for fold in range(1, cfg.n_folds + 1):
        fold_rooms = [r for r in rooms if r.fold == fold]
        for mix in range(1, cfg.scenes_per_fold + 1):
            room = fold_rooms[(mix - 1) % len(fold_rooms)]
            scenes.append(sample_scene(cfg, room, mix, 1 + (mix - 1) % cfg.max_polyphony, seed, clips))
    return scenes
