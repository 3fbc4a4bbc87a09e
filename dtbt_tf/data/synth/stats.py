"""Statistics of a DCASE-layout dataset (synthetic or real) from its metadata, and a summary figure.

Works on any root that `dcase.discover` reads: polyphony per 100 ms frame, DOA coverage, and per event
(a contiguous run of one (class, track) identity) its duration and mean angular speed.
"""
from __future__ import annotations

import json
import os

import numpy as np

from dtbt_tf.data.dcase import DataError, discover, read_metadata
from dtbt_tf.geometry import angular_distance_deg, unit_to_polar

LABEL_HOP_S = 0.1


def dataset_statistics(root: str) -> dict:
    """{'polyphony': (n_frames_total,) int, 'azimuth', 'elevation': (n_rows,) degrees, 'event_seconds',
    'event_speed': (n_events,) s and deg/s, 'n_files', 'hours'} over all annotated recordings of `root`."""
    import soundfile as sf

    fmt = next((f for f in ("foa", "mic") if os.path.isdir(os.path.join(root, f"{f}_dev"))), "foa")
    recs = [r for r in discover(root, fmt) if r.metadata_path]
    if not recs:
        raise DataError(f"{root}: no recordings with metadata")
    poly, az, el, dur, speed = [], [], [], [], []
    seconds = 0.0
    for r in recs:
        info = sf.info(r.audio_path)
        seconds += info.frames / info.samplerate
        n_frames = int(round(info.frames / info.samplerate / LABEL_HOP_S))
        m = read_metadata(r.metadata_path)
        poly.append(np.bincount(m.frame[m.frame < n_frames], minlength=n_frames))
        a, e = unit_to_polar(m.doa)
        az.append(np.round(a, 6))
        el.append(np.round(e, 6))
        for key in {(int(c), int(t)) for c, t in zip(m.cls, m.track)}:
            sel = np.flatnonzero((m.cls == key[0]) & (m.track == key[1]))
            sel = sel[np.argsort(m.frame[sel])]
            for run in np.split(sel, np.flatnonzero(np.diff(m.frame[sel]) != 1) + 1):
                dur.append(run.size * LABEL_HOP_S)
                if run.size > 1:
                    path = angular_distance_deg(m.doa[run[1:]], m.doa[run[:-1]]).sum()
                    speed.append(path / ((run.size - 1) * LABEL_HOP_S))
    return {"polyphony": np.concatenate(poly), "azimuth": np.concatenate(az), "elevation": np.concatenate(el),
            "event_seconds": np.asarray(dur), "event_speed": np.asarray(speed), "n_files": len(recs),
            "hours": seconds / 3600}


def plot_statistics(root: str, path: str) -> dict:
    """Write a PNG (polyphony histogram, DOA coverage, speed and duration distributions) and return a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = dataset_statistics(root)
    title = f"{os.path.basename(os.path.normpath(root))}: {st['n_files']} files, {st['hours'] * 60:.1f} min"
    cfg_path = os.path.join(root, "synth_config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            rooms = json.load(f).get("rooms", [])
        title += "; rooms (RT60 s): " + ", ".join(f"{r['room_id']}:{r['rt60']:.2f}" for r in rooms[:12])
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    counts = np.bincount(st["polyphony"])
    ax[0, 0].bar(np.arange(counts.size), counts / counts.sum())
    ax[0, 0].set(title="polyphony per 100 ms frame", xlabel="active sources", ylabel="fraction of frames",
                 xticks=np.arange(counts.size))
    ax[0, 1].hist2d(st["azimuth"], st["elevation"], bins=[72, 37], range=[[-182.5, 177.5], [-92.5, 92.5]],
                    cmap="viridis", cmin=1)  # 5-degree bins centred on multiples of 5
    ax[0, 1].set(title="DOA coverage (label rows)", xlabel="azimuth (deg)", ylabel="elevation (deg)")
    ax[1, 0].hist(st["event_speed"], bins=np.arange(0, 61, 2.5))
    ax[1, 0].set(title=f"event angular speed ({np.mean(st['event_speed'] < 1):.0%} static)", xlabel="deg/s",
                 ylabel="events")
    ax[1, 1].hist(st["event_seconds"], bins=np.arange(0, 6.01, 0.25))
    ax[1, 1].set(title="event duration", xlabel="s", ylabel="events")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return {"n_files": st["n_files"], "hours": st["hours"], "polyphony_fraction": (counts / counts.sum()).tolist(),
            "n_events": int(st["event_seconds"].size), "static_fraction": float(np.mean(st["event_speed"] < 1))}
