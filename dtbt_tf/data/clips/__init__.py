"""A library of recorded source clips from installable packages, for the scene generator (issue 15).

``build_library("data/clips")`` writes ``data/clips/<class>/*.wav`` (24 kHz mono), ``manifest.json`` and
``LICENSES.md``; ``scripts/make_dataset.py --sources-dir data/clips`` renders scenes from it. See the
README section "Recorded source sounds" and docs/synthetic-data.md.
"""
from .build import (DEFAULT_PIP_DIR, MANIFEST, build_library, class_counts, install, install_command,
                    manifest_hash, survey)
from .classes import CLASS_NAMES

__all__ = ["CLASS_NAMES", "DEFAULT_PIP_DIR", "MANIFEST", "build_library", "class_counts", "install",
           "install_command", "manifest_hash", "survey"]
