"""The one window plan of a whole recording and the stitching of window outputs (evaluation, inference).

All counts are in label frames (100 ms = ``label_hop_frames`` feature frames). A window is ``W`` label frames
(50 by default = 250 feature frames = 5 s); windows start every ``H = W // 2`` frames (50 % overlap). From each
window only its centre ``[M, M + H)`` with ``M = (W - H) // 2`` is kept, except that the first window also keeps
its head ``[0, M)`` and the last its tail: every label frame comes from exactly one window, never from the ``M``
frames next to a window edge that another window covers better. The input is zero-padded at the end to cover
the last window. Output slots are not re-matched across windows: a slot may swap at a window boundary.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def window_plan(n_label: int, window: int) -> list[tuple[int, int, int]]:
    """(window start, keep from, keep to) in label frames covering ``0..n_label`` exactly once.

    Keep ranges are relative to the file; ``keep from/to`` lie inside ``[start, start + window)``.
    """
    if n_label <= 0:
        return []
    hop = max(window // 2, 1)
    margin = (window - hop) // 2
    starts = [0]
    while starts[-1] + window < n_label:
        starts.append(starts[-1] + hop)
    plan = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else s + margin
        hi = n_label if i == len(starts) - 1 else s + margin + hop
        plan.append((s, lo, min(hi, n_label)))
    return plan


def run_windows(source: np.ndarray, n_label: int, window: int, step: int, n_max: int,
                predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], max_batch: int = 16):
    """Outputs of a whole recording from windows of ``window`` label frames, stitched by :func:`window_plan`.

    source: (N, ...) per-row input (feature frames or audio samples) with ``step`` rows per label frame;
    rows past its end are zeros. predict: batch (B, window * step, ...) -> (doa (B, window, n_max, 3),
    activity (B, window, n_max)) NumPy; windows go to it ``max_batch`` at a time.
    Returns doa (n_label, n_max, 3) and activity (n_label, n_max) float32.
    """
    doa = np.zeros((n_label, n_max, 3), np.float32)
    act = np.zeros((n_label, n_max), np.float32)
    plan = window_plan(n_label, window)
    if not plan:
        return doa, act
    need = (plan[-1][0] + window) * step
    padded = np.zeros((need,) + source.shape[1:], np.float32)
    rows = min(len(source), need)
    padded[:rows] = source[:rows]
    for b in range(0, len(plan), max_batch):
        chunk = plan[b:b + max_batch]
        d, a = predict(np.stack([padded[s * step:(s + window) * step] for s, _, _ in chunk]))
        for (s, lo, hi), di, ai in zip(chunk, d, a):
            doa[lo:hi] = di[lo - s:hi - s]
            act[lo:hi] = ai[lo - s:hi - s]
    return doa, act
