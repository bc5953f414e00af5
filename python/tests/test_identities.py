"""The lecture's identities (shared/seeds), checked on swiftcnn's own ops.

- Conv backward, one channel, stride 1, no padding:
    dX = convolve2d(grad_out, w, "full") = correlate2d(grad_out, w[::-1, ::-1], "full")
    dW = correlate2d(x, grad_out, "valid")   ("sum(x (.) dL/dz) in a sliding window")
- Softmax cross-entropy: dL/dz = (y_hat - y) / N.
- Sigmoid: g'(z) = g(z) (1 - g(z)); with BCE the output delta is a - y (delta^(L+1) = y_hat - y).
- Fully connected: delta^(l) = a(1 - a) * Theta^T delta^(l+1); Delta = delta a^T.
- Pooling: "the error is sent back to the node where it came from".
"""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

REL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def close(a, b, dtype, what):
    err = R.max_rel_diff(a, b)
    assert err <= REL[np.dtype(dtype)], f"{what}: {err:.3g}"


@pytest.mark.parametrize("hw,k", [((5, 5), (3, 3)), ((28, 28), (5, 5)), ((7, 9), (2, 4)), ((4, 4), (4, 4)),
                                  ((6, 3), (1, 3))])
def test_conv_input_gradient_is_full_convolution_with_the_filter(rng, dtype, hw, k):
    x = rng.standard_normal((1, 1) + hw).astype(dtype)
    w = rng.standard_normal((1, 1) + k).astype(dtype)
    g = rng.standard_normal(F.conv2d(x, w).shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(g, x, w)
    a = F.convolve2d(g[0, 0], w[0, 0], "full")
    b = F.correlate2d(g[0, 0], w[0, 0, ::-1, ::-1], "full")
    assert gx.shape == (1, 1) + hw and a.shape == hw and b.shape == hw
    close(gx[0, 0], a, dtype, "dX vs convolve2d(grad_out, w, 'full')")
    close(gx[0, 0], b, dtype, "dX vs correlate2d(grad_out, rot180(w), 'full')")
    close(a, b, dtype, "convolve2d(g, w) vs correlate2d(g, rot180(w))")
    # and against plain NumPy (independent of swiftcnn's signal ops)
    close(gx[0, 0], R.convolve2d(g[0, 0], w[0, 0], "full"), dtype, "dX vs NumPy full convolution")
    # the filter gradient: valid cross-correlation of the input with the upstream gradient
    close(gw[0, 0], F.correlate2d(x[0, 0], g[0, 0], "valid"), dtype, "dW vs correlate2d(x, grad_out, 'valid')")
    close(gb, np.array([g.astype(np.float64).sum()]), dtype, "db = sum(grad_out)")


def test_conv_gradients_sum_over_the_batch(rng, dtype):
    # "Average the gradient across the batch": conv2d_backward sums per-sample filter gradients
    # (the loss's 1/N lives in grad_out, as in softmax_cross_entropy).
    x = rng.standard_normal((4, 1, 8, 8)).astype(dtype)
    w = rng.standard_normal((1, 1, 3, 3)).astype(dtype)
    g = rng.standard_normal((4, 1, 6, 6)).astype(dtype)
    _, gw, _ = F.conv2d_backward(g, x, w)
    per_sample = sum(F.correlate2d(x[n, 0], g[n, 0], "valid").astype(np.float64) for n in range(4))
    close(gw[0, 0], per_sample, dtype, "dW = sum_n correlate2d(x_n, g_n)")


def test_lecture_1d_convolution_example():
    # (theta * x)_i = sum_j theta_j x_{i+j}, x = [1 1 1 0 0], theta = [1 0 1] -> [2 1 1]
    x = np.array([[1.0, 1, 1, 0, 0]])
    theta = np.array([[1.0, 0, 1]])
    np.testing.assert_array_equal(F.correlate2d(x, theta), [[2, 1, 1]])
    np.testing.assert_array_equal(F.conv2d(x[None, None], theta[None, None])[0, 0], [[2, 1, 1]])


def test_lecture_2d_convolution_example():
    # (I * K)(i, j) = sum_m sum_n I(i+m, j+n) K(m, n); the lecture's first entry is 4.
    image = np.array([[1, 1, 1, 0, 0],
                      [0, 1, 1, 1, 0],
                      [0, 0, 1, 1, 1],
                      [0, 0, 1, 1, 0],
                      [0, 1, 1, 0, 0]], dtype=np.float64)
    k = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float64)
    out = F.correlate2d(image, k, "valid")
    assert out[0, 0] == 4
    expect = np.array([[sum(image[i + m, j + n] * k[m, n] for m in range(3) for n in range(3)) for j in range(3)]
                       for i in range(3)])
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(F.conv2d(image[None, None], k[None, None])[0, 0], expect)
    # K is symmetric under 180-degree rotation, so true convolution gives the same result here
    np.testing.assert_array_equal(F.convolve2d(image, k, "valid"), expect)


def test_softmax_cross_entropy_gradient_is_prediction_minus_target_over_n(rng, dtype):
    for n, k in [(1, 10), (8, 10), (5, 3)]:
        z = rng.standard_normal((n, k)).astype(dtype)
        y = rng.integers(0, k, n)
        loss, g = F.softmax_cross_entropy(z, y)
        y_hat = F.softmax(z).astype(np.float64)
        close(g, (y_hat - R.one_hot(y, k)) / n, dtype, "(y_hat - y)/N")
        # the loss is the mean negative log-probability of the true class
        assert loss == pytest.approx(-np.mean(np.log(y_hat[np.arange(n), y])), rel=1e-5)


def test_sigmoid_derivative_is_y_times_one_minus_y(rng, dtype):
    z = (rng.standard_normal(50) * 3).astype(dtype)
    y = F.sigmoid(z)
    d = F.sigmoid_backward(np.ones_like(y), y)
    yd = y.astype(np.float64)
    close(d, yd * (1 - yd), dtype, "sigmoid' = y(1-y)")
    # and that is the derivative of the sigmoid (central differences in float64)
    z64 = z.astype(np.float64)
    num = (R.sigmoid(z64 + 1e-6) - R.sigmoid(z64 - 1e-6)) / 2e-6
    assert R.max_rel_diff(R.sigmoid(z64) * (1 - R.sigmoid(z64)), num) < 1e-8
    assert R.max_rel_diff(d, num) < (1e-5 if dtype == np.float32 else 1e-8)


def test_bce_output_delta_is_activation_minus_target(rng, dtype):
    # delta^(L+1) = a^(L+1) - y for a sigmoid output with the (negated) log-likelihood loss
    z = rng.standard_normal((6, 1)).astype(dtype)
    t = rng.integers(0, 2, (6, 1)).astype(dtype)
    _, g = F.binary_cross_entropy_with_logits(z, t)
    close(g * z.size, F.sigmoid(z).astype(np.float64) - t, dtype, "dL/dz = a - y")


def test_fully_connected_backprop_recursion(rng):
    # delta^(l) = a^(l) (1 - a^(l)) * Theta^T delta^(l+1); dL/dTheta = delta^(l+1) a^(l)^T (summed over the batch)
    S = swiftcnn
    l1 = S.Linear(5, 4, dtype="float64", seed=1)
    l2 = S.Linear(4, 3, dtype="float64", seed=2)
    model = S.Sequential(l1, S.Sigmoid(), l2)
    x = rng.standard_normal((2, 5))
    model(x)
    delta3 = rng.standard_normal((2, 3))
    gx = model.backward(delta3)
    a2 = R.sigmoid(R.linear(x, l1.weight.data, l1.bias.data))
    np.testing.assert_allclose(l2.weight.grad, delta3.T @ a2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(l2.bias.grad, delta3.sum(0), rtol=1e-12, atol=1e-14)
    delta2 = a2 * (1 - a2) * (delta3 @ l2.weight.data)
    np.testing.assert_allclose(l1.weight.grad, delta2.T @ x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, delta2 @ l1.weight.data, rtol=1e-12, atol=1e-14)


def test_max_pool_sends_the_error_back_where_it_came_from(rng, dtype):
    x = R.distinct_values(rng, (2, 3, 6, 6)).astype(dtype)
    g = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    gx = F.max_pool2d_backward(g, x, 2)
    y = F.max_pool2d(x, 2)
    for n in range(2):
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    win = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    gwin = gx[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    r, s = np.unravel_index(np.argmax(win), win.shape)
                    assert win[r, s] == y[n, c, i, j]
                    assert gwin[r, s] == g[n, c, i, j]
                    assert np.count_nonzero(gwin) == (1 if g[n, c, i, j] != 0 else 0)


def test_avg_pool_spreads_the_error_evenly(rng, dtype):
    x = rng.standard_normal((1, 2, 4, 4)).astype(dtype)
    g = rng.standard_normal((1, 2, 2, 2)).astype(dtype)
    gx = F.avg_pool2d_backward(g, x, 2)
    expect = np.repeat(np.repeat(g.astype(np.float64), 2, axis=2), 2, axis=3) / 4
    close(gx, expect, dtype, "avg pool backward")
