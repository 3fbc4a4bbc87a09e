"""Inference on audio files of any length: features -> windows -> model -> stitched tracks -> DCASE CSV (+ plot).

Models (:func:`load_model`): a SavedModel (a version folder, or a TF Serving base folder whose highest numeric
version is used), a training run folder (``run_config.json`` + ``best.keras``) or a ``.tflite`` file written by
:func:`dtbt_tf.export.export_tflite`. Each carries its InferenceConfig (activity threshold, whether the activity
head is used) in its sidecar or run config. This module imports no TensorFlow at import time; with a ``.tflite``
model TensorFlow is never imported: the features then come from :func:`dtbt_tf.features.features_numpy` (the
TF-free device path, tested against the TF features) and the interpreter is ``ai_edge_litert``.

Files are read in blocks (:func:`dtbt_tf.data.user_audio.iter_user_audio`, 60 s by default) and localised by
:func:`localize_blocks`: each block's features are computed with the STFT context of its neighbours carried over
(:class:`FeatureStream`) and fed to the windows of :class:`dtbt_tf.windowing.WindowStream`, so memory is bounded
by the block whatever the file's length, and the result equals :func:`localize` of the whole file (the features
of the whole file at once, then :func:`dtbt_tf.windowing.run_windows`) up to float rounding. Slots are
re-associated across windows (:mod:`dtbt_tf.windowing`) and the CSV's track column is a track id
(:mod:`dtbt_tf.tracks`, the model's ``InferenceConfig.tracking`` rule: by default duplicate slots merged,
tracks continued across slots by direction and short gaps bridged; a new id each time a track starts).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Sequence

import numpy as np

from dtbt_tf.artifacts import (RUN_CONFIG, SIDECAR, inference_config_from, load_trained, read_sidecar,
                               saved_model_version_dir, tflite_sidecar_path)
from dtbt_tf.config import ConfigError, FeatureConfig, InferenceConfig, from_dict
from dtbt_tf.data.dcase import DataError, Metadata, read_metadata, write_metadata
from dtbt_tf.data.user_audio import (CHANNEL_ORDERS, check_audio_files, check_long_enough, iter_user_audio,
                                     resample_note)
from dtbt_tf.features import N_AUDIO_CHANNELS, features_numpy
from dtbt_tf.plots import plot_tracks
from dtbt_tf.tracks import bridge_gaps, track_ids
from dtbt_tf.windowing import WindowStream, run_windows

WINDOW_FRAMES = 250  # feature frames per model window (5 s), = FeatureConfig.seq_frames
BLOCK_SECONDS = 60.0  # audio read and featurised per block by infer_files


# ----------------------------------------------------------------------------------------------------------
# Models


@dataclasses.dataclass
class LoadedModel:
    """A model ready for windows of ``window_frames`` feature frames (F = window_frames / 5 label frames):
    ``predict(x)`` maps a batch of windows to numpy (doa (B, F, N, 3), activity (B, F, N)).

    input_kind: 'features' (x = (B, window_frames, 64, C) raw features) or 'audio'
    (x = (B, window_frames * hop_length, 4)); max_batch: windows per call (1 for TFLite); source: the path loaded;
    inference: the model's threshold and activity use (without the activity head, ``predict`` reports
    activity 1 for every slot: every regressor always counts).
    """

    predict: object
    feature_cfg: FeatureConfig
    n_max: int
    inference: InferenceConfig
    input_kind: str = "features"
    window_frames: int = WINDOW_FRAMES
    max_batch: int = 16
    source: str = ""


def _feature_cfg_from(info: dict, n_channels: int, where: str) -> FeatureConfig:
    if "feature_config" in info:
        cfg = from_dict(FeatureConfig, info["feature_config"])
    elif n_channels in (7, 10):
        cfg = FeatureConfig(fmt="foa" if n_channels == 7 else "mic")
    else:
        raise ConfigError(f"{where}: cannot tell the feature format (input has {n_channels} channels, no config)")
    if cfg.n_channels != n_channels:
        raise ConfigError(f"{where}: config says {cfg.fmt} ({cfg.n_channels} channels) but the model takes "
                          f"{n_channels}")
    return cfg


def _load_tflite(path: str, num_threads: int | None) -> LoadedModel:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=path, num_threads=num_threads)
    except ValueError as e:
        raise ConfigError(f"{path}: not a TFLite model ({str(e).splitlines()[0]})") from None
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = {len(d["shape"]): d for d in interp.get_output_details()}
    if set(outs) != {3, 4}:
        raise ConfigError(f"{path}: expected a DOAnet with outputs doa (1, F, N, 3) and activity (1, F, N)")
    shape = tuple(int(s) for s in inp["shape"])
    info = read_sidecar(tflite_sidecar_path(path))
    if len(shape) == 4:
        kind, cfg, window = "features", _feature_cfg_from(info, shape[-1], path), shape[1]
    elif len(shape) == 3 and shape[-1] == N_AUDIO_CHANNELS:
        kind = "audio"
        if "feature_config" not in info:
            side = os.path.basename(tflite_sidecar_path(path))
            raise ConfigError(f"{path}: audio-in TFLite model without its {side}")
        cfg = from_dict(FeatureConfig, info["feature_config"])
        window = shape[1] // cfg.hop_length
    else:
        raise ConfigError(f"{path}: unexpected input shape {shape}")
    doa_idx, act_idx, in_idx = outs[4]["index"], outs[3]["index"], inp["index"]

    def predict(x):
        interp.set_tensor(in_idx, np.ascontiguousarray(x, np.float32))
        interp.invoke()
        return interp.get_tensor(doa_idx).copy(), interp.get_tensor(act_idx).copy()

    return LoadedModel(predict, cfg, int(outs[3]["shape"][-1]), inference_config_from(info, path), kind, window, 1,
                       path)


def _load_saved_model(path: str) -> LoadedModel:
    import tensorflow as tf

    vdir = saved_model_version_dir(path)
    try:
        loaded = tf.saved_model.load(vdir)
        fn = loaded.signatures["serving_default"]
        (spec,) = fn.structured_input_signature[1].values()
        n_max = int(fn.structured_outputs["activity"].shape[-1])
    except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
        raise ConfigError(f"{vdir}: not a DOAnet SavedModel ({type(e).__name__})") from None
    info = read_sidecar(os.path.join(vdir, "assets.extra", SIDECAR))
    cfg = _feature_cfg_from(info, int(spec.shape[-1]), vdir)

    def predict(x):
        out = fn(features=tf.constant(x, tf.float32))
        return out["doa"].numpy(), out["activity"].numpy()

    predict.keep_alive = loaded  # the signature needs its object alive
    return LoadedModel(predict, cfg, n_max, inference_config_from(info, vdir), "features", cfg.seq_frames, 16, vdir)


def _load_run_dir(path: str) -> LoadedModel:
    import tensorflow as tf

    model, run = load_trained(path)
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(x):
        out = fn(tf.constant(x, tf.float32))
        return out["doa"].numpy(), out["activity"].numpy()

    return LoadedModel(predict, run.feature, run.model.n_max, run.inference, "features", run.feature.seq_frames, 16,
                       path)


def load_model(path: str, num_threads: int | None = None) -> LoadedModel:
    """Load a ``.tflite`` file, a SavedModel (version folder or serving base folder) or a training run folder.

    Windows: the TFLite model's fixed input length, else the training sequence length (``seq_frames``, 250).
    num_threads applies to TFLite only (None = the interpreter's default). ConfigError if ``path`` is none of these.
    """
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: file not found")
        model = _load_tflite(path, num_threads)
    elif not os.path.isdir(path):
        raise ConfigError(f"{path}: not a .tflite file or a model folder" if not os.path.exists(path)
                          else f"{path}: not a .tflite file or a model folder (a DOAnet .keras file must be "
                               f"exported first: scripts/export.py)")
    elif os.path.isfile(os.path.join(path, RUN_CONFIG)):
        model = _load_run_dir(path)
    else:
        model = _load_saved_model(path)
    if not model.inference.use_activity:
        predict = model.predict

        def every_slot(x):
            doa, act = predict(x)
            return doa, np.ones_like(act)

        model = dataclasses.replace(model, predict=every_slot)
    return model


# ----------------------------------------------------------------------------------------------------------
# Localisation


def localize(audio: np.ndarray, model: LoadedModel, features: np.ndarray | None = None,
             reassociate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over a whole file in the windows of :mod:`dtbt_tf.windowing`, slots re-associated across
    windows (``reassociate=False``: each window's raw slot order).

    audio: (samples, 4) float32 at the model's sample rate; features: its (T, 64, C) features if already
    computed (features-in models only). Returns doa (F, N, 3) unit vectors and activity
    (F, N) probabilities with F = samples // (hop_length * label_hop_frames) label frames.
    """
    cfg = model.feature_cfg
    label_hop = cfg.label_hop_frames
    n_label = audio.shape[0] // (cfg.hop_length * label_hop)
    window = model.window_frames // label_hop
    if model.input_kind == "audio":
        source, step = audio, cfg.hop_length * label_hop
    else:
        if features is None:
            features = _features(audio[:n_label * cfg.hop_length * label_hop], cfg, model.source)
        source, step = features[:n_label * label_hop], label_hop
    return run_windows(source, n_label, window, step, model.n_max, model.predict, model.max_batch, reassociate)


def _features(audio: np.ndarray, cfg: FeatureConfig, source: str) -> np.ndarray:
    """TF features when the model is a TF one (TensorFlow is loaded anyway), NumPy features for TFLite."""
    if source.endswith(".tflite"):
        return features_numpy(audio, cfg)
    from dtbt_tf.features.tf_features import feature_function

    return feature_function(cfg)(audio).numpy()


class FeatureStream:
    """Features of audio that arrives block by block, equal to those of the whole file cut to whole label frames
    (what :func:`localize` computes) up to float rounding.

    ``push(block)`` returns the feature frames whose STFT frame (``n_fft`` samples centred on ``t * hop_length``)
    lies inside the whole label frames received so far; ``finish()`` returns the rest, with the zeros after the
    last whole label frame that the whole-file features see. features: (samples, 4) -> (samples // hop_length,
    n_mels, C), the whole-file feature function. Each call featurises its new frames plus ``ceil(n_fft / 2 /
    hop_length)`` frames of context either side (dropped), so the kept frames see exactly their own samples.
    Holds the audio of the frames not yet featurised plus the context.
    """

    def __init__(self, cfg: FeatureConfig, features: Callable[[np.ndarray], np.ndarray]):
        self.cfg, self.features = cfg, features
        self.hop, self.half = cfg.hop_length, cfg.n_fft // 2
        self.context_frames = -(-self.half // self.hop)
        self.label = cfg.hop_length * cfg.label_hop_frames
        self._audio = np.zeros((0, N_AUDIO_CHANNELS), np.float32)  # samples from self._start on
        self._start = 0
        self._n = 0  # samples received
        self._t = 0  # next feature frame

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float32)
        self._audio = np.concatenate([self._audio, block]) if len(self._audio) else block
        self._n += len(block)
        usable = self._n // self.label * self.label
        t_end = min(usable // self.hop, (usable - self.half) // self.hop + 1) if usable >= self.half else 0
        return self._frames(t_end)

    def finish(self) -> np.ndarray:
        cut = self._n // self.label * self.label
        self._audio = self._audio[:max(cut - self._start, 0)]
        return self._frames(cut // self.hop)

    def _frames(self, t_end: int) -> np.ndarray:
        if t_end <= self._t:
            return np.zeros((0, self.cfg.n_mels, self.cfg.n_channels), np.float32)
        ctx = self.context_frames * self.hop
        lo, hi = self._t * self.hop - ctx, t_end * self.hop + ctx
        x = np.zeros((hi - lo, N_AUDIO_CHANNELS), np.float32)
        a, b = max(lo, self._start), min(hi, self._start + len(self._audio))
        if b > a:
            x[a - lo:b - lo] = self._audio[a - self._start:b - self._start]
        out = np.asarray(self.features(x), np.float32)[self.context_frames:self.context_frames + t_end - self._t]
        self._t = t_end
        keep = max(self._t * self.hop - ctx, self._start)
        self._audio = self._audio[keep - self._start:]
        self._start = keep
        return out


def localize_blocks(blocks: Iterable[np.ndarray], model: LoadedModel, reassociate: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`localize` of the concatenated ``blocks`` ((n, 4) float32 at the model's rate, any sizes) with memory
    bounded by a block: features per block (:class:`FeatureStream`), windows as they fill
    (:class:`dtbt_tf.windowing.WindowStream`). Equals :func:`localize` of the whole file up to float rounding."""
    cfg = model.feature_cfg
    label_hop = cfg.label_hop_frames
    window = model.window_frames // label_hop
    label = cfg.hop_length * label_hop
    feats = None
    if model.input_kind == "audio":
        step = label
    else:
        step = label_hop
        feats = FeatureStream(cfg, lambda a: _features(a, cfg, model.source))
    stream = WindowStream(window, step, model.n_max, model.predict, model.max_batch, reassociate)
    n = 0
    for block in blocks:
        block = np.asarray(block, np.float32)
        n += len(block)
        stream.push(block if feats is None else feats.push(block))
    if feats is not None:
        stream.push(feats.finish())
    return stream.finish(n // label)


def outputs_to_metadata(doa: np.ndarray, activity: np.ndarray, inference: InferenceConfig | None = None) -> Metadata:
    """Stitched outputs of one file -> DCASE rows (class 0) of ``inference``'s detections and tracks: a slot
    is a detection where activity > threshold (every slot in every frame when the activity head is not used),
    track ids by :func:`dtbt_tf.tracks.track_ids` with the config's rule, and with the continuity rule the gaps
    of up to ``bridge_frames`` frames inside a track filled (:func:`dtbt_tf.tracks.bridge_gaps`). The one
    conversion of stitched outputs to tracks: infer.py, the split evaluation, training plots."""
    inference = inference or InferenceConfig()
    doa = np.asarray(doa, np.float64)
    activity = np.asarray(activity)
    active = activity > inference.threshold if inference.use_activity else np.ones(activity.shape, bool)
    ids = track_ids(active, doa, activity, inference)
    frame, slot = np.nonzero(ids >= 0)
    frame, track, vec = frame.astype(np.int64), ids[frame, slot], doa[frame, slot].reshape(-1, 3)
    if inference.tracking == "continuity":
        frame, track, vec = bridge_gaps(frame, track, vec, inference.bridge_frames)
    return Metadata(frame, np.zeros(frame.size, np.int64), track, vec)


# ----------------------------------------------------------------------------------------------------------
# Files


def output_stems(audio_paths: Sequence[str]) -> list[str]:
    """The output name of each input (its file name without extension); DataError if two inputs share one."""
    seen: dict[str, str] = {}
    stems = []
    for p in audio_paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in seen:
            raise DataError(f"{p}: same output name {stem!r} as {seen[stem]} (outputs would overwrite each other)")
        seen[stem] = p
        stems.append(stem)
    return stems


def infer_files(audio_paths: Sequence[str], model_path: str, out_dir: str, plot: bool = False,
                ref_dir: str | None = None, threshold: float | None = None, num_threads: int | None = None,
                channel_order: str = "acn", log=print, block_seconds: float = BLOCK_SECONDS,
                tracking: str | None = None) -> list[str]:
    """Localise each audio file and write ``<out_dir>/<stem>.csv`` (DCASE rows: frame, 0, track id, azimuth,
    elevation) and, with ``plot``, ``<stem>.png`` (with ``<ref_dir>/<stem>.csv`` overlaid when it exists).

    Files: wav/flac/ogg, 4 channels, any sample rate (resampled to the model's, said in one line);
    channel_order 'fuma' converts FuMa FOA to ACN/SN3D. threshold, tracking (the track-id rule, "continuity" or
    "slots"): None = the model's own. Every input is
    checked before anything is written; each output is written to a temporary name and renamed. Files are read
    and localised ``block_seconds`` of audio at a time (:func:`localize_blocks`: memory bounded by the block,
    result equal to the whole file at once). Returns the written paths. Raises DataError / ConfigError on bad
    input.
    """
    if not audio_paths:
        raise DataError("no audio files given")
    if channel_order not in CHANNEL_ORDERS:
        raise ConfigError(f"unknown channel order {channel_order!r}; expected one of {CHANNEL_ORDERS}")
    InferenceConfig().with_overrides(threshold, tracking)  # validates before the model is loaded
    if not block_seconds > 0:
        raise ConfigError(f"block length {block_seconds} s: expected a positive number of seconds")
    if ref_dir is not None and not os.path.isdir(ref_dir):
        raise DataError(f"{ref_dir}: reference metadata folder not found")
    stems = output_stems(audio_paths)
    infos = check_audio_files(audio_paths)
    model = load_model(model_path, num_threads=num_threads)
    cfg = model.feature_cfg
    if channel_order == "fuma" and cfg.fmt != "foa":
        raise ConfigError(f"{model_path}: --channel-order fuma applies to FOA models, this one is {cfg.fmt}")
    inference = model.inference.with_overrides(threshold, tracking)
    check_long_enough(audio_paths, infos, cfg.hop_length * cfg.label_hop_frames, cfg.sample_rate)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for p, stem, info in zip(audio_paths, stems, infos):
        note = resample_note(info, cfg.sample_rate)
        if note:
            log(f"{p}: {note}")
        blocks = iter_user_audio(p, cfg.fmt, channel_order, block_seconds, cfg.sample_rate)
        doa, act = localize_blocks(blocks, model)
        meta = outputs_to_metadata(doa, act, inference)
        csv_path = os.path.join(out_dir, stem + ".csv")
        write_metadata(csv_path, meta)
        written.append(csv_path)
        if plot:
            ref = None
            if ref_dir is not None and os.path.isfile(os.path.join(ref_dir, stem + ".csv")):
                ref = read_metadata(os.path.join(ref_dir, stem + ".csv"))
            png = os.path.join(out_dir, stem + ".png")
            plot_tracks(meta, png, ref, title=f"{stem} ({os.path.basename(model_path.rstrip('/'))})",
                        label_hop_seconds=cfg.label_hop_seconds, n_frames=len(act))
            written.append(png)
    return written
