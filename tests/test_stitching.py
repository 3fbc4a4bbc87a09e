"""Slot re-association across windows (dtbt_tf.windowing), track ids in the outputs, block-wise localisation
(dtbt_tf.inference.localize_blocks / FeatureStream) equal to the whole file."""
import dataclasses

import numpy as np
import pytest

from dtbt_tf.config import FeatureConfig, InferenceConfig
from dtbt_tf.features import features_numpy
from dtbt_tf.geometry import polar_to_unit
from dtbt_tf.inference import FeatureStream, LoadedModel, localize, localize_blocks, outputs_to_metadata
from dtbt_tf.metrics import compute_metrics, tracks_from_metadata
from dtbt_tf.tracks import track_ids
from dtbt_tf.windowing import WindowStream, match_slots, run_windows, slot_cost, window_plan

SLOTS = InferenceConfig(tracking="slots")  # the raw-slot track-id rule these tests are about
WINDOW = 50  # label frames


def _unit(az_deg, el_deg=0.0):
    return polar_to_unit(az_deg, el_deg).reshape(3)


def _scene(n_label):
    """Reference of two sources: A circles from -100 deg over the whole file, B sits at 60 deg and is off in
    frames [150, 180) (a new track when it comes back). Returns (doa (F, 2, 3), active (F, 2)) in source order."""
    t = np.arange(n_label)
    doa = np.stack([np.stack([_unit(-100 + 0.4 * i) for i in t]), np.stack([_unit(60.0)] * n_label)], 1)
    active = np.ones((n_label, 2), bool)
    active[150:180, 1] = False
    return doa.astype(np.float32), active


def _swapping_model(ref_doa, ref_active, noise_deg=3.0, seed=0):
    """predict() of windows whose rows carry their label frame index: the reference sources, slightly noisy,
    in slots swapped in every odd window (a model with no slot order across windows)."""
    rng = np.random.default_rng(seed)
    calls = []

    def predict(x):
        doa, act = [], []
        for w in x:
            s = int(w[0, 0]) // 5  # first label frame of the window
            calls.append(s)
            f = np.clip(np.arange(s, s + WINDOW), 0, len(ref_doa) - 1)
            d = ref_doa[f] + np.radians(noise_deg) * rng.standard_normal((WINDOW, 2, 3))
            a = np.where(ref_active[f], 0.9, 0.05)
            if (s // (WINDOW // 2)) % 2:
                d, a = d[:, ::-1], a[:, ::-1]
            doa.append(d / np.linalg.norm(d, axis=-1, keepdims=True))
            act.append(a)
        return np.array(doa, np.float32), np.array(act, np.float32)

    return predict, calls


def _reference_metadata(ref_doa, ref_active):
    return outputs_to_metadata(ref_doa, ref_active.astype(np.float32), SLOTS)


def _metrics(doa, act, ref_doa, ref_active):
    pred = tracks_from_metadata(outputs_to_metadata(doa, act, SLOTS))
    return compute_metrics({"f": pred}, {"f": tracks_from_metadata(_reference_metadata(ref_doa, ref_active))})


def test_swapped_slots_at_boundaries_are_rematched_ids_drop_to_zero():
    n_label = 300  # 11 windows, 10 boundaries with a swap at each
    ref_doa, ref_active = _scene(n_label)
    rows = np.arange(n_label * 5, dtype=np.float32)[:, None]  # row = feature frame index
    predict, _ = _swapping_model(ref_doa, ref_active)
    raw = run_windows(rows, n_label, WINDOW, 5, 2, predict, max_batch=4, reassociate=False)
    predict, _ = _swapping_model(ref_doa, ref_active)  # same noise draws
    fixed = run_windows(rows, n_label, WINDOW, 5, 2, predict, max_batch=4)
    before, after = _metrics(*raw, ref_doa, ref_active), _metrics(*fixed, ref_doa, ref_active)
    assert before["IDS"] >= 10  # the raw slots swap sources at every boundary
    assert after["IDS"] == 0
    assert after["MOTA"] > before["MOTA"]
    assert after["LE"] == pytest.approx(before["LE"], abs=1e-9)  # only the slot order changed
    # per frame, the same (DOA, activity) pairs in some slot order
    for (d0, a0), (d1, a1) in zip(zip(*raw), zip(*fixed)):
        order0, order1 = np.lexsort(d0.T), np.lexsort(d1.T)
        np.testing.assert_array_equal(d0[order0], d1[order1])
        np.testing.assert_array_equal(a0[order0], a1[order1])
    # each source stays in one slot through the whole file
    closer_to_a = [int(np.argmax(d @ ref_doa[t, 0])) for t, d in enumerate(fixed[0])]
    assert len(set(closer_to_a)) == 1
    assert len({int(np.argmax(d @ ref_doa[t, 0])) for t, d in enumerate(raw[0])}) == 2


def test_track_ids_follow_the_stitched_slots():
    n_label = 300
    ref_doa, ref_active = _scene(n_label)
    rows = np.arange(n_label * 5, dtype=np.float32)[:, None]
    predict, _ = _swapping_model(ref_doa, ref_active)
    doa, act = run_windows(rows, n_label, WINDOW, 5, 2, predict, max_batch=4)
    meta = outputs_to_metadata(doa, act, SLOTS)
    # three tracks: A all along, B before and after its pause (a new id when it restarts)
    assert sorted(set(meta.track.tolist())) == [0, 1, 2]
    active = act > 0.5
    np.testing.assert_array_equal(meta.track, track_ids(active)[active])
    before, after = set(meta.track[meta.frame < 150].tolist()), set(meta.track[meta.frame >= 180].tolist())
    assert len(before) == len(after) == 2 and len(before & after) == 1  # A keeps its id, B gets a new one


def test_match_slots_cost_terms():
    L = 10
    u, v = _unit(0.0), _unit(90.0)
    prev = np.broadcast_to(np.stack([u, v]), (L, 2, 3))
    ones = np.ones((L, 2))
    assert match_slots(prev, ones, prev[:, ::-1], ones).tolist() == [1, 0]  # directions swapped
    assert match_slots(prev, ones, prev, ones).tolist() == [0, 1]
    cost = slot_cost(prev, ones, prev[:, ::-1], ones)
    np.testing.assert_allclose(cost, [[0.5, 0.0], [0.0, 0.5]], atol=1e-12)  # 90 deg / 180 deg, no activity term
    # one source, active in slot 0 before and slot 1 after; the idle slots' directions do not matter
    p, q = np.array([[0.95, 0.02]] * L), np.array([[0.03, 0.9]] * L)
    rng = np.random.default_rng(0)
    junk = rng.standard_normal((L, 2, 3))
    prev_d, new_d = junk.copy(), junk[::-1].copy()
    prev_d[:, 0], new_d[:, 1] = u, _unit(5.0)
    assert match_slots(prev_d, p, new_d, q).tolist() == [1, 0]
    # nothing active in the overlap: a tie, the order is kept
    assert match_slots(prev_d, np.zeros((L, 2)), new_d, np.zeros((L, 2))).tolist() == [0, 1]


def test_three_slots_are_permuted_as_a_whole():
    L = 12
    dirs = np.stack([_unit(-120.0), _unit(0.0), _unit(120.0)])
    prev = np.broadcast_to(dirs, (L, 3, 3))
    perm = np.array([2, 0, 1])
    got = match_slots(prev, np.ones((L, 3)), prev[:, perm], np.ones((L, 3)))
    np.testing.assert_array_equal(prev[:, perm][:, got], prev)


@pytest.mark.parametrize("blocks", [[7], [1, 2, 3], [50, 1], [999]])
def test_window_stream_any_blocks_equals_run_windows(blocks):
    n_label, step = 263, 5
    ref_doa, ref_active = _scene(n_label)
    rows = np.arange(n_label * step, dtype=np.float32)[:, None]
    predict, calls_one = _swapping_model(ref_doa, ref_active, seed=3)
    whole = run_windows(rows, n_label, WINDOW, step, 2, predict, max_batch=3)
    predict, calls = _swapping_model(ref_doa, ref_active, seed=3)
    stream = WindowStream(WINDOW, step, 2, predict, max_batch=3)
    i, k = 0, 0
    while i < len(rows):
        n = blocks[k % len(blocks)]
        stream.push(rows[i:i + n])
        i, k = i + n, k + 1
        assert stream._buf is None or len(stream._buf) <= (3 * 25 + WINDOW) * step + n  # bounded
    doa, act = stream.finish(n_label)
    assert calls == calls_one == [s for s, _, _ in window_plan(n_label, WINDOW)]
    np.testing.assert_array_equal(doa, whole[0])
    np.testing.assert_array_equal(act, whole[1])


@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_feature_stream_equals_whole_file_features(fmt, noise):
    cfg = FeatureConfig(fmt=fmt)
    audio = noise(3.37, 4)
    n_label = len(audio) // 2400
    whole = features_numpy(audio[:n_label * 2400], cfg)
    rng = np.random.default_rng(1)
    fs = FeatureStream(cfg, lambda a: features_numpy(a, cfg))
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 9000))
        parts.append(fs.push(audio[i:i + n]))
        i += n
    parts.append(fs.finish())
    got = np.concatenate(parts)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-4)


def _fake_feature_model(n_max=2):
    """A features-in 'model' that reads its input: doa from the mean of channels, activity from the log power,
    so any feature or window mistake shows in the outputs."""
    def predict(x):
        b, t = x.shape[:2]
        f = x.reshape(b, t // 5, 5, -1).mean(axis=2)  # (B, F, 64 * C)
        d = np.stack([f[..., :3], f[..., 64 * 4:64 * 4 + 3]], 2) + 1e-3
        a = 1.0 / (1.0 + np.exp(-(f[..., [0, 64 * 4]] + 20.0) / 5.0))
        return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32), a.astype(np.float32)

    return LoadedModel(predict, FeatureConfig(), n_max, InferenceConfig(), "features", 250, 4, "fake.tflite")


def test_localize_blocks_equals_whole_file_numpy_features(noise):
    model = _fake_feature_model()
    audio = noise(13.71, 5)
    whole = localize(audio, model)
    for block in (1000, 2400, 24000 * 3 + 17):
        got = localize_blocks((audio[i:i + block] for i in range(0, len(audio), block)), model)
        np.testing.assert_allclose(got[0], whole[0], atol=1e-5)
        np.testing.assert_allclose(got[1], whole[1], atol=1e-5)


def test_localize_blocks_audio_in_model_is_exact(noise):
    def predict(x):  # audio-in: (B, 250 * 480, 4) -> outputs from each label frame's samples
        b = x.shape[0]
        f = x.reshape(b, 50, 2400, 4)
        d = f[..., :3].sum(axis=2)[:, :, None, :].repeat(2, axis=2) + 1e-3
        a = np.stack([np.abs(f[..., 3]).mean(-1), np.abs(f[..., 0]).max(-1)], -1)
        return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32), a.astype(np.float32)

    model = LoadedModel(predict, FeatureConfig(), 2, InferenceConfig(), "audio", 250, 3, "x.tflite")
    audio = noise(17.3, 6)
    whole = localize(audio, model)
    got = localize_blocks((audio[i:i + 5000] for i in range(0, len(audio), 5000)), model)
    np.testing.assert_array_equal(got[0], whole[0])
    np.testing.assert_array_equal(got[1], whole[1])


@pytest.mark.slow  # builds a tiny DOAnet and exports it (~15 s)
def test_tiny_model_end_to_end(tiny_doanet, noise, tmp_path):
    """A real (tiny, random) DOAnet through infer_files: the CSV written block by block (0.7 s blocks) holds
    the stitched whole-file outputs with track ids; re-association makes the result indifferent to a model
    that permutes its slots in some windows."""
    import soundfile as sf

    from dtbt_tf.data.dcase import read_metadata
    from dtbt_tf.export import export_saved_model
    from dtbt_tf.inference import infer_files, load_model

    model, _ = tiny_doanet("foa", seed=2)
    export_saved_model(model, str(tmp_path / "sm"), version=1)
    audio = noise(21.3, 7)
    sf.write(tmp_path / "rec.wav", audio, 24000, subtype="FLOAT")
    loaded = load_model(str(tmp_path / "sm"))
    doa, act = localize(audio, loaded)
    threshold = float(np.quantile(act, 0.4))  # a random model: a threshold that keeps some slots on and some off
    (csv,) = infer_files([str(tmp_path / "rec.wav")], str(tmp_path / "sm"), str(tmp_path / "out"),
                         threshold=threshold, block_seconds=0.7, log=lambda m: None)
    got = read_metadata(csv)
    want = outputs_to_metadata(doa, act, dataclasses.replace(loaded.inference, threshold=threshold))
    assert 0 < got.frame.size < act.size and got.track.max() > 1
    g, w = np.lexsort((got.track, got.frame)), np.lexsort((want.track, want.frame))
    np.testing.assert_array_equal(got.frame[g], want.frame[w])
    np.testing.assert_array_equal(got.track[g], want.track[w])  # track ids, not slots
    np.testing.assert_allclose(got.doa[g], want.doa[w], atol=0.02)  # integer degrees in the CSV
    blocks = localize_blocks((audio[i:i + 9999] for i in range(0, len(audio), 9999)), loaded)
    np.testing.assert_allclose(blocks[0], doa, atol=1e-4)
    np.testing.assert_allclose(blocks[1], act, atol=1e-4)

    predict, seen = loaded.predict, []

    def permuting(x):  # the same model, its two slots swapped in every other window it is given
        d, a = predict(x)
        for i in range(len(d)):
            seen.append(len(seen))
            if len(seen) % 2 == 0:
                d[i], a[i] = d[i][:, ::-1], a[i][:, ::-1]
        return d, a

    swapped = localize(audio, dataclasses.replace(loaded, predict=permuting, max_batch=1))
    np.testing.assert_allclose(swapped[0], doa, atol=1e-5)
    np.testing.assert_allclose(swapped[1], act, atol=1e-5)
    raw = localize(audio, dataclasses.replace(loaded, predict=permuting, max_batch=1), reassociate=False)
    assert not np.allclose(raw[1], act, atol=1e-5)  # without re-association the swaps stay
