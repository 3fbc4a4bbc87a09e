"""Localisation and tracking metrics (paper section II, DESIGN 6): one implementation for training, evaluation
and benchmarks. NumPy/SciPy only (no TensorFlow import), so evaluation runs anywhere.

Everything is class agnostic and works on `Tracks`: the active DOAs of one file, one row per (label frame,
identity). `compute_metrics(pred, ref)` takes two dicts file name -> Tracks and returns `METRIC_KEYS`.

Frame level (per label frame t, M_t predictions, N_t references, angular distance in degrees, exact Hungarian
association of the M_t x N_t matrix, K_t = min(M_t, N_t) pairs):
- TP_t = K_t, FP_t = max(0, M_t - N_t), FN_t = max(0, N_t - M_t);
- LE = MOTP = sum of the associated distances over all frames / sum K_t (paper eqs. 1-2, pooled over frames);
- LR = sum TP / sum N, LP = sum TP / sum M, LF1 = their harmonic mean = 2 TP / (2 TP + FP + FN);
- MOTA = 1 - sum(FP + FN + IDS) / sum N (it can be negative);
- IDS: CLEAR-MOT identity switches counted on the per-frame Hungarian association. Reference identity = one
  contiguous run of frames of a (class, track) (or label track id); hypothesis identity = one contiguous run of
  activity of a prediction slot (a slot that goes off and on again is a new hypothesis). An associated pair
  (r, h) counts a switch when r's previous associated hypothesis (in any earlier frame of its run) is not h.
  This is motmetrics' bookkeeping exactly. The one difference from motmetrics' CLEAR-MOT matching: CLEAR-MOT
  first keeps last frame's correspondences when still allowed and runs the Hungarian algorithm on the rest;
  here every frame is the plain Hungarian association (the paper's A_t), so LE and MOTP are one number and a
  regressor swapping sources counts switches. Feeding motmetrics only the Hungarian pairs as allowed distances
  reproduces MOTA, MOTP and IDS exactly (tests/test_metrics.py).
- IDS_onsets (the reference code's "onset count"): the number of prediction-slot activity onsets, i.e. of
  (frame t, slot) with the slot active in t and inactive in t - 1, counted within each file for t >= 1 (a slot
  already active in a file's first frame is not an onset).

DCASE2020 segment-based SELD metrics, class agnostic (all events one class), segments of `segment_frames` label
frames (10 = 1 s), threshold `threshold_deg` (20):
- per segment, each identity run (reference or prediction) active in it is one event whose DOA is the
  normalised mean of its unit vectors over the frames it is active in the segment;
- Hungarian association on angular distance between the M_s predicted and N_s reference events, K_s pairs;
  a pair is a TP when its distance <= threshold, else an FP; unassociated predictions are FPs, unassociated
  references FNs; S_s = min(FP_s, FN_s), D_s = max(0, FN_s - FP_s), I_s = max(0, FP_s - FN_s);
- ER20 = sum(S + D + I) / sum N, F20 = 2 TP / (2 TP + FP + FN), LE_CD = sum of associated distances / sum K
  (degrees), LR_CD = sum K / sum N.

By polyphony (`compute_metrics(..., by_polyphony=True)`): the frame metrics restricted to the frames with exactly k
references, for k = 1 .. the largest polyphony present, with the same per-frame association and conventions:
LE_poly{k} = sum of the associated distances in those frames / their sum K_t, LR_poly{k} = sum TP / sum N,
LP_poly{k} = sum TP / sum M (M = all predictions of those frames), LF1_poly{k} = 2 TP / (2 TP + FP + FN), and
frames_poly{k} = the number of such frames. Frames without references (k = 0) only have false positives: the
poly sums of TP and N add up to the overall ones, those of M to the overall M minus the predictions of
reference-free frames.

A ratio whose denominator is 0 (e.g. LE without any associated pair) is NaN.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np
from scipy.optimize import linear_sum_assignment

from dtbt_tf.config import atomic_write_text
from dtbt_tf.data.dcase import DEFAULT_SPLITS, Metadata, parse_name, read_metadata

METRIC_KEYS = ("LE", "LR", "LP", "LF1", "MOTA", "MOTP", "IDS", "IDS_onsets", "ER20", "F20", "LE_CD", "LR_CD")
POLY_METRICS = ("LE", "LR", "LP", "LF1", "frames")  # per-polyphony keys: f"{name}_poly{k}"
_POLY_RE = re.compile(r"^(LE|LR|LP|LF1|frames)_poly([1-9][0-9]*)$")
SEGMENT_FRAMES = 10  # label frames per DCASE2020 segment (1 s)
THRESHOLD_DEG = 20.0


@dataclasses.dataclass(frozen=True)
class Tracks:
    """Active DOAs of one file: frame (n,) int64 label frames >= 0, ident (n,) int64 source identity (slot or
    (class, track) key; contiguous runs are split into identities by the metrics), doa (n, 3) float64 unit vectors.
    At most one row per (frame, ident)."""

    frame: np.ndarray
    ident: np.ndarray
    doa: np.ndarray

    def __post_init__(self):
        frame = np.asarray(self.frame, np.int64).reshape(-1)
        ident = np.asarray(self.ident, np.int64).reshape(-1)
        doa = np.asarray(self.doa, np.float64)
        if doa.ndim != 2 or doa.shape[1] != 3 or not frame.size == ident.size == doa.shape[0]:
            raise ValueError(f"Tracks: frame {frame.shape}, ident {ident.shape}, doa {doa.shape} do not match "
                             "(n,), (n,), (n, 3)")
        if frame.size and frame.min() < 0:
            raise ValueError("Tracks: negative frame index")
        if not np.all(np.isfinite(doa)):
            raise ValueError("Tracks: non-finite DOA")
        norm = np.linalg.norm(doa, axis=1, keepdims=True)
        if np.any(norm < 1e-9):
            raise ValueError("Tracks: zero-length DOA vector")
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "ident", ident)
        object.__setattr__(self, "doa", doa / norm)

    @property
    def n_frames(self) -> int:
        """Last frame + 1 (0 when empty)."""
        return int(self.frame.max()) + 1 if self.frame.size else 0


def tracks_from_outputs(doa, activity=None, threshold: float = 0.5) -> Tracks:
    """Model outputs of one file -> Tracks with ident = regressor slot.

    doa: (F, Nmax, 3); activity: (F, Nmax) probabilities or None (every slot counts in every frame, as for
    models without an activity branch); a slot counts in frame t when activity > threshold.
    """
    doa = np.asarray(doa, np.float64)
    if doa.ndim != 3 or doa.shape[2] != 3:
        raise ValueError(f"tracks_from_outputs: doa must be (F, Nmax, 3), got {doa.shape}")
    if activity is None:
        active = np.ones(doa.shape[:2], bool)
    else:
        activity = np.asarray(activity)
        if activity.shape != doa.shape[:2]:
            raise ValueError(f"tracks_from_outputs: activity {activity.shape} does not match doa {doa.shape}")
        active = activity > threshold
    frame, slot = np.nonzero(active)
    return Tracks(frame, slot, doa[frame, slot])


def tracks_from_labels(doa, active, track_id) -> Tracks:
    """Labels of one file (dcase.metadata_to_labels layout) -> reference Tracks with ident = track id.

    doa: (F, Nmax, 3); active: (F, Nmax) 0/1; track_id: (F, Nmax) int (-1 where inactive).
    """
    active = np.asarray(active) > 0.5
    frame, slot = np.nonzero(active)
    return Tracks(frame, np.asarray(track_id)[frame, slot], np.asarray(doa, np.float64)[frame, slot])


def tracks_from_metadata(meta: Metadata) -> Tracks:
    """Metadata rows (dcase.read_metadata) -> Tracks with ident = a key of (class, track)."""
    if meta.frame.size == 0:
        return Tracks(np.zeros(0), np.zeros(0), np.zeros((0, 3)))
    pairs = np.stack([meta.cls, meta.track], axis=1)
    _, ident = np.unique(pairs, axis=0, return_inverse=True)
    return Tracks(meta.frame, ident.reshape(-1), meta.doa)


# ----------------------------------------------------------------------------------------------------------
# Internals: runs, per-frame layout, association


def _runs(tracks: Tracks, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Identity run index per row (rows of one ident in consecutive frames share a run) and each run's start
    frame. Returns run (n,) int64 in 0..n_runs-1 and start (n_runs,) int64. Duplicate (frame, ident) rows raise."""
    n = tracks.frame.size
    order = np.lexsort((tracks.frame, tracks.ident))
    f, k = tracks.frame[order], tracks.ident[order]
    same = k[1:] == k[:-1]
    dup = same & (f[1:] == f[:-1])
    if np.any(dup):
        i = int(np.argmax(dup))
        raise ValueError(f"{name}: frame {f[i]}: two rows for the same source/slot identity")
    new = np.ones(n, bool)
    new[1:] = ~same | (f[1:] != f[:-1] + 1)
    run = np.empty(n, np.int64)
    run[order] = np.cumsum(new) - 1
    return run, f[new]


def _group_rows(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices by group (frame or segment): rows (n_groups, P) int64 (-1 padding, real entries first), counts."""
    counts = np.bincount(group, minlength=n_groups)
    rows = np.full((n_groups, max(int(counts.max(initial=0)), 1)), -1, np.int64)
    order = np.argsort(group, kind="stable")
    first = np.cumsum(counts) - counts
    rows[group[order], np.arange(group.size) - first[group[order]]] = order
    return rows, counts


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distances in degrees between unit vectors a (..., P, 3) and b (..., Q, 3) -> (..., P, Q)."""
    dots = np.einsum("...pc,...qc->...pq", a, b)
    return np.degrees(np.arccos(np.clip(dots, -1.0, 1.0)))


def _associate(group_pred: np.ndarray, group_ref: np.ndarray, pred_doa: np.ndarray, ref_doa: np.ndarray,
               n_groups: int):
    """Exact Hungarian association within each group (a frame or a segment).

    group_*: (n,) group index per row; *_doa: (n, 3) unit vectors. Returns (pred_idx (K,), ref_idx (K,),
    dist (K,) degrees, m (n_groups,), n (n_groups,)) over all groups, pairs in group order.
    """
    prow, m = _group_rows(group_pred, n_groups)
    rrow, n = _group_rows(group_ref, n_groups)
    both = np.nonzero((m > 0) & (n > 0))[0]
    pi_all, ri_all, d_all = [], [], []
    if both.size:
        pad = np.zeros((1, 3))
        cost = _angles(np.concatenate([pred_doa, pad])[prow[both]], np.concatenate([ref_doa, pad])[rrow[both]])
        for g, c in zip(both, cost):
            i, j = linear_sum_assignment(c[: m[g], : n[g]])
            pi_all.append(prow[g, i])
            ri_all.append(rrow[g, j])
            d_all.append(c[i, j])
    if not pi_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), m, n
    pi, ri, dist = np.concatenate(pi_all), np.concatenate(ri_all), np.concatenate(d_all)
    return pi, ri, dist, m, n


def _segment_events(tracks: Tracks, run: np.ndarray, segment_frames: int):
    """One event per (segment, identity run): segment (E,) and mean DOA (E, 3) normalised."""
    seg = tracks.frame // segment_frames
    key = seg * (int(run.max(initial=-1)) + 1) + run
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    total = np.zeros((first.size, 3))
    np.add.at(total, inv.reshape(-1), tracks.doa)
    return seg[first], total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)


def _file_counts(pred: Tracks, ref: Tracks, name: str, segment_frames: int, threshold_deg: float) -> dict:
    """Summed counts of one file (see module docstring)."""
    pred_run, pred_start = _runs(pred, f"{name} (prediction)")
    ref_run, _ = _runs(ref, f"{name} (reference)")
    n_frames = max(pred.n_frames, ref.n_frames, 1)

    pi, ri, dist, m, n = _associate(pred.frame, ref.frame, pred.doa, ref.doa, n_frames)
    # by polyphony k = n_t: per-frame sums binned by the frame's number of references
    frame_dist = np.bincount(pred.frame[pi], weights=dist, minlength=n_frames)
    n_poly = int(n.max()) + 1
    poly = np.stack([np.bincount(n, weights=w, minlength=n_poly)
                     for w in (np.ones(n_frames), np.minimum(m, n), m, n, frame_dist)])
    # CLEAR-MOT switches: order associated pairs by (reference run, frame); a switch is a change of hypothesis
    # between consecutive associations of the same reference run.
    order = np.lexsort((ref.frame[ri], ref_run[ri]))
    r_sorted, h_sorted = ref_run[ri][order], pred_run[pi][order]
    ids = int(np.sum((r_sorted[1:] == r_sorted[:-1]) & (h_sorted[1:] != h_sorted[:-1])))

    pseg, pdoa = _segment_events(pred, pred_run, segment_frames)
    rseg, rdoa = _segment_events(ref, ref_run, segment_frames)
    n_seg = n_frames // segment_frames + 1
    spi, _, sdist, sm, sn = _associate(pseg, rseg, pdoa, rdoa, n_seg)
    far = sdist > threshold_deg  # associated but too far: a location-wise false positive
    seg_fp = np.maximum(sm - sn, 0) + np.bincount(pseg[spi][far], minlength=n_seg)
    seg_fn = np.maximum(sn - sm, 0)
    return {
        "tp": int(np.minimum(m, n).sum()), "m": int(m.sum()), "n": int(n.sum()), "dist": float(dist.sum()),
        "ids": ids, "onsets": int(np.sum(pred_start >= 1)),
        "seg_tp": int(np.sum(~far)), "seg_fp": int(seg_fp.sum()), "seg_fn": int(seg_fn.sum()),
        "seg_n": int(sn.sum()), "seg_err": int(np.maximum(seg_fp, seg_fn).sum()),  # S + D + I = max(FP, FN)
        "seg_k": int(sdist.size), "seg_dist": float(sdist.sum()),
        "poly": poly,  # (5, max n_t + 1): frames, TP, M, N, distance sum per number of references
    }


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else math.nan


# ----------------------------------------------------------------------------------------------------------
# Public entry points


def compute_metrics(pred: dict[str, Tracks], ref: dict[str, Tracks], segment_frames: int = SEGMENT_FRAMES,
                    threshold_deg: float = THRESHOLD_DEG, by_polyphony: bool = False) -> dict:
    """All metrics over a set of files (file name -> Tracks, the same names in both dicts).

    Returns a dict with exactly METRIC_KEYS: LE, MOTP, LE_CD in degrees; LR, LP, LF1, ER20, F20, LR_CD as
    fractions (MOTA <= 1, may be negative; ER20 >= 0, may exceed 1); IDS, IDS_onsets ints; NaN where undefined.
    With by_polyphony, also `{LE,LR,LP,LF1,frames}_poly{k}` for k = 1 .. the largest number of references in a
    frame (see the module docstring; frames_poly{k} an int, 0 for a k between that occurs in no frame).
    """
    missing = sorted(set(ref) - set(pred))
    if missing:
        raise ValueError(f"{missing[0]}: no prediction for this reference file"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(pred) - set(ref))
    if extra:
        raise ValueError(f"{extra[0]}: prediction without a reference file")
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
    tot: dict = {}
    poly = np.zeros((5, 1))
    for name in sorted(ref):
        counts = _file_counts(pred[name], ref[name], name, segment_frames, threshold_deg)
        p = counts.pop("poly")
        poly = np.pad(poly, ((0, 0), (0, max(p.shape[1] - poly.shape[1], 0))))
        poly[:, :p.shape[1]] += p
        for k, v in counts.items():
            tot[k] = tot.get(k, 0) + v
    if not tot:
        raise ValueError("compute_metrics: no files to evaluate")
    fp, fn = tot["m"] - tot["tp"], tot["n"] - tot["tp"]
    le = _ratio(tot["dist"], tot["tp"])
    return {
        "LE": le,
        "LR": _ratio(tot["tp"], tot["n"]),
        "LP": _ratio(tot["tp"], tot["m"]),
        "LF1": _ratio(2 * tot["tp"], 2 * tot["tp"] + fp + fn),
        "MOTA": 1.0 - _ratio(fp + fn + tot["ids"], tot["n"]),
        "MOTP": le,
        "IDS": int(tot["ids"]),
        "IDS_onsets": int(tot["onsets"]),
        "ER20": _ratio(tot["seg_err"], tot["seg_n"]),
        "F20": _ratio(2 * tot["seg_tp"], 2 * tot["seg_tp"] + tot["seg_fp"] + tot["seg_fn"]),
        "LE_CD": _ratio(tot["seg_dist"], tot["seg_k"]),
        "LR_CD": _ratio(tot["seg_k"], tot["seg_n"]),
    } | (_polyphony_metrics(poly) if by_polyphony else {})


def _polyphony_metrics(poly: np.ndarray) -> dict:
    """Per-polyphony keys from the summed (5, K + 1) counts (frames, TP, M, N, distance) of compute_metrics."""
    out = {}
    for k in range(1, poly.shape[1]):
        frames, tp, m, n, dist = poly[:, k]
        out |= {f"LE_poly{k}": _ratio(dist, tp), f"LR_poly{k}": _ratio(tp, n), f"LP_poly{k}": _ratio(tp, m),
                f"LF1_poly{k}": _ratio(2 * tp, m + n),  # 2 TP + FP + FN = M + N
                f"frames_poly{k}": int(frames)}
    return out


def polyphony_keys(metrics: dict) -> list[str]:
    """The per-polyphony keys present in `metrics`, ordered by k, then as POLY_METRICS."""
    found = [(int(m[2]), POLY_METRICS.index(m[1]), key) for key in metrics if (m := _POLY_RE.match(key))]
    return [key for *_, key in sorted(found)]


_DEGREES = ("LE", "MOTP", "LE_CD")
_COUNTS = ("IDS", "IDS_onsets")


def _cell(key: str, v) -> str:
    if key in _COUNTS or key.startswith("frames"):
        return str(int(v))
    if math.isnan(v):
        return "-"
    return f"{v:.1f}" if key in _DEGREES or key.startswith("LE_") else f"{100 * v:.1f}"


def _text_table(heads: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(heads, *rows)]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in (heads, *rows))


def format_table(metrics: dict) -> str:
    """Two-line text table of METRIC_KEYS: degrees with 1 decimal, fractions in percent, counts as integers.
    When `metrics` holds per-polyphony keys, a blank line and a second table follow, one row per number of
    references k: frames, LE (deg), LR, LP, LF1 (%)."""
    heads = [k if k in _COUNTS else f"{k} ({'deg' if k in _DEGREES else '%'})" for k in METRIC_KEYS]
    text = _text_table(heads, [[_cell(k, metrics[k]) for k in METRIC_KEYS]])
    ks = sorted({int(_POLY_RE.match(key)[2]) for key in polyphony_keys(metrics)})
    if ks:
        rows = [[str(k)] + [_cell(f"{name}_poly{k}", metrics[f"{name}_poly{k}"])
                            for name in ("frames", "LE", "LR", "LP", "LF1")] for k in ks]
        text += "\n\n" + _text_table(["sources", "frames", "LE (deg)", "LR (%)", "LP (%)", "LF1 (%)"], rows)
    return text


def metrics_to_json(metrics: dict) -> str:
    """JSON text of METRIC_KEYS, then the per-polyphony keys present (NaN written as null)."""
    clean = {k: (None if isinstance(metrics[k], float) and math.isnan(metrics[k]) else metrics[k])
             for k in (*METRIC_KEYS, *polyphony_keys(metrics))}
    return json.dumps(clean, indent=2) + "\n"


SPLITS = ("all", *DEFAULT_SPLITS)  # evaluate_folders(split=...): every reference file, or one split's folds


def _check_writable(path: str) -> None:
    """ValueError naming `path` when a file cannot be written there (checked before any work is done)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a file name")
    if not os.path.isdir(parent):
        what = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise ValueError(f"{path}: folder {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{path}: permission denied")


def evaluate_folders(pred_dir: str, ref_dir: str, json_path: str | None = None, split: str = "all") -> dict:
    """Metrics, by polyphony too, of two folders of DCASE-format metadata CSVs matched by file name.

    split: 'all' (every `*.csv` of ref_dir) or 'test' | 'val' | 'train' (only the reference files whose
    name's fold belongs to that split, dcase.DEFAULT_SPLITS). Each selected reference needs a file of the same
    name in pred_dir (prediction files without a selected reference are ignored). Prediction identity =
    (class, track) runs, as for references. Writes the metrics as JSON (metrics_to_json) to json_path
    (atomically) when given. Raises ValueError (dcase.DataError) naming the file on bad input, before anything
    is written.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    for d, what in ((pred_dir, "prediction"), (ref_dir, "reference")):
        if not os.path.isdir(d):
            raise ValueError(f"{d}: {what} folder not found")
    if json_path:
        _check_writable(json_path)
    names = sorted(f for f in os.listdir(ref_dir) if f.endswith(".csv"))
    if not names:
        raise ValueError(f"{ref_dir}: no .csv reference files")
    if split != "all":
        folds = DEFAULT_SPLITS[split]
        names = [f for f in names if parse_name(os.path.join(ref_dir, f))[0] in folds]
        if not names:
            raise ValueError(f"{ref_dir}: no reference file of split {split!r} (folds {list(folds)})")
    pred, ref = {}, {}
    for fname in names:
        ppath = os.path.join(pred_dir, fname)
        if not os.path.isfile(ppath):
            hint = " (predictions of one split only? use --split test|val|train)" if split == "all" else ""
            raise ValueError(f"{ppath}: prediction file missing for reference {os.path.join(ref_dir, fname)}"
                             + hint)
        ref[fname] = tracks_from_metadata(read_metadata(os.path.join(ref_dir, fname)))
        pred[fname] = tracks_from_metadata(read_metadata(ppath))
    metrics = compute_metrics(pred, ref, by_polyphony=True)
    if json_path:
        try:
            atomic_write_text(json_path, metrics_to_json(metrics))
        except OSError as e:
            raise ValueError(f"{json_path}: cannot write ({e.strerror or type(e).__name__})") from None
    return metrics
