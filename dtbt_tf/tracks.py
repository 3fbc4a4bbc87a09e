"""Track identities from per-frame slot outputs: the same rule offline (after the window outputs are stitched)
and online (frame by frame, streaming). Two rules, chosen by ``InferenceConfig.tracking``:

``"slots"`` (:class:`TrackCounter`, the paper's protocol: the network's outputs as they are): a slot that is
active in a frame keeps the id it had in the previous frame if it was active there too, otherwise it gets the
next unused id.

``"continuity"`` (:class:`ContinuityTracker`, the default of new models). A regressor often puts both slots on
one source, lets a slot drop out for a frame or two, or hands a source from one slot to the other; under the slot
rule each of these is an identity switch. Per frame:

1. merge: of two active slots whose DOAs are less than ``merge_deg`` apart, only the more active one is a
   detection (the other is a duplicate of the same source; with the activity head off, nothing is merged);
2. continue: detections are matched (Hungarian, angular distance) to the tracks seen in the last
   ``1 + bridge_frames`` frames (at their last DOA: a track may skip up to ``bridge_frames`` frames); a pair
   closer than ``gate_deg`` continues that track's id, any other detection starts the next unused id.

Offline only, :func:`bridge_gaps` then fills the gaps of up to ``bridge_frames`` frames inside one track with
the DOA interpolated between its two sides (it needs the frames after a gap, which a live stream has not seen
yet; the ids are the same online and offline). Ids count from ``first_id`` in the order tracks start (slot
order within a frame); a slot that is not a detection has id -1.
"""
from __future__ import annotations

import numpy as np


class TrackCounter:
    """Online slot-rule ids for ``n_slots`` slots: ``update(active (n_slots,) bool) -> (n_slots,) int64``."""

    def __init__(self, n_slots: int, first_id: int = 0):
        self.ids = np.full(n_slots, -1, np.int64)
        self.next_id = int(first_id)

    def update(self, active, doa=None, activity=None) -> np.ndarray:
        """Ids of this frame; ``doa`` and ``activity`` are ignored (the slot rule looks at activity only)."""
        active = _check_active(active, self.ids.size)
        for k in np.nonzero(active & (self.ids < 0))[0]:
            self.ids[k] = self.next_id
            self.next_id += 1
        self.ids[~active] = -1
        return self.ids.copy()


class ContinuityTracker:
    """Online continuity-rule ids (module docstring): ``update(active (N,) bool, doa (N, 3), activity (N,))
    -> (N,) int64``, -1 for a slot that is inactive or merged into a more active one."""

    def __init__(self, n_slots: int, merge_deg: float, gate_deg: float, bridge_frames: int,
                 first_id: int = 0, merge: bool = True):
        self.n_slots = int(n_slots)
        self.cos_merge = np.cos(np.radians(merge_deg)) if merge and merge_deg > 0 else None
        self.cos_gate = np.cos(np.radians(gate_deg))
        self.max_age = int(bridge_frames) + 1  # a track last seen this many frames ago may still continue
        self.next_id = int(first_id)
        self.frame = 0
        self._ids = np.zeros(0, np.int64)  # tracks seen in the last `memory` frames: id, last unit DOA, frame
        self._doa = np.zeros((0, 3))
        self._seen = np.zeros(0, np.int64)

    def update(self, active, doa, activity=None) -> np.ndarray:
        active = _check_active(active, self.n_slots)
        if doa is None:
            raise ValueError("the continuity rule needs the DOAs")
        doa = _unit(np.asarray(doa, np.float64).reshape(self.n_slots, 3))
        slots = np.nonzero(active)[0]
        if self.cos_merge is not None and slots.size > 1:
            score = np.ones(self.n_slots) if activity is None else np.asarray(activity, np.float64)
            kept: list[int] = []
            for k in slots[np.argsort(-score[slots], kind="stable")]:
                if all(doa[k] @ doa[j] < self.cos_merge for j in kept):
                    kept.append(int(k))
            slots = np.sort(np.array(kept, np.int64))
        recent = self.frame - self._seen <= self.max_age
        self._ids, self._doa, self._seen = self._ids[recent], self._doa[recent], self._seen[recent]
        ids = np.full(self.n_slots, -1, np.int64)
        if slots.size and self._ids.size:
            cos = doa[slots] @ self._doa.T
            rows, cols = max_assignment(cos)
            ok = cos[rows, cols] >= self.cos_gate
            ids[slots[rows[ok]]] = self._ids[cols[ok]]
        for k in slots:
            if ids[k] < 0:
                ids[k] = self.next_id
                self.next_id += 1
        # every detection refreshes (or adds) its track; tracks not seen now keep their last DOA and frame
        if slots.size:
            keep = ~np.isin(self._ids, ids[slots])
            self._ids = np.concatenate([self._ids[keep], ids[slots]])
            self._doa = np.concatenate([self._doa[keep], doa[slots]])
            self._seen = np.concatenate([self._seen[keep], np.full(slots.size, self.frame)])
        self.frame += 1
        return ids


def make_tracker(inference, n_slots: int, first_id: int = 0):
    """The tracker of an ``InferenceConfig`` (its ``tracking`` rule and parameters; the slot rule when None) for
    ``n_slots`` slots."""
    if inference is None or inference.tracking == "slots":
        return TrackCounter(n_slots, first_id)
    return ContinuityTracker(n_slots, inference.merge_deg, inference.gate_deg, inference.bridge_frames, first_id,
                             merge=inference.use_activity)


def track_ids(active, doa=None, activity=None, inference=None, first_id: int = 0) -> np.ndarray:
    """(T, N) bool activity (+ doa (T, N, 3), activity (T, N) for the continuity rule) -> (T, N) int64 ids
    of ``inference``'s tracker (the slot rule when None), frame by frame as online; -1 where no detection."""
    active = np.asarray(active, bool)
    tracker = make_tracker(inference, active.shape[1], first_id)
    out = np.empty(active.shape, np.int64)
    for t, a in enumerate(active):
        out[t] = tracker.update(a, None if doa is None else doa[t], None if activity is None else activity[t])
    return out


def bridge_gaps(frame, ident, doa, max_gap: int):
    """Rows (frame (n,), ident (n,), doa (n, 3)) plus, for every gap of 1..``max_gap`` frames between two rows of
    one identity, a row per missing frame with the DOA interpolated (normalised linear) between the two sides.
    Returned sorted by (frame, ident)."""
    frame, ident = np.asarray(frame, np.int64), np.asarray(ident, np.int64)
    doa = np.asarray(doa, np.float64).reshape(-1, 3)
    add_f, add_i, add_d = [frame], [ident], [doa]
    if max_gap > 0 and frame.size:
        order = np.lexsort((frame, ident))
        f, i, d = frame[order], ident[order], doa[order]
        gap = np.diff(f)
        for j in np.nonzero((i[1:] == i[:-1]) & (gap > 1) & (gap <= max_gap + 1))[0]:
            w = (np.arange(1, gap[j]) / gap[j])[:, None]
            add_f.append(f[j] + np.arange(1, gap[j]))
            add_i.append(np.full(gap[j] - 1, i[j]))
            add_d.append(_unit((1 - w) * d[j] + w * d[j + 1]))
    f, i, d = np.concatenate(add_f), np.concatenate(add_i), np.concatenate(add_d)
    order = np.lexsort((i, f))
    return f[order], i[order], d[order]


def max_assignment(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a maximum-score matching of min(R, C) pairs of an (R, C) matrix: by enumeration for the
    small matrices of a tracker (a few detections x a few recent tracks; no SciPy import, which would double a
    streaming device's memory), else ``scipy.optimize.linear_sum_assignment``."""
    import itertools
    import math

    r, c = score.shape
    transposed = r > c
    s = score.T if transposed else score  # rows <= cols
    n, m = s.shape
    if math.perm(m, n) > 5000:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-score)
        return rows, cols
    perms = np.array(list(itertools.permutations(range(m), n)), np.int64).reshape(-1, n)
    best = perms[int(np.argmax(s[np.arange(n), perms].sum(axis=1)))]
    rows, cols = np.arange(n), best
    if transposed:
        rows, cols = cols, rows
        order = np.argsort(rows)
        rows, cols = rows[order], cols[order]
    return rows, cols


def _check_active(active, n_slots: int) -> np.ndarray:
    active = np.asarray(active, bool)
    if active.shape != (n_slots,):
        raise ValueError(f"activity of shape {active.shape}, expected ({n_slots},)")
    return active


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
