"""Export a trained DOAnet for TF Serving (SavedModel) and for devices (TFLite) (DESIGN 7).

SavedModel, TF Serving layout ``<out>/<version>/`` (written by :class:`keras.export.ExportArchive`, a
``tf.Module`` that tracks the model's variables), two ``tensorflow/serving/predict`` signatures:

- ``serving_default``: ``features`` float32 (batch, T, 64, C) raw features -> ``doa`` (batch, T/5, Nmax, 3),
  ``activity`` (batch, T/5, Nmax); the training normalisation is a layer inside the model.
- ``from_audio``: ``audio`` float32 (batch, samples, 4) at 24 kHz -> the same outputs; the samples are trimmed to
  a multiple of ``hop_length * label_hop_frames`` (2400, one label frame) and the features are computed in the
  graph by :func:`dtbt_tf.features.tf_features.extract_features`, the function training used.

The version folder also holds ``assets.extra/dtbt_tf.json`` (feature, DOAnet and inference configs, version,
export time);
TF Serving ignores ``assets.extra``. Reloading needs only TensorFlow: ``tf.saved_model.load(dir).signatures[...]``.

TFLite: batch 1 and a fixed window (250 feature frames = 5 s by default) of a copy of the model rebuilt with fixed
shapes and the same weights (:func:`fixed_shape_copy`), built-in ops only (conversion fails rather than fall back
to Flex ops). ``fp32``; ``int8`` = dynamic-range quantisation (int8 weights, float activations,
``Optimize.DEFAULT``); ``fp16`` = float16 weights. The GRUs stay WHILE loops (a built-in op) by default: measured
here, unrolling them made every variant slower (fp32 76 vs 30 ms, int8 23 vs 16 ms per window on a loaded 2-core
machine) and the interpreter 2-5x larger in memory, and dynamic-range quantisation covers the loop body too;
``unroll=True`` remains for runtimes without control flow. A JSON sidecar ``<name>.json`` beside
``<name>.tflite`` holds the configs, the window and the provenance. An audio-in variant (input (1, W *
hop_length, 4) samples, features in the graph) is exported with :func:`export_tflite` ``input_kind="audio"``.

Streaming TFLite (a causal DOAnet, :func:`export_streaming_tflite`, :func:`export_streaming`): one 100 ms step
with explicit state, the network of :func:`dtbt_tf.models.doanet.build_doanet_step` (GRUs unrolled: one time step,
no loop op). One signature ``serving_default``, inputs ``features`` (1, 5, 64, C) raw features of one label frame
and ``state_<name>`` for each state, outputs ``doa`` (1, 1, Nmax, 3), ``activity`` (1, 1, Nmax) and
``next_<name>``; the sidecar says ``"streaming": true`` and lists the states (name, shape). Built-in ops only;
``fp32`` and ``int8`` (dynamic range), as above. :mod:`dtbt_tf.streaming` runs them without TensorFlow.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from typing import Sequence

import keras
import tensorflow as tf

from dtbt_tf.artifacts import (SIDECAR, FolderLock, load_doanet_keras, load_trained, provenance, remove_temporaries,
                               sidecar_info, tflite_sidecar_path, write_sidecar)
from dtbt_tf.config import ConfigError, DoanetConfig, FeatureConfig, InferenceConfig
from dtbt_tf.features.tf_features import extract_features
from dtbt_tf.models.doanet import build_doanet_step, is_causal, step_frames, step_state_specs
from dtbt_tf.streaming import STREAM_VARIANTS, check_streamable, streaming_tflite_name

WINDOW_FRAMES = 250  # default TFLite window in feature frames (5 s), = FeatureConfig.seq_frames

QUANTIZATIONS = ("fp32", "int8", "fp16")


def _configs_for(model: keras.Model, feature_cfg: FeatureConfig | None, doanet_cfg: DoanetConfig | None):
    """Fill missing configs from the model's input/output shapes (defaults otherwise) and check they agree."""
    n_channels = int(model.inputs[0].shape[-1])
    n_max = int(model.output["activity"].shape[-1])
    fmt = {7: "foa", 10: "mic"}.get(n_channels)
    if fmt is None:
        raise ConfigError(f"model takes {n_channels} channels; expected 7 (FOA) or 10 (MIC)")
    causal = is_causal(model)
    feature_cfg = feature_cfg or FeatureConfig(fmt=fmt)
    doanet_cfg = doanet_cfg or DoanetConfig(fmt=fmt, n_max=n_max, causal=causal)
    if feature_cfg.n_channels != n_channels or doanet_cfg.n_channels != n_channels or doanet_cfg.n_max != n_max:
        raise ConfigError(f"configs ({feature_cfg.fmt}, n_max={doanet_cfg.n_max}) do not match the model "
                          f"({n_channels} channels, n_max={n_max})")
    if doanet_cfg.causal != causal:
        raise ConfigError(f"config says causal={doanet_cfg.causal} but the model is "
                          f"{'causal' if causal else 'bidirectional'}")
    return feature_cfg, doanet_cfg


def resolve_model(run_dir_or_model, feature_cfg: FeatureConfig | None = None,
                  doanet_cfg: DoanetConfig | None = None, inference_cfg: InferenceConfig | None = None,
                  tracking: str | None = None):
    """(model, feature_cfg, doanet_cfg, inference_cfg) from a training run folder, a DOAnet ``.keras`` file or a
    keras.Model (configs from the arguments, else from the run config, else from the model's shapes; a bare
    model's inference config is the default: threshold 0.5, activity used); ``tracking`` replaces its rule."""
    if isinstance(run_dir_or_model, (str, os.PathLike)):
        path = os.fspath(run_dir_or_model)
        if path.endswith(".keras"):
            model = load_doanet_keras(path)
        elif os.path.isdir(path):
            model, run = load_trained(path)
            feature_cfg, doanet_cfg = feature_cfg or run.feature, doanet_cfg or run.model
            inference_cfg = inference_cfg or run.inference
        elif os.path.exists(path):
            raise ConfigError(f"{path}: not a training run folder or a DOAnet .keras file")
        else:
            raise ConfigError(f"{path}: not found")
    else:
        model = run_dir_or_model
    feature_cfg, doanet_cfg = _configs_for(model, feature_cfg, doanet_cfg)
    inference_cfg = (inference_cfg or InferenceConfig()).with_overrides(tracking=tracking)
    return model, feature_cfg, doanet_cfg, inference_cfg


def _origin(run_dir_or_model) -> dict:
    """Provenance of a run folder or .keras file ({} for an in-memory model)."""
    if not isinstance(run_dir_or_model, (str, os.PathLike)):
        return {}
    path = os.fspath(run_dir_or_model)
    return provenance(path) if os.path.isdir(path) else {"source_run": os.path.abspath(path)}


def _trim_and_features(audio, feature_cfg: FeatureConfig):
    """audio (batch, samples, 4) -> raw features (batch, T, 64, C), samples trimmed to whole label frames."""
    step = feature_cfg.hop_length * feature_cfg.label_hop_frames
    n = tf.shape(audio)[1] // step * step
    return extract_features(audio[:, :n], feature_cfg)


def _archive(model: keras.Model, feature_cfg: FeatureConfig):
    """ExportArchive with the ``serving_default`` (features) and ``from_audio`` endpoints, any batch and length."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_features(features):
        out = model(features, training=False)
        return {"doa": out["doa"], "activity": out["activity"]}

    def serve_audio(audio):
        return serve_features(_trim_and_features(audio, feature_cfg))

    features_shape = (None, None, feature_cfg.n_mels, feature_cfg.n_channels)
    archive.add_endpoint("serving_default", tf.function(serve_features),
                         [tf.TensorSpec(features_shape, tf.float32, name="features")])
    archive.add_endpoint("from_audio", tf.function(serve_audio),
                         [tf.TensorSpec((None, None, 4), tf.float32, name="audio")])
    return archive


def export_saved_model(run_dir_or_model, out_dir: str, version: int = 1, feature_cfg: FeatureConfig | None = None,
                       doanet_cfg: DoanetConfig | None = None, overwrite: bool = False,
                       origin: dict | None = None, inference_cfg: InferenceConfig | None = None) -> str:
    """Write the TF Serving layout ``<out_dir>/<version>/`` (module docstring); returns the version folder.

    run_dir_or_model: a training run folder or a DOAnet keras.Model (configs then from the arguments or the
    model's shapes). The export is written under a temporary name and renamed; an existing version is a
    ConfigError unless ``overwrite``. origin: provenance for dtbt_tf.json (default: the run's provenance).
    """
    if int(version) < 1:
        raise ConfigError(f"version must be a positive integer, got {version}")
    model, feature_cfg, doanet_cfg, inference_cfg = resolve_model(run_dir_or_model, feature_cfg, doanet_cfg,
                                                                  inference_cfg)
    final = os.path.join(out_dir, str(int(version)))
    if os.path.exists(final) and not overwrite:
        raise ConfigError(f"{final}: already exists (pick another version or overwrite)")
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{int(version)}.tmp", dir=out_dir)
    try:
        archive = _archive(model, feature_cfg)
        archive.write_out(tmp, verbose=False)
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        info = sidecar_info(feature_cfg, doanet_cfg, inference_cfg, version=int(version),
                            **(origin if origin is not None else _origin(run_dir_or_model)))
        write_sidecar(os.path.join(extra, SIDECAR), info)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a serving container may run as another user
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return final


# ----------------------------------------------------------------------------------------------------------
# TFLite


def fixed_shape_copy(model: keras.Model, window_frames: int = WINDOW_FRAMES, unroll: bool = False) -> keras.Model:
    """The same network with input (1, window_frames, 64, C), GRUs unrolled if ``unroll``, and the same weights.

    Unrolled GRUs become plain FULLY_CONNECTED ops per time step (no WHILE loop): larger and, with XNNPACK,
    slower, but needed by runtimes / accelerators without control flow.
    """
    shape = (1, int(window_frames)) + tuple(model.inputs[0].shape[2:])

    def clone_layer(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Bidirectional):
            for key in ("layer", "backward_layer"):
                if cfg.get(key):
                    cfg[key]["config"]["unroll"] = unroll
        elif isinstance(layer, keras.layers.GRU):  # the causal DOAnet's unidirectional GRUs
            cfg["unroll"] = unroll
        return layer.__class__.from_config(cfg)

    inputs = keras.Input(batch_shape=shape, name=model.inputs[0].name)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
    copy.set_weights(model.get_weights())
    return copy


def _convert(saved_model_dir: str, quantization: str) -> bytes:
    """TFLite flatbuffer of a SavedModel folder's serving_default, built-in ops only."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_tflite(run_dir_or_model, out_path: str, quantization: str = "fp32", window_frames: int = WINDOW_FRAMES,
                  feature_cfg: FeatureConfig | None = None, doanet_cfg: DoanetConfig | None = None,
                  input_kind: str = "features", unroll: bool = False, origin: dict | None = None,
                  inference_cfg: InferenceConfig | None = None) -> str:
    """Write a batch-1, fixed-window TFLite model to ``out_path`` and its JSON sidecar; returns ``out_path``.

    quantization: 'fp32' | 'int8' (dynamic range) | 'fp16'. input_kind: 'features' (input (1, W, 64, C)) or
    'audio' (input (1, W * hop_length, 4), features in the graph). window_frames W must be a multiple of 5.
    unroll: unroll the GRUs (no WHILE op). origin: provenance for the sidecar (default: :func:`provenance`).
    """
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
    model, feature_cfg, doanet_cfg, inference_cfg = resolve_model(run_dir_or_model, feature_cfg, doanet_cfg,
                                                                  inference_cfg)
    check_window(window_frames, feature_cfg)
    if input_kind not in ("features", "audio"):
        raise ConfigError(f"input_kind must be 'features' or 'audio', got {input_kind!r}")
    copy = fixed_shape_copy(model, window_frames, unroll)
    features_shape = (1, window_frames, feature_cfg.n_mels, feature_cfg.n_channels)
    archive = keras.export.ExportArchive()
    archive.track(copy)
    if input_kind == "features":
        fn = tf.function(lambda features: copy(features, training=False))
        spec = tf.TensorSpec(features_shape, tf.float32, name="features")
    else:
        fn = tf.function(lambda audio: copy(extract_features(audio, feature_cfg), training=False))
        spec = tf.TensorSpec((1, window_frames * feature_cfg.hop_length, 4), tf.float32, name="audio")
    archive.add_endpoint("serving_default", fn, [spec])
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            archive.write_out(tmp, verbose=False)
        blob = _convert(tmp, quantization)
    _write_tflite(blob, out_path)
    info = sidecar_info(feature_cfg, doanet_cfg, inference_cfg, quantization=quantization,
                        window_frames=int(window_frames), input_kind=input_kind, unrolled=bool(unroll),
                        **(origin if origin is not None else _origin(run_dir_or_model)))
    write_sidecar(tflite_sidecar_path(out_path), info)
    return out_path


def _write_tflite(blob: bytes, out_path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    part = f"{out_path}.tmp{os.getpid()}"
    with open(part, "wb") as f:
        f.write(blob)
    os.replace(part, out_path)


def export_streaming_tflite(run_dir_or_model, out_path: str, quantization: str = "fp32",
                            feature_cfg: FeatureConfig | None = None, doanet_cfg: DoanetConfig | None = None,
                            origin: dict | None = None, inference_cfg: InferenceConfig | None = None) -> str:
    """Write the streaming TFLite model of a causal DOAnet (module docstring) and its sidecar; returns out_path.

    quantization: 'fp32' | 'int8' (dynamic range). ConfigError for a bidirectional model or a feature config
    whose STFT window would reach into the next label frame (:func:`dtbt_tf.streaming.check_streamable`).
    """
    if quantization not in STREAM_VARIANTS:
        raise ConfigError(f"unknown streaming quantization {quantization!r}; expected one of {STREAM_VARIANTS}")
    model, feature_cfg, doanet_cfg, inference_cfg = resolve_model(run_dir_or_model, feature_cfg, doanet_cfg,
                                                                  inference_cfg)
    specs = step_state_specs(model)  # ConfigError unless causal
    check_streamable(feature_cfg)
    step = build_doanet_step(model, batch_size=1)
    names = ["features"] + [f"state_{n}" for n, _ in specs]
    shapes = [(1, step_frames(model), feature_cfg.n_mels, feature_cfg.n_channels)] + [(1, *s) for _, s in specs]
    signature = [tf.TensorSpec(shape, tf.float32, name=n) for n, shape in zip(names, shapes)]

    def serve(*tensors):
        out = step(dict(zip(names, tensors)), training=False)
        return {k: out[k] for k in ["doa", "activity"] + [f"next_{n}" for n, _ in specs]}

    archive = keras.export.ExportArchive()
    archive.track(step)
    archive.add_endpoint("serving_default", tf.function(serve), signature)
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            archive.write_out(tmp, verbose=False)
        blob = _convert(tmp, quantization)
    _write_tflite(blob, out_path)
    info = sidecar_info(feature_cfg, doanet_cfg, inference_cfg, quantization=quantization, streaming=True,
                        step_feature_frames=step_frames(model),
                        step_samples=feature_cfg.hop_length * feature_cfg.label_hop_frames, lookahead_samples=0,
                        states=[{"name": n, "shape": [1, *shape]} for n, shape in specs],
                        **(origin if origin is not None else _origin(run_dir_or_model)))
    write_sidecar(tflite_sidecar_path(out_path), info)
    return out_path


def export_streaming(model_path: str, out_dir: str, variants: str | Sequence[str] = STREAM_VARIANTS,
                     overwrite: bool = False, log=None, tracking: str | None = None) -> list[str]:
    """What ``scripts/export.py --stream`` does: ``<out_dir>/doanet_<fmt>_stream_<variant>.tflite`` (+ sidecars)
    for a causal training run folder or ``.keras`` file. Everything is checked before anything is written; the
    folder is locked for the job. tracking: replaces the run's track-id rule in the sidecars. Returns the
    written paths."""
    variants = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
    unknown = [v for v in variants if v not in STREAM_VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"unknown streaming variant {unknown[0]!r}; expected some of {STREAM_VARIANTS}" if unknown
                          else f"no streaming variant given; expected some of {STREAM_VARIANTS}")
    model, feature_cfg, doanet_cfg, inference_cfg = resolve_model(model_path, tracking=tracking)
    step_state_specs(model)
    check_streamable(feature_cfg)
    targets = {v: os.path.join(out_dir, streaming_tflite_name(feature_cfg.fmt, v)) for v in variants}
    clash = [p for p in targets.values() if os.path.exists(p)]
    if clash and not overwrite:
        raise ConfigError(f"{clash[0]}: already exists (overwrite to replace)")
    origin = _origin(model_path)
    with FolderLock(out_dir, "export", log=log):
        remove_temporaries(out_dir)
        return [export_streaming_tflite(model, path, v, feature_cfg, doanet_cfg, origin=origin,
                                        inference_cfg=inference_cfg) for v, path in targets.items()]


def check_window(window_frames: int, feature_cfg: FeatureConfig) -> None:
    """ConfigError unless a TFLite window is a positive multiple of a label frame (5 feature frames)."""
    if window_frames <= 0 or window_frames % feature_cfg.label_hop_frames:
        raise ConfigError(f"window={window_frames} feature frames must be a positive multiple of "
                          f"{feature_cfg.label_hop_frames} (one 100 ms label frame)")


def export_all(model_path: str, out_dir: str, version: int = 1, tflite: str | Sequence[str] = (),
               window_frames: int = WINDOW_FRAMES, saved_model: bool = True, overwrite: bool = False,
               log=None, tracking: str | None = None) -> list[str]:
    """What ``scripts/export.py`` does: the SavedModel ``<out_dir>/<version>/`` and the TFLite variants
    ``<out_dir>/tflite/doanet_<fmt>_<variant>.tflite`` (variants: fp32, int8, fp16, audio = fp32 audio-in).

    Every input and target is checked (model, names, window, existing files) before anything is written; the
    folder is locked for the job (:class:`dtbt_tf.artifacts.FolderLock`) and what a killed export left there is
    removed first. tracking: replaces the run's track-id rule in the sidecars. Returns the written paths.
    """
    variants = [v.strip() for v in (tflite.split(",") if isinstance(tflite, str) else tflite) if v.strip()]
    unknown = [v for v in variants if v not in QUANTIZATIONS + ("audio",)]
    if unknown:
        raise ConfigError(f"unknown TFLite variant {unknown[0]!r}; expected some of {QUANTIZATIONS + ('audio',)}")
    if not saved_model and not variants:
        raise ConfigError("nothing to export (no SavedModel and no TFLite variant)")
    if int(version) < 1:
        raise ConfigError(f"version must be a positive integer, got {version}")
    model, feature_cfg, doanet_cfg, inference_cfg = resolve_model(model_path, tracking=tracking)
    if variants:
        check_window(window_frames, feature_cfg)
    targets = {v: os.path.join(out_dir, "tflite", f"doanet_{feature_cfg.fmt}_{v}.tflite") for v in variants}
    clash = [p for p in targets.values() if os.path.exists(p)]
    if saved_model and os.path.exists(os.path.join(out_dir, str(int(version)))):
        clash.insert(0, os.path.join(out_dir, str(int(version))))
    if clash and not overwrite:
        raise ConfigError(f"{clash[0]}: already exists (use another --out or --version, or --overwrite)")
    written = []
    origin = _origin(model_path)
    with FolderLock(out_dir, "export", log=log):
        for folder in (out_dir, os.path.join(out_dir, "tflite")):
            remove_temporaries(folder)
        if saved_model:
            written.append(export_saved_model(model, out_dir, version, feature_cfg, doanet_cfg, overwrite=overwrite,
                                              origin=origin, inference_cfg=inference_cfg))
        for v, path in targets.items():
            quant, kind = ("fp32", "audio") if v == "audio" else (v, "features")
            written.append(export_tflite(model, path, quant, window_frames, feature_cfg, doanet_cfg, input_kind=kind,
                                         origin=origin, inference_cfg=inference_cfg))
    return written


def tflite_op_names(path_or_bytes) -> set[str]:
    """Names of the ops in a TFLite model (e.g. to check that none is a Flex / custom op); the interpreter is
    built without its default XNNPACK delegate so the model's own ops are listed."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": path_or_bytes}
    interp = Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **source)
    return {op["op_name"] for op in interp._get_ops_details()}
