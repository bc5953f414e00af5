"""Every backward vs NumPy central finite differences, in float64.

Criterion (per tensor): max|analytic - numeric| / max|numeric| <= 1e-7, with eps = 1e-6 and the
scalar f = sum(op(inputs) * R) for a fixed standard-normal R (losses are scalars already). Inputs
are kept away from ReLU kinks (|x| >= 1e-2) and max-pool ties (values spaced 1e-2 apart), so an
eps-perturbation never crosses a non-differentiable point.
"""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

TOL = 1e-7
EPS = 1e-6


def assert_grad(analytic, numeric, what):
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} vs {numeric.shape}"
    assert analytic.dtype == np.float64, f"{what}: dtype {analytic.dtype}"
    err = R.grad_rel_error(analytic, numeric)
    assert np.max(np.abs(numeric)) > 0, f"{what}: degenerate check, numeric gradient is all zeros"
    assert err <= TOL, f"{what}: max|a-n|/max|n| = {err:.3g} > {TOL:g}"


CONV = [
    # (x shape, w shape, stride, padding, dilation)
    ((2, 2, 6, 5), (3, 2, 3, 3), 1, 0, 1),
    ((1, 3, 7, 7), (2, 3, 3, 3), 2, 1, 1),
    ((2, 1, 8, 9), (2, 1, 3, 2), (2, 1), (1, 2), (2, 3)),
    ((1, 2, 5, 5), (2, 2, 5, 5), 1, 2, 1),
    ((1, 1, 6, 6), (1, 1, 1, 1), 3, 0, 1),
]


@pytest.mark.parametrize("case", CONV)
def test_conv2d_backward_vs_finite_differences(rng, case):
    xs, ws, s, p, d = case
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    y = F.conv2d(x, w, b, s, p, d)
    Rm = rng.standard_normal(y.shape)

    def f():
        return float(np.sum(F.conv2d(x, w, b, s, p, d) * Rm))

    gx, gw, gb = F.conv2d_backward(Rm, x, w, s, p, d)
    assert_grad(gx, R.numeric_grad(f, x, EPS), "grad_x")
    assert_grad(gw, R.numeric_grad(f, w, EPS), "grad_weight")
    assert_grad(gb, R.numeric_grad(f, b, EPS), "grad_bias")


POOL = [
    ((2, 2, 6, 6), 2, None, 0),
    ((1, 2, 7, 5), 3, 2, 1),
    ((1, 1, 6, 6), 3, 1, 1),            # overlapping windows accumulate
    ((2, 1, 5, 8), (2, 3), (1, 2), (1, 1)),
]


@pytest.mark.parametrize("case", POOL)
def test_max_pool2d_backward_vs_finite_differences(rng, case):
    shape, k, s, p = case
    x = R.distinct_values(rng, shape)
    Rm = rng.standard_normal(F.max_pool2d(x, k, s, p).shape)

    def f():
        return float(np.sum(F.max_pool2d(x, k, s, p) * Rm))

    assert_grad(F.max_pool2d_backward(Rm, x, k, s, p), R.numeric_grad(f, x, EPS), "max_pool2d grad_x")


@pytest.mark.parametrize("case", POOL + [((1, 2, 5, 5), 4, 1, 2)])
def test_avg_pool2d_backward_vs_finite_differences(rng, case):
    shape, k, s, p = case
    x = rng.standard_normal(shape)
    Rm = rng.standard_normal(F.avg_pool2d(x, k, s, p).shape)

    def f():
        return float(np.sum(F.avg_pool2d(x, k, s, p) * Rm))

    assert_grad(F.avg_pool2d_backward(Rm, x, k, s, p), R.numeric_grad(f, x, EPS), "avg_pool2d grad_x")


def test_linear_backward_vs_finite_differences(rng):
    x = rng.standard_normal((4, 7))
    w = rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    Rm = rng.standard_normal((4, 5))

    def f():
        return float(np.sum(F.linear(x, w, b) * Rm))

    gx, gw, gb = F.linear_backward(Rm, x, w)
    assert_grad(gx, R.numeric_grad(f, x, EPS), "grad_x")
    assert_grad(gw, R.numeric_grad(f, w, EPS), "grad_weight")
    assert_grad(gb, R.numeric_grad(f, b, EPS), "grad_bias")


def test_sigmoid_backward_vs_finite_differences(rng):
    x = rng.standard_normal((2, 3, 4)) * 2
    Rm = rng.standard_normal(x.shape)

    def f():
        return float(np.sum(F.sigmoid(x) * Rm))

    assert_grad(F.sigmoid_backward(Rm, F.sigmoid(x)), R.numeric_grad(f, x, EPS), "sigmoid grad_x")


def test_relu_backward_vs_finite_differences(rng):
    x = R.away_from_zero(rng, (3, 2, 5))
    Rm = rng.standard_normal(x.shape)

    def f():
        return float(np.sum(F.relu(x) * Rm))

    assert_grad(F.relu_backward(Rm, x), R.numeric_grad(f, x, EPS), "relu grad_x")


def test_softmax_cross_entropy_grad_vs_finite_differences(rng):
    z = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)

    def f():
        return F.softmax_cross_entropy(z, labels)[0]

    assert_grad(F.softmax_cross_entropy(z, labels)[1], R.numeric_grad(f, z, EPS), "grad_logits (labels)")
    t = rng.random((5, 4)) * 1.5  # rows need not sum to 1

    def fp():
        return F.softmax_cross_entropy(z, t)[0]

    assert_grad(F.softmax_cross_entropy(z, t)[1], R.numeric_grad(fp, z, EPS), "grad_logits (probabilities)")


def test_binary_cross_entropy_with_logits_grad_vs_finite_differences(rng):
    z = rng.standard_normal((3, 4)) * 3
    t = rng.random((3, 4))

    def f():
        return F.binary_cross_entropy_with_logits(z, t)[0]

    assert_grad(F.binary_cross_entropy_with_logits(z, t)[1], R.numeric_grad(f, z, EPS), "grad_logits")


def test_correlate2d_full_is_the_adjoint_of_valid(rng):
    # <correlate2d(a, k, "valid"), g> == <a, convolve2d(g, k, "full")>: the gradient of the valid
    # correlation w.r.t. the image, checked against finite differences.
    a = rng.standard_normal((6, 7))
    k = rng.standard_normal((3, 2))
    g = rng.standard_normal((4, 6))

    def f():
        return float(np.sum(F.correlate2d(a, k, "valid") * g))

    assert_grad(F.convolve2d(g, k, "full"), R.numeric_grad(f, a, EPS), "d correlate2d / d image")


# ---------------------------------------------------------------------------------------------
# layers: backward returns the input gradient and ADDS parameter gradients into .grad
# ---------------------------------------------------------------------------------------------
def layer_fd_check(model, x, rng, what, sample=None):
    """Analytic input/parameter gradients of sum(model(x) * R) vs central differences.

    Parameters are perturbed through Parameter.data (in place), which also checks that writing
    into .data is what the model computes with.
    """
    y = model(x)
    Rm = rng.standard_normal(y.shape)
    model.zero_grad()
    model(x)
    gx = model.backward(Rm)
    grads = {p.name: p.grad.copy() for p in model.parameters()}

    def f():
        return float(np.sum(model(x) * Rm))

    assert_grad(gx, R.numeric_grad(f, x, EPS), f"{what}: input")
    for p in model.parameters():
        assert p.data.dtype == np.float64
        if sample is not None and p.data.size > sample:
            idx = rng.choice(p.data.size, size=sample, replace=False)
            num = R.numeric_grad(f, p.data, EPS, indices=idx)
            assert_grad(grads[p.name].reshape(-1)[idx], num, f"{what}: {p.name} (sampled)")
        else:
            assert_grad(grads[p.name], R.numeric_grad(f, p.data, EPS), f"{what}: {p.name}")


def test_conv2d_layer_gradients(rng):
    m = swiftcnn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1, dtype="float64", seed=1)
    layer_fd_check(m, rng.standard_normal((2, 2, 7, 6)), rng, "Conv2d")


def test_linear_layer_gradients(rng):
    m = swiftcnn.Linear(6, 4, dtype="float64", seed=2)
    layer_fd_check(m, rng.standard_normal((3, 6)), rng, "Linear")


def test_parameterless_layer_gradients(rng):
    x = R.distinct_values(rng, (2, 2, 6, 6)) * 10
    for m in [swiftcnn.MaxPool2d(2), swiftcnn.AvgPool2d(3, 1, 1), swiftcnn.Sigmoid(), swiftcnn.ReLU(),
              swiftcnn.Flatten()]:
        layer_fd_check(m, x.copy(), rng, type(m).__name__)


def test_small_relu_network_gradients(rng):
    model = swiftcnn.Sequential(
        swiftcnn.Conv2d(2, 4, 3, padding=1, dtype="float64", seed=3), swiftcnn.ReLU(), swiftcnn.MaxPool2d(2),
        swiftcnn.Conv2d(4, 3, 2, dtype="float64", seed=4), swiftcnn.ReLU(), swiftcnn.Flatten(),
        swiftcnn.Linear(12, 5, dtype="float64", seed=5), swiftcnn.ReLU(), swiftcnn.Linear(5, 3, dtype="float64", seed=6))
    layer_fd_check(model, rng.standard_normal((2, 2, 6, 6)), rng, "ReLU network")


def test_small_sigmoid_network_gradients(rng):
    model = swiftcnn.Sequential(
        swiftcnn.Conv2d(1, 3, 3, padding=1, dtype="float64", seed=7), swiftcnn.Sigmoid(), swiftcnn.AvgPool2d(2),
        swiftcnn.Flatten(), swiftcnn.Linear(27, 6, dtype="float64", seed=8), swiftcnn.Sigmoid(),
        swiftcnn.Linear(6, 4, dtype="float64", seed=9))
    layer_fd_check(model, rng.standard_normal((3, 1, 6, 6)) * 2, rng, "Sigmoid network")


def test_lecture_network_gradients_sampled(rng):
    # The lecture's network in float64, N=2, 12 sampled elements per large tensor. Its first-layer
    # gradients are tiny (sigmoids), so the whole-network scalar is scaled up to keep central
    # differences (absolute rounding ~1e-16 * |f| / eps) well below the 1e-7 relative criterion.
    S = swiftcnn
    model = S.Sequential(S.Conv2d(1, 6, 5, padding=2, dtype="float64", seed=10), S.Sigmoid(), S.MaxPool2d(2),
                         S.Conv2d(6, 16, 5, dtype="float64", seed=11), S.Sigmoid(), S.MaxPool2d(2), S.Flatten(),
                         S.Linear(400, 120, dtype="float64", seed=12), S.Sigmoid(),
                         S.Linear(120, 84, dtype="float64", seed=13), S.Sigmoid(),
                         S.Linear(84, 10, dtype="float64", seed=14))
    x = rng.standard_normal((1, 1, 28, 28))
    y = model(x)
    Rm = rng.standard_normal(y.shape)
    model.zero_grad()
    model(x)
    gx = model.backward(Rm)

    def f():
        return float(np.sum(model(x) * Rm))

    # Last layers: well-conditioned, 1e-7 applies directly.
    for p in model.parameters():
        if not p.name.startswith(("9.", "11.")):
            continue
        idx = rng.choice(p.data.size, size=min(12, p.data.size), replace=False)
        num = R.numeric_grad(f, p.data, EPS, indices=idx)
        assert_grad(p.grad.reshape(-1)[idx].copy(), num, f"lecture network {p.name}")
    # Early layers and the input: tiny gradients (sigmoid derivatives multiply up), so rounding in
    # f limits eps = 1e-6 differences to ~1e-5 relative; and a perturbed early weight moves many
    # max-pool windows at once, so one eps may cross a near-tie. Per element, take the best of
    # three steps (a wrong analytic value matches none of them) and require 1e-5 relative.
    steps = (2e-6, 5e-6, 1e-5)
    for name, arr, g in [("input", x, gx)] + [(p.name, p.data, p.grad) for p in model.parameters()
                                               if p.name.startswith(("0.", "3.", "7."))]:
        idx = rng.choice(arr.size, size=min(12, arr.size), replace=False)
        nums = np.stack([R.numeric_grad(f, arr, e, indices=idx) for e in steps])
        a = g.reshape(-1)[idx]
        scale = np.max(np.abs(nums[-1]))
        assert scale > 0, name
        err = np.max(np.min(np.abs(nums - a[None, :]), axis=0)) / scale
        assert err <= 1e-5, f"lecture network {name}: {err:.3g}"
