"""Track ids: a new id each time a slot starts a track, the same offline and online."""
import numpy as np
import pytest

from dtbt_tf.tracks import TrackCounter, track_ids


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
