"""The depthwise convolution kernels (groups == in_channels == out_channels, stride 1, no dilation:
Sources/SwiftCNN/Kernels/DepthwiseConv.swift) through the Python API: float64 gradients against
central finite differences, PyTorch float64 parity, float32 against float64, and the same bits on 1
and 2 threads (each output summed by one fixed chain whatever thread runs it)."""
import numpy as np
import pytest

import swiftcnn as S
import swiftcnn.functional as F

CASES = [  # (N, C, H, W, k, padding)
    (2, 5, 9, 11, 3, 1),
    (2, 3, 6, 35, 5, 2),     # a 32-wide block and a partial one
    (1, 2, 5, 6, 2, 3),      # padding beyond the kernel span
    (2, 8, 32, 32, 3, 1),    # the benchmark's layer, smaller batch and channel count
]


def _inputs(rng, N, C, H, W, k, dtype=np.float64):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, 1, k, k)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("N, C, H, W, k, pad", CASES[:3])
def test_depthwise_gradients_match_finite_differences(rng, N, C, H, W, k, pad):
    x, w, b = _inputs(rng, N, C, H, W, k)
    y = F.conv2d(x, w, b, padding=pad, groups=C)
    r = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv2d_backward(r, x, w, padding=pad, groups=C)

    def f(xx, ww, bb):
        return float(np.sum(F.conv2d(xx, ww, bb, padding=pad, groups=C) * r))

    eps = 1e-6
    for arr, analytic in ((x, gx), (w, gw), (b, gb)):
        numeric = np.zeros_like(arr)
        flat, nflat = arr.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = f(x, w, b)
            flat[i] = saved - eps
            minus = f(x, w, b)
            flat[i] = saved
            nflat[i] = (plus - minus) / (2 * eps)
        assert np.max(np.abs(analytic - numeric)) / np.max(np.abs(numeric)) <= 1e-7


@pytest.mark.parametrize("N, C, H, W, k, pad", CASES)
def test_depthwise_matches_torch_float64_and_float32(torch, rng, N, C, H, W, k, pad):
    x, w, b = _inputs(rng, N, C, H, W, k)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=pad, groups=C)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(g))
    y = F.conv2d(x, w, b, padding=pad, groups=C)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(F.conv2d_backward(g, x, w, padding=pad, groups=C), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-11, atol=1e-11)
    y32 = F.conv2d(*(a.astype(np.float32) for a in (x, w, b)), padding=pad, groups=C)
    assert np.max(np.abs(y32 - y)) / np.max(np.abs(y)) <= 1e-5


def test_depthwise_same_bits_on_one_and_two_threads(rng):
    x, w, b = _inputs(rng, *CASES[3][:5], dtype=np.float32)
    g = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    saved = S.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            S.set_num_threads(threads)
            results.append((F.conv2d(x, w, b, padding=1, groups=8), *F.conv2d_backward(g, x, w, padding=1, groups=8)))
    finally:
        S.set_num_threads(saved)
    for a, c in zip(*results):
        assert np.array_equal(a, c)
