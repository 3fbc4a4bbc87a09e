"""What jobs leave on disk and how it is found again: run folders, export sidecars, shipped models, locks.

Light at import (no TensorFlow): the TFLite device path and every ``--help`` import it.

Run folder (``train.py --out``)::

    run_config.json     the RunConfig (dtbt_tf.config), written once every input is validated
    .lock               PID of the job that holds the folder (see :class:`FolderLock`)
    best.keras          DOAnet only (with its normalisation layer), best validation LE so far
    ckpt/               tf.train.Checkpoint of DOAnet + optimizer + epoch + best LE (resume)
    tb/                 TensorBoard scalars and track images
    predictions/        DCASE CSVs of the test split; test_metrics.json their metrics
    export/1/           SavedModel (TF Serving layout)

Export sidecars: ``<version>/assets.extra/dtbt_tf.json`` beside a SavedModel and ``<name>.json`` beside a
``<name>.tflite`` hold the feature, model and inference configs and the provenance.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from dtbt_tf.config import (RUN_CONFIG_NAME, ConfigError, DoanetConfig, FeatureConfig, InferenceConfig, RunConfig,
                            atomic_write_text, from_dict, load_json)
from dtbt_tf.version import __version__

RUN_CONFIG = RUN_CONFIG_NAME
BEST_MODEL = "best.keras"
CHECKPOINT_DIR = "ckpt"
PREDICTIONS_DIR = "predictions"
TEST_METRICS = "test_metrics.json"
EXPORT_DIR = "export"
SIDECAR = "dtbt_tf.json"  # export sidecar inside <version>/assets.extra/
LOCK_FILE = ".lock"
SHIPPED_MODELS = ("hnet_n2", "hnet_n3", "doanet_foa", "doanet_mic", "doanet_foa_stream")
SHIPPED_DIR = Path(__file__).resolve().parent / "saved_models"  # package data (saved_models/ links here)


# ----------------------------------------------------------------------------------------------------------
# Shipped models


def shipped_model(name: str) -> str:
    """Folder of a model shipped with the package (``artifacts.SHIPPED_MODELS``):
    package data, so it is found on editable and non-editable installs from any working directory."""
    path = SHIPPED_DIR / name
    if not path.is_dir():
        available = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) if SHIPPED_DIR.is_dir() else []
        raise ConfigError(f"no shipped model {name!r} (shipped: {', '.join(available) or 'none'})")
    return str(path)


def is_inside_shipped(path: str) -> bool:
    """True if ``path`` lies inside the shipped models' folder (through the saved_models link too)."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(SHIPPED_DIR))
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Run folders


def default_run_dir(fmt: str, loss: str, root: str = "runs") -> str:
    """``runs/<fmt>_<loss>_<YYYYmmdd-HHMMSS>-<pid>``: two jobs started in the same second get different names."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(root, f"{fmt}_{loss}_{stamp}-{os.getpid()}")


def run_config_path(run_dir: str) -> str:
    return os.path.join(run_dir, RUN_CONFIG)


def has_run(run_dir: str) -> bool:
    return os.path.isfile(run_config_path(run_dir))


def load_run_config(run_dir: str) -> RunConfig:
    """The RunConfig of a run folder; ConfigError naming the file if missing or malformed."""
    path = run_config_path(run_dir)
    if not os.path.isfile(path):
        if os.path.isdir(run_dir):
            raise ConfigError(f"{run_dir}: not a training run folder (no {RUN_CONFIG})")
        raise ConfigError(f"{run_dir}: run folder not found")
    return RunConfig.from_dict(load_json(path), where=path)


def save_run_config(run_dir: str, cfg: RunConfig) -> None:
    atomic_write_text(run_config_path(run_dir), json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


def load_trained(run_dir: str):
    """(DOAnet keras.Model from best.keras, RunConfig) of a training run folder."""
    cfg = load_run_config(run_dir)
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: not found (the run has not finished an epoch)")
    return load_doanet_keras(path), cfg


def load_doanet_keras(path: str):
    """A DOAnet ``.keras`` file (its custom layers registered first); ConfigError if it is not one."""
    import keras

    import dtbt_tf.models.doanet  # noqa: F401  (registers DOAnet's custom layers for loading)

    if not os.path.isfile(path):
        raise ConfigError(f"{path}: file not found")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises ValueError, OSError, zipfile errors... for a file that is not a model
        raise ConfigError(f"{path}: not a readable Keras model ({type(e).__name__})") from None
    if not isinstance(getattr(model, "output", None), dict) or "activity" not in model.output:
        raise ConfigError(f"{path}: not a DOAnet (no 'doa'/'activity' outputs)")
    return model


def provenance(run_dir: str) -> dict:
    """Where an exported model came from: {"source_run": the run folder, "data_root": the DCASE root its
    training data was extracted from (when the data manifest names one)}."""
    out = {"source_run": os.path.abspath(run_dir)}
    try:
        data_dir = load_run_config(run_dir).data_dir
        with open(os.path.join(data_dir, "manifest.json")) as f:
            out["data_root"] = json.load(f)["source"]["root"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return out


# ----------------------------------------------------------------------------------------------------------
# Export sidecars


def sidecar_info(feature_cfg: FeatureConfig, doanet_cfg: DoanetConfig, inference_cfg: InferenceConfig,
                 **extra) -> dict:
    """The JSON an export carries: configs, version, export time, and ``extra`` (provenance, window...)."""
    return {"feature_config": feature_cfg, "doanet_config": doanet_cfg, "inference_config": inference_cfg,
            "dtbt_tf_version": __version__,
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra}


def write_sidecar(path: str, info: dict) -> None:
    import dataclasses

    def enc(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        raise TypeError(f"not serialisable: {type(o)}")

    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True, default=enc) + "\n")


def read_sidecar(path: str) -> dict:
    """The sidecar at ``path`` ({} when there is none)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None


def inference_config_from(info: dict, where: str) -> InferenceConfig:
    """The InferenceConfig a sidecar carries; exports older than it carried ``uses_activity`` and the 0.5
    threshold inference then used."""
    if "inference_config" in info:
        try:
            return from_dict(InferenceConfig, info["inference_config"])
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{where}: bad inference_config ({e})") from None
    return InferenceConfig(threshold=0.5, use_activity=bool(info.get("uses_activity", True)))


def tflite_sidecar_path(tflite_path: str) -> str:
    """The JSON written next to a ``.tflite`` file: ``model.tflite`` -> ``model.json``."""
    return os.path.splitext(tflite_path)[0] + ".json"


def saved_model_version_dir(path: str) -> str:
    """``path`` itself if it holds ``saved_model.pb``, else its highest numeric version sub-folder that does."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [int(d) for d in os.listdir(path)
                if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if not versions:
        raise ConfigError(f"{path}: no saved_model.pb here or in a numeric version folder")
    return os.path.join(path, str(max(versions)))


# ----------------------------------------------------------------------------------------------------------
# Locks and temporaries


def pid_alive(pid: int) -> bool:
    """True if a process with this PID runs on this host (or exists but is not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderBusy(ConfigError):
    """A folder's lock is held by a live job (:class:`FolderLock`); ``folder`` names it."""

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


def wait_until_unlocked(folder: str, poll_s: float = 2.0) -> None:
    """Return once ``folder`` has no lock of a live process (released, or its holder died)."""
    lock = FolderLock(folder)
    while os.path.exists(lock.path):
        pid, host = lock._owner()
        if pid is not None and host == socket.gethostname() and not pid_alive(pid):
            return
        time.sleep(poll_s)


class FolderLock:
    """One job per folder: ``<folder>/.lock`` created atomically (O_EXCL) holding ``pid host``.

    A lock of a live process is a ConfigError naming the folder and the PID; a stale lock (its process is dead,
    on this host) is taken over with a message. Released (removed) on exit. Use as a context manager.
    """

    def __init__(self, folder: str, job: str = "job", log=None):
        self.folder, self.job = folder, job
        self.path = os.path.join(folder, LOCK_FILE)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.held = False

    def acquire(self) -> "FolderLock":
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = self._owner()
                if pid is not None and (host != socket.gethostname() or pid_alive(pid)):
                    raise FolderBusy(f"{self.folder}: in use by another {self.job} (process {pid} on {host}; "
                                     f"lock file {self.path})", self.folder) from None
                self.log(f"{self.folder}: taking over the stale lock of process {pid} (no longer running)")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise ConfigError(f"{self.folder}: could not take the lock {self.path} (another job took it)")

    def _owner(self) -> tuple[int | None, str]:
        try:
            with open(self.path) as f:
                pid, host = (f.read().split() + ["", ""])[:2]
            return int(pid), host
        except (OSError, ValueError):
            return None, ""

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def remove_temporaries(folder: str, patterns: tuple[str, ...] = (".tmp",)) -> list[str]:
    """Remove what killed writers left in ``folder`` (names containing one of ``patterns``); call while holding
    the folder's lock. Returns the removed paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if any(p in name for p in patterns) and name != LOCK_FILE:
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            removed.append(path)
    return removed
