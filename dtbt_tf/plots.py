"""Figures a person looks at: predicted vs reference azimuth/elevation over time (infer --plot, TensorBoard)."""
from __future__ import annotations

import os

import numpy as np

from dtbt_tf.data.dcase import Metadata
from dtbt_tf.geometry import unit_to_polar


def plot_tracks(meta: Metadata, out_path: str, ref: Metadata | None = None, title: str = "",
                label_hop_seconds: float = 0.1, n_frames: int | None = None) -> None:
    """PNG of azimuth and elevation over time, one colour per track, the reference (if any) in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for i, (name, lim) in enumerate((("azimuth", 180), ("elevation", 90))):
        ax = axes[i]
        if ref is not None and ref.frame.size:
            ang = unit_to_polar(ref.doa)[i]
            ax.scatter(ref.frame * label_hop_seconds, ang, s=14, c="0.7", marker="s", label="reference")
        for track in np.unique(meta.track):
            sel = meta.track == track
            ang = np.atleast_1d(unit_to_polar(meta.doa[sel])[i])
            ax.scatter(meta.frame[sel] * label_hop_seconds, ang, s=4, label=f"track {track}")
        ax.set_ylim(-lim, lim)
        ax.set_ylabel(f"{name} (deg)")
        ax.grid(alpha=0.3)
    if n_frames:
        axes[1].set_xlim(0, n_frames * label_hop_seconds)
    axes[1].set_xlabel("time (s)")
    axes[0].set_title(title)
    axes[0].legend(loc="upper right", fontsize=7, markerscale=2)
    fig.tight_layout()
    tmp = f"{out_path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)


def labels_to_metadata(labels: dict) -> Metadata:
    """Reference rows of label arrays {"doa" (F, N, 3), "active" (F, N), "track_id" (F, N)}."""
    frame, slot = np.nonzero(labels["active"] > 0.5)
    return Metadata(frame.astype(np.int64), np.zeros(frame.size, np.int64),
                    labels["track_id"][frame, slot].astype(np.int64), labels["doa"][frame, slot].astype(np.float64))
