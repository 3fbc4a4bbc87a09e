"""Frozen configuration dataclasses with named presets, serialised next to every dataset and model.

A mismatch between the configuration a dataset was made with and the one a model expects is an error
(:func:`check_compatible`), never a guess.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Type, TypeVar

FORMATS = ("foa", "mic")
FORMAT_CHANNELS = {"foa": 7, "mic": 10}  # feature channels: 4 log-mel + 3 intensity (FOA) / 6 GCC-PHAT (MIC)
PAD_VALUE = 10.0  # coordinate of the padding DOA vector (10, 10, 10) for inactive slots / padded D entries

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration is invalid or does not match the data/model it is used with."""


def check_format(fmt: str) -> None:
    """ConfigError unless ``fmt`` is one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {FORMATS}")


@dataclass(frozen=True)
class FeatureConfig:
    """Feature extraction parameters (paper III-B, DESIGN 2). Times in samples at `sample_rate`."""

    fmt: str = "foa"  # 'foa' (4 log-mel + 3 intensity) or 'mic' (4 log-mel + 6 GCC-PHAT)
    sample_rate: int = 24000
    win_length: int = 960
    hop_length: int = 480
    n_fft: int = 1024
    n_mels: int = 64
    label_hop_frames: int = 5  # feature frames per 100 ms label frame
    seq_frames: int = 250  # feature frames per training sequence (= 50 label frames)

    def __post_init__(self):
        check_format(self.fmt)
        if self.seq_frames % self.label_hop_frames:
            raise ConfigError(f"seq_frames={self.seq_frames} is not a multiple of "
                              f"label_hop_frames={self.label_hop_frames}")

    @property
    def n_channels(self) -> int:
        return FORMAT_CHANNELS[self.fmt]

    @property
    def label_hop_seconds(self) -> float:
        return self.label_hop_frames * self.hop_length / self.sample_rate

    @property
    def seq_label_frames(self) -> int:
        return self.seq_frames // self.label_hop_frames


@dataclass(frozen=True)
class DoanetConfig:
    """DOAnet CRNN (DESIGN 4)."""

    fmt: str = "foa"
    n_max: int = 2
    n_mels: int = 64
    conv_filters: int = 128
    pool_sizes: tuple = ((5, 2), (1, 2), (1, 2))  # (time, frequency) per conv block
    rnn_units: int = 128
    fc_units: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        check_format(self.fmt)
        if self.n_max < 1:
            raise ConfigError(f"n_max must be >= 1, got {self.n_max}")
        object.__setattr__(self, "pool_sizes", tuple(tuple(p) for p in self.pool_sizes))

    @property
    def n_channels(self) -> int:
        return FORMAT_CHANNELS[self.fmt]

    @property
    def time_pool(self) -> int:
        out = 1
        for t, _ in self.pool_sizes:
            out *= t
        return out


LOSSES = ("mse", "dmotp", "dmotp_act", "full", "pit")


@dataclass(frozen=True)
class LossConfig:
    """Which loss terms are used and how they are weighted (DESIGN 5; defaults from the reference code)."""

    name: str = "full"
    w_dmotp: float = 50.0
    w_dmota: float = 1.0
    w_activity: float = 10.0
    hard_gate: bool = False  # reference code's A <- A * (A > 0.5)
    activity_target: str = "hnet"  # 'hnet' (row maxima of A binarised, paper) or 'labels'
    # A = sigmoid(Hnet logits / T) in DOAnet training; every thresholded association is unchanged. The shipped
    # hnet_n2 is so sharp (dA/dD ~0 almost everywhere, rare spikes) that T = 1 trained worse DOAnets: main job,
    # seeds 0/1, LE 26.5/24.0 deg, MOTA 50.6/54.9 %; T = 5: 22.2/21.5 deg, 61.7/58.0 % (README, "Hnet").
    hnet_temperature: float = 5.0
    # Values of fields that configs saved before the field existed were run with (see from_dict).
    SAVED_BEFORE: ClassVar[dict] = {"hnet_temperature": 1.0}

    def __post_init__(self):
        if not self.hnet_temperature > 0:
            raise ConfigError(f"hnet_temperature must be > 0, got {self.hnet_temperature!r}")
        if self.name not in LOSSES:
            raise ConfigError(f"unknown loss {self.name!r}; expected one of {LOSSES}")
        if self.activity_target not in ("hnet", "labels"):
            raise ConfigError(f"activity_target must be 'hnet' or 'labels', got {self.activity_target!r}")

    @property
    def uses_activity(self) -> bool:
        return self.name in ("dmotp_act", "full", "pit")


# ----------------------------------------------------------------------------------------------------------
# Serialisation


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: Type[T], d: dict) -> T:
    """A config from its saved dict. Fields missing from it take the class's ``SAVED_BEFORE`` value (what runs
    saved before the field existed used, so a resumed old run keeps its setting), else the default."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    return cls(**{**getattr(cls, "SAVED_BEFORE", {}), **d})


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary name, so a killed job never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def replace_marked_section(path: str, marker: str, text: str) -> bool:
    """Replace what lies between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->` in the file at `path`
    (a README table kept up to date by the benchmark that measures it); False if the markers are missing."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    with open(path) as f:
        current = f.read()
    if begin not in current or end not in current:
        return False
    head, rest = current.split(begin, 1)
    atomic_write_text(path, head + begin + "\n" + text + end + rest.split(end, 1)[1])
    return True


def save_json(obj: Any, path: str) -> None:
    """Save a config dataclass (or a dict of them / plain data) as JSON, atomically."""

    def enc(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        raise TypeError(f"not serialisable: {type(o)}")

    atomic_write_text(path, json.dumps(obj, indent=2, default=enc, sort_keys=True) + "\n")


def load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None


def check_compatible(expected: FeatureConfig, found: FeatureConfig, where: str) -> None:
    """Raise a one-line ConfigError naming `where` and the differing fields if two feature configs differ."""
    diffs = [
        f"{f.name}={getattr(found, f.name)!r} (expected {getattr(expected, f.name)!r})"
        for f in dataclasses.fields(FeatureConfig)
        if getattr(found, f.name) != getattr(expected, f.name)
    ]
    if diffs:
        raise ConfigError(f"{where}: feature config mismatch: " + ", ".join(diffs))


# ----------------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class TrainPreset:
    """Budget of a training run: the scene preset it uses and how long it trains."""

    dataset: str = "quick"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3


TRAIN_PRESETS = {
    "quick": TrainPreset(dataset="quick", epochs=12, batch_size=16, lr=1e-3),
    "paper": TrainPreset(dataset="paper", epochs=200, batch_size=32, lr=1e-3),
}
