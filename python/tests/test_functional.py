"""Forward (and backward values) of every functional op vs the plain-NumPy references.

Tolerances: float64 results within 1e-10 of the float64 reference (relative to the result's scale);
float32 results within 1e-4 relative of the float64 results (API: "float32 vs float64 within 1e-4").
"""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

OPS = ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
       "avg_pool2d_backward", "linear", "linear_backward", "sigmoid", "sigmoid_backward", "relu",
       "relu_backward", "softmax", "softmax_cross_entropy", "binary_cross_entropy_with_logits",
       "correlate2d", "convolve2d"]

REL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def check(actual, expected, dtype, what=""):
    dtype = np.dtype(dtype)
    assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual).__name__}"
    assert actual.dtype == dtype, f"{what}: result dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}, expected {np.shape(expected)}"
    err = R.max_rel_diff(actual, expected)
    assert err <= REL[dtype], f"{what}: max|a-e|/max|e| = {err:.3g} > {REL[dtype]:g}"


@pytest.mark.parametrize("name", OPS)
def test_functional_ops_are_reexported_from_the_package(name):
    assert callable(getattr(F, name))
    assert getattr(swiftcnn, name) is getattr(F, name)


# ---------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------
CONV_CASES = [
    # (N, C, H, W, K, kH, kW, stride, padding, dilation, bias)
    (2, 3, 7, 6, 4, 3, 3, 1, 0, 1, True),
    (1, 1, 28, 28, 6, 5, 5, 1, 2, 1, True),          # the lecture's first layer
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, True),          # the lecture's second layer
    (3, 2, 9, 8, 3, 3, 2, 2, 1, 1, False),
    (2, 2, 10, 11, 3, 3, 3, (2, 3), (1, 2), (2, 1), True),
    (1, 3, 8, 8, 2, 1, 1, 1, 0, 1, True),             # 1x1 conv
    (2, 1, 5, 5, 1, 5, 5, 1, 0, 1, True),             # kernel == input: 1x1 output
    (1, 2, 6, 9, 2, 2, 4, 3, 2, 2, True),
    (2, 4, 5, 5, 3, 3, 3, 1, 1, 1, False),
]


def _conv_inputs(rng, case, dtype):
    n, c, h, w, k, kh, kw, stride, padding, dilation, bias = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, wt, b, stride, padding, dilation


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_reference(rng, dtype, case):
    x, w, b, s, p, d = _conv_inputs(rng, case, dtype)
    y = F.conv2d(x, w, b, s, p, d)
    check(y, R.conv2d(x, w, b, s, p, d), dtype, "conv2d")


def test_conv2d_reference_matches_the_formula_with_loops(rng):
    # The vectorised reference itself against API.md's formula, written as plain loops.
    x = rng.standard_normal((2, 2, 6, 7))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    for s, p, d in [(1, 0, 1), ((2, 1), (1, 2), (1, 2)), (3, 2, 2)]:
        np.testing.assert_allclose(R.conv2d(x, w, b, s, p, d), R.conv2d_loops(x, w, b, s, p, d), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(F.conv2d(x, w, b, s, p, d), R.conv2d_loops(x, w, b, s, p, d), rtol=1e-10,
                                   atol=1e-10)


def test_conv2d_random_geometries(rng, dtype):
    for _ in range(12):
        n, c, k = rng.integers(0, 3), rng.integers(1, 4), rng.integers(1, 4)
        kh, kw = rng.integers(1, 4, 2)
        sh, sw = rng.integers(1, 4, 2)
        ph, pw = rng.integers(0, 3, 2)
        dh, dw = rng.integers(1, 3, 2)
        h = int(max(1, dh * (kh - 1) + 1 - 2 * ph) + rng.integers(0, 6))
        w_ = int(max(1, dw * (kw - 1) + 1 - 2 * pw) + rng.integers(0, 6))
        x = rng.standard_normal((n, c, h, w_)).astype(dtype)
        w = rng.standard_normal((k, c, kh, kw)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        args = ((int(sh), int(sw)), (int(ph), int(pw)), (int(dh), int(dw)))
        y = F.conv2d(x, w, b, *args)
        check(y, R.conv2d(x, w, b, *args), dtype, f"conv2d {x.shape} {w.shape} {args}")


def test_conv2d_int_and_pair_arguments_agree(rng):
    x = rng.standard_normal((1, 2, 9, 9))
    w = rng.standard_normal((2, 2, 3, 3))
    a = F.conv2d(x, w, None, 2, 1, 2)
    b = F.conv2d(x, w, None, (2, 2), (1, 1), (2, 2))
    c = F.conv2d(x, w, stride=[2, 2], padding=[1, 1], dilation=[2, 2])
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_conv2d_keyword_arguments_and_defaults(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y = F.conv2d(x=x, weight=w)
    check(y, R.conv2d(x, w), np.float64, "conv2d defaults")
    assert y.shape == (2, 4, 4, 4)


def test_conv2d_output_size_formula(rng):
    # H_out = (H + 2*ph - dh*(kH-1) - 1) // sh + 1
    for h, k, s, p, d in [(28, 5, 1, 2, 1), (13, 3, 2, 0, 1), (13, 3, 2, 1, 2), (7, 7, 1, 0, 1), (10, 2, 3, 1, 3)]:
        y = F.conv2d(np.zeros((1, 1, h, h)), np.zeros((1, 1, k, k)), stride=s, padding=p, dilation=d)
        expect = (h + 2 * p - d * (k - 1) - 1) // s + 1
        assert y.shape == (1, 1, expect, expect)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_backward_matches_reference(rng, dtype, case):
    x, w, b, s, p, d = _conv_inputs(rng, case, dtype)
    y_shape = R.conv2d(x, w, None, s, p, d).shape
    g = rng.standard_normal(y_shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(g, x, w, s, p, d)
    rx, rw, rb = R.conv2d_backward(g, x, w, s, p, d)
    check(gx, rx, dtype, "grad_x")
    check(gw, rw, dtype, "grad_weight")
    check(gb, rb, dtype, "grad_bias")


def test_conv2d_backward_grad_bias_is_grad_out_summed(rng, dtype):
    g = rng.standard_normal((3, 5, 4, 4)).astype(dtype)
    x = rng.standard_normal((3, 2, 6, 6)).astype(dtype)
    w = rng.standard_normal((5, 2, 3, 3)).astype(dtype)
    _, _, gb = F.conv2d_backward(g, x, w)
    check(gb, g.astype(np.float64).sum(axis=(0, 2, 3)), dtype, "grad_bias")


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------
POOL_CASES = [
    # (shape, kernel_size, stride, padding)
    ((2, 3, 8, 8), 2, None, 0),
    ((1, 6, 28, 28), 2, None, 0),
    ((2, 2, 7, 9), 3, 2, 1),
    ((2, 2, 7, 9), (3, 2), (1, 2), (1, 1)),
    ((1, 3, 6, 6), 3, 1, 1),          # overlapping windows
    ((2, 1, 5, 7), (2, 3), None, 0),  # stride defaults to kernel_size (a pair)
    ((1, 2, 5, 5), 5, None, 2),
    ((3, 2, 4, 4), 1, None, 0),
    ((1, 1, 9, 4), (4, 1), (2, 1), (2, 0)),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_reference(rng, dtype, case):
    shape, k, s, p = case
    x = rng.standard_normal(shape).astype(dtype)
    check(F.max_pool2d(x, k, s, p), R.max_pool2d(x, k, s, p), dtype, "max_pool2d")


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_matches_reference(rng, dtype, case):
    shape, k, s, p = case
    x = rng.standard_normal(shape).astype(dtype)
    check(F.avg_pool2d(x, k, s, p), R.avg_pool2d(x, k, s, p), dtype, "avg_pool2d")


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_backward_matches_reference(rng, dtype, case):
    shape, k, s, p = case
    x = R.distinct_values(rng, shape).astype(dtype)
    g = rng.standard_normal(R.max_pool2d(x, k, s, p).shape).astype(dtype)
    check(F.max_pool2d_backward(g, x, k, s, p), R.max_pool2d_backward(g, x, k, s, p), dtype, "max_pool2d_backward")


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_backward_matches_reference(rng, dtype, case):
    shape, k, s, p = case
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(R.avg_pool2d(x, k, s, p).shape).astype(dtype)
    check(F.avg_pool2d_backward(g, x, k, s, p), R.avg_pool2d_backward(g, x, k, s, p), dtype, "avg_pool2d_backward")


def test_pool_stride_defaults_to_kernel_size(rng):
    x = rng.standard_normal((2, 2, 9, 9))
    assert np.array_equal(F.max_pool2d(x, 3), F.max_pool2d(x, 3, 3))
    assert np.array_equal(F.avg_pool2d(x, (3, 2)), F.avg_pool2d(x, (3, 2), (3, 2)))
    assert np.array_equal(F.max_pool2d(x, 3, None, 1), F.max_pool2d(x, 3, 3, 1))
    g = rng.standard_normal((2, 2, 3, 3))
    assert np.array_equal(F.max_pool2d_backward(g, x, 3), F.max_pool2d_backward(g, x, 3, 3))
    assert np.array_equal(F.avg_pool2d_backward(g, x, 3), F.avg_pool2d_backward(g, x, 3, 3))


def test_max_pool2d_padding_counts_as_minus_infinity(dtype):
    # An all-negative input: if padding counted as 0, border windows would give 0.
    x = -np.arange(1, 17, dtype=dtype).reshape(1, 1, 4, 4)
    y = F.max_pool2d(x, 3, 1, 1)
    check(y, R.max_pool2d(x, 3, 1, 1), dtype, "max_pool2d")
    assert (y < 0).all()


def test_avg_pool2d_padded_zeros_count_in_the_divisor(dtype):
    x = np.ones((1, 1, 2, 2), dtype=dtype)
    y = F.avg_pool2d(x, 2, 1, 1)  # each corner window holds one 1 and three padded zeros
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == pytest.approx(0.25)
    assert y[0, 0, 1, 1] == pytest.approx(1.0)
    assert y[0, 0, 0, 1] == pytest.approx(0.5)


def test_max_pool2d_backward_ties_go_to_the_first_maximum_in_row_major_order(dtype):
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    g = np.ones((1, 1, 2, 2), dtype=dtype)
    gx = F.max_pool2d_backward(g, x, 2)
    expect = np.zeros((4, 4))
    expect[0, 0] = expect[0, 2] = expect[2, 0] = expect[2, 2] = 1
    np.testing.assert_array_equal(gx[0, 0], expect)
    # A tie between (0,1) and (1,0): the row-major first is (0,1).
    x = np.array([[[[0, 5], [5, 1]]]], dtype=dtype)
    gx = F.max_pool2d_backward(np.array([[[[3.0]]]], dtype=dtype), x, 2)
    np.testing.assert_array_equal(gx[0, 0], [[0, 3], [0, 0]])


def test_max_pool2d_backward_overlapping_windows_accumulate(dtype):
    # 3x3 windows, stride 1, padding 1 over a 4x4 plane of zeros (all ties) -> each window's
    # gradient goes to its first (top-left-most) real element; counts accumulate.
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    g = np.ones((1, 1, 4, 4), dtype=dtype)
    gx = F.max_pool2d_backward(g, x, 3, 1, 1)
    np.testing.assert_array_equal(gx[0, 0], R.max_pool2d_backward(g, x, 3, 1, 1)[0, 0])
    assert gx.sum() == 16
    # A single global maximum collects the gradient of every window that contains it.
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 1, 1] = 1
    gx = F.max_pool2d_backward(g, x, 3, 1, 1)
    assert gx[0, 0, 1, 1] == 9  # windows centred at rows 0..2 x cols 0..2


# ---------------------------------------------------------------------------------------------
# linear, activations, softmax, losses
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,i,o,bias", [(4, 5, 3, True), (1, 400, 120, True), (7, 3, 9, False), (0, 4, 2, True)])
def test_linear_matches_reference(rng, dtype, n, i, o, bias):
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    check(F.linear(x, w, b), R.linear(x, w, b), dtype, "linear")
    g = rng.standard_normal((n, o)).astype(dtype)
    gx, gw, gb = F.linear_backward(g, x, w)
    rx, rw, rb = R.linear_backward(g, x, w)
    check(gx, rx, dtype, "grad_x")
    check(gw, rw, dtype, "grad_weight")
    check(gb, rb, dtype, "grad_bias")


def test_sigmoid_and_relu_match_reference(rng, dtype):
    x = (rng.standard_normal((3, 4, 5, 6)) * 5).astype(dtype)
    y = F.sigmoid(x)
    check(y, R.sigmoid(x), dtype, "sigmoid")
    check(F.relu(x), R.relu(x), dtype, "relu")
    g = rng.standard_normal(x.shape).astype(dtype)
    yd = y.astype(np.float64)
    check(F.sigmoid_backward(g, y), g * yd * (1 - yd), dtype, "sigmoid_backward")
    check(F.relu_backward(g, x), g * (x > 0), dtype, "relu_backward")


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4), (1, 2, 3, 4), (2, 1, 2, 1, 2)])
def test_elementwise_ops_keep_any_shape(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    for op, ref in [(F.sigmoid, R.sigmoid), (F.relu, R.relu)]:
        check(op(x), ref(x), dtype, op.__name__)


def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = np.array([-1e4, -800, -100, -30, 0, 30, 100, 800, 1e4], dtype=dtype)
    y = F.sigmoid(x)
    assert np.isfinite(y).all()
    assert ((y >= 0) & (y <= 1)).all()
    check(y, R.sigmoid(x), dtype, "sigmoid")
    assert y[0] == 0 or y[0] < 1e-30
    assert y[-1] == 1


def test_softmax_matches_reference_and_is_stable(rng, dtype):
    z = (rng.standard_normal((5, 7)) * 3).astype(dtype)
    p = F.softmax(z)
    check(p, R.softmax(z), dtype, "softmax")
    big = np.array([[1000, 1001, 999], [-1000, -1001, -999], [0, 0, 0]], dtype=dtype)
    pb = F.softmax(big)
    assert np.isfinite(pb).all()
    check(pb, R.softmax(big), dtype, "softmax large logits")
    np.testing.assert_allclose(pb.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                         np.uint32, np.uint64])
def test_softmax_cross_entropy_with_labels(rng, dtype, label_dtype):
    z = (rng.standard_normal((6, 5)) * 2).astype(dtype)
    y = rng.integers(0, 5, 6).astype(label_dtype)
    loss, g = F.softmax_cross_entropy(z, y)
    rl, rg = R.softmax_cross_entropy(z, y)
    assert type(loss) is float
    assert loss == pytest.approx(rl, rel=REL[dtype])
    check(g, rg, dtype, "grad_logits")


def test_softmax_cross_entropy_with_probability_targets(rng, dtype):
    z = (rng.standard_normal((4, 3)) * 2).astype(dtype)
    t = rng.dirichlet(np.ones(3), size=4).astype(dtype)
    loss, g = F.softmax_cross_entropy(z, t)
    rl, rg = R.softmax_cross_entropy(z, t)
    assert type(loss) is float
    assert loss == pytest.approx(rl, rel=REL[dtype])
    check(g, rg, dtype, "grad_logits")
    # Rows that do not sum to 1: the gradient is PyTorch's, (softmax * sum(t) - t) / N.
    t2 = (rng.random((4, 3)) * 2).astype(dtype)
    loss2, g2 = F.softmax_cross_entropy(z, t2)
    rl2, rg2 = R.softmax_cross_entropy(z, t2)
    assert loss2 == pytest.approx(rl2, rel=REL[dtype])
    check(g2, rg2, dtype, "grad_logits (unnormalised targets)")


def test_softmax_cross_entropy_is_stable_for_large_logits(dtype):
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]], dtype=dtype)
    loss, g = F.softmax_cross_entropy(z, np.array([2, 1]))
    assert np.isfinite(loss) and np.isfinite(g).all()
    rl, rg = R.softmax_cross_entropy(z, np.array([2, 1]))
    assert loss == pytest.approx(rl, rel=1e-6)
    check(g, rg, dtype, "grad_logits")


def test_binary_cross_entropy_with_logits(rng, dtype):
    for shape in [(5,), (4, 3), (2, 3, 4)]:
        z = (rng.standard_normal(shape) * 3).astype(dtype)
        t = rng.random(shape).astype(dtype)
        loss, g = F.binary_cross_entropy_with_logits(z, t)
        rl, rg = R.bce_with_logits(z, t)
        assert type(loss) is float
        assert loss == pytest.approx(rl, rel=REL[dtype])
        check(g, rg, dtype, "grad_logits")


def test_binary_cross_entropy_with_logits_is_stable(dtype):
    z = np.array([-1e4, -100.0, -40.0, 40.0, 100.0, 1e4], dtype=dtype)
    t = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=dtype)
    loss, g = F.binary_cross_entropy_with_logits(z, t)
    rl, rg = R.bce_with_logits(z, t)
    assert np.isfinite(loss) and np.isfinite(g).all()
    assert loss == pytest.approx(rl, rel=1e-6)
    check(g, rg, dtype, "grad_logits")


def test_losses_of_an_empty_batch_are_nan(dtype):
    loss, g = F.softmax_cross_entropy(np.zeros((0, 3), dtype), np.zeros(0, np.int64))
    assert np.isnan(loss) and g.shape == (0, 3) and g.dtype == dtype
    loss, g = F.softmax_cross_entropy(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert np.isnan(loss) and g.shape == (0, 3)
    loss, g = F.binary_cross_entropy_with_logits(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert np.isnan(loss) and g.shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# correlate2d / convolve2d (scipy.signal semantics)
# ---------------------------------------------------------------------------------------------
SIGNAL_SHAPES = [((5, 5), (3, 3)), ((6, 4), (2, 3)), ((7, 8), (4, 4)), ((3, 3), (3, 3)), ((4, 6), (1, 1)),
                 ((5, 3), (5, 1)), ((2, 2), (3, 4)), ((1, 1), (2, 2))]


SIGNAL_CASES = [(s, m) for s in SIGNAL_SHAPES for m in ("valid", "same", "full")
                if not (m == "valid" and (s[1][0] > s[0][0] or s[1][1] > s[0][1]))]  # that is an error


@pytest.mark.parametrize("shapes,mode", SIGNAL_CASES)
def test_correlate2d_and_convolve2d_match_reference(rng, dtype, shapes, mode):
    ishape, kshape = shapes
    a = rng.standard_normal(ishape).astype(dtype)
    k = rng.standard_normal(kshape).astype(dtype)
    check(F.correlate2d(a, k, mode), R.correlate2d(a, k, mode), dtype, f"correlate2d {mode}")
    check(F.convolve2d(a, k, mode), R.convolve2d(a, k, mode), dtype, f"convolve2d {mode}")


def test_signal_default_mode_is_valid(rng):
    a = rng.standard_normal((6, 6))
    k = rng.standard_normal((3, 2))
    assert F.correlate2d(a, k).shape == (4, 5)
    assert np.array_equal(F.correlate2d(a, k), F.correlate2d(a, k, "valid"))
    assert np.array_equal(F.convolve2d(a, k), F.convolve2d(a, k, mode="valid"))


def test_signal_references_match_scipy(rng):
    signal = pytest.importorskip("scipy.signal")
    for ishape, kshape in SIGNAL_SHAPES:
        a = rng.standard_normal(ishape)
        k = rng.standard_normal(kshape)
        for mode in ["same", "full"] + (["valid"] if kshape[0] <= ishape[0] and kshape[1] <= ishape[1] else []):
            np.testing.assert_allclose(R.correlate2d(a, k, mode), signal.correlate2d(a, k, mode), atol=1e-12)
            np.testing.assert_allclose(R.convolve2d(a, k, mode), signal.convolve2d(a, k, mode), atol=1e-12)
            np.testing.assert_allclose(F.correlate2d(a, k, mode), signal.correlate2d(a, k, mode), atol=1e-10)
            np.testing.assert_allclose(F.convolve2d(a, k, mode), signal.convolve2d(a, k, mode), atol=1e-10)


def test_correlate2d_is_conv2d_of_one_channel(rng, dtype):
    a = rng.standard_normal((9, 7)).astype(dtype)
    k = rng.standard_normal((3, 4)).astype(dtype)
    c = F.correlate2d(a, k, "valid")
    y = F.conv2d(a[None, None], k[None, None])
    check(c, y[0, 0].astype(np.float64), dtype, "correlate2d vs conv2d")
    f = F.correlate2d(a, k, "full")
    yf = F.conv2d(a[None, None], k[None, None], padding=(2, 3))
    check(f, yf[0, 0].astype(np.float64), dtype, "full correlate2d vs padded conv2d")


# ---------------------------------------------------------------------------------------------
# float32 vs float64, dtypes of results, conversions
# ---------------------------------------------------------------------------------------------
def _all_op_calls(rng):
    """(name, callable(dtype) -> tuple of arrays) covering every op."""
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3)) * 0.3
    b = rng.standard_normal(4)
    gconv = rng.standard_normal((2, 4, 4, 4))
    xp = R.distinct_values(rng, (2, 3, 8, 8))
    gpool = rng.standard_normal((2, 3, 4, 4))
    xl = rng.standard_normal((5, 6))
    wl = rng.standard_normal((3, 6))
    bl = rng.standard_normal(3)
    gl = rng.standard_normal((5, 3))
    z = rng.standard_normal((5, 4)) * 2
    lab = rng.integers(0, 4, 5)
    t = rng.random((5, 4))
    img = rng.standard_normal((6, 7))
    ker = rng.standard_normal((3, 2))

    def c(a, dt):
        return a.astype(dt)

    return [
        ("conv2d", lambda dt: (F.conv2d(c(x, dt), c(w, dt), c(b, dt), 2, 1, 1),)),
        ("conv2d_backward", lambda dt: F.conv2d_backward(c(gconv, dt), c(x, dt), c(w, dt), 2, 1, 1)),
        ("max_pool2d", lambda dt: (F.max_pool2d(c(xp, dt), 2),)),
        ("max_pool2d_backward", lambda dt: (F.max_pool2d_backward(c(gpool, dt), c(xp, dt), 2),)),
        ("avg_pool2d", lambda dt: (F.avg_pool2d(c(x, dt), 3, 2, 1),)),
        ("avg_pool2d_backward", lambda dt: (F.avg_pool2d_backward(c(gpool, dt), c(x, dt), 3, 2, 1),)),
        ("linear", lambda dt: (F.linear(c(xl, dt), c(wl, dt), c(bl, dt)),)),
        ("linear_backward", lambda dt: F.linear_backward(c(gl, dt), c(xl, dt), c(wl, dt))),
        ("sigmoid", lambda dt: (F.sigmoid(c(x, dt)),)),
        ("sigmoid_backward", lambda dt: (F.sigmoid_backward(c(gconv, dt), c(R.sigmoid(gconv * 3), dt)),)),
        ("relu", lambda dt: (F.relu(c(x, dt)),)),
        ("relu_backward", lambda dt: (F.relu_backward(c(gconv, dt), c(gconv * 2 + 0.1, dt)),)),
        ("softmax", lambda dt: (F.softmax(c(z, dt)),)),
        ("softmax_cross_entropy", lambda dt: (np.array(F.softmax_cross_entropy(c(z, dt), lab)[0]),
                                              F.softmax_cross_entropy(c(z, dt), lab)[1])),
        ("softmax_cross_entropy_probs", lambda dt: F.softmax_cross_entropy(c(z, dt), c(t, dt))[1:]),
        ("binary_cross_entropy_with_logits", lambda dt: (np.array(F.binary_cross_entropy_with_logits(c(z, dt), c(t, dt))[0]),
                                                         F.binary_cross_entropy_with_logits(c(z, dt), c(t, dt))[1])),
        ("correlate2d", lambda dt: tuple(F.correlate2d(c(img, dt), c(ker, dt), m) for m in ("valid", "same", "full"))),
        ("convolve2d", lambda dt: tuple(F.convolve2d(c(img, dt), c(ker, dt), m) for m in ("valid", "same", "full"))),
    ]


def test_float32_agrees_with_float64_within_1e_4(rng):
    for name, call in _all_op_calls(rng):
        r32 = call(np.float32)
        r64 = call(np.float64)
        assert len(r32) == len(r64)
        for a, b in zip(r32, r64):
            a = np.asarray(a)
            b = np.asarray(b)
            if a.ndim:  # arrays keep their operands' dtype
                assert a.dtype == np.float32 and b.dtype == np.float64, name
            err = R.max_rel_diff(a, b)
            assert err <= 1e-4, f"{name}: float32 vs float64 max rel diff {err:.3g}"


def test_results_are_deterministic_run_to_run(rng):
    for name, call in _all_op_calls(rng):
        for dt in (np.float32, np.float64):
            a = call(dt)
            b = call(dt)
            for u, v in zip(a, b):
                assert np.array_equal(u, v), f"{name} ({np.dtype(dt)}) is not deterministic"


def test_lists_default_to_float64_and_take_the_ndarray_dtype(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    w = rng.standard_normal((1, 1, 2, 2))
    y = F.conv2d(x.tolist(), w.tolist())
    assert y.dtype == np.float64
    check(y, R.conv2d(x, w), np.float64, "conv2d of lists")
    y32 = F.conv2d(x.tolist(), w.astype(np.float32))
    assert y32.dtype == np.float32
    assert F.sigmoid([0.0, 1.0]).dtype == np.float64
    assert F.relu([[1, -2], [3, -4]]).dtype == np.float64  # a list of ints is a list, not an int array
    lin = F.linear([[1.0, 2.0]], np.ones((3, 2), np.float32), [0.5, 0.5, 0.5])
    assert lin.dtype == np.float32
    np.testing.assert_allclose(lin, [[3.5, 3.5, 3.5]])
    loss, g = F.softmax_cross_entropy([[1.0, 2.0, 3.0]], np.array([2]))
    assert g.dtype == np.float64
    assert loss == pytest.approx(R.softmax_cross_entropy(np.array([[1.0, 2.0, 3.0]]), [2])[0])


def test_results_are_new_arrays_that_later_calls_never_overwrite(rng, dtype):
    x1 = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    x2 = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    for op in (lambda x: F.conv2d(x, w), lambda x: F.max_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2),
               F.sigmoid, F.relu, lambda x: F.conv2d_backward(F.conv2d(x, w), x, w)[1]):
        y1 = op(x1)
        keep = y1.copy()
        y2 = op(x2)
        assert not np.shares_memory(y1, y2)
        assert not np.shares_memory(y1, x1)
        assert np.array_equal(y1, keep)


# ---------------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------------
def test_out_is_written_and_returned(rng, dtype):
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    xl = rng.standard_normal((5, 6)).astype(dtype)
    wl = rng.standard_normal((2, 6)).astype(dtype)
    cases = [
        (lambda out: F.conv2d(x, w, b, 1, 1, out=out), R.conv2d(x, w, b, 1, 1)),
        (lambda out: F.max_pool2d(x, 2, out=out), R.max_pool2d(x, 2)),
        (lambda out: F.avg_pool2d(x, 3, 1, 1, out=out), R.avg_pool2d(x, 3, 1, 1)),
        (lambda out: F.linear(xl, wl, None, out=out), R.linear(xl, wl)),
        (lambda out: F.sigmoid(x, out=out), R.sigmoid(x)),
        (lambda out: F.relu(x, out=out), R.relu(x)),
    ]
    for call, ref in cases:
        out = np.full(ref.shape, np.nan, dtype=dtype)
        res = call(out)
        assert res is out
        check(out, ref, dtype, "out=")


@pytest.mark.parametrize("op", ["sigmoid", "relu"])
def test_out_may_be_the_input_for_sigmoid_and_relu(rng, dtype, op):
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(dtype)
    expect = getattr(R, op)(x)
    res = getattr(F, op)(x, out=x)
    assert res is x
    check(x, expect, dtype, f"{op} in place")


def test_out_equals_the_result_without_out(rng, dtype):
    x = rng.standard_normal((2, 2, 7, 7)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    out = np.empty((2, 3, 3, 3), dtype=dtype)
    F.conv2d(x, w, None, 2, 0, 1, out=out)
    assert np.array_equal(out, F.conv2d(x, w, None, 2, 0, 1))


# ---------------------------------------------------------------------------------------------
# threads setting
# ---------------------------------------------------------------------------------------------
def test_num_threads_default_is_the_number_of_cores(run_python):
    import os

    res = run_python("""
        import os, swiftcnn
        print(swiftcnn.get_num_threads())
    """)
    assert res.returncode == 0, res.stderr
    n = int(res.stdout.strip().splitlines()[-1])
    candidates = {os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        candidates.add(len(os.sched_getaffinity(0)))
    assert n in candidates


def test_set_num_threads_changes_the_count_and_results_stay_correct(rng):
    x = rng.standard_normal((4, 3, 12, 12))
    w = rng.standard_normal((5, 3, 3, 3))
    old = swiftcnn.get_num_threads()
    try:
        for n in (1, 2, 3, 7, 16):
            swiftcnn.set_num_threads(n)
            assert swiftcnn.get_num_threads() == n
            check(F.conv2d(x, w, None, 1, 1), R.conv2d(x, w, None, 1, 1), np.float64, f"{n} threads")
            a = F.conv2d_backward(F.conv2d(x, w), x, w)
            b = F.conv2d_backward(F.conv2d(x, w), x, w)
            assert all(np.array_equal(u, v) for u, v in zip(a, b)), f"not deterministic with {n} threads"
        with pytest.raises(ValueError):
            swiftcnn.set_num_threads(0)
        assert swiftcnn.get_num_threads() == 16
    finally:
        swiftcnn.set_num_threads(old)
    assert swiftcnn.get_num_threads() == old


# ---------------------------------------------------------------------------------------------
# hypothesis: shapes of conv2d / pooling vs the reference
# ---------------------------------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402


@st.composite
def conv_problem(draw):
    n = draw(st.integers(0, 2))
    c = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    return n, c, k, (kh, kw), (sh, sw), (ph, pw), (dh, dw), h, w, bias, seed


@given(conv_problem())
def test_property_conv2d_shape_and_values(problem):
    n, c, k, (kh, kw), s, p, d, h, w, bias, seed = problem
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w))
    wt = r.standard_normal((k, c, kh, kw))
    b = r.standard_normal(k) if bias else None
    y = F.conv2d(x, wt, b, s, p, d)
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    assert y.shape == (n, k, ho, wo)
    check(y, R.conv2d(x, wt, b, s, p, d), np.float64, "conv2d")
    g = r.standard_normal(y.shape)
    gx, gw, gb = F.conv2d_backward(g, x, wt, s, p, d)
    rx, rw, rb = R.conv2d_backward(g, x, wt, s, p, d)
    check(gx, rx, np.float64, "grad_x")
    check(gw, rw, np.float64, "grad_weight")
    check(gb, rb, np.float64, "grad_bias")


@st.composite
def pool_problem(draw):
    n = draw(st.integers(0, 2))
    c = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    seed = draw(st.integers(0, 2**31))
    return n, c, (kh, kw), stride, (ph, pw), h, w, seed


@given(pool_problem())
def test_property_pooling_shape_and_values(problem):
    n, c, k, stride, p, h, w, seed = problem
    r = np.random.default_rng(seed)
    x = R.distinct_values(r, (n, c, h, w))
    s = k if stride is None else stride
    ho = (h + 2 * p[0] - k[0]) // s[0] + 1
    wo = (w + 2 * p[1] - k[1]) // s[1] + 1
    for fwd, bwd, rf, rb in [(F.max_pool2d, F.max_pool2d_backward, R.max_pool2d, R.max_pool2d_backward),
                             (F.avg_pool2d, F.avg_pool2d_backward, R.avg_pool2d, R.avg_pool2d_backward)]:
        y = fwd(x, k, stride, p)
        assert y.shape == (n, c, ho, wo)
        check(y, rf(x, k, stride, p), np.float64, fwd.__name__)
        g = r.standard_normal(y.shape)
        check(bwd(g, x, k, stride, p), rb(g, x, k, stride, p), np.float64, bwd.__name__)


# ---------------------------------------------------------------------------------------------
# sizes that stress blocking/packing edges and long float32 reductions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,h,w,k,kh,kw", [(3, 3, 13, 11, 37, 5, 5), (1, 17, 9, 10, 33, 3, 3),
                                             (5, 1, 31, 29, 7, 7, 7), (2, 64, 6, 6, 65, 1, 1)])
def test_conv2d_odd_sizes(rng, dtype, n, c, h, w, k, kh, kw):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = F.conv2d(x, wt, b, 1, kh // 2)
    check(y, R.conv2d(x, wt, b, 1, kh // 2), dtype, "conv2d")
    g = rng.standard_normal(y.shape).astype(dtype)
    for a, r, name in zip(F.conv2d_backward(g, x, wt, 1, kh // 2), R.conv2d_backward(g, x, wt, 1, kh // 2),
                          ["grad_x", "grad_weight", "grad_bias"]):
        check(a, r, dtype, name)


@pytest.mark.parametrize("n,i,o", [(17, 257, 65), (1, 1, 1), (33, 5, 129), (64, 400, 120), (3, 1000, 3)])
def test_linear_odd_sizes(rng, dtype, n, i, o):
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    check(F.linear(x, w, b), R.linear(x, w, b), dtype, "linear")
    g = rng.standard_normal((n, o)).astype(dtype)
    for a, r, name in zip(F.linear_backward(g, x, w), R.linear_backward(g, x, w), ["grad_x", "grad_weight",
                                                                                  "grad_bias"]):
        check(a, r, dtype, name)


def test_float32_long_reductions_stay_within_1e_4(rng):
    # grad_weight / grad_bias of the lecture's first layer over a batch of 128 sums 100k products.
    x = rng.random((128, 1, 28, 28))
    w = rng.standard_normal((6, 1, 5, 5)) * 0.2
    g = rng.standard_normal((128, 6, 28, 28)) * 1e-3 + 1e-3  # same-signed-ish: no cancellation
    r64 = F.conv2d_backward(g, x, w, 1, 2)
    r32 = F.conv2d_backward(g.astype(np.float32), x.astype(np.float32), w.astype(np.float32), 1, 2)
    for a, b, name in zip(r32, r64, ["grad_x", "grad_weight", "grad_bias"]):
        err = R.max_rel_diff(a, b)
        assert err <= 1e-4, f"{name}: float32 vs float64 {err:.3g}"
    xl = rng.random((256, 400)).astype(np.float32)
    gl = (rng.random((256, 120)) * 1e-2).astype(np.float32)
    wl = rng.standard_normal((120, 400)).astype(np.float32)
    for a, b in zip(F.linear_backward(gl, xl, wl), R.linear_backward(gl, xl, wl)):
        assert R.max_rel_diff(a, b) <= 1e-4
