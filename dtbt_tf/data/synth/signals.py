"""Dry source signals: procedural families for the 14 DCASE class ids, or real mono clips from a folder or a
recorded-clip library (``dtbt_tf.data.clips``: ``manifest.json`` with class, fold and hash of every clip).

Families (each event draws its own parameters around its class's ranges, so classes differ and events vary):
harmonic tones with vibrato and glide, band-limited noise with slow modulation, repeated log chirps, impulsive
trains of filtered decaying bursts, and formant-filtered glottal pulse trains (vowel-like). Every signal gets an
attack/release envelope and unit RMS; levels are set by the scene.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
import scipy.signal

from dtbt_tf.data.dcase import DataError

FS = 24000
N_CLASSES = 14
MIN_CLIP_SECONDS = 0.3
LIBRARY_MANIFEST = "manifest.json"  # written by dtbt_tf.data.clips.build

_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))

# class id -> (family, parameters); ranges are (min, max) and sampled per event.
CLASS_FAMILIES = (
    ("harmonic", {"f0": (90, 250), "vibrato": (0.002, 0.01), "tilt": (1.0, 2.0)}),
    ("harmonic", {"f0": (250, 700), "vibrato": (0.005, 0.02), "tilt": (0.7, 1.5)}),
    ("harmonic", {"f0": (700, 2000), "vibrato": (0.01, 0.04), "tilt": (1.5, 3.0)}),
    ("band_noise", {"centre": (150, 500), "ratio": (1.5, 3.0)}),
    ("band_noise", {"centre": (800, 2500), "ratio": (1.3, 2.5)}),
    ("band_noise", {"centre": (3000, 8000), "ratio": (1.3, 2.0)}),
    ("chirp", {"low": (200, 600), "high": (1500, 4000), "period": (0.15, 0.8), "up": True}),
    ("chirp", {"low": (400, 1000), "high": (2000, 6000), "period": (0.3, 1.2), "up": False}),
    ("impulses", {"rate": (1.5, 4.0), "decay": (0.01, 0.04), "centre": (150, 600)}),
    ("impulses", {"rate": (6.0, 15.0), "decay": (0.002, 0.008), "centre": (1500, 5000)}),
    ("impulses", {"rate": (0.5, 1.5), "decay": (0.1, 0.3), "centre": (600, 2500)}),
    ("formant", {"f0": (85, 150), "formant_scale": (0.9, 1.0)}),
    ("formant", {"f0": (165, 260), "formant_scale": (1.0, 1.15)}),
    ("formant", {"f0": (280, 500), "formant_scale": (1.15, 1.3)}),
)


def _loguniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _harmonic(n, rng, p):
    t = np.arange(n) / FS
    f0 = _loguniform(rng, *p["f0"])
    vib = rng.uniform(*p["vibrato"]) * np.sin(2 * np.pi * rng.uniform(3, 8) * t + rng.uniform(0, 2 * np.pi))
    glide = 1 + rng.uniform(-0.1, 0.1) * t / max(t[-1], 1e-3)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + vib) * glide) / FS
    n_harm = int(max(1, min(12, 0.45 * FS / (1.2 * f0))))
    tilt = rng.uniform(*p["tilt"])
    amps = np.arange(1, n_harm + 1) ** -tilt * rng.uniform(0.5, 1.0, n_harm)
    return sum(a * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h, a in zip(range(1, n_harm + 1), amps))


def _bandpass(x, centre, ratio, order=4):
    lo, hi = centre / np.sqrt(ratio), min(centre * np.sqrt(ratio), 0.45 * FS)
    sos = scipy.signal.butter(order, [lo, hi], btype="bandpass", fs=FS, output="sos")
    return scipy.signal.sosfilt(sos, x)


def _band_noise(n, rng, p):
    t = np.arange(n) / FS
    x = _bandpass(rng.standard_normal(n), _loguniform(rng, *p["centre"]), rng.uniform(*p["ratio"]))
    return x * (1 + rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t + rng.uniform(0, 2 * np.pi)))


def _chirp(n, rng, p):
    t = np.arange(n) / FS
    f_lo, f_hi = _loguniform(rng, *p["low"]), _loguniform(rng, *p["high"])
    period = rng.uniform(*p["period"])
    pos = (t % period) / period
    if not p["up"]:
        pos = 1 - pos
    duty = rng.uniform(0.6, 1.0)
    phase = 2 * np.pi * np.cumsum(f_lo * (f_hi / f_lo) ** np.minimum(pos / duty, 1.0)) / FS
    gate = np.clip(np.minimum((t % period) / 0.005, (duty * period - t % period) / 0.005), 0, 1)
    return (np.sin(phase) + 0.3 * np.sin(2 * phase)) * gate


def _impulses(n, rng, p):
    rate = rng.uniform(*p["rate"])
    train = np.zeros(n)
    t = rng.uniform(0, 0.3 / rate)
    while t < n / FS:
        train[int(t * FS)] = rng.uniform(0.5, 1.0)
        t += rng.uniform(0.7, 1.3) / rate
    decay = rng.uniform(*p["decay"])
    k = np.arange(int(5 * decay * FS) + 1) / FS
    burst = _bandpass(rng.standard_normal(k.size) * np.exp(-k / decay), _loguniform(rng, *p["centre"]),
                      rng.uniform(1.5, 4.0), order=2)
    return scipy.signal.fftconvolve(train, burst)[:n]


def _formant(n, rng, p):
    t = np.arange(n) / FS
    f0 = _loguniform(rng, *p["f0"]) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t))
    f0 = f0 * (1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)))
    cycles = np.cumsum(f0) / FS
    pulses = np.diff(np.floor(cycles), prepend=0.0)
    x = scipy.signal.lfilter([1.0], [1.0, -0.95], pulses)  # glottal spectral tilt
    scale = rng.uniform(*p["formant_scale"])
    for f, bw in zip(np.asarray(_VOWELS[rng.integers(len(_VOWELS))]) * scale, (80, 100, 140)):
        r = np.exp(-np.pi * bw / FS)
        x = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / FS), r * r], x)
    syllables = 0.3 + 0.7 * np.abs(np.sin(np.pi * rng.uniform(2, 5) * t + rng.uniform(0, np.pi)))
    return x * syllables


_FAMILIES = {"harmonic": _harmonic, "band_noise": _band_noise, "chirp": _chirp, "impulses": _impulses,
             "formant": _formant}


def envelope(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Raised-cosine attack (5-50 ms) and release (20-200 ms), then unit RMS (silence stays silent)."""
    n = x.size
    attack = min(int(rng.uniform(0.005, 0.05) * FS), n // 4)
    release = min(int(rng.uniform(0.02, 0.2) * FS), n // 4)
    env = np.ones(n)
    env[:attack] = 0.5 * (1 - np.cos(np.pi * np.arange(attack) / max(attack, 1)))
    env[n - release:] = 0.5 * (1 + np.cos(np.pi * np.arange(release) / max(release, 1)))
    y = x * env
    rms = np.sqrt(np.mean(y ** 2))
    return y / rms if rms > 1e-12 else y


def procedural(cls: int, n: int, seed: int) -> np.ndarray:
    """Dry signal (n,) float64 of class `cls` (0..13), unit RMS, deterministic in `seed`."""
    family, params = CLASS_FAMILIES[cls]
    rng = np.random.default_rng(seed)
    return envelope(_FAMILIES[family](n, rng, params), rng)


def manifest_hash(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own 'hash' (each clip's entry holds the SHA-256
    of its wav, so the hash changes with any clip's content, class, fold or licence)."""
    body = {k: v for k, v in manifest.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Real clips


@dataclasses.dataclass(frozen=True)
class Clip:
    """A mono clip: absolute path, path relative to the library root, class id, length in samples at 24 kHz,
    and its library fold ('test' | 'val' | 'train'; None in a plain folder: usable in every dataset fold)."""

    path: str
    relpath: str
    cls: int
    n_samples: int
    fold: str | None = None


class ClipLibrary:
    """Mono wav clips from a folder. A folder with a clip-library ``manifest.json`` (scripts/build_clip_library.py)
    takes classes and folds from it: a clip of library fold 'test' is used only in the dataset folds the
    manifest maps to 'test' (DCASE: 1), 'val' only in 2, 'train' in the others, so test, validation and
    training scenes never share a clip. Otherwise subfolders (sorted by name) are classes 0, 1, ... and a flat
    folder assigns classes round-robin over the 14 DCASE ids by sorted file name; every clip may be used in
    every fold. Multichannel clips are averaged to mono and every clip is resampled to 24 kHz."""

    def __init__(self, root: str, clips: list[Clip], manifest_hash: str | None = None,
                 folds: dict | None = None):
        self.root = root
        self.clips = clips
        self.manifest_hash = manifest_hash
        self.folds = folds  # {library fold: [dataset folds]}, None for a plain folder

    @classmethod
    def from_dir(cls, root: str) -> "ClipLibrary":
        import soundfile as sf

        if not os.path.isdir(root):
            raise DataError(f"{root}: sources folder not found")
        if os.path.isfile(os.path.join(root, LIBRARY_MANIFEST)):
            return cls.from_manifest(root)
        subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if subdirs:
            groups = [(k, sorted(os.path.join(d, f) for f in os.listdir(os.path.join(root, d))
                                 if f.lower().endswith(".wav"))) for k, d in enumerate(subdirs)]
        else:
            files = sorted(f for f in os.listdir(root) if f.lower().endswith(".wav"))
            groups = [(k % N_CLASSES, [f]) for k, f in enumerate(files)]
        clips = []
        for k, rels in groups:
            for rel in rels:
                path = os.path.join(root, rel)
                try:
                    info = sf.info(path)
                except Exception as e:
                    raise DataError(f"{path}: cannot read audio ({e})") from None
                n = int(np.ceil(info.frames * FS / info.samplerate))
                if n < MIN_CLIP_SECONDS * FS:
                    raise DataError(f"{path}: clip is shorter than {MIN_CLIP_SECONDS} s")
                clips.append(Clip(os.path.abspath(path), rel, k, n))
        if not clips:
            raise DataError(f"{root}: sources folder contains no .wav clips")
        return cls(root, clips)

    @classmethod
    def from_manifest(cls, root: str) -> "ClipLibrary":
        """A clip library: its manifest must match its own hash, and every clip the size it lists (DataError
        naming the file otherwise: the library was changed after it was built)."""
        path = os.path.join(root, LIBRARY_MANIFEST)
        try:
            with open(path) as f:
                manifest = json.load(f)
            entries, folds = manifest["clips"], manifest["folds"]
            if manifest.get("hash") != manifest_hash(manifest):
                raise DataError(f"{path}: the manifest does not match its hash (edited by hand?); rebuild the "
                                "library with scripts/build_clip_library.py")
            if manifest.get("sample_rate") != FS:
                raise DataError(f"{path}: clips at {manifest.get('sample_rate')} Hz, expected {FS}")
            clips = [Clip(os.path.abspath(os.path.join(root, e["file"])), e["file"], int(e["class"]),
                          int(e["samples"]), e["fold"]) for e in entries]
            sizes = [int(e["bytes"]) for e in entries]
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the clip-library manifest ({e})") from None
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: not a clip-library manifest (missing or bad field {e})") from None
        for c, size in zip(clips, sizes):
            if not os.path.isfile(c.path) or os.path.getsize(c.path) != size:
                raise DataError(f"{c.path}: missing or changed since the library was built; rebuild it")
            if not 0 <= c.cls < N_CLASSES or c.fold not in folds:
                raise DataError(f"{path}: {c.relpath}: class {c.cls} or fold {c.fold!r} is not valid")
        if not clips:
            raise DataError(f"{path}: the clip library holds no clips")
        return cls(root, clips, manifest["hash"], {k: [int(f) for f in v] for k, v in folds.items()})

    def fingerprint(self) -> list | dict:
        """What the cache compares: a library's manifest hash, else [relpath, size in bytes, class] per clip."""
        if self.manifest_hash:
            return {"clip_library_manifest_hash": self.manifest_hash, "clips": len(self.clips)}
        return [[c.relpath, os.path.getsize(c.path), c.cls] for c in self.clips]

    def identity(self) -> str:
        """8 hex digits naming this clip set (part of the default dataset folder name)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.fingerprint()).encode()).hexdigest()[:8]

    def fold_for(self, dataset_fold: int) -> str | None:
        """The library fold a dataset fold draws from (a fold the manifest does not list: 'train'); None for
        a plain folder."""
        if self.folds is None:
            return None
        return next((k for k, v in self.folds.items() if dataset_fold in v), "train")

    def usable(self, fold: str | None) -> list[int]:
        """Indices of the clips a dataset fold with library fold `fold` may use."""
        return [i for i, c in enumerate(self.clips) if fold is None or c.fold == fold]

    def classes(self, fold: str | None = None) -> list[int]:
        return sorted({self.clips[i].cls for i in self.usable(fold)})

    def excerpt(self, index: int, start: int, n: int, seed: int) -> np.ndarray:
        """`n` samples of clip `index` from sample `start` (24 kHz), with a short envelope, unit RMS."""
        x = _load_clip(self.clips[index].path)[start:start + n]
        x = np.pad(x, (0, n - x.size))
        rng = np.random.default_rng(seed)
        y = envelope(x, rng)
        if not np.any(y):
            raise DataError(f"{self.clips[index].path}: clip excerpt at {start / FS:.2f} s is silent")
        return y

    def joined(self, pieces, n: int, seed: int) -> np.ndarray:
        """`n` samples made of `pieces` ((clip index, start sample, samples), ...) in turn, each at unit RMS
        with 5 ms fades at the joins, then a short envelope, unit RMS (the 'clips' source of a scene)."""
        fade = int(0.005 * FS)
        parts = []
        for index, start, length in pieces:
            x = _load_clip(self.clips[index].path)[start:start + length]
            x = np.pad(x, (0, length - x.size))
            rms = np.sqrt(np.mean(x ** 2))
            if rms > 1e-12:
                x = x / rms
            if len(pieces) > 1 and x.size > 2 * fade:
                ramp = 0.5 * (1 - np.cos(np.pi * np.arange(fade) / fade))
                x = x.copy()
                x[:fade] *= ramp
                x[-fade:] *= ramp[::-1]
            parts.append(x)
        x = np.concatenate(parts)[:n]
        y = envelope(np.pad(x, (0, n - x.size)), np.random.default_rng(seed))
        if not np.any(y):
            raise DataError(f"{self.clips[pieces[0][0]].path}: clip excerpt at {pieces[0][1] / FS:.2f} s is silent")
        return y


@functools.lru_cache(maxsize=64)
def _load_clip(path: str) -> np.ndarray:
    import soundfile as sf

    try:
        x, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read audio ({e})") from None
    x = x.mean(axis=1)
    if sr != FS:
        g = np.gcd(int(sr), FS)
        x = scipy.signal.resample_poly(x, FS // g, int(sr) // g)
    return x
