"""Track ids (dtbt_tf.tracks): the slot rule and the continuity rule, the same offline and online."""
import itertools

import numpy as np
import pytest

from dtbt_tf.config import ConfigError, InferenceConfig, RunConfig
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.inference import outputs_to_metadata
from dtbt_tf.metrics import compute_metrics, tracks_from_metadata
from dtbt_tf.tracks import ContinuityTracker, TrackCounter, bridge_gaps, make_tracker, max_assignment, track_ids

CONTINUITY = InferenceConfig()


def _u(azi, ele=0.0):
    return polar_to_unit(np.asarray(azi, float), np.full(np.shape(azi), ele))


def test_new_id_each_time_a_slot_turns_on():
    active = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [1, 1], [0, 0], [0, 1]], bool)
    np.testing.assert_array_equal(track_ids(active),
                                  [[-1, -1], [0, -1], [0, 1], [-1, 1], [2, 1], [-1, -1], [-1, 3]])


def test_online_counter_equals_offline_ids_on_random_activity():
    rng = np.random.default_rng(0)
    active = rng.uniform(size=(200, 3)) < 0.6
    counter = TrackCounter(3, first_id=5)
    online = np.stack([counter.update(a) for a in active])
    np.testing.assert_array_equal(online, track_ids(active, first_id=5))
    starts = (active & ~np.vstack([np.zeros((1, 3), bool), active[:-1]])).sum()
    assert counter.next_id == 5 + starts and set(np.unique(online[active])) == set(range(5, 5 + starts))


def test_wrong_slot_count_is_an_error():
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        TrackCounter(2).update([True, False, True])
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        ContinuityTracker(2, 20, 60, 5).update([True, False, True], np.zeros((2, 3)))


def test_continuity_merges_duplicates_and_follows_a_source_across_slots():
    # frames 0-2: one source at 10 deg in both slots (0.9 / 0.6 active); frame 3-5: the source moves to slot 1,
    # slot 0 jumps to a second source at 120 deg; frame 6: nothing; frame 7: the first source back (gap 1)
    doa = np.zeros((8, 2, 3))
    doa[:3] = _u([10.0, 14.0])
    doa[3:6] = _u([120.0, 12.0])
    doa[6:] = _u([10.0, 10.0])
    act = np.array([[0.9, 0.6]] * 3 + [[0.8, 0.9]] * 3 + [[0.1, 0.1], [0.1, 0.9]])
    ids = track_ids(act > 0.5, doa, act, CONTINUITY)
    np.testing.assert_array_equal(ids, [[0, -1]] * 3 + [[1, 0]] * 3 + [[-1, -1], [-1, 0]])
    # the slot rule: slot 1's duplicate is a track of its own, and the hand-over and the gap start new ids
    np.testing.assert_array_equal(track_ids(act > 0.5), [[0, 1]] * 6 + [[-1, -1], [-1, 2]])
    # a gap longer than bridge_frames starts a new track
    short = InferenceConfig(bridge_frames=0)
    assert track_ids(act > 0.5, doa, act, short)[7, 1] == 2
    # outside the gate a detection is a new track even in the same slot
    jump = doa.copy()
    jump[7, 1] = _u(250.0)  # 110 deg from the 2nd source, 120 deg from the first
    assert track_ids(act > 0.5, jump, act, CONTINUITY)[7, 1] == 2
    # no merging without the activity head (every slot counts in every frame, as in the paper)
    blind = InferenceConfig(use_activity=False)
    assert np.all(track_ids(np.ones((8, 2), bool), doa, act, blind)[:3] >= 0)


def test_bridge_gaps_fills_short_gaps_of_one_track_only():
    frame = np.array([0, 1, 4, 0, 9])
    ident = np.array([7, 7, 7, 8, 8])
    doa = np.concatenate([_u([0.0, 0.0, 30.0]), _u([90.0, 90.0])])
    f, i, d = bridge_gaps(frame, ident, doa, max_gap=2)
    assert list(zip(f.tolist(), i.tolist())) == [(0, 7), (0, 8), (1, 7), (2, 7), (3, 7), (4, 7), (9, 8)]
    azi = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    np.testing.assert_allclose(azi[[3, 4]], [10.0, 20.0], atol=0.2)  # interpolated along the arc
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert bridge_gaps(frame, ident, doa, max_gap=0)[0].size == frame.size


def test_online_tracker_equals_offline_ids_and_bridging_adds_only_gap_rows():
    rng = np.random.default_rng(1)
    T = 300
    azi = np.stack([np.linspace(0, 90, T), np.linspace(200, 150, T)], axis=1) + rng.normal(0, 3, (T, 2))
    doa = _u(azi)
    act = rng.uniform(0.3, 1.0, (T, 2))
    swap = rng.uniform(size=T) < 0.1
    doa[swap], act[swap] = doa[swap][:, ::-1], act[swap][:, ::-1]
    tracker = make_tracker(CONTINUITY, 2)
    online = np.stack([tracker.update(a > 0.5, d, a) for a, d in zip(act, doa)])
    np.testing.assert_array_equal(online, track_ids(act > 0.5, doa, act, CONTINUITY))
    meta = outputs_to_metadata(doa, act, CONTINUITY)
    detected = set(zip(*np.nonzero(online >= 0)))
    rows = set(zip(meta.frame.tolist(), meta.track.tolist()))
    assert {(t, online[t, k]) for t, k in detected} <= rows
    assert len(rows) > len(detected)  # the dropouts of up to 5 frames are bridged
    # two sources far apart, swapped slots and dropouts: one id each for the whole file
    assert len(np.unique(meta.track)) == 2


def test_continuity_halves_the_identity_switches_of_a_duplicating_flickering_regressor():
    """A regressor that puts its spare slot on the one active source and drops frames: the continuity rule
    removes the switches the slot rule counts, with the same or better LE (both against the true tracks)."""
    rng = np.random.default_rng(2)
    T = 400
    true = _u(np.linspace(-60, 60, T))
    ref = tracks_from_metadata(outputs_to_metadata(np.stack([true, true], 1), np.c_[np.ones(T), np.zeros(T)],
                                                   InferenceConfig(tracking="slots")))
    noisy = lambda: _u(np.linspace(-60, 60, T) + rng.normal(0, 4, T))
    doa = np.stack([noisy(), noisy()], axis=1)
    act = np.stack([rng.uniform(0.2, 1.0, T), rng.uniform(0.0, 0.9, T)], axis=1)
    scores = {}
    for name, cfg in (("slots", InferenceConfig(tracking="slots")), ("continuity", CONTINUITY)):
        pred = tracks_from_metadata(outputs_to_metadata(doa, act, cfg))
        scores[name] = compute_metrics({"f": pred}, {"f": ref})
    assert scores["slots"]["IDS"] >= 20
    assert scores["continuity"]["IDS"] * 2 <= scores["slots"]["IDS"]
    assert scores["continuity"]["MOTA"] > scores["slots"]["MOTA"]
    assert scores["continuity"]["LE"] <= scores["slots"]["LE"] + 0.5


def test_max_assignment_is_the_optimal_matching():
    rng = np.random.default_rng(3)
    for r, c in itertools.product(range(1, 5), repeat=2):
        s = rng.normal(size=(r, c))
        rows, cols = max_assignment(s)
        best = max(sum(s[i, j] for i, j in zip(p, q)) for p in itertools.permutations(range(r), min(r, c))
                   for q in itertools.permutations(range(c), min(r, c)))
        assert len(rows) == min(r, c) and s[rows, cols].sum() == pytest.approx(best)


def test_tracking_config_is_validated_and_old_runs_keep_the_slot_rule():
    for bad in (dict(tracking="hungarian"), dict(merge_deg=-1.0), dict(gate_deg=0.0), dict(gate_deg=120.0),
                dict(bridge_frames=-1), dict(bridge_frames=1.5)):
        with pytest.raises(ConfigError):
            InferenceConfig(**bad)
    cfg = RunConfig.from_dict  # a run_config.json written before the tracking fields existed
    from dtbt_tf.config import DoanetConfig, FeatureConfig, LossConfig, TrainSettings

    run = RunConfig(FeatureConfig(), DoanetConfig(), LossConfig(), TrainSettings(), InferenceConfig())
    d = run.to_dict()
    assert d["inference_config"]["tracking"] == "continuity"
    d["inference_config"] = {"threshold": 0.5, "use_activity": True}
    assert cfg(d).inference.tracking == "slots"
