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
ARCHS = ("crnn", "resnet_conformer")  # DoanetConfig.arch: the paper's CRNN (default), a stronger alternative
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
    """DOAnet (DESIGN 4): ``arch`` "crnn" is the paper's CRNN (conv_filters, rnn_units); "resnet_conformer" the
    stronger alternative of :mod:`dtbt_tf.models.conformer` (a residual convolution stack of conv_filters
    channels, then ``conformer_blocks`` Conformer blocks of width ``conformer_dim`` with ``attention_heads``
    heads and depthwise kernel ``conformer_kernel``). Both end in the same heads (fc_units)."""

    fmt: str = "foa"
    n_max: int = 2
    n_mels: int = 64
    conv_filters: int = 128
    pool_sizes: tuple = ((5, 2), (1, 2), (1, 2))  # (time, frequency) per conv block
    rnn_units: int = 128
    fc_units: int = 128
    dropout: float = 0.0
    # causal: unidirectional GRUs and convolutions padded in the past only (no lookahead), for streaming
    causal: bool = False
    arch: str = "crnn"
    conformer_dim: int = 256
    conformer_blocks: int = 2
    attention_heads: int = 4
    conformer_kernel: int = 7

    def __post_init__(self):
        check_format(self.fmt)
        if not isinstance(self.causal, bool):
            raise ConfigError(f"causal must be true or false, got {self.causal!r}")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.causal and self.arch != "crnn":
            raise ConfigError(f"only the crnn arch has a causal (streaming) variant, not {self.arch!r}")
        for name in ("conformer_dim", "conformer_blocks", "attention_heads", "conformer_kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.conformer_dim % self.attention_heads:
            raise ConfigError(f"conformer_dim={self.conformer_dim} is not divisible by attention_heads="
                              f"{self.attention_heads}")
        if self.n_max < 1:
            raise ConfigError(f"n_max must be >= 1, got {self.n_max}")
        for name in ("n_mels", "conv_filters", "rnn_units", "fc_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "pool_sizes", tuple(tuple(p) for p in self.pool_sizes))
        if self.n_mels % self.freq_pool:
            raise ConfigError(f"n_mels={self.n_mels} is not divisible by the frequency pooling {self.freq_pool}")

    @property
    def n_channels(self) -> int:
        return FORMAT_CHANNELS[self.fmt]

    @property
    def freq_pool(self) -> int:
        out = 1
        for _, f in self.pool_sizes:
            out *= f
        return out

    @property
    def time_pool(self) -> int:
        out = 1
        for t, _ in self.pool_sizes:
            out *= t
        return out


LOSSES = ("mse", "dmotp", "dmotp_act", "full", "pit")
RUN_CONFIG_NAME = "run_config.json"


@dataclass(frozen=True)
class LossConfig:
    """Which loss terms are used and how they are weighted (DESIGN 5; defaults from the reference code)."""

    name: str = "full"
    w_dmotp: float = 50.0
    w_dmota: float = 1.0
    w_activity: float = 10.0
    hard_gate: bool = False  # reference code's A <- A * (A > 0.5)
    activity_target: str = "hnet"  # 'hnet' (row maxima of A binarised, paper) or 'labels'
    # A = sigmoid(Hnet logits / T) in DOAnet training; every thresholded association is unchanged. A sharp Hnet
    # has dA/dD ~0 almost everywhere with rare spikes; T > 1 smooths that gradient (README, "Hnet").
    hnet_temperature: float = 5.0
    # Values of fields that configs saved before the field existed were run with (see from_dict).
    SAVED_BEFORE: ClassVar[dict] = {"hnet_temperature": 1.0}

    def __post_init__(self):
        for name in ("w_dmotp", "w_dmota", "w_activity"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
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
# Presets and the run configuration


@dataclass(frozen=True)
class TrainPreset:
    """Budget of a training run: the scene preset it uses and how long it trains."""

    dataset: str = "quick"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3


TRAIN_PRESETS = {
    "quick": TrainPreset(dataset="quick", epochs=12, batch_size=16, lr=1e-3),
    "standard": TrainPreset(dataset="standard", epochs=12, batch_size=32, lr=1e-3),
    "paper": TrainPreset(dataset="paper", epochs=200, batch_size=32, lr=1e-3),
}
STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("constant", "cosine")
DEFAULT_SEQ_HOP = 125  # feature frames between training windows (2.5 s: windows overlap by half)


@dataclass(frozen=True)
class TrainSettings:
    """How a run trains. Frames are feature frames (5 per label frame).

    seq_hop: step between training windows of ``FeatureConfig.seq_frames`` (250) frames; a hop below 250 gives
    overlapping windows, i.e. more (correlated) training sequences per epoch (window borders also move by a
    random offset per file and epoch). schedule: 'constant' lr or 'cosine' decay from lr to 5 % of it over all
    the steps of ``epochs``. seed: initialisation and data order (the synthetic dataset always uses its own
    seed 0). preset: synthetic dataset used when no data is given. steps_per_epoch: optimizer steps per epoch
    (the training split is repeated or cut within the epoch as needed); None: one expected pass over the
    training windows (:func:`dtbt_tf.training.sequences_per_epoch` / batch size). Fixing it gives training sets
    of any size the same schedule and the same validation/checkpoint cadence (benchmarks/learning_curve.py).
    """

    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "cosine"
    seq_hop: int = DEFAULT_SEQ_HOP
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    preset: str = "quick"
    steps_per_epoch: int | None = None

    def __post_init__(self):
        if self.steps_per_epoch is not None and (isinstance(self.steps_per_epoch, bool)
                                                 or not isinstance(self.steps_per_epoch, int)
                                                 or self.steps_per_epoch < 1):
            raise ConfigError(f"steps_per_epoch must be None or an integer >= 1, got {self.steps_per_epoch!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"epochs, batch_size must be >= 1 and lr > 0 (got {self.epochs}, {self.batch_size}, "
                              f"{self.lr})")
        if self.seq_hop < 5 or self.seq_hop % 5:
            raise ConfigError(f"seq_hop must be a positive multiple of 5 feature frames, got {self.seq_hop}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.preset not in TRAIN_PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; expected one of {sorted(TRAIN_PRESETS)}")

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides) -> "TrainSettings":
        """Settings of a named preset (:data:`TRAIN_PRESETS`: epochs, batch size, lr); None overrides ignored."""
        if preset not in TRAIN_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
        p = TRAIN_PRESETS[preset]
        base = dict(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, preset=preset)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


TRACKINGS = ("slots", "continuity")  # track-id rules of dtbt_tf.tracks


@dataclass(frozen=True)
class InferenceConfig:
    """How a model's outputs become detections and tracks: a slot counts in a frame when its activity >
    ``threshold``; ``use_activity`` False (models trained without the activity loss: mse, dmotp) counts every slot
    in every frame (LR = 100 %, as in the paper). ``tracking``: the track-id rule of :mod:`dtbt_tf.tracks`,
    "continuity" (merge slots closer than ``merge_deg``, continue tracks within ``gate_deg``, bridge gaps of up
    to ``bridge_frames`` label frames offline) or "slots" (the paper's protocol: raw slots, what models exported
    before the field existed keep). Travels with every export; inference reads it from there."""

    threshold: float = 0.5
    use_activity: bool = True
    tracking: str = "continuity"
    merge_deg: float = 20.0
    gate_deg: float = 60.0
    bridge_frames: int = 5

    SAVED_BEFORE: ClassVar[dict] = {"tracking": "slots"}

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.tracking not in TRACKINGS:
            raise ConfigError(f"unknown tracking {self.tracking!r}; expected one of {TRACKINGS}")
        if not 0.0 <= self.merge_deg < 180.0:
            raise ConfigError(f"merge_deg must be in [0, 180) degrees (0 = no merging), got {self.merge_deg}")
        if not 0.0 < self.gate_deg <= 90.0:
            raise ConfigError(f"gate_deg must be in (0, 90] degrees, got {self.gate_deg}")
        if isinstance(self.bridge_frames, bool) or not isinstance(self.bridge_frames, int) or self.bridge_frames < 0:
            raise ConfigError(f"bridge_frames must be an integer >= 0, got {self.bridge_frames!r}")

    @classmethod
    def for_loss(cls, loss: "LossConfig", threshold: float = 0.5, **tracking) -> "InferenceConfig":
        return cls(threshold=threshold, use_activity=loss.uses_activity, **tracking)

    def with_overrides(self, threshold: float | None = None, tracking: str | None = None) -> "InferenceConfig":
        """This config with a user's given (not None) threshold and track-id rule; validated."""
        given = {k: v for k, v in (("threshold", threshold), ("tracking", tracking)) if v is not None}
        return dataclasses.replace(self, **given) if given else self


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run is: saved as ``run_config.json`` in its folder, only after all of it is valid.

    data_dir: the TFRecord feature folder it trains on (absolute); hnet: the frozen Hnet's path (None for the
    losses that use none: mse, pit).
    """

    feature: FeatureConfig
    model: DoanetConfig
    loss: LossConfig
    train: TrainSettings
    inference: InferenceConfig
    data_dir: str | None = None
    hnet: str | None = None

    # fields of run_config.json -> attribute names (the file keeps the names of the first runs)
    KEYS: ClassVar[dict] = {"feature_config": "feature", "doanet_config": "model", "loss_config": "loss",
                            "train": "train", "inference_config": "inference", "data_dir": "data_dir",
                            "hnet": "hnet"}
    # fields that may differ when a run is resumed: more epochs continue the run (the cosine schedule is
    # stretched from where it is)
    RESUMABLE_CHANGES: ClassVar[tuple] = ("train.epochs",)

    def __post_init__(self):
        if (self.model.fmt, self.model.n_mels) != (self.feature.fmt, self.feature.n_mels):
            raise ConfigError(f"model config ({self.model.fmt}, n_mels={self.model.n_mels}) does not match the "
                              f"feature config ({self.feature.fmt}, n_mels={self.feature.n_mels})")
        if self.inference.use_activity != self.loss.uses_activity:
            raise ConfigError(f"inference use_activity={self.inference.use_activity} but loss {self.loss.name!r} "
                              f"{'trains' if self.loss.uses_activity else 'does not train'} the activity head")

    def to_dict(self) -> dict:
        return {key: (dataclasses.asdict(v) if dataclasses.is_dataclass(v := getattr(self, attr)) else v)
                for key, attr in self.KEYS.items()}

    @classmethod
    def from_dict(cls, d: dict, where: str = RUN_CONFIG_NAME) -> "RunConfig":
        """A RunConfig from ``to_dict``'s output; files of older runs (threshold in "train", no
        "inference_config") load with what they ran with. ConfigError naming ``where`` if malformed."""
        try:
            train = dict(d["train"])
            threshold = train.pop("threshold", 0.5)
            loss = from_dict(LossConfig, d["loss_config"])
            inference = (from_dict(InferenceConfig, d["inference_config"]) if "inference_config" in d
                         else InferenceConfig.for_loss(loss, threshold))
            unknown = set(d) - set(cls.KEYS)
            if unknown:
                raise ConfigError(f"unknown keys {sorted(unknown)}")
            return cls(from_dict(FeatureConfig, d["feature_config"]), from_dict(DoanetConfig, d["doanet_config"]),
                       loss, from_dict(TrainSettings, train), inference, d.get("data_dir"), d.get("hnet"))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: malformed run config ({type(e).__name__}: {e})") from None

    def differences(self, other: "RunConfig") -> list[str]:
        """``section.field`` names whose values differ between two run configs, e.g. ["train.lr"]."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for key, attr in self.KEYS.items():
            if isinstance(a[key], dict):
                out += [f"{attr}.{f}" for f in sorted(set(a[key]) | set(b[key])) if a[key].get(f) != b[key].get(f)]
            elif a[key] != b[key]:
                out.append(attr)
        return out
