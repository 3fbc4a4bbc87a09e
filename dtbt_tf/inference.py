"""Inference on wav files of any length: features -> windows -> model -> stitched tracks -> DCASE CSV (+ plot).

Models (:func:`load_model`): a SavedModel (a version folder, or a TF Serving base folder whose highest numeric
version is used), a training run folder (``run_config.json`` + ``best.keras``) or a ``.tflite`` file written by
:func:`dtbt_tf.export.export_tflite`. This module imports no TensorFlow at import time; with a ``.tflite`` model
TensorFlow is never imported: the features then come from :func:`dtbt_tf.features_numpy.features_numpy`, a NumPy
port of :func:`dtbt_tf.features.extract_features` (same definitions, tested against it), and the interpreter is
``ai_edge_litert``.

Windowing and stitching (label frames of 100 ms = 5 feature frames; a window is ``W`` label frames, 50 by default
= 250 feature frames = 5 s). The features of the whole file are computed once (so the STFT has its real context),
zero-padded at the end to cover the last window, and cut into windows that start every ``H = W // 2`` label
frames (50% overlap). From each window only its centre ``[M, M + H)`` with ``M = (W - H) // 2`` is kept, except
that the first window also keeps its head ``[0, M)`` and the last its tail: every label frame comes from exactly
one window, never from the ``M`` frames next to a window edge that another window covers better. Output slots are
not re-matched across windows: a slot is the track number within a window and may swap at a window boundary.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from dtbt_tf.config import ConfigError, FeatureConfig, from_dict
from dtbt_tf.data.dcase import DataError, Metadata, load_audio, read_metadata, write_metadata
from dtbt_tf.features_numpy import N_AUDIO_CHANNELS, features_numpy
from dtbt_tf.geometry import unit_to_polar

WINDOW_FRAMES = 250  # feature frames per model window (5 s), = FeatureConfig.seq_frames
CONFIG_FILE = "dtbt_tf.json"  # export sidecar: configs (+ version / quantisation)


# ----------------------------------------------------------------------------------------------------------
# Models


@dataclasses.dataclass
class LoadedModel:
    """A model ready for windows of ``window_frames`` feature frames (F = window_frames / 5 label frames):
    ``predict(x)`` maps a batch of windows to numpy (doa (B, F, N, 3), activity (B, F, N)).

    input_kind: 'features' (x = (B, window_frames, 64, C) raw features) or 'audio'
    (x = (B, window_frames * hop_length, 4)); max_batch: windows per call (1 for TFLite); source: the path loaded.
    uses_activity: False for models trained without the activity loss; ``predict`` then reports activity 1 for
    every slot (the paper: without an activity branch every regressor always counts).
    """

    predict: object
    feature_cfg: FeatureConfig
    n_max: int
    input_kind: str = "features"
    window_frames: int = WINDOW_FRAMES
    max_batch: int = 16
    source: str = ""
    uses_activity: bool = True  # False: the activity head was not trained (mse, dmotp), every slot counts


def _read_sidecar(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None


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


def tflite_sidecar_path(tflite_path: str) -> str:
    """The JSON written next to a ``.tflite`` file: ``model.tflite`` -> ``model.json``."""
    return os.path.splitext(tflite_path)[0] + ".json"


def _load_tflite(path: str, num_threads: int | None) -> LoadedModel:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=path, num_threads=num_threads)
    except ValueError as e:
        raise ConfigError(f"{path}: not a TFLite model ({e})") from None
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = {len(d["shape"]): d for d in interp.get_output_details()}
    if set(outs) != {3, 4}:
        raise ConfigError(f"{path}: expected a DOAnet with outputs doa (1, F, N, 3) and activity (1, F, N)")
    shape = tuple(int(s) for s in inp["shape"])
    info = _read_sidecar(tflite_sidecar_path(path))
    if len(shape) == 4:
        kind, n_ch = "features", shape[-1]
        cfg = _feature_cfg_from(info, n_ch, path)
        window = shape[1]
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

    return LoadedModel(predict, cfg, int(outs[3]["shape"][-1]), kind, window, 1, path,
                       info.get("uses_activity", True))


def saved_model_version_dir(path: str) -> str:
    """``path`` itself if it holds ``saved_model.pb``, else its highest numeric version sub-folder that does."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [int(d) for d in os.listdir(path)
                if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if not versions:
        raise ConfigError(f"{path}: no saved_model.pb here or in a numeric version folder")
    return os.path.join(path, str(max(versions)))


def _load_saved_model(path: str) -> LoadedModel:
    import tensorflow as tf

    vdir = saved_model_version_dir(path)
    loaded = tf.saved_model.load(vdir)
    fn = loaded.signatures["serving_default"]
    (spec,) = fn.structured_input_signature[1].values()
    info = _read_sidecar(os.path.join(vdir, "assets.extra", CONFIG_FILE))
    cfg = _feature_cfg_from(info, int(spec.shape[-1]), vdir)
    n_max = int(fn.structured_outputs["activity"].shape[-1])

    def predict(x):
        out = fn(features=tf.constant(x, tf.float32))
        return out["doa"].numpy(), out["activity"].numpy()

    predict.keep_alive = loaded  # the signature needs its object alive
    return LoadedModel(predict, cfg, n_max, "features", cfg.seq_frames, 16, vdir, info.get("uses_activity", True))


def _load_run_dir(path: str) -> LoadedModel:
    import tensorflow as tf

    from dtbt_tf.training import load_trained

    model, feature_cfg, doanet_cfg, loss_cfg = load_trained(path)
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(x):
        out = fn(tf.constant(x, tf.float32))
        return out["doa"].numpy(), out["activity"].numpy()

    return LoadedModel(predict, feature_cfg, doanet_cfg.n_max, "features", feature_cfg.seq_frames, 16, path,
                       loss_cfg.uses_activity)


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
        raise ConfigError(f"{path}: not a .tflite file or a model folder")
    elif os.path.isfile(os.path.join(path, "run_config.json")):
        model = _load_run_dir(path)
    else:
        model = _load_saved_model(path)
    if not model.uses_activity:
        predict = model.predict

        def every_slot(x):
            doa, act = predict(x)
            return doa, np.ones_like(act)

        model = dataclasses.replace(model, predict=every_slot)
    return model


# ----------------------------------------------------------------------------------------------------------
# Windows and stitching


def window_plan(n_label: int, window: int) -> list[tuple[int, int, int]]:
    """(window start, keep from, keep to) in label frames covering ``0..n_label`` exactly once (module docstring).

    Keep ranges are relative to the file; ``keep from/to`` lie inside ``[start, start + window)``.
    """
    if n_label <= 0:
        return []
    hop = max(window // 2, 1)
    margin = (window - hop) // 2
    starts = [0]
    while starts[-1] + window < n_label:
        starts.append(starts[-1] + hop)
    plan = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else s + margin
        hi = n_label if i == len(starts) - 1 else s + margin + hop
        plan.append((s, lo, min(hi, n_label)))
    return plan


def localize(audio: np.ndarray, model: LoadedModel, features: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over a whole file in overlapping windows and stitch the centres (module docstring).

    audio: (samples, 4) float32 at the model's sample rate; features: its (T, 64, C) features if already
    computed (features-in models only). Returns doa (F, N, 3) unit vectors and activity
    (F, N) probabilities with F = samples // (hop_length * label_hop_frames) label frames.
    """
    cfg = model.feature_cfg
    label_hop = cfg.label_hop_frames
    n_label = audio.shape[0] // (cfg.hop_length * label_hop)
    win_label = model.window_frames // label_hop
    plan = window_plan(n_label, win_label)
    doa = np.zeros((n_label, model.n_max, 3), np.float32)
    act = np.zeros((n_label, model.n_max), np.float32)
    if not plan:
        return doa, act
    need_label = plan[-1][0] + win_label
    if model.input_kind == "audio":
        step = cfg.hop_length * label_hop
        source = np.zeros((need_label * step, N_AUDIO_CHANNELS), np.float32)
        source[:min(len(audio), len(source))] = audio[:len(source)]
    else:
        step = label_hop
        if features is None:
            features = _features(audio[:n_label * cfg.hop_length * label_hop], cfg, model.source)
        feats = features[:n_label * label_hop]
        source = np.zeros((need_label * step,) + feats.shape[1:], np.float32)
        source[:len(feats)] = feats
    for b in range(0, len(plan), model.max_batch):
        chunk = plan[b:b + model.max_batch]
        x = np.stack([source[s * step:(s + win_label) * step] for s, _, _ in chunk])
        d, a = model.predict(x)
        for (s, lo, hi), di, ai in zip(chunk, d, a):
            doa[lo:hi] = di[lo - s:hi - s]
            act[lo:hi] = ai[lo - s:hi - s]
    return doa, act


def _features(audio: np.ndarray, cfg: FeatureConfig, source: str) -> np.ndarray:
    """TF features when the model is a TF one (TensorFlow is loaded anyway), NumPy features for TFLite."""
    if source.endswith(".tflite"):
        return features_numpy(audio, cfg)
    from dtbt_tf.features import feature_function

    return feature_function(cfg)(audio).numpy()


def outputs_to_metadata(doa: np.ndarray, activity: np.ndarray, threshold: float = 0.5) -> Metadata:
    """Rows for every (label frame, slot) with activity > threshold: class 0, track = slot."""
    frame, slot = np.nonzero(np.asarray(activity) > threshold)
    vec = np.asarray(doa, np.float64)[frame, slot].reshape(-1, 3)
    return Metadata(frame.astype(np.int64), np.zeros(frame.size, np.int64), slot.astype(np.int64), vec)


# ----------------------------------------------------------------------------------------------------------
# Plot


def plot_tracks(meta: Metadata, out_path: str, ref: Metadata | None = None, title: str = "",
                label_hop_seconds: float = 0.1, n_frames: int | None = None) -> None:
    """PNG of azimuth and elevation over time, one colour per track slot, the reference (if any) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for i, (name, lim) in enumerate((("azimuth", 180), ("elevation", 90))):
        ax = axes[i]
        if ref is not None and ref.frame.size:
            ang = unit_to_polar(ref.doa)[i]
            ax.scatter(ref.frame * label_hop_seconds, ang, s=14, c="0.7", marker="s", label="reference")
        for slot in np.unique(meta.track):
            sel = meta.track == slot
            ang = np.atleast_1d(unit_to_polar(meta.doa[sel])[i])
            ax.scatter(meta.frame[sel] * label_hop_seconds, ang, s=4, label=f"slot {slot}")
        ax.set_ylim(-lim, lim)
        ax.set_ylabel(f"{name} (deg)")
        ax.grid(alpha=0.3)
    if n_frames:
        axes[1].set_xlim(0, n_frames * label_hop_seconds)
    axes[1].set_xlabel("time (s)")
    axes[0].set_title(title)
    axes[0].legend(loc="upper right", fontsize=7, markerscale=2)
    fig.tight_layout()
    tmp = f"{out_path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)


# ----------------------------------------------------------------------------------------------------------
# Files


def check_audio_header(path: str, cfg: FeatureConfig) -> None:
    """DataError naming ``path`` if it cannot be read or has the wrong channel count / sample rate."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read audio ({e})") from None
    if info.samplerate != cfg.sample_rate:
        raise DataError(f"{path}: sample rate {info.samplerate} Hz, expected {cfg.sample_rate} Hz")
    if info.channels != N_AUDIO_CHANNELS:
        raise DataError(f"{path}: {info.channels} channels, expected {N_AUDIO_CHANNELS}")


def infer_files(audio_paths: Sequence[str], model_path: str, out_dir: str, plot: bool = False,
                ref_dir: str | None = None, threshold: float = 0.5, num_threads: int | None = None) -> list[str]:
    """Localise each wav and write ``<out_dir>/<stem>.csv`` (DCASE rows: frame, 0, slot, azimuth, elevation) and,
    with ``plot``, ``<stem>.png`` (with ``<ref_dir>/<stem>.csv`` overlaid when it exists).

    Every input is checked (readable, rate, channels) before anything is written; each output is written to a
    temporary name and renamed. Returns the written paths. Raises DataError / ConfigError on bad input.
    """
    if not audio_paths:
        raise DataError("no audio files given")
    if ref_dir is not None and not os.path.isdir(ref_dir):
        raise DataError(f"{ref_dir}: reference metadata folder not found")
    model = load_model(model_path, num_threads=num_threads)
    cfg = model.feature_cfg
    for p in audio_paths:
        check_audio_header(p, cfg)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for p in audio_paths:
        audio = load_audio(p, cfg.sample_rate, N_AUDIO_CHANNELS)
        doa, act = localize(audio, model)
        meta = outputs_to_metadata(doa, act, threshold)
        stem = os.path.splitext(os.path.basename(p))[0]
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


# ----------------------------------------------------------------------------------------------------------
# TF Serving client (REST with the standard library; gRPC with the optional tensorflow-serving-api package)


def rest_request(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8501,
                 signature: str = "from_audio") -> tuple[str, bytes]:
    """URL and JSON body of a TF Serving REST predict call on one file: ``{"signature_name": signature,
    "inputs": {"audio": [[[w, y, z, x], ...]]}}`` (columnar format, batch 1, samples as 6-digit floats)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] != N_AUDIO_CHANNELS:
        raise ValueError(f"audio must have shape (samples, 4), got {audio.shape}")
    rows = ",".join("[" + ",".join(f"{v:.6g}" for v in row) + "]" for row in audio.tolist())
    body = f'{{"signature_name": {json.dumps(signature)}, "inputs": {{"audio": [[{rows}]]}}}}'
    return f"http://{host}:{port}/v1/models/{model_name}:predict", body.encode()


def parse_rest_response(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(doa (F, N, 3), activity (F, N)) of batch item 0 from a REST predict response (``{"outputs": {...}}``)."""
    try:
        out = json.loads(body)["outputs"]
        doa, act = np.asarray(out["doa"], np.float32)[0], np.asarray(out["activity"], np.float32)[0]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"unexpected TF Serving response ({type(e).__name__}: {str(body[:200])})") from None
    return doa, act


def rest_predict(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8501,
                 signature: str = "from_audio", timeout: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """POST :func:`rest_request` and parse the answer; ValueError with the server's message on failure."""
    import urllib.error
    import urllib.request

    url, body = rest_request(audio, model_name, host, port, signature)
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return parse_rest_response(resp.read())
    except urllib.error.HTTPError as e:
        raise ValueError(f"{url}: HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") from None
    except urllib.error.URLError as e:
        raise ValueError(f"{url}: cannot connect ({e.reason})") from None


def grpc_request(audio: np.ndarray, model_name: str, signature: str = "from_audio"):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for one file (needs tensorflow-serving-api)."""
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
    except ImportError:
        raise ValueError("gRPC needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api "
                         "(it requires the full `tensorflow` package otherwise)") from None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs["audio"].CopyFrom(tf.make_tensor_proto(np.asarray(audio, np.float32)[None]))
    return request


def grpc_predict(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8500,
                 signature: str = "from_audio", timeout: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """Send :func:`grpc_request` to TF Serving's PredictionService; (doa (F, N, 3), activity (F, N))."""
    request = grpc_request(audio, model_name, signature)
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"{host}:{port}", options=[("grpc.max_send_message_length", 1 << 30),
                                                                ("grpc.max_receive_message_length", 1 << 30)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        result = stub.Predict(request, timeout)
    except grpc.RpcError as e:
        raise ValueError(f"{host}:{port}: gRPC {e.code().name}: {e.details()}") from None
    return tf.make_ndarray(result.outputs["doa"])[0], tf.make_ndarray(result.outputs["activity"])[0]
