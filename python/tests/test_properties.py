"""Property-based tests (hypothesis) of the functional ops against the NumPy references.

test_functional.py already has hypothesis tests of conv2d and pooling in float64 on contiguous
inputs. These add what it does not cover: both dtypes, non-contiguous inputs and `out=` for
conv2d and pooling (forward and backward), rectangular kernels with pooling padding up to
kernel_size // 2, and linear, correlate2d and convolve2d over random valid shapes and modes.
Settings come from the conftest's "swiftcnn" profile (deadline=None, 25 examples, derandomized).
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

import references as R
import swiftcnn.functional as F

REL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}
dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])


def check(actual, expected, dtype, what):
    assert isinstance(actual, np.ndarray), what
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}, expected {np.shape(expected)}"
    err = R.max_rel_diff(actual, expected)
    assert err <= REL[dtype], f"{what}: max|a-e|/max|e| = {err:.3g} > {REL[dtype]:g}"


def maybe_noncontiguous(a, flag):
    """The same values, as a non-C-contiguous view when flag (taken every other column of a copy)."""
    if not flag:
        return a
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]  # (C-contiguous anyway when empty or of width 1)


@st.composite
def conv_case(draw):
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 12))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 12))
    return dict(n=n, c=c, k=k, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                h=h, w=w, bias=draw(st.booleans()), dtype=draw(dtypes), noncontig=draw(st.booleans()),
                use_out=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@given(conv_case())
def test_conv2d_forward_and_backward_any_geometry_and_dtype(case):
    r = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    n, c, k, (kh, kw) = case["n"], case["c"], case["k"], case["kernel"]
    s, p, d = case["stride"], case["padding"], case["dilation"]
    x = r.standard_normal((n, c, case["h"], case["w"])).astype(dt)
    wt = r.standard_normal((k, c, kh, kw)).astype(dt)
    b = r.standard_normal(k).astype(dt) if case["bias"] else None
    xin = maybe_noncontiguous(x, case["noncontig"])
    ref = R.conv2d(x, wt, b, s, p, d)
    if case["use_out"]:
        out = np.full(ref.shape, np.nan, dt)
        y = F.conv2d(xin, wt, b, s, p, d, out=out)
        assert y is out
    else:
        y = F.conv2d(xin, wt, b, s, p, d)
    check(y, ref, dt, "conv2d")
    g = r.standard_normal(ref.shape).astype(dt)
    gx, gw, gb = F.conv2d_backward(maybe_noncontiguous(g, case["noncontig"]), xin, wt, s, p, d)
    rx, rw, rb = R.conv2d_backward(g, x, wt, s, p, d)
    check(gx, rx, dt, "grad_x")
    check(gw, rw, dt, "grad_weight")
    check(gb, rb, dt, "grad_bias")
    np.testing.assert_array_equal(x, np.asarray(xin))  # inputs unchanged


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    return dict(n=draw(st.integers(0, 3)), c=draw(st.integers(1, 4)), kernel=(kh, kw), stride=stride,
                padding=(ph, pw), h=draw(st.integers(max(1, kh - 2 * ph), 12)),
                w=draw(st.integers(max(1, kw - 2 * pw), 12)), dtype=draw(dtypes),
                noncontig=draw(st.booleans()), use_out=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@given(pool_case())
def test_pooling_forward_and_backward_any_geometry_and_dtype(case):
    r = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    k, s, p = case["kernel"], case["stride"], case["padding"]
    # distinct values: no ties, so max-pool's argmax is the same in float32 and the reference
    x = R.distinct_values(r, (case["n"], case["c"], case["h"], case["w"])).astype(dt)
    xin = maybe_noncontiguous(x, case["noncontig"])
    for fwd, bwd, rf, rb in [(F.max_pool2d, F.max_pool2d_backward, R.max_pool2d, R.max_pool2d_backward),
                             (F.avg_pool2d, F.avg_pool2d_backward, R.avg_pool2d, R.avg_pool2d_backward)]:
        ref = rf(x, k, s, p)
        if case["use_out"]:
            out = np.full(ref.shape, np.nan, dt)
            y = fwd(xin, k, s, p, out=out)
            assert y is out
        else:
            y = fwd(xin, k, s, p)
        check(y, ref, dt, fwd.__name__)
        g = r.standard_normal(ref.shape).astype(dt)
        check(bwd(g, xin, k, s, p), rb(g, x, k, s, p), dt, bwd.__name__)


@given(n=st.integers(0, 6), i=st.integers(1, 40), o=st.integers(1, 20), bias=st.booleans(), dtype=dtypes,
       noncontig=st.booleans(), use_out=st.booleans(), seed=st.integers(0, 2**31))
def test_linear_forward_and_backward_any_shape_and_dtype(n, i, o, bias, dtype, noncontig, use_out, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, i)).astype(dtype)
    w = r.standard_normal((o, i)).astype(dtype)
    b = r.standard_normal(o).astype(dtype) if bias else None
    ref = R.linear(x, w, b)
    xin = maybe_noncontiguous(x, noncontig)
    if use_out:
        out = np.full((n, o), np.nan, dtype)
        y = F.linear(xin, w, b, out=out)
        assert y is out
    else:
        y = F.linear(xin, maybe_noncontiguous(w, noncontig), b)
    check(y, ref, dtype, "linear")
    g = r.standard_normal((n, o)).astype(dtype)
    gx, gw, gb = F.linear_backward(maybe_noncontiguous(g, noncontig), xin, w)
    rx, rw, rb = R.linear_backward(g, x, w)
    check(gx, rx, dtype, "grad_x")
    check(gw, rw, dtype, "grad_weight")
    check(gb, rb, dtype, "grad_bias")


@st.composite
def signal_case(draw):
    mode = draw(st.sampled_from(["valid", "same", "full"]))
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    lo_h, lo_w = (kh, kw) if mode == "valid" else (1, 1)
    return dict(mode=mode, kernel=(kh, kw), h=draw(st.integers(lo_h, 14)), w=draw(st.integers(lo_w, 14)),
                dtype=draw(dtypes), noncontig=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@given(signal_case())
def test_correlate2d_and_convolve2d_any_shape_mode_and_dtype(case):
    r = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    img = r.standard_normal((case["h"], case["w"])).astype(dt)
    ker = r.standard_normal(case["kernel"]).astype(dt)
    mode = case["mode"]
    img_in = maybe_noncontiguous(img, case["noncontig"])
    check(F.correlate2d(img_in, ker, mode), R.correlate2d(img, ker, mode), dt, f"correlate2d {mode}")
    check(F.convolve2d(img_in, ker, mode), R.convolve2d(img, ker, mode), dt, f"convolve2d {mode}")
    # correlation with the rotated kernel is convolution (in "same" mode only for odd kernel sizes:
    # scipy centres the two differently for even ones)
    if mode != "same" or (ker.shape[0] % 2 and ker.shape[1] % 2):
        check(F.correlate2d(img, ker[::-1, ::-1], mode), R.convolve2d(img, ker, mode), dt, "rotated kernel")
