"""Streaming localisation with a causal DOAnet: the next 100 ms of audio in, that label frame's DOAs out.

:class:`StreamingLocalizer` is a stateful step. :meth:`~StreamingLocalizer.push` takes the next label frame of
audio (``hop_length * label_hop_frames`` = 2400 samples at 24 kHz, 4 channels, the model's channel order) and
returns a :class:`StreamFrame` with the DOAs (Nmax, 3), activities (Nmax,) and track ids (Nmax,) of that frame.
Between calls it carries

- the STFT overlap: the last ``hop_length`` (480) samples of the previous call. The five feature frames of label
  frame t are centred on samples 2400t + 480j (j = 0..4); their Hann windows (960 samples) reach back to sample
  2400t - 480 and forward to 2400t + 2399, the last sample of the frame itself. The features are those of
  :func:`dtbt_tf.features.features_numpy` (the package's NumPy feature implementation, the one TFLite inference
  uses) on those 480 + 2400 samples, whose first frame is dropped;
- the normalisation: the training statistics are a layer inside the model, so nothing is estimated online;
- the network state: the last two input frames of each causal convolution and the two GRU states
  (:func:`dtbt_tf.models.doanet.step_state_specs`), zeros at the start of a stream (what the zero padding and
  the zero initial GRU state are for the model run on a whole sequence).

Algorithmic latency: the answer for label frame t needs audio up to the last sample of that frame and none
after it (no lookahead): 100 ms counted from the frame's first sample, 0 ms after its end, plus the compute.
Over a whole file the outputs equal the causal Keras model run on the features of the whole file (tested
within 1e-4 for the Keras step and an fp32 TFLite step, 0.05 for int8: tests/test_streaming.py).

Track ids: the tracker of the model's ``InferenceConfig.tracking`` (:func:`dtbt_tf.tracks.make_tracker`), the
same rule and the same ids as offline inference, frame by frame: with the continuity rule duplicate slots are
merged and tracks continued by direction; the offline bridging of short gaps needs later frames and is not done
live (a bridged gap is absent from the stream's rows, its track id is the same).

Models (:func:`load_streaming_model`): a streaming ``.tflite`` file (:func:`dtbt_tf.export.export_streaming`;
runs in ``ai_edge_litert``, TensorFlow is never imported), a folder holding them
(``doanet_<fmt>_stream_int8.tflite`` is used before ``..._fp32``), or a causal training run folder / ``.keras``
file (the Keras step model; imports TensorFlow). This module imports neither TensorFlow nor Keras at import time.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import os
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from dtbt_tf.artifacts import RUN_CONFIG, inference_config_from, read_sidecar, tflite_sidecar_path
from dtbt_tf.config import ConfigError, FeatureConfig, InferenceConfig, from_dict
from dtbt_tf.data.dcase import DataError, Metadata, write_metadata
from dtbt_tf.features import N_AUDIO_CHANNELS, features_numpy
from dtbt_tf.geometry import unit_to_polar
from dtbt_tf.tracks import make_tracker

STREAM_VARIANTS = ("fp32", "int8")  # quantisations of the streaming TFLite model


def streaming_tflite_name(fmt: str, variant: str) -> str:
    """File name of a streaming TFLite model: ``doanet_<fmt>_stream_<variant>.tflite``."""
    return f"doanet_{fmt}_stream_{variant}.tflite"


def check_streamable(cfg: FeatureConfig) -> None:
    """ConfigError unless every feature frame of a label frame ends within it: the STFT window's half length may
    not exceed the hop (960 <= 2 * 480 by default), else a step would need audio of the next frame."""
    if cfg.win_length > 2 * cfg.hop_length:
        raise ConfigError(f"streaming needs win_length <= 2 * hop_length (got {cfg.win_length} and "
                          f"{cfg.hop_length}): the last feature frame of a label frame would need "
                          f"{cfg.win_length // 2 - cfg.hop_length} samples of the next one")


def step_samples(cfg: FeatureConfig) -> int:
    """Audio samples per streaming step: one label frame (2400 at 24 kHz)."""
    return cfg.hop_length * cfg.label_hop_frames


# ----------------------------------------------------------------------------------------------------------
# Step runners: features (label_hop_frames, n_mels, C) + states -> doa (N, 3), activity (N,), next states


class TFLiteStep:
    """A streaming ``.tflite`` model (:func:`dtbt_tf.export.export_streaming_tflite`) in ``ai_edge_litert``."""

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise ConfigError(f"{path}: file not found")
        info = read_sidecar(tflite_sidecar_path(path))
        if not info.get("streaming"):
            raise ConfigError(f"{path}: not a streaming model (its sidecar {os.path.basename(tflite_sidecar_path(path))} "
                              f"does not say streaming; export a causal DOAnet with scripts/export.py --stream)")
        try:
            interp = Interpreter(model_path=path, num_threads=num_threads)
        except ValueError as e:
            raise ConfigError(f"{path}: not a TFLite model ({str(e).splitlines()[0]})") from None
        self.runner = interp.get_signature_runner("serving_default")
        self.interpreter = interp
        try:
            self.feature_cfg = from_dict(FeatureConfig, info["feature_config"])
            self.n_max = int(info["doanet_config"]["n_max"])
            self.state_shapes = {s["name"]: tuple(s["shape"]) for s in info["states"]}
        except (KeyError, TypeError, ValueError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise ConfigError(f"{tflite_sidecar_path(path)}: not a complete streaming sidecar ({what}; export the "
                              f"model again with scripts/export.py --stream)") from None
        cfg = self.feature_cfg
        expected = {"features": (1, cfg.label_hop_frames, cfg.n_mels, cfg.n_channels),
                    **{f"state_{n}": shape for n, shape in self.state_shapes.items()}}
        inputs = {n: tuple(int(x) for x in d["shape"]) for n, d in self.runner.get_input_details().items()}
        if inputs != expected:
            side = os.path.basename(tflite_sidecar_path(path))
            if set(inputs) != set(expected):
                diff = f"inputs {', '.join(sorted(inputs))}; {side} says {', '.join(sorted(expected))}"
            else:
                name = next(n for n in sorted(inputs) if inputs[n] != expected[n])
                diff = f"input {name} has shape {inputs[name]}; {side} says {expected[name]}"
            raise ConfigError(f"{path}: the model does not match its sidecar ({diff}: a sidecar of another model?)")
        self.inference = inference_config_from(info, path)
        self.source = path

    def initial_states(self) -> dict:
        return {n: np.zeros(s, np.float32) for n, s in self.state_shapes.items()}

    def __call__(self, features: np.ndarray, states: dict):
        out = self.runner(features=np.ascontiguousarray(features[None], np.float32),
                          **{f"state_{n}": v for n, v in states.items()})
        return out["doa"][0, 0], out["activity"][0, 0], {n: out[f"next_{n}"] for n in states}


class KerasStep:
    """The Keras step model of a causal DOAnet (:func:`dtbt_tf.models.doanet.build_doanet_step`); imports TF."""

    def __init__(self, model, feature_cfg: FeatureConfig, inference: InferenceConfig, source: str = ""):
        import tensorflow as tf

        from dtbt_tf.models.doanet import build_doanet_step, step_state_specs

        try:
            self.state_shapes = {n: (1, *s) for n, s in step_state_specs(model)}
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None
        self.step = build_doanet_step(model, batch_size=1)
        self._fn = tf.function(lambda inputs: self.step(inputs, training=False))
        self._tf = tf
        self.feature_cfg, self.inference = feature_cfg, inference
        self.n_max = int(model.output["activity"].shape[-1])
        self.source = source

    def initial_states(self) -> dict:
        return {n: np.zeros(s, np.float32) for n, s in self.state_shapes.items()}

    def __call__(self, features: np.ndarray, states: dict):
        tf = self._tf
        inputs = {"features": tf.constant(features[None], tf.float32),
                  **{f"state_{n}": tf.constant(v) for n, v in states.items()}}
        out = self._fn(inputs)
        return (out["doa"].numpy()[0, 0], out["activity"].numpy()[0, 0],
                {n: out[f"next_{n}"].numpy() for n in states})


def _feature_cfg_of(model) -> FeatureConfig:
    channels = int(model.inputs[0].shape[-1])
    if channels not in (7, 10):
        raise ConfigError(f"model takes {channels} channels; expected 7 (FOA) or 10 (MIC)")
    return FeatureConfig(fmt="foa" if channels == 7 else "mic")


def find_streaming_tflite(folder: str) -> str | None:
    """The streaming TFLite model in a folder: int8 if there is one, else fp32 (None if neither)."""
    for variant in ("int8", "fp32"):
        found = sorted(glob.glob(os.path.join(folder, streaming_tflite_name("*", variant))))
        if found:
            return found[0]
    return None


def load_streaming_model(path: str, num_threads: int | None = None):
    """A step runner (:class:`TFLiteStep` or :class:`KerasStep`) for ``path``: a streaming ``.tflite`` file, a
    folder holding one, a causal training run folder or a causal DOAnet ``.keras`` file. ConfigError otherwise
    (a bidirectional model: "not a causal DOAnet")."""
    path = os.fspath(path)
    if path.endswith(".tflite"):
        return TFLiteStep(path, num_threads)
    if path.endswith(".keras"):
        from dtbt_tf.artifacts import load_doanet_keras

        model = load_doanet_keras(path)
        return KerasStep(model, _feature_cfg_of(model), InferenceConfig(), path)
    if os.path.isfile(path):
        raise ConfigError(f"{path}: not a streaming model (expected a streaming .tflite file, a folder holding one, "
                          f"a causal training run folder or a causal DOAnet .keras file)")
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: not found")
    if os.path.isfile(os.path.join(path, RUN_CONFIG)):
        from dtbt_tf.artifacts import load_trained

        model, run = load_trained(path)
        return KerasStep(model, run.feature, run.inference, path)
    found = find_streaming_tflite(path)
    if found is None:
        raise ConfigError(f"{path}: no streaming model here (expected {streaming_tflite_name('<fmt>', 'int8')} or "
                          f"..._fp32.tflite, or a causal training run folder)")
    return TFLiteStep(found, num_threads)


# ----------------------------------------------------------------------------------------------------------
# The stateful step


@dataclasses.dataclass
class StreamFrame:
    """One label frame's answer: index (label frame, from 0), start (its first sample, in seconds), doa (N, 3) unit
    vectors, activity (N,) probabilities, active (N,) bool (the slot is a detection: activity > threshold, or
    every slot for models without an activity head, and not merged into another slot by the tracker) and track
    (N,) int64 ids (-1 where not active)."""

    index: int
    start: float
    doa: np.ndarray
    activity: np.ndarray
    active: np.ndarray
    track: np.ndarray


class StreamingLocalizer:
    """Stateful streaming localisation (module docstring): ``push(chunk (2400, 4)) -> StreamFrame``.

    step: a step runner (:func:`load_streaming_model`); threshold, tracking: activity threshold and track-id
    rule (None = the model's own).
    :meth:`feed` takes blocks of any length and returns the frames they complete; :meth:`reset` starts a new
    stream (zero states, new track ids from 0).
    """

    def __init__(self, step, threshold: float | None = None, tracking: str | None = None):
        self.step = step
        self.cfg = step.feature_cfg
        check_streamable(self.cfg)
        self.inference = step.inference.with_overrides(threshold, tracking)
        self.frame_samples = step_samples(self.cfg)
        self.n_max = step.n_max
        self.reset()

    def reset(self) -> None:
        self._past = np.zeros((self.cfg.hop_length, N_AUDIO_CHANNELS), np.float32)
        self._pending = np.zeros((0, N_AUDIO_CHANNELS), np.float32)
        self._states = self.step.initial_states()
        self._tracks = make_tracker(self.inference, self.n_max)
        self.frames = 0

    def push(self, chunk: np.ndarray) -> StreamFrame:
        """The next label frame: ``chunk`` (frame_samples, 4) float -> its :class:`StreamFrame`."""
        chunk = np.asarray(chunk, np.float32)
        if chunk.shape != (self.frame_samples, N_AUDIO_CHANNELS):
            raise ValueError(f"a step takes ({self.frame_samples}, {N_AUDIO_CHANNELS}) samples, got {chunk.shape}")
        buffer = np.concatenate([self._past, chunk])
        # frame 0 of the buffer is the previous label frame's last one (already used); frames 1..5 are this one's
        features = features_numpy(buffer, self.cfg)[1:]
        self._past = buffer[-self.cfg.hop_length:]
        doa, activity, self._states = self.step(features, self._states)
        activity = np.asarray(activity, np.float32)
        doa = np.asarray(doa, np.float32)
        active = activity > self.inference.threshold if self.inference.use_activity else np.ones(self.n_max, bool)
        track = self._tracks.update(active, doa, activity)
        frame = StreamFrame(self.frames, self.frames * self.cfg.label_hop_seconds, doa, activity, track >= 0, track)
        self.frames += 1
        return frame

    def feed(self, block: np.ndarray) -> list[StreamFrame]:
        """Blocks of any length (n, 4): the frames they complete (the rest waits for the next block)."""
        block = np.asarray(block, np.float32)
        if block.ndim != 2 or block.shape[1] != N_AUDIO_CHANNELS:
            raise ValueError(f"audio blocks must have shape (n, {N_AUDIO_CHANNELS}), got {block.shape}")
        pending = np.concatenate([self._pending, block]) if len(self._pending) else block
        n = len(pending) // self.frame_samples
        frames = [self.push(pending[k * self.frame_samples:(k + 1) * self.frame_samples]) for k in range(n)]
        self._pending = pending[n * self.frame_samples:].copy()
        return frames

    def run(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole recording (samples, 4) from a fresh stream, chunk by chunk: doa (F, N, 3), activity (F, N),
        track (F, N) with F = samples // frame_samples (a last partial frame is dropped, as offline)."""
        self.reset()
        return collect(self.feed(audio), self.n_max)


def collect(frames: Sequence[StreamFrame], n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack frames -> doa (F, N, 3), activity (F, N), track (F, N)."""
    if not frames:
        return np.zeros((0, n_max, 3), np.float32), np.zeros((0, n_max), np.float32), np.zeros((0, n_max), np.int64)
    return (np.stack([f.doa for f in frames]), np.stack([f.activity for f in frames]),
            np.stack([f.track for f in frames]))


def frames_to_metadata(frames: Sequence[StreamFrame]) -> Metadata:
    """DCASE rows (frame, class 0, track id, DOA) for every active slot of every frame."""
    rows = [(f.index, int(f.track[k]), f.doa[k]) for f in frames for k in np.nonzero(f.active)[0]]
    if not rows:
        return Metadata(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    frame, track, doa = zip(*rows)
    frame = np.array(frame, np.int64)
    return Metadata(frame, np.zeros_like(frame), np.array(track, np.int64), np.array(doa, np.float64))


# ----------------------------------------------------------------------------------------------------------
# Printing tracks as they appear


class TrackEvents:
    """Lines for tracks that start or end: ``events(frame) -> [str]`` (times are the frame's start; durations
    from a track's first frame to the end of its last, frames of ``frame_seconds``). hold: label frames a track
    may be missing and still continue (the tracker's ``bridge_frames``): it is said to end only when it has been
    missing longer."""

    def __init__(self, frame_seconds: float = 0.1, hold: int = 0):
        self.frame_seconds, self.hold = float(frame_seconds), int(hold)
        self.live: dict[int, tuple[float, int, float]] = {}  # id -> (start s, last frame seen, its end s)

    def events(self, frame: StreamFrame) -> list[str]:
        lines = []
        now = {int(t): k for k, t in enumerate(frame.track) if t >= 0}
        end_now = frame.start + self.frame_seconds
        for tid in [t for t in self.live if t not in now and frame.index - self.live[t][1] > self.hold]:
            start, _, end = self.live.pop(tid)
            lines.append(f"{frame.start:8.1f} s  track {tid} ends ({end - start:.1f} s)")
        for tid, k in now.items():
            if tid in self.live:
                self.live[tid] = (self.live[tid][0], frame.index, end_now)
            else:
                self.live[tid] = (frame.start, frame.index, end_now)
                az, el = unit_to_polar(frame.doa[k])
                lines.append(f"{frame.start:8.1f} s  track {tid} starts: azimuth {az:4.0f}, elevation {el:3.0f} "
                             f"(slot {k}, activity {frame.activity[k]:.2f})")
        return lines


def track_events(localizer: StreamingLocalizer) -> TrackEvents:
    """The :class:`TrackEvents` of a localizer's frames and tracking rule."""
    hold = localizer.inference.bridge_frames if localizer.inference.tracking == "continuity" else 0
    return TrackEvents(localizer.cfg.label_hop_seconds, hold)


# ----------------------------------------------------------------------------------------------------------
# Files and sound cards


def _paced(blocks: Iterable[np.ndarray], sample_seconds: float, realtime: bool) -> Iterator[np.ndarray]:
    """The blocks, each released (with ``realtime``) no earlier than its last sample would have arrived live."""
    t0 = time.monotonic()
    arrived = 0.0
    for block in blocks:
        arrived += len(block) * sample_seconds
        if realtime:
            wait = t0 + arrived - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield block


def stream_files(audio_paths: Sequence[str], model_path: str, out_dir: str, realtime: bool = False,
                 threshold: float | None = None, num_threads: int | None = None, channel_order: str = "acn",
                 log: Callable[[str], None] = print, show: Callable[[str], None] | None = None,
                 tracking: str | None = None) -> list[str]:
    """Feed each file to a :class:`StreamingLocalizer` 100 ms at a time and write ``<out_dir>/<stem>.csv``, the
    DCASE rows of ``scripts/infer.py`` (frame, class 0, track id, azimuth, elevation; track ids by the
    model's tracking rule or ``tracking``, without the offline gap bridging). realtime: release the audio at
    the pace of the clock; show: called with a line for each track that starts or ends. Files as in :func:`dtbt_tf.inference.infer_files` (any
    rate, resampled; channel_order 'fuma' for FuMa FOA); every input is checked before anything is written.
    Returns the written paths.
    """
    from dtbt_tf.data.user_audio import (CHANNEL_ORDERS, check_audio_files, check_long_enough, iter_user_audio,
                                         resample_note)
    from dtbt_tf.inference import output_stems

    if not audio_paths:
        raise DataError("no audio files given")
    if channel_order not in CHANNEL_ORDERS:
        raise ConfigError(f"unknown channel order {channel_order!r}; expected one of {CHANNEL_ORDERS}")
    stems = output_stems(audio_paths)
    infos = check_audio_files(audio_paths)
    localizer = StreamingLocalizer(load_streaming_model(model_path, num_threads), threshold, tracking)
    cfg = localizer.cfg
    if channel_order == "fuma" and cfg.fmt != "foa":
        raise ConfigError(f"{model_path}: --channel-order fuma applies to FOA models, this one is {cfg.fmt}")
    check_long_enough(audio_paths, infos, localizer.frame_samples, cfg.sample_rate)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for p, stem, info in zip(audio_paths, stems, infos):
        note = resample_note(info, cfg.sample_rate)
        if note:
            log(f"{p}: {note}")
        localizer.reset()
        events = track_events(localizer)
        frames = []
        blocks = iter_user_audio(p, cfg.fmt, channel_order, block_seconds=cfg.label_hop_seconds,
                                 sample_rate=cfg.sample_rate)
        for block in _paced(blocks, 1.0 / cfg.sample_rate, realtime):
            for frame in localizer.feed(block):
                frames.append(frame)
                if show is not None:
                    for line in events.events(frame):
                        show(line)
        csv_path = os.path.join(out_dir, stem + ".csv")
        write_metadata(csv_path, frames_to_metadata(frames))
        written.append(csv_path)
    return written


def stream_device(device, model_path: str, out_dir: str, seconds: float | None = None,
                  threshold: float | None = None, num_threads: int | None = None, channel_order: str = "acn",
                  log: Callable[[str], None] = print, show: Callable[[str], None] | None = print,
                  tracking: str | None = None) -> list[str]:
    """Localise a sound card's 4-channel input live (``sounddevice``) until ``seconds`` have passed or Ctrl-C,
    showing tracks as they start and end, then write ``<out_dir>/live_<YYYYmmdd-HHMMSS>.csv``. ConfigError when
    ``sounddevice`` is not installed or the device cannot record 4 channels at the model's rate."""
    try:
        import sounddevice as sd
    except ImportError:
        raise ConfigError("--device needs the sounddevice package: pip install 'dtbt_tf[live]' "
                          "(or pip install sounddevice)") from None
    except OSError as e:  # sounddevice is there but the PortAudio library is not
        raise ConfigError(f"--device: sounddevice cannot load PortAudio ({e}); install it, e.g. "
                          f"apt-get install libportaudio2") from None
    from dtbt_tf.data.user_audio import fuma_to_acn

    localizer = StreamingLocalizer(load_streaming_model(model_path, num_threads), threshold, tracking)
    cfg = localizer.cfg
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"live_{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.csv")
    events, frames = track_events(localizer), []
    limit = None if seconds is None else int(round(seconds / cfg.label_hop_seconds))
    try:
        stream = sd.InputStream(device=device, channels=N_AUDIO_CHANNELS, samplerate=cfg.sample_rate,
                                dtype="float32", blocksize=localizer.frame_samples)
    except (sd.PortAudioError, ValueError) as e:
        raise ConfigError(f"device {device}: cannot record {N_AUDIO_CHANNELS} channels at {cfg.sample_rate} Hz "
                          f"({str(e).splitlines()[0]})") from None
    log(f"listening on device {device} ({cfg.fmt}, {cfg.sample_rate} Hz); Ctrl-C stops")
    try:
        with stream:
            while limit is None or len(frames) < limit:
                block, overflowed = stream.read(localizer.frame_samples)
                if overflowed:
                    log("warning: input overflow (the computation fell behind the sound card)")
                if channel_order == "fuma":
                    block = fuma_to_acn(block)
                for frame in localizer.feed(block):
                    frames.append(frame)
                    if show is not None:
                        for line in events.events(frame):
                            show(line)
    except KeyboardInterrupt:
        pass
    write_metadata(csv_path, frames_to_metadata(frames))
    return [csv_path]
