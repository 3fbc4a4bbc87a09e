"""Hand-made cases for the DOAnet losses (DESIGN 5)."""
import numpy as np
import pytest
import tensorflow as tf

from dtbt_tf import losses
from dtbt_tf.association import distance_matrix
from dtbt_tf.config import PAD_VALUE, LossConfig
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.models.hnet import build_hnet

EYE = np.eye(2, dtype=np.float32)
SWAP = EYE[::-1].copy()


def _labels(rng, B=2, T=6, N=2, p_active=0.6):
    """Random labels with stable slots: track ids constant per slot while active, a new id after a gap."""
    active = (rng.random((B, T, N)) < p_active).astype(np.float32)
    doa = polar_to_unit(rng.uniform(-180, 180, (B, T, N)), rng.uniform(-45, 45, (B, T, N))).astype(np.float32)
    doa[active == 0] = PAD_VALUE
    track_id = np.full((B, T, N), -1, np.int32)
    nxt = 0
    for b in range(B):
        for n in range(N):
            for t in range(T):
                if active[b, t, n]:
                    if t == 0 or not active[b, t - 1, n]:
                        nxt += 1
                    track_id[b, t, n] = nxt
    return {"doa": doa, "active": active, "track_id": track_id}


def _one_frame_seq(A_frames, n_active=2):
    """(1, T, 2, 2) association from a list of 2x2 matrices, all references active and one track per slot."""
    A = np.stack(A_frames)[None].astype(np.float32)
    T = A.shape[1]
    active = np.zeros((1, T, 2), np.float32)
    active[..., :n_active] = 1
    track_id = np.where(active > 0, np.arange(2)[None, None] + 1, -1).astype(np.int32)
    return A, active, track_id


def test_perfect_prediction_gives_zero_dmotp_and_dmota():
    rng = np.random.default_rng(0)
    labels = _labels(rng)
    pred = np.where(labels["active"][..., None] > 0, labels["doa"], polar_to_unit(0, 0)).astype(np.float32)
    D = distance_matrix(pred, labels["doa"], labels["active"])
    A = losses.exact_assignment(D, labels["active"])
    assert np.allclose(losses.dmotp(D, A, labels["active"]), 0.0, atol=1e-5)
    # slots where references are active are assigned to themselves, so no FP/FN and no switch
    np.testing.assert_allclose(losses.dmota(A, labels["active"], labels["track_id"]), 0.0, atol=1e-6)
    # a wrong prediction in one frame raises dMOTP above 0
    pred2 = pred.copy()
    b, t, n = np.argwhere(labels["active"] > 0)[0]
    pred2[b, t, n] = -pred2[b, t, n]
    D2 = distance_matrix(pred2, labels["doa"], labels["active"])
    assert losses.dmotp(D2, losses.exact_assignment(D2, labels["active"]), labels["active"]).numpy()[b] > 0.01


def test_dmotp_is_weighted_mean_of_distances():
    A, active, _ = _one_frame_seq([[[0.9, 0.1], [0.0, 0.5]]])
    D = np.array([[[[0.2, 1.0], [1.5, 0.4]]]], np.float32)
    expected = (0.9 * 0.2 + 0.1 * 1.0 + 0.5 * 0.4) / 1.5
    np.testing.assert_allclose(losses.dmotp(D, A, active), [expected], rtol=1e-6)


def test_swapping_regressors_between_frames_raises_soft_ids():
    A, active, track_id = _one_frame_seq([EYE, EYE, EYE])
    A_sw, _, _ = _one_frame_seq([EYE, SWAP, SWAP])
    ids_stable = losses.soft_counts(A, active, track_id)["ids"].numpy()
    ids_swap = losses.soft_counts(A_sw, active, track_id)["ids"].numpy()
    np.testing.assert_allclose(ids_stable, 0.0)
    np.testing.assert_allclose(ids_swap[0], [0.0, 2.0, 0.0])  # both columns change regressor once
    assert losses.dmota(A_sw, active, track_id).numpy()[0] == pytest.approx(2.0 / 6.0)
    # soft associations: a partial swap gives a partial switch count
    A_half, act_h, tid_h = _one_frame_seq([EYE, 0.5 * (EYE + SWAP)])
    assert 0.0 < losses.soft_counts(A_half, act_h, tid_h)["ids"].numpy()[0, 1] < 2.0


def test_onset_of_new_track_and_sequence_boundaries_are_not_switches():
    A, active, track_id = _one_frame_seq([EYE, SWAP])
    track_id[0, 1] = [7, 8]  # both references are new tracks in frame 1
    np.testing.assert_allclose(losses.soft_counts(A, active, track_id)["ids"], 0.0)
    # two sequences in a batch: sequence 2 starting with another association than sequence 1 ended with
    A2 = np.concatenate([_one_frame_seq([EYE, EYE])[0], _one_frame_seq([SWAP, SWAP])[0]])
    act2 = np.ones((2, 2, 2), np.float32)
    tid2 = np.tile(np.array([[1, 2]], np.int32), (2, 2, 1))
    np.testing.assert_allclose(losses.soft_counts(A2, act2, tid2)["ids"], 0.0)


def test_soft_fp_fn_counts():
    # one reference active, both regressors claim it -> M = 2 > N = 1 -> FP 1; nothing claimed -> FN 1
    A, active, track_id = _one_frame_seq([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], n_active=1)
    c = losses.soft_counts(A, active, track_id)
    np.testing.assert_allclose(c["fp"][0], [1.0, 0.0])
    np.testing.assert_allclose(c["fn"][0], [0.0, 1.0])
    np.testing.assert_allclose(c["n_ref"][0], [1.0, 1.0])


def test_padding_never_contributes():
    rng = np.random.default_rng(1)
    labels = _labels(rng, B=3, T=8)
    inactive = labels["active"] == 0
    assert inactive.any() and (~inactive).any()
    pred = polar_to_unit(rng.uniform(-180, 180, (3, 8, 2)), rng.uniform(-45, 45, (3, 8, 2))).astype(np.float32)
    D = distance_matrix(pred, labels["doa"], labels["active"]).numpy()
    A = rng.random(D.shape).astype(np.float32)
    col_pad = np.broadcast_to(inactive[..., None, :], D.shape)
    D2, A2 = D.copy(), A.copy()
    D2[col_pad] = rng.uniform(3, 50, col_pad.sum())
    A2[col_pad] = rng.random(col_pad.sum())
    for fn, args, args2 in [
        (losses.dmotp, (D, A, labels["active"]), (D2, A2, labels["active"])),
        (losses.dmota, (A, labels["active"], labels["track_id"]), (A2, labels["active"], labels["track_id"])),
        (losses.activity_target_from_association, (A, labels["active"]), (A2, labels["active"])),
    ]:
        np.testing.assert_array_equal(fn(*args).numpy(), fn(*args2).numpy(), err_msg=fn.__name__)
    # through the whole loss: the values held by inactive label slots do not matter
    labels2 = dict(labels, doa=labels["doa"].copy())
    labels2["doa"][inactive] = rng.uniform(-20, 20, (inactive.sum(), 3))
    outputs = {"doa": pred, "activity": rng.random((3, 8, 2)).astype(np.float32)}
    hnet = build_hnet(2, units=8)
    for name in ("mse", "dmotp", "dmotp_act", "full", "pit"):
        cfg = LossConfig(name=name)
        t1 = losses.loss_terms(outputs, labels, hnet, cfg)
        t2 = losses.loss_terms(outputs, labels2, hnet, cfg)
        for k in t1:
            np.testing.assert_array_equal(t1[k].numpy(), t2[k].numpy(), err_msg=f"{name}/{k}")


@pytest.mark.parametrize("name", ["mse", "dmotp", "dmotp_act", "full", "pit"])
def test_gradients_finite_at_zero_distance(name):
    rng = np.random.default_rng(2)
    labels = _labels(rng, p_active=1.0)
    pred = tf.Variable(labels["doa"])  # exactly on the references: D = 0 on the assigned entries
    act = tf.Variable(np.full((2, 6, 2), 0.5, np.float32))
    hnet = build_hnet(2, units=8)
    with tf.GradientTape() as tape:
        total = losses.compute_loss_terms({"doa": pred, "activity": act}, labels, hnet,
                                          LossConfig(name=name, hard_gate=True))["loss"]
    g_doa, g_act = tape.gradient(total, [pred, act])
    assert np.isfinite(total.numpy())
    assert g_doa is not None and np.all(np.isfinite(g_doa.numpy()))
    if name in ("dmotp_act", "full", "pit"):
        assert np.all(np.isfinite(g_act.numpy())) and np.abs(g_act.numpy()).max() > 0


def test_mse_uses_slot_order_and_pit_is_permutation_invariant():
    rng = np.random.default_rng(3)
    labels = _labels(rng, p_active=1.0)
    labels["active"][0, :, 1] = 0
    labels["doa"][0, :, 1] = PAD_VALUE
    target = np.where(labels["active"][..., None] > 0, labels["doa"], np.float32([0, 0, 1]))
    np.testing.assert_allclose(losses.mse_loss(target, labels["doa"], labels["active"]), 0.0, atol=1e-7)
    swapped = target[:, :, ::-1]
    assert np.all(losses.mse_loss(swapped, labels["doa"], labels["active"]).numpy() > 0.01)
    # pit assigns the swapped regressors back: zero error, activity target = assigned rows
    D = distance_matrix(swapped, labels["doa"], labels["active"])
    A = losses.exact_assignment(D, labels["active"])
    np.testing.assert_allclose(losses.pit_mse(swapped, labels["doa"], A), 0.0, atol=1e-7)
    tgt = losses.activity_target_from_association(A, labels["active"]).numpy()
    np.testing.assert_array_equal(tgt[0], np.tile([[0.0, 1.0]], (6, 1)))  # slot 0's reference sits in row 1
    np.testing.assert_array_equal(tgt[1], 1.0)
    act = np.where(tgt > 0, 0.9, 0.1).astype(np.float32)
    t = losses.pit_loss(swapped, act, labels["doa"], labels["active"])
    np.testing.assert_allclose(t["mse"], 0.0, atol=1e-7)
    np.testing.assert_allclose(t["activity"], -np.log(0.9), rtol=1e-5)


def test_activity_bce_and_both_activity_targets():
    np.testing.assert_allclose(losses.activity_bce(np.full((1, 1, 2), 0.5), np.array([[[1.0, 0.0]]])),
                               [np.log(2.0)], rtol=1e-6)
    assert losses.activity_bce([[[1.0, 0.0]]], [[[1.0, 0.0]]]).numpy()[0] < 1e-5
    # hand-made Ã: row 0 claims the active reference, row 1 only weakly -> paper target (1, 0)
    A = np.array([[[[0.9, 0.8], [0.3, 0.7]]]], np.float32)
    active = np.array([[[1.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(losses.activity_target_from_association(A, active), [[[1.0, 0.0]]])
    # 'labels' target: the exact assignment decides, whatever the Hnet says
    ref = np.zeros((1, 1, 2, 3), np.float32)
    ref[..., 0, :] = polar_to_unit(0, 0)
    ref[..., 1, :] = PAD_VALUE
    pred = np.stack([polar_to_unit(90, 0), polar_to_unit(5, 0)])[None, None].astype(np.float32)
    labels = {"doa": ref, "active": active, "track_id": np.array([[[1, -1]]], np.int32)}
    act = np.array([[[0.2, 0.7]]], np.float32)
    hnet = build_hnet(2, units=8)
    t_lab = losses.loss_terms({"doa": pred, "activity": act}, labels, hnet,
                              LossConfig(name="dmotp_act", activity_target="labels"))
    np.testing.assert_allclose(t_lab["activity"], losses.activity_bce(act, [[[0.0, 1.0]]]), rtol=1e-6)
    t_hnet = losses.loss_terms({"doa": pred, "activity": act}, labels, hnet, LossConfig(name="dmotp_act"))
    D = distance_matrix(pred, ref, active)
    A_h = losses.masked_association(hnet(tf.reshape(D, (-1, 2, 2)))["association"][None], active)
    expected = losses.activity_bce(act, losses.activity_target_from_association(A_h, active))
    np.testing.assert_allclose(t_hnet["activity"], expected, rtol=1e-6)


def test_hard_gate_zeroes_weak_associations():
    A = np.array([[[[0.9, 0.4], [0.2, 0.6]]]], np.float32)
    active = np.ones((1, 1, 2), np.float32)
    np.testing.assert_allclose(losses.masked_association(A, active, hard_gate=True),
                               [[[[0.9, 0.0], [0.0, 0.6]]]])


def test_weights_and_global_batch_scaling():
    rng = np.random.default_rng(4)
    labels = _labels(rng, B=4, T=5)
    outputs = {"doa": polar_to_unit(rng.uniform(-180, 180, (4, 5, 2)), np.zeros((4, 5, 2))).astype(np.float32),
               "activity": rng.random((4, 5, 2)).astype(np.float32)}
    hnet = build_hnet(2, units=8)
    cfg = LossConfig(name="full", w_dmotp=2.0, w_dmota=3.0, w_activity=5.0)
    per = losses.loss_terms(outputs, labels, hnet, cfg)
    assert list(per) == list(losses.term_names(cfg))
    np.testing.assert_allclose(per["loss"], 2 * per["dmotp"] + 3 * per["dmota"] + 5 * per["activity"], rtol=1e-6)
    mean = losses.compute_loss_terms(outputs, labels, hnet, cfg)
    np.testing.assert_allclose(mean["loss"], np.mean(per["loss"]), rtol=1e-6)
    glob = losses.compute_loss_terms(outputs, labels, hnet, cfg, global_batch_size=8)
    np.testing.assert_allclose(glob["dmotp"], np.sum(per["dmotp"]) / 8, rtol=1e-6)
