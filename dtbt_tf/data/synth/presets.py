"""Synthetic-scene configuration: one frozen dataclass and the named presets `quick`, `standard`, `paper`, `ood`.

Everything that changes the rendered bytes lives in :class:`SynthConfig` (plus the seed, the formats and the
source clips), and the resolved config is saved next to the data as ``synth_config.json``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dtbt_tf.config import ConfigError

GENERATOR_VERSION = 1  # bump whenever the same config + seed would render different bytes


def _tuple(x):
    return tuple(_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass(frozen=True)
class SynthConfig:
    """How a synthetic DCASE2020-layout dataset is made. Angles in degrees, times in seconds, sizes in metres.

    Scenes: `n_folds` x `scenes_per_fold` scenes of `scene_seconds`; scene `i` of a fold is built from
    `1 + i % max_polyphony` event layers (so ov1..ovN alternate). Each layer is a sequence of events of
    `event_seconds` separated by silences of `gap_seconds`. A fraction `moving_fraction` of events moves at an
    azimuth speed drawn from `speed_deg_s` (random sign) plus an elevation drift up to `elevation_drift_deg_s`.
    Rooms: `rooms_per_fold` shoebox rooms per fold (never shared between folds), RT60 spread over `rt60_s`,
    dimensions drawn from `room_size_m` ((min, max) per axis). Sources sit on rings of radius `distances_m`
    (shrunk to fit small rooms) around the array; a static event sits on the DOA grid `azimuth_step_deg` x
    `elevations_deg`, or, with probability `static_continuous_fraction`, at a uniformly drawn azimuth and
    elevation within the grid's elevation range (rendered, like moving events, by interpolating the grid RIRs).
    `ism_order` caps the image-source order (the rest of the decay is a stochastic diffuse tail);
    `anechoic=True` keeps the direct path only. `snr_db` is the range of the ambient-noise SNR (None: no noise).
    With source clips (``sources_dir``), an event of a class that has clips usable in its fold takes a clip with
    probability `recorded_fraction`, else a procedural signal of its class; 1.0 makes recorded-only scenes
    (only the classes with clips occur), below 1 every class occurs (classes without clips stay procedural).
    Events are shortened to the length of their clip, and the choice of clips takes random numbers of the scene,
    so a render with clips has another layout than the procedural one of the same seed. `paired_layout=True`
    keeps the layout of the procedural render instead (rooms, event timing, positions, trajectories, levels and
    SNR of the same seed, whatever the clips or `recorded_fraction`): with clips, each event takes a recorded
    signal with probability `recorded_fraction` (1.0: every event), from clips of its class joined to its
    length when one is too short; a class without clips in the event's fold is replaced by a class drawn from
    those with clips (the label says which), so only the signals and the class and track columns differ.
    Without clips it renders the procedural dataset byte for byte.
    """

    name: str = "quick"
    n_folds: int = 6
    scenes_per_fold: int = 10
    scene_seconds: float = 30.0
    max_polyphony: int = 2
    event_seconds: tuple = (0.5, 5.0)
    gap_seconds: tuple = (0.2, 2.0)
    event_level_db: tuple = (-10.0, 0.0)
    moving_fraction: float = 0.5
    speed_deg_s: tuple = (10.0, 40.0)
    elevation_drift_deg_s: float = 5.0
    rooms_per_fold: int = 1
    rt60_s: tuple = (0.2, 0.8)
    room_size_m: tuple = ((5.5, 12.0), (5.0, 10.0), (2.8, 4.5))
    distances_m: tuple = (1.0, 2.0)
    azimuth_step_deg: float = 10.0
    elevations_deg: tuple = (-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0)
    ism_order: int = 6
    anechoic: bool = False
    snr_db: tuple | None = (6.0, 30.0)
    recorded_fraction: float = 1.0
    static_continuous_fraction: float = 0.0
    paired_layout: bool = False

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _tuple(getattr(self, f.name)))
        if self.n_folds < 1 or self.scenes_per_fold < 1 or self.rooms_per_fold < 1:
            raise ConfigError("n_folds, scenes_per_fold and rooms_per_fold must be >= 1")
        if self.max_polyphony < 1:
            raise ConfigError(f"max_polyphony must be >= 1, got {self.max_polyphony}")
        lo, hi = self.event_seconds
        if not 0.2 <= lo <= hi:
            raise ConfigError(f"event_seconds must be (min, max) with 0.2 <= min <= max, got {self.event_seconds}")
        if self.scene_seconds < lo + self.gap_seconds[0]:
            raise ConfigError(f"scene_seconds={self.scene_seconds} is shorter than one event plus one gap")
        if round(self.scene_seconds * 10) != self.scene_seconds * 10:
            raise ConfigError(f"scene_seconds must be a multiple of 0.1 s, got {self.scene_seconds}")
        for name in ("gap_seconds", "event_level_db", "speed_deg_s", "rt60_s", "distances_m"):
            v = getattr(self, name)
            if len(v) < 1 or (name != "distances_m" and (len(v) != 2 or v[0] > v[1])):
                raise ConfigError(f"{name} must be a (min, max) pair, got {v}")
        if self.snr_db is not None and (len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]):
            raise ConfigError(f"snr_db must be None or a (min, max) pair, got {self.snr_db}")
        if not 0.0 <= self.recorded_fraction <= 1.0:
            raise ConfigError(f"recorded_fraction must be in [0, 1], got {self.recorded_fraction}")
        if not 0.0 <= self.static_continuous_fraction <= 1.0:
            raise ConfigError(f"static_continuous_fraction must be in [0, 1], got {self.static_continuous_fraction}")
        if not isinstance(self.paired_layout, bool):
            raise ConfigError(f"paired_layout must be True or False, got {self.paired_layout!r}")
        if not 0.0 <= self.moving_fraction <= 1.0:
            raise ConfigError(f"moving_fraction must be in [0, 1], got {self.moving_fraction}")
        if not (0.05 <= self.rt60_s[0] and self.rt60_s[1] <= 2.0):
            raise ConfigError(f"rt60_s must lie within [0.05, 2.0] s, got {self.rt60_s}")
        if min(self.distances_m) < 0.5:
            raise ConfigError(f"distances_m must be >= 0.5 m, got {self.distances_m}")
        if len(self.room_size_m) != 3 or any(len(r) != 2 or not 2.5 <= r[0] <= r[1] for r in self.room_size_m):
            raise ConfigError(f"room_size_m must be three (min, max) pairs >= 2.5 m, got {self.room_size_m}")
        if not (0 < self.azimuth_step_deg <= 90 and (360 / self.azimuth_step_deg).is_integer()):
            raise ConfigError(f"azimuth_step_deg must divide 360, got {self.azimuth_step_deg}")
        els = self.elevations_deg
        if not els or any(b <= a for a, b in zip(els, els[1:])) or els[0] < -80 or els[-1] > 80:
            raise ConfigError(f"elevations_deg must be increasing within [-80, 80], got {els}")
        if self.ism_order < 0:
            raise ConfigError(f"ism_order must be >= 0, got {self.ism_order}")

    @property
    def n_rooms(self) -> int:
        return self.n_folds * self.rooms_per_fold

    def replace(self, **changes) -> "SynthConfig":
        return dataclasses.replace(self, **changes)


PRESETS = {
    # The default dataset of the main job: rendering both formats takes ~2 min on 2 cores (docs/synthetic-data.md).
    "quick": SynthConfig(name="quick", n_folds=6, scenes_per_fold=20, scene_seconds=30.0),
    # Training at scale (issue 16): 6.4 h of training audio (folds 3-6), 3 rooms per fold (18 in all), static
    # sources half on the 10-degree grid and half at continuous positions, rings at 1-3 m in rooms tall enough
    # for them, ov1 and ov2 alternating (as many single- as two-source scenes).
    "standard": SynthConfig(name="standard", n_folds=6, scenes_per_fold=96, scene_seconds=60.0, rooms_per_fold=3,
                            room_size_m=((7.0, 14.0), (6.5, 12.0), (3.5, 5.5)), distances_m=(1.0, 2.0, 3.0),
                            static_continuous_fraction=0.5),
    # DCASE2020-sized: 6 folds x 100 scenes x 60 s, ov1 and ov2 alternating, 2 rooms per fold.
    "paper": SynthConfig(name="paper", n_folds=6, scenes_per_fold=100, scene_seconds=60.0, rooms_per_fold=2),
    # Smoke tests of the whole pipeline in seconds (the README's tiny pipeline): one test, one validation and one
    # training fold of 6 x 6 s scenes each (ov1 and ov2 alternating), a coarse direction grid, one distance,
    # low-order reflections.
    "tiny": SynthConfig(name="tiny", n_folds=3, scenes_per_fold=6, scene_seconds=6.0, event_seconds=(0.5, 2.0),
                        gap_seconds=(0.2, 1.0), azimuth_step_deg=30.0, elevations_deg=(-30.0, 0.0, 30.0),
                        distances_m=(1.0,), ism_order=2, rt60_s=(0.2, 0.4)),
    # Out-of-distribution test set (never trained or tuned on): one fold of 40 x 30 s scenes in 4 small, more
    # reverberant rooms (RT60 0.9-1.3 s vs 0.2-0.8 s), closer sources, louder ambient noise (SNR 0-12 dB vs
    # 6-30 dB), faster movers, all static sources off the grid. Render it with --sources-dir data/clips
    # (recorded sounds only) when the clip library exists, so its signals are of other families too.
    "ood": SynthConfig(name="ood", n_folds=1, scenes_per_fold=40, scene_seconds=30.0, rooms_per_fold=4,
                       room_size_m=((3.5, 6.0), (3.0, 5.0), (2.5, 3.2)), rt60_s=(0.9, 1.3), distances_m=(0.8, 1.5),
                       snr_db=(0.0, 12.0), speed_deg_s=(20.0, 60.0), static_continuous_fraction=1.0),
}


def get_preset(name: str, **overrides) -> SynthConfig:
    """A named preset, optionally with fields replaced; overrides also extend the name (e.g. 'quick-max_polyphony3'),
    so the default output folder differs from the plain preset's."""
    if name not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
    cfg = PRESETS[name]
    if not overrides:
        return cfg
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SynthConfig)}
    if unknown:
        raise ConfigError(f"unknown SynthConfig fields {sorted(unknown)}")
    suffix = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()) if k != "name")
    return cfg.replace(**{"name": f"{name}-{suffix}" if suffix else name, **overrides})


def synthetic_preset_for(name: str, n_max: int) -> SynthConfig:
    """The preset with at most ``n_max`` overlapping sources (the preset itself when it already has that
    polyphony, so the default Nmax = 2 job keeps its dataset folder)."""
    cfg = get_preset(name)
    return cfg if cfg.max_polyphony == n_max else get_preset(name, max_polyphony=n_max)


def config_from_dict(d: dict) -> SynthConfig:
    names = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"SynthConfig: unknown keys {sorted(unknown)}")
    return SynthConfig(**d)
