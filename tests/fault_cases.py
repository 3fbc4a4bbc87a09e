"""The fault table of issue 14: bad inputs to every script, the one error line each must give, and what must not
be left behind. tests/test_fault_table.py runs every row; docs/reliability.md shows the table, written from here:

    python tests/fault_cases.py --write-docs     # rewrite the table between the faults markers
    python tests/fault_cases.py --check-docs     # exit 1 if the docs table is out of date

A row's ``argv`` writes the tiny input files it needs under a work folder (its argument) and returns the
script's arguments; paths in the table are relative to that folder. ``locked``: a folder whose lock a live
process holds while the script runs; ``denied``: a folder made unwritable (chmod 0555; as root, where chmod
does not bind, the runner refuses writes there itself). No TensorFlow at import.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
RATE = 24000
# the scripts the table covers: every one in scripts/
SCRIPTS = ("train", "train_hnet", "evaluate", "evaluate_hnet", "extract_features", "make_dataset", "augment", "export",
           "infer", "baseline", "build_clip_library", "serving_client", "stream")


@dataclasses.dataclass(frozen=True)
class Fault:
    id: str
    script: str                              # scripts/<script>.py
    what: str                                # the bad input, in words (the docs table)
    argv: Callable[[Path], list[str]]        # writes the inputs under the work folder, returns the arguments
    message: str                             # fragment of the one error line
    absent: tuple[str, ...] = ()             # paths (relative to the work folder) that must not exist afterwards
    locked: str | None = None                # folder held by a live job while the script runs
    denied: str | None = None                # folder made unwritable while the script runs


# ----------------------------------------------------------------------------------------------------------
# Tiny inputs (a few kB each)


def wav(path: Path, seconds: float = 1.0, channels: int = 4, rate: int = RATE, seed: int = 0) -> str:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    audio = 0.05 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    sf.write(str(path), audio.astype(np.float32), rate, subtype="PCM_16")
    return str(path)


def truncated_wav(path: Path) -> str:
    """A wav whose header declares more samples than the file holds (a copy cut short)."""
    wav(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return str(path)


def empty_wav(path: Path) -> str:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros((0, 4), np.float32), RATE)
    return str(path)


def _folder(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def junk(path: Path, text: str = "not a model\n") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def metadata_csv(path: Path, frames, track: int = 0) -> str:
    """A DCASE2020 metadata CSV (frame, class, track, azimuth, elevation), one source at -60 deg + 5 per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f},0,{track},{-60 + 5 * f},0\n" for f in frames))
    return str(path)


def dataset(root: Path, folds=(1, 2, 3), seconds: float = 1.0) -> str:
    """A DCASE2020-layout root (foa_dev/, metadata_dev/): one 1 s ov1 recording per fold, labels on frames 1-8."""
    for fold in folds:
        stem = f"fold{fold}_room1_mix{fold:03d}_ov1"
        wav(root / "foa_dev" / f"{stem}.wav", seconds, seed=fold)
        metadata_csv(root / "metadata_dev" / f"{stem}.csv", range(1, int(seconds * 10) - 1))
    return str(root)


def augment_dataset(root: Path, cut: bool = False) -> str:
    """dataset(root) plus a training room augment.py can mix: fold 3 with two ov1 recordings and one ov2; with
    ``cut`` the second ov1 recording is cut short."""
    dataset(root)
    for mix, ov, tracks in ((4, 1, (0,)), (5, 2, (0, 1))):
        name = f"fold3_room1_mix{mix:03d}_ov{ov}"
        wav(root / "foa_dev" / f"{name}.wav", seed=mix)
        (root / "metadata_dev" / f"{name}.csv").write_text(
            "".join(f"{f},0,{t},{-60 + 5 * f + 90 * t},0\n" for f in range(1, 9) for t in tracks))
    if cut:
        truncated_wav(root / "foa_dev" / "fold3_room1_mix004_ov1.wav")
    return str(root)


def stem(fold: int) -> str:
    return f"fold{fold}_room1_mix{fold:03d}_ov1"


def dataset_with(root: Path, change: Callable[[Path, Path], None]) -> str:
    """dataset(root) with the training recording (fold 3) changed by ``change(wav_path, csv_path)``."""
    dataset(root)
    change(root / "foa_dev" / f"{stem(3)}.wav", root / "metadata_dev" / f"{stem(3)}.csv")
    return str(root)


def predictions(w: Path, folds=(1, 2), pred_folds=(1, 2)) -> tuple[str, str]:
    """(pred, ref) folders of DCASE CSVs: references of ``folds``, identical predictions of ``pred_folds``."""
    for fold in folds:
        metadata_csv(w / "ref" / f"{stem(fold)}.csv", range(0, 10))
    for fold in pred_folds:
        metadata_csv(w / "pred" / f"{stem(fold)}.csv", range(0, 10))
    return str(w / "pred"), str(w / "ref")


def shipped(*parts: str) -> str:
    return str(REPO / "dtbt_tf" / "saved_models" / Path(*parts))


TFLITE = ("doanet_foa", "tflite", "doanet_foa_fp32.tflite")


def doanet_keras(path: Path, fmt: str = "foa", causal: bool = False) -> str:
    """A small untrained DOAnet saved as .keras (imports TensorFlow: only the rows that need a real model); a
    causal one streams (scripts/stream.py takes it as its model)."""
    from dtbt_tf.config import DoanetConfig
    from dtbt_tf.models.doanet import build_doanet

    path.parent.mkdir(parents=True, exist_ok=True)
    build_doanet(DoanetConfig(fmt=fmt, causal=causal, conv_filters=4, rnn_units=4, fc_units=4)).save(str(path))
    return str(path)


def stream_sidecar_beside(folder: Path, complete: bool) -> str:
    """The shipped (whole-window) FOA TFLite model beside a sidecar that says streaming: nothing more, or
    (``complete``) the feature config, n_max and state shapes of a streaming model (another model's sidecar)."""
    import dataclasses
    import json
    import shutil

    from dtbt_tf.config import FeatureConfig

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped(*TFLITE), folder / "m.tflite")
    info = {"streaming": True}
    if complete:
        info.update(feature_config=dataclasses.asdict(FeatureConfig()), doanet_config={"n_max": 2},
                    states=[{"name": "gru0", "shape": [1, 4]}])
    (folder / "m.json").write_text(json.dumps(info) + "\n")
    return str(folder / "m.tflite")


def features(w: Path, change: Callable[[Path], None]) -> str:
    """A feature folder of dataset(w / "data") (extract_features, TensorFlow) changed by ``change(folder)``."""
    from dtbt_tf.data.tfrecord import extract_dataset

    out = w / "feat"
    extract_dataset(dataset(w / "data"), "foa", str(out), progress=False, workers=1)
    change(out)
    return str(out)


def _cut_shard(feat: Path) -> None:
    shard = next(feat.glob("train-*.tfrecord"))
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)


def _manifest_n_max_3(feat: Path) -> None:
    text = (feat / "manifest.json").read_text()
    assert '"n_max": 2' in text
    (feat / "manifest.json").write_text(text.replace('"n_max": 2', '"n_max": 3', 1))


def _bad_csv(wav_path: Path, csv_path: Path) -> None:
    csv_path.write_text("frame,class,track\n1,0,0,oops\n")


def _past_end(wav_path: Path, csv_path: Path) -> None:
    metadata_csv(csv_path, (1, 2, 30))  # 1 s of audio has label frames 0-9


def _stereo(wav_path: Path, csv_path: Path) -> None:
    wav(wav_path, channels=2)


def _rate48k(wav_path: Path, csv_path: Path) -> None:
    wav(wav_path, rate=48000)


def _cut(wav_path: Path, csv_path: Path) -> None:
    truncated_wav(wav_path)


def _empty(wav_path: Path, csv_path: Path) -> None:
    empty_wav(wav_path)


def _extract(change=None, folds=(1, 2, 3)) -> Callable[[Path], list[str]]:
    def argv(w: Path) -> list[str]:
        data = dataset_with(w / "data", change) if change else dataset(w / "data", folds)
        return ["--data", data, "--out", str(w / "feat"), "--no-progress", "--workers", "1"]
    return argv


def _infer(*audio: Callable[[Path], str], extra=(), model=None) -> Callable[[Path], list[str]]:
    def argv(w: Path) -> list[str]:
        files = [make(w) for make in audio]
        return [*files, "--model", model(w) if model else shipped(*TFLITE), "--out", str(w / "out"), *extra]
    return argv


def _ok_wav(w: Path) -> str:
    return wav(w / "a" / "x.wav")


def _stream(*audio: Callable[[Path], str], extra=(), model=None) -> Callable[[Path], list[str]]:
    """stream.py on ``audio`` with ``model`` (default: a small causal DOAnet .keras, TensorFlow)."""
    def argv(w: Path) -> list[str]:
        files = [make(w) for make in audio]
        path = model(w) if model else doanet_keras(w / "causal.keras", causal=True)
        return [*files, "--model", path, "--out", str(w / "out"), *extra]
    return argv


def _baseline(audio: Callable[[Path], str], extra=()) -> Callable[[Path], list[str]]:
    return lambda w: [audio(w), "--out", str(w / "out"), *extra]


def _client(audio: Callable[[Path], str], extra=()) -> Callable[[Path], list[str]]:
    return lambda w: [audio(w), "--dry-run", *extra]


def _train(*extra: str, data=True) -> Callable[[Path], list[str]]:
    return lambda w: [*(["--data", dataset(w / "data")] if data else []), "--out", str(w / "run"), "--no-progress",
                      *extra]


def _hnet(*extra: str) -> Callable[[Path], list[str]]:
    return lambda w: ["--out", str(w / "hnet"), "--work-dir", str(w / "hnet_work"), "--cache-dir", str(w / "cache"),
                      "--train-size", "20", "--epochs", "1", "--eval-size", "10", "--fresh-size", "0", *extra]


def _augment(*extra: str, data: Callable[[Path], str] | None = None) -> Callable[[Path], list[str]]:
    return lambda w: ["--data", data(w) if data else dataset(w / "data"), "--out", str(w / "aug"), "--no-progress",
                      *extra]


# ----------------------------------------------------------------------------------------------------------
# The table

FAULTS: list[Fault] = [
    # infer.py (a TFLite model: no TensorFlow)
    Fault("infer-duplicate-names", "infer", "two inputs with one output name (a/x.wav, b/x.wav)",
          _infer(_ok_wav, lambda w: wav(w / "b" / "x.wav")), "b/x.wav: same output name 'x' as",
          absent=("out",)),
    Fault("infer-threshold-2", "infer", "--threshold 2", _infer(_ok_wav, extra=("--threshold", "2")),
          "argument --threshold: must be in (0, 1), got 2.0", absent=("out",)),
    Fault("infer-threads-0", "infer", "--threads 0", _infer(_ok_wav, extra=("--threads", "0")),
          "argument --threads: must be >= 1, got 0", absent=("out",)),
    Fault("infer-truncated-wav", "infer", "a wav cut short (header declares more samples)",
          _infer(_ok_wav, lambda w: truncated_wav(w / "cut.wav")), "cut.wav: truncated", absent=("out",)),
    Fault("infer-empty-wav", "infer", "a 0-sample wav", _infer(lambda w: empty_wav(w / "empty.wav")),
          "empty.wav: no audio samples", absent=("out",)),
    Fault("infer-stereo-wav", "infer", "a 2-channel wav", _infer(lambda w: wav(w / "st.wav", channels=2)),
          "st.wav: 2 channels", absent=("out",)),
    Fault("infer-missing-wav", "infer", "an input that does not exist", _infer(lambda w: str(w / "nope.wav")),
          "nope.wav: file not found", absent=("out",)),
    Fault("infer-junk-model", "infer", "a junk file as --model", _infer(_ok_wav, model=lambda w: junk(w / "m.tflite")),
          "m.tflite: not a TFLite model", absent=("out",)),
    Fault("infer-out-denied", "infer", "--out in a folder without write permission",
          lambda w: [_ok_wav(w), "--model", shipped(*TFLITE), "--out", str(w / "ro" / "out")],
          "ro/out: Permission denied", absent=("ro/out",), denied="ro"),
    # export.py
    Fault("export-junk-keras", "export", "a junk .keras file as --model",
          lambda w: ["--model", junk(w / "junk.keras"), "--out", str(w / "models")],
          "junk.keras: not a readable Keras model", absent=("models",)),
    Fault("export-hnet-folder", "export", "an Hnet folder as --model",
          lambda w: ["--model", shipped("hnet_n2"), "--out", str(w / "models")],
          "hnet_n2: not a training run folder", absent=("models",)),
    Fault("export-hnet-keras", "export", "the Hnet's .keras as --model",
          lambda w: ["--model", shipped("hnet_n2", "hnet.keras"), "--out", str(w / "models")],
          "hnet.keras: not a DOAnet", absent=("models",)),
    Fault("export-window-7", "export", "--window 7 (not a multiple of 5 frames)",
          lambda w: ["--model", doanet_keras(w / "m.keras"), "--out", str(w / "models"), "--tflite", "fp32",
                     "--window", "7"],
          "window=7 feature frames must be a positive multiple of 5", absent=("models",)),
    Fault("export-unknown-variant", "export", "--tflite int4",
          lambda w: ["--model", junk(w / "m.keras"), "--out", str(w / "models"), "--tflite", "int4"],
          "unknown TFLite variant 'int4'", absent=("models",)),
    Fault("export-version-0", "export", "--version 0",
          lambda w: ["--model", junk(w / "m.keras"), "--out", str(w / "models"), "--version", "0"],
          "argument --version: must be >= 1, got 0", absent=("models",)),
    # evaluate.py
    Fault("evaluate-json-denied", "evaluate", "--json into a folder without write permission",
          lambda w: [*_pair(predictions(w)), "--json", str(w / "ro" / "m.json")], "m.json: permission denied",
          absent=("ro/m.json",), denied="ro"),
    Fault("evaluate-json-no-folder", "evaluate", "--json below a file",
          lambda w: [*_pair(predictions(w)), "--json", str(Path(junk(w / "file")) / "m.json")],
          "file/m.json: folder", absent=("file/m.json",)),
    Fault("evaluate-missing-split", "evaluate", "--split test with no fold-1 reference",
          lambda w: [*_pair(predictions(w, folds=(2, 3), pred_folds=(2, 3))), "--split", "test"],
          "ref: no reference file of split 'test'"),
    Fault("evaluate-missing-prediction", "evaluate", "a reference without its prediction",
          lambda w: [*_pair(predictions(w, pred_folds=(1,)))],
          "prediction file missing for reference"),
    Fault("evaluate-malformed-csv", "evaluate", "a prediction CSV with a malformed row",
          lambda w: [*_pair(predictions(w)), *_bad_pred(w)], f"{stem(2)}.csv: row 2: expected 5 or 6 columns",
          absent=("m.json",)),
    Fault("evaluate-missing-ref", "evaluate", "--ref that does not exist",
          lambda w: ["--pred", str(w), "--ref", str(w / "nope")], "nope: reference folder not found"),
    # evaluate_hnet.py
    Fault("evaluate-hnet-size-0", "evaluate_hnet", "--size 0", lambda w: [shipped("hnet_n2"), "--size", "0"],
          "--size: must be >= 1, got 0"),
    Fault("evaluate-hnet-doanet", "evaluate_hnet", "a DOAnet folder", lambda w: [shipped("doanet_foa")],
          "doanet_foa: not an exported Hnet"),
    # extract_features.py (a 3-recording DCASE root; the training file is the bad one)
    Fault("extract-truncated-wav", "extract_features", "a wav cut short", _extract(_cut),
          f"{stem(3)}.wav: truncated", absent=("feat",)),
    Fault("extract-empty-wav", "extract_features", "a 0-sample wav", _extract(_empty), f"{stem(3)}.wav: 0 samples",
          absent=("feat",)),
    Fault("extract-metadata-past-end", "extract_features", "metadata rows past the end of the audio",
          _extract(_past_end), f"{stem(3)}.csv: frame 30 lies past the end of the audio", absent=("feat",)),
    Fault("extract-stereo", "extract_features", "a 2-channel wav", _extract(_stereo),
          f"{stem(3)}.wav: 2 channels, expected 4", absent=("feat",)),
    Fault("extract-48khz", "extract_features", "a 48 kHz wav", _extract(_rate48k),
          f"{stem(3)}.wav: sample rate 48000 Hz, expected 24000 Hz", absent=("feat",)),
    Fault("extract-malformed-csv", "extract_features", "a malformed metadata CSV", _extract(_bad_csv),
          f"{stem(3)}.csv: row 1: expected 5 or 6 columns", absent=("feat",)),
    Fault("extract-missing-split", "extract_features", "no recording of the test fold", _extract(folds=(2, 3)),
          "data: split 'test' (folds [1]) is empty", absent=("feat",)),
    Fault("extract-missing-data", "extract_features", "--data that does not exist",
          lambda w: ["--data", str(w / "nope"), "--out", str(w / "feat")], "nope: dataset root not found",
          absent=("feat",)),
    Fault("extract-locked", "extract_features", "--out held by another running extraction", _extract(),
          "in use by another feature extraction", absent=("feat/manifest.json",), locked="feat"),
    # make_dataset.py
    Fault("make-dataset-preset", "make_dataset", "--preset nope",
          lambda w: ["--preset", "nope", "--out", str(w / "synth")], "unknown synthetic preset 'nope'",
          absent=("synth",)),
    Fault("make-dataset-stats-folder", "make_dataset", "--stats naming a folder",
          lambda w: ["--out", str(w / "synth"), "--stats", _folder(w / "figs")], "figs: is a folder",
          absent=("synth",)),
    Fault("make-dataset-stats-denied", "make_dataset", "--stats into a folder without write permission",
          lambda w: ["--out", str(w / "synth"), "--stats", str(w / "ro" / "s.png")], "ro: Permission denied",
          absent=("synth",), denied="ro"),
    Fault("make-dataset-fraction", "make_dataset", "--recorded-fraction 0.5 without --sources-dir",
          lambda w: ["--out", str(w / "synth"), "--recorded-fraction", "0.5"], "needs sources_dir",
          absent=("synth",)),
    Fault("make-dataset-sources-missing", "make_dataset", "--sources-dir that does not exist",
          lambda w: ["--out", str(w / "synth"), "--sources-dir", str(w / "clips")], "clips: sources folder not found",
          absent=("synth",)),
    Fault("make-dataset-not-empty", "make_dataset", "--out a folder of other files",
          lambda w: ["--out", str(Path(junk(w / "synth" / "notes.txt")).parent)], "folder is not empty",
          absent=("synth/synth_config.json",)),
    Fault("make-dataset-locked", "make_dataset", "--out held by another running dataset job",
          lambda w: ["--out", str(w / "synth"), "--no-progress"], "in use by another dataset job",
          absent=("synth/synth_config.json", "synth/metadata_dev"), locked="synth"),
    # augment.py
    Fault("augment-missing-data", "augment", "--data that does not exist",
          _augment(data=lambda w: str(w / "nope")), "nope: dataset root not found", absent=("aug", "aug.partial")),
    Fault("augment-truncated-wav", "augment", "a training wav cut short",
          _augment(data=lambda w: augment_dataset(w / "data", cut=True)), "fold3_room1_mix004_ov1.wav: truncated",
          absent=("aug", "aug.partial")),
    Fault("augment-factor-0", "augment", "--factor 0",
          _augment("--factor", "0", data=lambda w: augment_dataset(w / "data")),
          "factor must be an integer >= 1, got 0", absent=("aug", "aug.partial")),
    # train.py
    Fault("train-dropout", "train", "--dropout 1.5", _train("--dropout", "1.5"), "dropout must be in [0, 1), got 1.5",
          absent=("run",)),
    Fault("train-threshold-2", "train", "--threshold 2", _train("--threshold", "2"),
          "argument --threshold: must be in (0, 1), got 2.0", absent=("run",)),
    Fault("train-resume-missing", "train", "--resume of a folder that holds no run", _train("--resume", data=False),
          "run: run folder not found", absent=("run",)),
    Fault("train-resume-data", "train", "--resume with --data", _train("--resume"), "--resume uses the run's own",
          absent=("run",)),
    Fault("train-truncated-shard", "train", "a training TFRecord shard cut short",
          lambda w: ["--data", features(w, _cut_shard), "--out", str(w / "run"), "--no-progress"],
          "train-00000-of-00001.tfrecord: truncated or replaced", absent=("run",)),
    Fault("train-edited-manifest", "train", "a feature manifest whose n_max was edited (2 -> 3)",
          lambda w: ["--data", features(w, _manifest_n_max_3), "--out", str(w / "run"), "--no-progress",
                     "--n-max", "3"],
          "manifest.json: n_max=3, but shard", absent=("run",)),
    # train_hnet.py
    Fault("train-hnet-n-max-0", "train_hnet", "--n-max 0", _hnet("--n-max", "0"), "n_max must be >= 1",
          absent=("hnet", "hnet_work", "cache")),
    Fault("train-hnet-work-inside-out", "train_hnet", "--work-dir inside --out",
          lambda w: _hnet()(w)[:2] + ["--work-dir", str(w / "hnet" / "work")] + _hnet()(w)[4:],
          "the work folder must lie outside", absent=("hnet", "cache")),
    Fault("train-hnet-locked", "train_hnet", "--work-dir held by another running Hnet training", _hnet(),
          "in use by another Hnet training", absent=("hnet", "cache", "hnet_work/train_config.json"),
          locked="hnet_work"),
    # baseline.py
    Fault("baseline-ref-and-threshold", "baseline", "--ref with --threshold",
          _baseline(_ok_wav, ("--ref", "ref", "--threshold", "0.5")), "apply without --ref", absent=("out",)),
    Fault("baseline-truncated-wav", "baseline", "a wav cut short", _baseline(lambda w: truncated_wav(w / "cut.wav")),
          "cut.wav: truncated", absent=("out",)),
    Fault("baseline-48khz", "baseline", "a 48 kHz wav", _baseline(lambda w: wav(w / "hi.wav", rate=48000)),
          "hi.wav: sample rate 48000 Hz", absent=("out",)),
    # build_clip_library.py
    Fault("clip-library-install-root", "build_clip_library", "--install with --packages-root",
          lambda w: ["--out", str(w / "clips"), "--install", "--packages-root", str(w), "--pip-dir", str(w / "pip")],
          "--install installs into /", absent=("clips",)),
    Fault("clip-library-max-0", "build_clip_library", "--max-per-source 0",
          lambda w: ["--out", str(w / "clips"), "--max-per-source", "0"], "must be >= 1, got 0", absent=("clips",)),
    # serving_client.py (--dry-run: no server)
    Fault("serving-threshold-2", "serving_client", "--threshold 2", _client(_ok_wav, ("--threshold", "2")),
          "argument --threshold: must be in (0, 1), got 2.0"),
    Fault("serving-port-0", "serving_client", "--port 0", _client(_ok_wav, ("--port", "0")),
          "argument --port: must be >= 1, got 0"),
    Fault("serving-timeout-0", "serving_client", "--timeout 0", _client(_ok_wav, ("--timeout", "0")),
          "argument --timeout: must be > 0, got 0.0"),
    Fault("serving-truncated-wav", "serving_client", "a wav cut short",
          _client(lambda w: truncated_wav(w / "cut.wav")), "cut.wav: truncated"),
    Fault("serving-stereo-wav", "serving_client", "a 2-channel wav", _client(lambda w: wav(w / "st.wav", channels=2)),
          "st.wav: 2 channels, expected 4"),
    # stream.py (a causal .keras or a TFLite model; no streaming model is shipped)
    Fault("stream-missing-wav", "stream", "an input that does not exist", _stream(lambda w: str(w / "nope.wav")),
          "nope.wav: file not found", absent=("out",)),
    Fault("stream-stereo-wav", "stream", "a 2-channel wav", _stream(lambda w: wav(w / "st.wav", channels=2)),
          "st.wav: 2 channels, expected 4", absent=("out",)),
    Fault("stream-short-wav", "stream", "a wav shorter than one 100 ms frame",
          _stream(lambda w: wav(w / "short.wav", seconds=0.05)), "short.wav: shorter than one 100 ms frame",
          absent=("out",)),
    Fault("stream-truncated-wav", "stream", "a wav cut short", _stream(_ok_wav, lambda w: truncated_wav(w / "cut.wav")),
          "cut.wav: truncated", absent=("out",)),
    Fault("stream-whole-window-tflite", "stream", "a TFLite model that does not stream (the shipped one)",
          _stream(_ok_wav, model=lambda w: shipped(*TFLITE)), "doanet_foa_fp32.tflite: not a streaming model",
          absent=("out",)),
    Fault("stream-folder-without-stream-model", "stream", "a model folder without a streaming .tflite",
          _stream(_ok_wav, model=lambda w: shipped("doanet_foa", "tflite")), "tflite: no streaming model here",
          absent=("out",)),
    Fault("stream-incomplete-sidecar", "stream", "a .tflite whose sidecar says streaming and nothing more",
          _stream(_ok_wav, model=lambda w: stream_sidecar_beside(w / "m", complete=False)),
          "m.json: not a complete streaming sidecar (no 'feature_config'", absent=("out",)),
    Fault("stream-sidecar-of-another-model", "stream", "a .tflite beside the streaming sidecar of another model",
          _stream(_ok_wav, model=lambda w: stream_sidecar_beside(w / "m", complete=True)),
          "m.tflite: the model does not match its sidecar (inputs features; m.json says features, state_gru0",
          absent=("out",)),
    Fault("stream-not-a-model", "stream", "a file that is no model kind stream.py takes",
          _stream(_ok_wav, model=lambda w: junk(w / "m.onnx")), "m.onnx: not a streaming model", absent=("out",)),
    Fault("stream-bidirectional", "stream", "a bidirectional (not causal) DOAnet",
          _stream(_ok_wav, model=lambda w: doanet_keras(w / "bi.keras")), "bi.keras: not a causal DOAnet",
          absent=("out",)),
    Fault("stream-fuma-mic", "stream", "--channel-order fuma with a MIC model",
          _stream(_ok_wav, extra=("--channel-order", "fuma"),
                  model=lambda w: doanet_keras(w / "mic.keras", fmt="mic", causal=True)),
          "mic.keras: --channel-order fuma applies to FOA models", absent=("out",)),
    Fault("stream-seconds-without-device", "stream", "--seconds without --device",
          _stream(_ok_wav, extra=("--seconds", "5"), model=lambda w: shipped(*TFLITE)),
          "--seconds takes a positive number and needs --device", absent=("out",)),
    Fault("stream-out-denied", "stream", "--out in a folder without write permission",
          lambda w: [_ok_wav(w), "--model", doanet_keras(w / "causal.keras", causal=True), "--out",
                     str(w / "ro" / "out")],
          "ro/out: Permission denied", absent=("ro/out",), denied="ro"),
]


def _pair(pred_ref: tuple[str, str]) -> list[str]:
    return ["--pred", pred_ref[0], "--ref", pred_ref[1]]


def _bad_pred(w: Path) -> list[str]:
    (w / "pred" / f"{stem(2)}.csv").write_text("0,0,0,10,0\n1,zero,0\n")
    return ["--json", str(w / "m.json")]


# ----------------------------------------------------------------------------------------------------------
# The docs table


def _shown(arg: str, work: Path) -> str:
    if arg == str(work):
        return "."
    arg = arg.replace(str(work) + os.sep, "").replace(str(REPO / "dtbt_tf") + os.sep, "")
    return f"'{arg}'" if " " in arg else arg


def markdown_table() -> str:
    """The table of docs/reliability.md: script, bad input, the command (paths relative to the work folder) and
    the fragment its error line holds. Builds each row's tiny inputs in a temporary folder (no TensorFlow
    except the rows that need a real DOAnet file)."""
    lines = ["| # | script | bad input | command | the error line holds |", "|---|---|---|---|---|"]
    for i, f in enumerate(FAULTS, 1):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            argv = " ".join(_shown(a, work) for a in f.argv(work))
        extra = (f" (`{f.locked}` held by a running job)" if f.locked else "") + \
            (f" (`{f.denied}` not writable)" if f.denied else "")
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines.append(f"| {i} | {f.script}.py | {cell(f.what)}{extra} | `{cell(argv)}` | `{cell(f.message)}` |")
    return "\n".join(lines) + "\n"


def docs_with_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["--write-docs"], ["--check-docs"]):
        print(__doc__, file=sys.stderr)
        return 2
    text = DOCS.read_text()
    new = docs_with_table(text)
    if args == ["--check-docs"]:
        if new != text:
            print(f"{DOCS}: the fault table is out of date; run python tests/fault_cases.py --write-docs",
                  file=sys.stderr)
            return 1
        return 0
    from dtbt_tf.config import replace_marked_section

    replace_marked_section(str(DOCS), "faults", markdown_table())
    print(f"wrote {len(FAULTS)} rows to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
