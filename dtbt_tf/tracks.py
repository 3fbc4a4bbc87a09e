"""Track identities from per-frame slot activity: a new id each time a slot starts a track.

One rule for offline inference (after the window outputs are stitched so that slots are continuous across
window boundaries) and for streaming (frame by frame): a slot that is active in a frame keeps the id it had in
the previous frame if it was active there too, otherwise it gets the next unused id. Ids count from 0 in the
order tracks start (slot order within a frame); an inactive slot has id -1.
"""
from __future__ import annotations

import numpy as np


class TrackCounter:
    """Online track ids for ``n_slots`` regressor slots: ``update(active (n_slots,) bool) -> (n_slots,) int64``."""

    def __init__(self, n_slots: int, first_id: int = 0):
        self.ids = np.full(n_slots, -1, np.int64)
        self.next_id = int(first_id)

    def update(self, active) -> np.ndarray:
        active = np.asarray(active, bool)
        if active.shape != self.ids.shape:
            raise ValueError(f"activity of shape {active.shape}, expected ({self.ids.size},)")
        for k in np.nonzero(active & (self.ids < 0))[0]:
            self.ids[k] = self.next_id
            self.next_id += 1
        self.ids[~active] = -1
        return self.ids.copy()


def track_ids(active: np.ndarray, first_id: int = 0) -> np.ndarray:
    """(T, n_slots) bool activity -> (T, n_slots) int64 ids by :class:`TrackCounter` (-1 where inactive)."""
    active = np.asarray(active, bool)
    counter = TrackCounter(active.shape[1], first_id)
    out = np.empty(active.shape, np.int64)
    for t, a in enumerate(active):
        out[t] = counter.update(a)
    return out
