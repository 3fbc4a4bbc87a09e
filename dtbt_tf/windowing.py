"""The one window plan of a whole recording and the stitching of window outputs (evaluation, inference).

All counts are in label frames (100 ms = ``label_hop_frames`` feature frames). A window is ``W`` label frames
(50 by default = 250 feature frames = 5 s); windows start every ``H = W // 2`` frames (50 % overlap). From each
window only its centre ``[M, M + H)`` with ``M = (W - H) // 2`` is kept, except that the first window also keeps
its head ``[0, M)`` and the last its tail: every label frame comes from exactly one window, never from the ``M``
frames next to a window edge that another window covers better. The input is zero-padded at the end to cover
the last window.

Slot re-association. A DOAnet's regressor slots carry no identity from one window to the next: the same source
may come out of slot 0 in one window and slot 1 in the next. Before a window's frames are kept, its slots are
permuted to match the previous window (itself already permuted, so the chain runs through the whole file): a
Hungarian match (``scipy.optimize.linear_sum_assignment``) on the ``W - H`` label frames both windows cover.
The cost of giving stitched slot ``j`` (previous window) the new window's slot ``k`` is the mean over the
overlapping frames of

    p_j * q_k * angle(u_j, v_k) / 180 deg  +  ACTIVITY_WEIGHT * |p_j - q_k|

with ``p``, ``q`` the two windows' activity probabilities (clipped to [0, 1]) and ``u``, ``v`` their DOAs: the
angular distance counts where both slots are active (an inactive slot's direction is meaningless, the product
of probabilities weighs it out), the second term where only one of them is. Soft probabilities rather than
thresholded ones keep the match independent of a model's threshold; for a model without an activity head
(activity 1 everywhere) the cost is the angular distance alone. ``ACTIVITY_WEIGHT = 0.5``: a frame where one
window sees the source and the other does not costs as much as a 90 deg direction mismatch. On a tie (e.g.
nothing active in the overlap) the slots keep their order. Only the order of the slots changes: the set of
(DOA, activity) pairs in every frame is the one the window produced.

:class:`WindowStream` does all of this on rows pushed block by block (long files, bounded memory: it holds the
rows of at most ``max_batch`` pending windows); :func:`run_windows` is one push of the whole input. Both give the
same result for any block sizes: windows are predicted in the same batches of ``max_batch`` either way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

ACTIVITY_WEIGHT = 0.5


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


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def slot_cost(prev_doa, prev_act, doa, act, activity_weight: float = ACTIVITY_WEIGHT) -> np.ndarray:
    """(N, N) cost of matching stitched slot j (rows: ``prev_*``) to a new window's slot k (columns) on the same
    L frames: prev_doa, doa (L, N, 3); prev_act, act (L, N) probabilities. Formula in the module docstring."""
    p = np.clip(np.asarray(prev_act, np.float64), 0.0, 1.0)[:, :, None]
    q = np.clip(np.asarray(act, np.float64), 0.0, 1.0)[:, None, :]
    cos = np.einsum("tjc,tkc->tjk", _unit(prev_doa), _unit(doa))
    angle = np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi
    return np.mean(p * q * angle + activity_weight * np.abs(p - q), axis=0)


def match_slots(prev_doa, prev_act, doa, act, activity_weight: float = ACTIVITY_WEIGHT) -> np.ndarray:
    """Permutation ``perm`` (N,) of a new window's slots: stitched slot j continues as the window's slot
    ``perm[j]`` (``doa[:, perm]`` is the window in stitched order). Hungarian match on :func:`slot_cost`; the
    identity whenever it costs no more than the optimum (up to 1e-9)."""
    from scipy.optimize import linear_sum_assignment

    cost = slot_cost(prev_doa, prev_act, doa, act, activity_weight)
    n = cost.shape[0]
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(n, np.int64)
    perm[rows] = cols
    if np.trace(cost) <= cost[np.arange(n), perm].sum() + 1e-9:
        return np.arange(n)
    return perm


class WindowStream:
    """Stitched window outputs of a recording whose input rows arrive block by block.

    ``push(rows)`` appends (n, ...) rows (``step`` rows per label frame, as in :func:`run_windows`) and predicts
    every full batch of ``max_batch`` windows that is known not to be the file's last; ``finish(n_label)``
    predicts the rest (rows past the pushed ones are zeros) and returns doa (n_label, n_max, 3) and activity
    (n_label, n_max) float32 for the whole file. reassociate: re-match slots across windows (module docstring);
    False keeps each window's raw slot order. Memory: the rows from the first pending window on, plus the
    outputs (a few bytes per label frame).
    """

    def __init__(self, window: int, step: int, n_max: int,
                 predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], max_batch: int = 16,
                 reassociate: bool = True, activity_weight: float = ACTIVITY_WEIGHT):
        self.window, self.step, self.n_max = int(window), int(step), int(n_max)
        self.predict, self.max_batch = predict, max(int(max_batch), 1)
        self.reassociate, self.activity_weight = reassociate, activity_weight
        self.hop = max(self.window // 2, 1)
        self.margin = (self.window - self.hop) // 2
        self._buf = None  # rows from row self._buf_start on
        self._row_shape = None  # shape of one input row
        self._buf_start = 0
        self._n_rows = 0
        self._next = 0  # index of the next window to predict (its start is self._next * hop)
        self._prev = None  # the last predicted window's (doa, activity), in stitched slot order
        self._doa, self._act = [], []
        self._n_out = 0  # label frames stitched so far
        self._done = False

    def push(self, rows: np.ndarray) -> None:
        if self._done:
            raise RuntimeError("WindowStream: push after finish")
        rows = np.asarray(rows, np.float32)
        if self._row_shape is None:
            self._row_shape = rows.shape[1:]
        elif rows.shape[1:] != self._row_shape:
            raise ValueError(f"WindowStream: rows of shape {rows.shape[1:]}, earlier {self._row_shape}")
        if not len(rows):
            return
        self._buf = rows.copy() if self._buf is None else np.concatenate([self._buf, rows])
        self._n_rows += len(rows)
        # window i is surely not the last while a label frame after its end has arrived (window_plan's rule)
        n_ready = 0
        while (self._next + n_ready) * self.hop + self.window < self._n_rows // self.step:
            n_ready += 1
        while n_ready >= self.max_batch:
            starts = [(self._next + i) * self.hop for i in range(self.max_batch)]
            self._run([(s, 0 if s == 0 else s + self.margin, s + self.margin + self.hop) for s in starts])
            n_ready -= self.max_batch
        self._drop()

    def finish(self, n_label: int) -> tuple[np.ndarray, np.ndarray]:
        if self._done:
            raise RuntimeError("WindowStream: finish called twice")
        self._done = True
        plan = window_plan(n_label, self.window)
        if self._next and (len(plan) <= self._next or plan[self._next - 1][2] != self._n_out):
            raise ValueError(f"WindowStream: {n_label} label frames, but {self._n_out} were already stitched from "
                             f"rows that reach beyond them")
        rest = plan[self._next:]
        for b in range(0, len(rest), self.max_batch):
            self._run(rest[b:b + self.max_batch])
        self._buf = None
        doa = np.zeros((max(n_label, 0), self.n_max, 3), np.float32)
        act = np.zeros((max(n_label, 0), self.n_max), np.float32)
        if self._doa:
            doa[:] = np.concatenate(self._doa)
            act[:] = np.concatenate(self._act)
        return doa, act

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the input, zeros past the pushed ones."""
        out = np.zeros((stop - start,) + tuple(self._row_shape or ()), np.float32)
        if self._buf is not None:
            lo, hi = start - self._buf_start, min(stop, self._n_rows) - self._buf_start
            if lo < 0:
                raise AssertionError("WindowStream: rows already dropped")
            if hi > lo:
                out[:hi - lo] = self._buf[lo:hi]
        return out

    def _run(self, chunk: list[tuple[int, int, int]]) -> None:
        x = np.stack([self._rows(s * self.step, (s + self.window) * self.step) for s, _, _ in chunk])
        doa, act = self.predict(x)
        for (s, lo, hi), d, a in zip(chunk, np.asarray(doa, np.float32), np.asarray(act, np.float32)):
            if self.reassociate and self._prev is not None:
                overlap = self.window - self.hop
                pd, pa = self._prev
                perm = match_slots(pd[self.hop:], pa[self.hop:], d[:overlap], a[:overlap], self.activity_weight)
                d, a = d[:, perm], a[:, perm]
            self._prev = (d, a)
            if lo != self._n_out:
                raise AssertionError(f"WindowStream: window keeps from {lo}, {self._n_out} stitched")
            self._doa.append(d[lo - s:hi - s])
            self._act.append(a[lo - s:hi - s])
            self._n_out = hi
            self._next += 1

    def _drop(self) -> None:
        keep_from = self._next * self.hop * self.step
        if self._buf is not None and keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:].copy()
            self._buf_start = keep_from


def run_windows(source: np.ndarray, n_label: int, window: int, step: int, n_max: int,
                predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], max_batch: int = 16,
                reassociate: bool = True):
    """Outputs of a whole recording from windows of ``window`` label frames, stitched by :func:`window_plan`
    with slots re-associated across windows (module docstring; ``reassociate=False``: raw slot order).

    source: (N, ...) per-row input (feature frames or audio samples) with ``step`` rows per label frame;
    rows past its end are zeros. predict: batch (B, window * step, ...) -> (doa (B, window, n_max, 3),
    activity (B, window, n_max)) NumPy; windows go to it ``max_batch`` at a time.
    Returns doa (n_label, n_max, 3) and activity (n_label, n_max) float32.
    """
    stream = WindowStream(window, step, n_max, predict, max_batch, reassociate)
    plan = window_plan(n_label, window)
    if plan:
        stream.push(np.asarray(source)[:(plan[-1][0] + window) * step])
    return stream.finish(n_label)
