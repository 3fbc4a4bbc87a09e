"""Synthetic spatial scenes in the DCASE2020 layout (FOA and tetrahedral MIC): the project's default dataset.

`make_dataset(preset="quick")` writes (or reuses) ``data/synth_quick_seed0``; see docs/synthetic-data.md.
"""
from .presets import PRESETS, SynthConfig, get_preset, synthetic_preset_for
from .render import make_dataset, render_scene

__all__ = ["PRESETS", "SynthConfig", "get_preset", "make_dataset", "render_scene", "synthetic_preset_for"]
