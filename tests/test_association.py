"""distance_matrix and the exact (brute-force) association against scipy's Hungarian algorithm."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from dtbt_tf.association import (
    association_margin,
    assignment_cost,
    distance_matrix,
    exact_association,
    exact_association_tf,
)


def _unit(rng, *shape):
    v = rng.standard_normal((*shape, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _scipy_association(D, row_active, col_active):
    """Reference: linear_sum_assignment on the active block of each matrix."""
    out = np.zeros(D.shape, np.float32)
    for b in range(D.shape[0]):
        r, c = np.flatnonzero(row_active[b]), np.flatnonzero(col_active[b])
        if len(r) and len(c):
            i, j = linear_sum_assignment(D[b][np.ix_(r, c)])
            out[b, r[i], c[j]] = 1.0
    return out


def test_distance_matrix_values_and_padding():
    rng = np.random.default_rng(0)
    pred, ref = _unit(rng, 4, 3), _unit(rng, 4, 3)
    ref_active = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 1, 0]], bool)
    pred_active = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
    D = distance_matrix(pred, ref, ref_active, pred_active).numpy()
    expect = np.linalg.norm(pred[:, :, None] - ref[:, None, :], axis=-1)
    mask = pred_active[:, :, None] & ref_active[:, None, :]
    np.testing.assert_allclose(D[mask], expect[mask], atol=1e-6)
    assert np.all(D[~mask] == 10.0)
    # training layout: all prediction rows active
    D2 = distance_matrix(pred, ref, ref_active).numpy()
    np.testing.assert_allclose(D2[:, :, ref_active[1]][1], expect[1], atol=1e-6)
    assert np.all(D2[2] == 10.0)


def test_distance_matrix_gradient_finite_at_zero_distance():
    p = tf.Variable([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    with tf.GradientTape() as tape:
        D = distance_matrix(p, tf.constant([[[0.0, 0.0, 1.0], [10.0, 10.0, 10.0]]]), [[1.0, 0.0]])
        loss = tf.reduce_sum(D)
    g = tape.gradient(loss, p).numpy()
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exact_association_equals_scipy_on_active_block(n):
    rng = np.random.default_rng(n)
    size = 400
    D = rng.uniform(0.0, 2.0, (size, n, n))
    row_active = rng.random((size, n)) < 0.7
    col_active = rng.random((size, n)) < 0.7
    D = np.where(row_active[:, :, None] & col_active[:, None, :], D, rng.uniform(4, 20, (size, n, n)))
    expect = _scipy_association(D, row_active, col_active)
    np.testing.assert_array_equal(exact_association(D, row_active, col_active), expect)
    # activity inferred from D (padded entries > 3) gives the same result
    np.testing.assert_array_equal(exact_association(D), expect)


def test_exact_association_ties_have_optimal_cost():
    rng = np.random.default_rng(5)
    # identical prediction rows -> every assignment costs the same
    D = np.repeat(rng.uniform(0, 2, (50, 1, 3)), 3, axis=1)
    A = exact_association(D)
    ones = np.ones((50, 3), bool)
    np.testing.assert_allclose(assignment_cost(D, A), assignment_cost(D, _scipy_association(D, ones, ones)))
    np.testing.assert_array_equal(A, np.broadcast_to(np.eye(3), A.shape))  # lexicographically first: identity


def test_exact_association_tf_in_graph_with_time_axis_and_no_gradient():
    rng = np.random.default_rng(1)
    D = tf.Variable(rng.uniform(0, 2, (3, 5, 2, 2)).astype(np.float32))

    @tf.function
    def f(d):
        return exact_association_tf(d)

    with tf.GradientTape() as tape:
        A = f(D)
        loss = tf.reduce_sum(A * D)
    grad = tape.gradient(tf.reduce_sum(A), D)
    assert grad is None or np.all(grad.numpy() == 0)
    assert A.shape == (3, 5, 2, 2) and A.dtype == tf.float32
    flat = D.numpy().reshape(-1, 2, 2)
    ones = np.ones((15, 2), bool)
    np.testing.assert_array_equal(A.numpy().reshape(-1, 2, 2), _scipy_association(flat, ones, ones))
    assert np.isfinite(loss.numpy())


def test_association_margin_hand_example():
    D = np.array([[[0.1, 0.5], [0.4, 0.2]],  # diag 0.3, anti 0.9 -> margin 0.6
                  [[0.3, 10.0], [10.0, 10.0]]])  # one pair only -> unique
    m = association_margin(D)
    np.testing.assert_allclose(m[0], 0.6, atol=1e-6)
    assert np.isinf(m[1])


@pytest.mark.parametrize("shape", [(4, 2, 3), (2,), (3, 8, 8)])
def test_exact_association_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="square|N <=|shape"):
        exact_association(np.zeros(shape))
