"""Synthetic scene rendering speed: seconds of audio rendered per second of compute, per format and room size.

For a small, a medium and a large room (with RT60 growing with size), the RIR bank is built once (timed), then
one scene with the `quick` preset's event statistics is rendered per format (median of repeats). Rendering is
single-process here; `make_dataset` runs one scene per CPU in parallel. CPU seconds are reported next to wall
seconds because the machine is shared.
"""
from __future__ import annotations

import time

import numpy as np

from dtbt_tf.data.synth import get_preset
from dtbt_tf.data.synth.render import render_scene
from dtbt_tf.data.synth.rooms import build_bank, make_room
from dtbt_tf.data.synth.scenes import sample_scene

ROOMS = {"small": ((5.5, 5.0, 3.0), 0.3), "medium": ((8.0, 6.0, 3.5), 0.5), "large": ((12.0, 10.0, 4.5), 0.8)}
FORMATS = (("foa",), ("mic",), ("foa", "mic"))


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run(quick: bool = False) -> dict:
    seconds, repeats = (10.0, 1) if quick else (60.0, 3)
    cfg = get_preset("quick").replace(scene_seconds=seconds, n_folds=1, rooms_per_fold=1)
    rows = []
    for size, (dims, rt60) in ROOMS.items():
        room = make_room(1, 1, dims, rt60, cfg, np.random.default_rng(0))
        bank, bank_wall, bank_cpu = _timed(lambda: build_bank(room, cfg, 0))
        scenes = [sample_scene(cfg, room, mix, 2, seed=0) for mix in range(1, repeats + 1)]  # ov2 scenes
        for formats in FORMATS:
            times = [_timed(lambda: render_scene(s, bank, formats))[1:] for s in scenes]
            wall, cpu = np.median([t[0] for t in times]), np.median([t[1] for t in times])
            rows.append({"room": size, "dims_m": "x".join(f"{d:g}" for d in dims), "rt60_s": rt60,
                         "format": "+".join(formats), "scene_s": seconds, "bank_build_s": round(bank_wall, 2),
                         "bank_mb": round(bank.early.nbytes / 1e6 + bank.tails.nbytes / 1e6, 1),
                         "render_wall_s": round(float(wall), 3), "render_cpu_s": round(float(cpu), 3),
                         "audio_s_per_cpu_s": round(seconds / float(cpu), 1),
                         "audio_s_per_wall_s": round(seconds / float(wall), 1)})
    return {"name": "synth", "rows": rows,
            "notes": f"one ov2 scene of {seconds:g} s per row (median of {repeats}), quick-preset event statistics, "
                     "one process; bank build (ISM via pyroomacoustics + tails, both formats) timed once per room. "
                     "Writing wav files is not included (~0.02 s per 30 s file)."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
