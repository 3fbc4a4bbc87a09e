"""Tests of dtbt_tf.metrics: CLEAR-MOT against motmetrics, frame and segment metrics against brute force, hand cases."""
import itertools
import json
import math

import numpy as np
import pytest

from dtbt_tf.data.dcase import Metadata, metadata_to_labels
from dtbt_tf.geometry import angular_distance_deg, polar_to_unit
from dtbt_tf.metrics import (METRIC_KEYS, Tracks, compute_metrics, format_table, metrics_to_json,
                             tracks_from_labels, tracks_from_metadata, tracks_from_outputs)

N_SLOTS = 3


def _random_file(rng, n_frames=80):
    """Reference metadata with births/deaths in 3 lanes and predictions (F, 3, 3)/(F, 3) that follow the lanes
    through a slot permutation that sometimes changes (slot swaps), with noise, gross errors, dropouts (slot
    off/on) and false alarms."""
    rows = []
    for lane in range(N_SLOTS):
        t = int(rng.integers(0, 15))
        while t < n_frames:
            length = int(rng.integers(3, 30))
            cls = int(rng.integers(0, 3))
            az0, el0 = rng.uniform(-180, 180), rng.uniform(-45, 45)
            speed = rng.choice([0.0, rng.uniform(-4, 4)])
            for k in range(min(length, n_frames - t)):
                rows.append((t + k, cls, lane, (az0 + speed * k + 180) % 360 - 180, el0))
            t += length + int(rng.integers(0, 8))  # 0: a new identity right after the previous one
    rows.sort()
    frame, cls, track, az, el = (np.array(c) for c in zip(*rows))
    meta = Metadata(frame.astype(np.int64), cls.astype(np.int64), track.astype(np.int64), polar_to_unit(az, el))

    pred_doa = rng.normal(size=(n_frames, N_SLOTS, 3))
    act = np.zeros((n_frames, N_SLOTS))
    perm = np.arange(N_SLOTS)
    for t in range(n_frames):
        if rng.random() < 0.06:
            i, j = rng.choice(N_SLOTS, 2, replace=False)
            perm[[i, j]] = perm[[j, i]]
        for i in np.nonzero(frame == t)[0]:
            slot = perm[track[i]]
            if rng.random() < 0.08:
                continue  # dropout: miss, and the slot comes back as a new hypothesis
            noise = rng.normal(scale=0.05 if rng.random() < 0.85 else 0.8, size=3)
            pred_doa[t, slot] = meta.doa[i] + noise
            act[t, slot] = 0.9
        for s in range(N_SLOTS):
            if act[t, s] == 0 and rng.random() < 0.1:
                act[t, s] = 0.8  # false alarm with a random DOA
    return meta, pred_doa, act


@pytest.fixture(scope="module")
def random_set():
    rng = np.random.default_rng(1234)
    return {f"file{i}": _random_file(rng) for i in range(4)}


def _frame_lists(random_set):
    """Independent per-frame view: for each file and frame, references [(identity, vec)] and predictions
    [(identity, vec)]; identities are renewed whenever a (class, track) / slot was not active in the previous frame."""
    out = {}
    new_id = itertools.count()  # integer ids: motmetrics' event table stores ids as floats (pandas 3)
    for name, (meta, pred_doa, act) in random_set.items():
        n_frames = max(int(meta.frame.max()) + 1, len(act))
        ref_prev, hyp_prev, ref_id, hyp_id = set(), set(), {}, {}
        frames = []
        for t in range(n_frames):
            refs, hyps = [], []
            cur = set()
            for i in np.nonzero(meta.frame == t)[0]:
                key = (int(meta.cls[i]), int(meta.track[i]))
                if key not in ref_prev:
                    ref_id[key] = next(new_id)
                cur.add(key)
                refs.append((ref_id[key], meta.doa[i]))
            ref_prev = cur
            cur = set()
            for s in range(N_SLOTS):
                if t < len(act) and act[t, s] > 0.5:
                    if s not in hyp_prev:
                        hyp_id[s] = next(new_id)
                    cur.add(s)
                    hyps.append((hyp_id[s], pred_doa[t, s] / np.linalg.norm(pred_doa[t, s])))
            hyp_prev = cur
            frames.append((refs, hyps))
        out[name] = frames
    return out


def _brute_force_pairs(hyps, refs):
    """Minimum-cost association of min(M, N) pairs by enumerating every injective map: [(i_hyp, j_ref, deg)]."""
    d = np.array([[angular_distance_deg(h[1], r[1]) for r in refs] for h in hyps]).reshape(len(hyps), len(refs))
    best, best_cost = [], math.inf
    if len(hyps) <= len(refs):
        cands = ([(i, p[i]) for i in range(len(hyps))] for p in itertools.permutations(range(len(refs)), len(hyps)))
    else:
        cands = ([(p[j], j) for j in range(len(refs))] for p in itertools.permutations(range(len(hyps)), len(refs)))
    for pairs in cands:
        cost = sum(d[i, j] for i, j in pairs)
        if cost < best_cost:
            best, best_cost = pairs, cost
    return [(i, j, d[i, j]) for i, j in best]


def _ours(random_set):
    pred = {n: tracks_from_outputs(p, a) for n, (_, p, a) in random_set.items()}
    ref = {n: tracks_from_metadata(m) for n, (m, _, _) in random_set.items()}
    return compute_metrics(pred, ref)


def test_clear_mot_matches_motmetrics(random_set):
    import motmetrics as mm  # a dev requirement (setup.cfg): the reference must run, not skip
    acc = mm.MOTAccumulator(auto_id=False)
    frame_id = 0
    for frames in _frame_lists(random_set).values():
        for refs, hyps in frames:
            dists = np.full((len(refs), len(hyps)), np.nan)
            for i, j, d in _brute_force_pairs(hyps, refs):
                dists[j, i] = d  # only the per-frame Hungarian pairs are allowed (see metrics docstring)
            acc.update([r[0] for r in refs], [h[0] for h in hyps], dists, frameid=frame_id)
            frame_id += 1
    summary = mm.metrics.create().compute(acc, metrics=["mota", "motp", "num_switches"], name="all")
    ours = _ours(random_set)
    assert summary["num_switches"].iloc[0] > 5  # the random set does exercise switches
    assert ours["IDS"] == int(summary["num_switches"].iloc[0])
    assert ours["MOTA"] == pytest.approx(float(summary["mota"].iloc[0]), abs=1e-12)
    assert ours["MOTP"] == pytest.approx(float(summary["motp"].iloc[0]), abs=1e-9)


def test_frame_metrics_match_brute_force(random_set):
    tp = m = n = 0
    dist = 0.0
    onsets = 0
    for frames in _frame_lists(random_set).values():
        prev = set()
        for t, (refs, hyps) in enumerate(frames):
            pairs = _brute_force_pairs(hyps, refs)
            tp += len(pairs)
            m += len(hyps)
            n += len(refs)
            dist += sum(p[2] for p in pairs)
            cur = {h[0] for h in hyps}
            onsets += len(cur - prev) if t > 0 else 0
            prev = cur
    ours = _ours(random_set)
    assert ours["LE"] == pytest.approx(dist / tp, abs=1e-9)
    assert ours["LE"] == ours["MOTP"]
    assert ours["LR"] == pytest.approx(tp / n)
    assert ours["LP"] == pytest.approx(tp / m)
    assert ours["LF1"] == pytest.approx(2 * ours["LP"] * ours["LR"] / (ours["LP"] + ours["LR"]))
    assert ours["IDS_onsets"] == onsets


def test_segment_metrics_match_brute_force(random_set):
    tp = fp = fn = n_ref = k = err = 0
    dist = 0.0
    for frames in _frame_lists(random_set).values():
        for s in range(0, len(frames), 10):
            ref_ev, hyp_ev = {}, {}
            for refs, hyps in frames[s:s + 10]:
                for ident, v in refs:
                    ref_ev.setdefault(ident, []).append(v)
                for ident, v in hyps:
                    hyp_ev[ident] = hyp_ev.get(ident, []) + [v]
            refs = [(i, np.mean(v, axis=0)) for i, v in ref_ev.items()]
            hyps = [(i, np.mean(v, axis=0)) for i, v in hyp_ev.items()]
            pairs = _brute_force_pairs(hyps, refs)
            near = sum(p[2] <= 20 for p in pairs)
            s_fp = len(pairs) - near + max(0, len(hyps) - len(refs))
            s_fn = max(0, len(refs) - len(hyps))
            tp, fp, fn, n_ref, k = tp + near, fp + s_fp, fn + s_fn, n_ref + len(refs), k + len(pairs)
            err += min(s_fp, s_fn) + max(0, s_fn - s_fp) + max(0, s_fp - s_fn)
            dist += sum(p[2] for p in pairs)
    ours = _ours(random_set)
    assert 0 < tp < k  # both near and far pairs occur
    assert ours["ER20"] == pytest.approx(err / n_ref)
    assert ours["F20"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert ours["LE_CD"] == pytest.approx(dist / k, abs=1e-9)
    assert ours["LR_CD"] == pytest.approx(k / n_ref)


# ----------------------------------------------------------------------------------------------------------
# Hand-made cases


def _static(az_deg, n_frames, el_deg=0.0):
    return np.broadcast_to(polar_to_unit(az_deg, el_deg), (n_frames, 3))


def _two_tracks(n_frames=20):
    """Reference: track 0 at azimuth 0, track 1 at azimuth 90, both active in frames 0..n-1."""
    doa = np.stack([_static(0, n_frames), _static(90, n_frames)], axis=1)
    return doa, tracks_from_labels(doa, np.ones((n_frames, 2)), np.tile([0, 1], (n_frames, 1)))


def test_perfect_prediction():
    doa, ref = _two_tracks()
    out = compute_metrics({"a": tracks_from_outputs(doa, np.full((20, 2), 0.9))}, {"a": ref})
    assert set(out) == set(METRIC_KEYS)
    assert out["LE"] == pytest.approx(0, abs=1e-5) and out["LE_CD"] == pytest.approx(0, abs=1e-5)
    for key in ("LR", "LP", "LF1", "MOTA", "F20", "LR_CD"):
        assert out[key] == 1.0, key
    assert out["IDS"] == 0 and out["IDS_onsets"] == 0 and out["ER20"] == 0
    assert isinstance(out["IDS"], int) and isinstance(out["IDS_onsets"], int)


def test_slot_swap_mid_track_counts_two_switches():
    doa, ref = _two_tracks()
    swapped = doa.copy()
    swapped[10:] = doa[10:, ::-1]
    out = compute_metrics({"a": tracks_from_outputs(swapped)}, {"a": ref})
    assert out["IDS"] == 2
    assert out["MOTA"] == pytest.approx(1 - 2 / 40)
    assert out["LE"] == pytest.approx(0, abs=1e-5)
    assert out["IDS_onsets"] == 0


def test_slot_off_and_on_is_a_new_hypothesis():
    doa, ref = _two_tracks()
    act = np.ones((20, 2))
    act[5, 0] = 0  # slot 0 misses one frame and comes back
    out = compute_metrics({"a": tracks_from_outputs(doa, act)}, {"a": ref})
    assert out["IDS"] == 1 and out["IDS_onsets"] == 1
    assert out["LR"] == pytest.approx(39 / 40) and out["LP"] == 1
    assert out["MOTA"] == pytest.approx(1 - 2 / 40)


def test_reference_gap_is_a_new_identity():
    """A (class, track) that pauses is a new reference identity: matching it to another slot is no switch."""
    meta = Metadata(np.array([0, 1, 3, 4]), np.zeros(4, np.int64), np.zeros(4, np.int64),
                    np.repeat(polar_to_unit(30, 0)[None], 4, axis=0))
    pred_doa = np.repeat(polar_to_unit(30, 0)[None, None], 5, axis=0).repeat(2, axis=1)
    act = np.array([[1, 0], [1, 0], [0, 0], [0, 1], [0, 1]], float)
    out = compute_metrics({"a": tracks_from_outputs(pred_doa, act)}, {"a": tracks_from_metadata(meta)})
    assert out["IDS"] == 0 and out["IDS_onsets"] == 1 and out["MOTA"] == 1


def test_no_predictions():
    _, ref = _two_tracks()
    out = compute_metrics({"a": tracks_from_outputs(np.zeros((20, 2, 3)), np.zeros((20, 2)))}, {"a": ref})
    assert out["LR"] == 0 and out["LF1"] == 0 and out["F20"] == 0 and out["LR_CD"] == 0
    assert out["MOTA"] == 0 and out["ER20"] == 1 and out["IDS"] == 0
    assert math.isnan(out["LE"]) and math.isnan(out["LP"]) and math.isnan(out["LE_CD"])
    assert "-" in format_table(out).splitlines()[1]
    assert '"LE": null' in metrics_to_json(out)


def test_segment_threshold_and_mean_doa():
    """One reference moving from azimuth 0 to 9 deg in a 1 s segment: its segment DOA is azimuth 4.5."""
    ref = Tracks(np.arange(10), np.zeros(10), polar_to_unit(np.arange(10.0), np.zeros(10)))
    for pred_az, tp in ((4.5 + 15, True), (4.5 + 25, False)):
        pred = tracks_from_outputs(_static(pred_az, 10)[:, None], np.ones((10, 1)))
        out = compute_metrics({"a": pred}, {"a": ref})
        assert out["LE_CD"] == pytest.approx(pred_az - 4.5, abs=1e-6)
        assert out["LR_CD"] == 1
        assert out["F20"] == (1.0 if tp else 0.0)
        assert out["ER20"] == (0.0 if tp else 1.0)  # a far pair is a false positive: one insertion


def test_labels_and_metadata_give_the_same_reference():
    rng = np.random.default_rng(5)
    meta, pred_doa, act = _random_file(rng, n_frames=50)
    doa, active, track_id = metadata_to_labels(meta, 50, N_SLOTS)
    pred = tracks_from_outputs(pred_doa, act)
    a = compute_metrics({"x": pred}, {"x": tracks_from_metadata(meta)})
    b = compute_metrics({"x": pred}, {"x": tracks_from_labels(doa, active, track_id)})
    assert a == pytest.approx(b)


def test_without_activity_every_slot_counts():
    tracks = tracks_from_outputs(np.ones((4, 3, 3)))
    assert tracks.frame.size == 12 and np.allclose(np.linalg.norm(tracks.doa, axis=1), 1)


def test_bad_input():
    _, ref = _two_tracks()
    with pytest.raises(ValueError, match="b.csv: no prediction"):
        compute_metrics({"a": ref}, {"a": ref, "b.csv": ref})
    with pytest.raises(ValueError, match="frame 1: two rows"):
        compute_metrics({"a": Tracks([0, 1, 1], [0, 0, 0], np.eye(3))}, {"a": ref})
    with pytest.raises(ValueError, match="does not match"):
        tracks_from_outputs(np.ones((4, 2, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="zero-length"):
        Tracks([0], [0], np.zeros((1, 3)))


# ----------------------------------------------------------------------------------------------------------
# By polyphony


def _poly_brute_force(random_set):
    """Per number of references k: [frames, TP, M, N, distance sum] from the brute-force association."""
    sums = {}
    for frames in _frame_lists(random_set).values():
        for refs, hyps in frames:
            pairs = _brute_force_pairs(hyps, refs)
            s = sums.setdefault(len(refs), [0, 0, 0, 0, 0.0])
            for i, v in enumerate((1, len(pairs), len(hyps), len(refs), sum(p[2] for p in pairs))):
                s[i] += v
    return sums


def test_polyphony_metrics_match_brute_force(random_set):
    sums = _poly_brute_force(random_set)
    assert set(sums) == {0, 1, 2, 3} and all(s[0] >= 10 for s in sums.values())  # each occurs
    pred = {n: tracks_from_outputs(p, a) for n, (_, p, a) in random_set.items()}
    ref = {n: tracks_from_metadata(m) for n, (m, _, _) in random_set.items()}
    ours = compute_metrics(pred, ref, by_polyphony=True)
    assert [k for k in ours if k not in METRIC_KEYS] == [f"{name}_poly{k}" for k in (1, 2, 3)
                                                         for name in ("LE", "LR", "LP", "LF1", "frames")]
    for k in (1, 2, 3):
        frames, tp, m, n, dist = sums[k]
        assert ours[f"frames_poly{k}"] == frames and isinstance(ours[f"frames_poly{k}"], int)
        assert ours[f"LE_poly{k}"] == pytest.approx(dist / tp, abs=1e-9)
        assert ours[f"LR_poly{k}"] == pytest.approx(tp / n)
        assert ours[f"LP_poly{k}"] == pytest.approx(tp / m)
        assert ours[f"LF1_poly{k}"] == pytest.approx(2 * tp / (2 * tp + (m - tp) + (n - tp)))
    # the per-polyphony counts, recovered from the reported ratios, add up to the overall ones
    tp_k = {k: ours[f"LR_poly{k}"] * k * ours[f"frames_poly{k}"] for k in (1, 2, 3)}
    n_all = sum(s[3] for s in sums.values())
    m_all = sum(s[2] for s in sums.values())
    assert sum(tp_k.values()) == pytest.approx(ours["LR"] * n_all)
    assert sum(tp_k[k] / ours[f"LP_poly{k}"] for k in tp_k) + sums[0][2] == pytest.approx(m_all)
    assert m_all == pytest.approx(ours["LR"] * n_all / ours["LP"])
    assert sum(tp_k[k] * ours[f"LE_poly{k}"] for k in tp_k) == pytest.approx(ours["LE"] * sum(tp_k.values()))
    assert sums[0][1] == 0  # reference-free frames hold only false positives
    plain = compute_metrics(pred, ref)
    assert list(plain) == list(METRIC_KEYS) and plain == {k: ours[k] for k in METRIC_KEYS}


def test_polyphony_gap_table_and_json():
    """References: 1 source in frames 0-3, 3 sources in frames 4-5, none in frame 6 (a false alarm there)."""
    az = {0: [0], 1: [0], 2: [0], 3: [0], 4: [0, 90, -90], 5: [0, 90, -90]}
    rows = [(t, j, a) for t, azs in az.items() for j, a in enumerate(azs)]
    ref = Tracks([r[0] for r in rows], [r[1] for r in rows], polar_to_unit([r[2] for r in rows], np.zeros(len(rows))))
    pred = Tracks([0, 1, 2, 3, 4, 6], [0] * 6, polar_to_unit([10, 10, 10, 10, 80, 0], np.zeros(6)))
    out = compute_metrics({"a": pred}, {"a": ref}, by_polyphony=True)
    assert out["frames_poly1"] == 4 and out["frames_poly2"] == 0 and out["frames_poly3"] == 2
    assert out["LE_poly1"] == pytest.approx(10) and out["LR_poly1"] == 1 and out["LP_poly1"] == 1
    assert out["LE_poly3"] == pytest.approx(10) and out["LR_poly3"] == pytest.approx(1 / 6)
    assert out["LP_poly3"] == 1 and out["LF1_poly3"] == pytest.approx(2 / 7)
    assert all(math.isnan(out[f"{k}_poly2"]) for k in ("LE", "LR", "LP", "LF1"))
    assert out["LP"] == pytest.approx(5 / 6)  # the false alarm of frame 6 counts overall only
    text = json.loads(metrics_to_json(out))
    assert list(text)[:len(METRIC_KEYS)] == list(METRIC_KEYS) and text["LE_poly2"] is None
    assert text["frames_poly3"] == 2 and list(text)[-1] == "frames_poly3"
    lines = format_table(out).splitlines()
    assert len(lines) == 7 and lines[2] == "" and lines[3].split()[:3] == ["sources", "frames", "LE"]
    assert lines[4].split() == ["1", "4", "10.0", "100.0", "100.0", "100.0"]
    assert lines[5].split() == ["2", "0", "-", "-", "-", "-"]
    assert lines[6].split() == ["3", "2", "10.0", "16.7", "100.0", "28.6"]
    assert format_table(compute_metrics({"a": pred}, {"a": ref})) == "\n".join(lines[:2])
