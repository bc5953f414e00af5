"""Numerics at the edges: huge logits, exact saturation, NaN propagation.

- softmax, softmax_cross_entropy (class labels and probability targets) and
  binary_cross_entropy_with_logits are finite and match a stable float64 log-sum-exp reference
  (computed here, from the very float32/float64 values passed in) for |logits| up to 1e4, in both
  dtypes; and match torch (which must be importable under CI or SWIFTCNN_REQUIRE_TORCH=1: a child
  pytest checks that conftest.py then fails the run instead of skipping).
- All of them, and sigmoid at +-1e4, raise no NumPy warning (warnings are errors and np.errstate is
  "raise" around the calls); sigmoid(+-1e4) is exactly 1 / 0.
- NaN inputs propagate to the outputs they touch (as PyTorch) and crash nothing; inputs filled with
  NaN or +-inf give IEEE's (PyTorch's) results in every op, checked in a child interpreter.
(Training that reaches a NaN loss raising FloatingPointError is test_training.py's.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import swiftcnn.functional as F

SCALES = [1.0, 10.0, 100.0, 1e3, 1e4]
EPS = {np.dtype(np.float32): 1.2e-7, np.dtype(np.float64): 2.3e-16}


@contextmanager
def strict():
    """Any NumPy floating-point warning or Python warning inside is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            yield


# ---- float64 references, stable for any magnitude -------------------------------------------
def ref_log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def ref_softmax(z):
    return np.exp(ref_log_softmax(z))


def ref_sce_labels(z, labels):
    n, k = z.shape
    ls = ref_log_softmax(z)
    loss = -ls[np.arange(n), labels].mean()
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1
    return loss, (np.exp(ls) - onehot) / n


def ref_sce_probs(z, t):
    t = np.asarray(t, np.float64)
    n = z.shape[0]
    ls = ref_log_softmax(z)
    loss = -(t * ls).sum() / n
    grad = (np.exp(ls) * t.sum(axis=1, keepdims=True) - t) / n
    return loss, grad


def ref_bce(z, t):
    z = np.asarray(z, np.float64)
    t = np.asarray(t, np.float64)
    loss = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean()
    sig = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
    return loss, (sig - t) / z.size


def close_loss(loss, ref, dtype, scale):
    # A sum of terms of size ~scale, accumulated in `dtype`: allow a few ulps of the scale per term.
    tol = 64 * EPS[np.dtype(dtype)] * max(1.0, scale) + 1e-300
    assert np.isfinite(loss)
    assert abs(loss - ref) <= tol * max(1.0, abs(ref)), f"loss {loss!r} vs reference {ref!r} (tol {tol})"


def close_array(a, ref, dtype, what, atol_scale=1.0):
    eps = EPS[np.dtype(dtype)]
    assert a.dtype == np.dtype(dtype), what
    assert np.isfinite(a).all(), f"{what}: non-finite values"
    np.testing.assert_allclose(a, ref, rtol=64 * eps, atol=64 * eps * atol_scale, err_msg=what)


def logits(rng, shape, scale, dtype):
    z = rng.standard_normal(shape) * scale
    # make sure the extremes +-scale themselves occur
    z.flat[0] = scale
    z.flat[-1] = -scale
    return z.astype(dtype)


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_softmax_is_finite_and_correct_for_huge_logits(rng, dtype, scale):
    z = logits(rng, (16, 7), scale, dtype)
    with strict():
        p = F.softmax(z)
    close_array(p, ref_softmax(z), dtype, f"softmax scale {scale}")
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=16 * EPS[dtype] * 7)


@pytest.mark.parametrize("scale", SCALES)
def test_softmax_cross_entropy_with_labels_for_huge_logits(rng, dtype, scale):
    z = logits(rng, (16, 7), scale, dtype)
    labels = rng.integers(0, 7, 16)
    with strict():
        loss, g = F.softmax_cross_entropy(z, labels)
    rl, rg = ref_sce_labels(z, labels)
    close_loss(loss, rl, dtype, scale)
    close_array(g, rg, dtype, f"grad scale {scale}")


@pytest.mark.parametrize("scale", SCALES)
def test_softmax_cross_entropy_with_probability_targets_for_huge_logits(rng, dtype, scale):
    z = logits(rng, (16, 7), scale, dtype)
    t = rng.dirichlet(np.ones(7), 16).astype(dtype)
    t[0] = 0
    t[0, 3] = 1  # a one-hot row
    with strict():
        loss, g = F.softmax_cross_entropy(z, t)
    rl, rg = ref_sce_probs(z, t)
    close_loss(loss, rl, dtype, scale)
    close_array(g, rg, dtype, f"grad scale {scale}")
    # one-hot probability targets give the label version's results
    labels = rng.integers(0, 7, 16)
    onehot = np.eye(7, dtype=dtype)[labels]
    with strict():
        l1, g1 = F.softmax_cross_entropy(z, onehot)
        l2, g2 = F.softmax_cross_entropy(z, labels)
    close_loss(l1, l2, dtype, scale)
    close_array(g1, g2, dtype, "one-hot vs labels")


@pytest.mark.parametrize("scale", SCALES)
def test_binary_cross_entropy_with_logits_for_huge_logits(rng, dtype, scale):
    z = logits(rng, (8, 5), scale, dtype)
    for t in [rng.random((8, 5)).astype(dtype), (rng.random((8, 5)) < 0.5).astype(dtype)]:
        with strict():
            loss, g = F.binary_cross_entropy_with_logits(z, t)
        rl, rg = ref_bce(z, t)
        close_loss(loss, rl, dtype, scale)
        close_array(g, rg, dtype, f"grad scale {scale}")


def test_losses_are_exact_where_the_answer_is_exact(dtype):
    # confident and right: loss 0 (or the smallest representable), gradient 0
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 0.0, 1e4]], dtype)
    with strict():
        loss, g = F.softmax_cross_entropy(z, np.array([0, 2]))
    assert loss == 0.0 and (g == 0).all()
    # confident and wrong: loss is the logit gap exactly
    with strict():
        loss, g = F.softmax_cross_entropy(np.array([[1e4, -1e4]], dtype), np.array([1]))
    assert loss == pytest.approx(2e4, rel=EPS[dtype])
    np.testing.assert_array_equal(g, np.array([[1.0, -1.0]], dtype))
    with strict():
        loss, g = F.binary_cross_entropy_with_logits(np.array([1e4, -1e4], dtype), np.array([0.0, 1.0], dtype))
    assert loss == pytest.approx(1e4, rel=EPS[dtype])
    np.testing.assert_array_equal(g, np.array([0.5, -0.5], dtype))


def test_sigmoid_of_huge_inputs_is_exactly_0_or_1_without_warnings(dtype):
    x = np.array([-1e4, -1e3, 1e3, 1e4, -np.inf, np.inf], dtype)
    with strict():
        y = F.sigmoid(x)
        gy = F.sigmoid_backward(np.ones_like(y), y)
    np.testing.assert_array_equal(y, np.array([0, 0, 1, 1, 0, 1], dtype))
    np.testing.assert_array_equal(gy, np.zeros_like(y))
    # and in place
    x2 = x.copy()
    with strict():
        F.sigmoid(x2, out=x2)
    np.testing.assert_array_equal(x2, y)


def test_sigmoid_matches_a_float64_reference_over_the_whole_range(dtype):
    x = np.concatenate([np.linspace(-1e4, 1e4, 2001), np.linspace(-50, 50, 2001)]).astype(dtype)
    with strict():
        y = F.sigmoid(x)
    ref = ref_bce(x.reshape(1, -1), np.zeros((1, x.size)))[1].ravel() * x.size  # sigmoid(x) in float64
    np.testing.assert_allclose(y, ref, rtol=8 * EPS[dtype], atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_huge_logits_match_torch(torch, dtype, scale, rng):
    tt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]
    z = logits(rng, (12, 6), scale, dtype)
    labels = rng.integers(0, 6, 12)
    t = rng.dirichlet(np.ones(6), 12).astype(dtype)
    tb = rng.random((12, 6)).astype(dtype)

    def torch_loss_grad(fn, target):
        zt = torch.tensor(z, dtype=tt, requires_grad=True)
        loss = fn(zt, target)
        loss.backward()
        return loss.item(), zt.grad.numpy()

    cases = [
        ("softmax_cross_entropy labels", F.softmax_cross_entropy(z, labels),
         torch_loss_grad(torch.nn.functional.cross_entropy, torch.tensor(labels))),
        ("softmax_cross_entropy probs", F.softmax_cross_entropy(z, t),
         torch_loss_grad(torch.nn.functional.cross_entropy, torch.tensor(t, dtype=tt))),
        ("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits(z, tb),
         torch_loss_grad(torch.nn.functional.binary_cross_entropy_with_logits, torch.tensor(tb, dtype=tt))),
    ]
    for what, (loss, g), (tl, tg) in cases:
        close_loss(loss, tl, dtype, scale * 4)
        close_array(g, tg, dtype, what, atol_scale=4)
    p = F.softmax(z)
    close_array(p, torch.softmax(torch.tensor(z, dtype=tt), dim=1).numpy(), dtype, "softmax", atol_scale=4)


@pytest.mark.parametrize("env, required", [({"CI": "true"}, True), ({"SWIFTCNN_REQUIRE_TORCH": "1"}, True),
                                           ({"CI": "false"}, False),
                                           ({"CI": "true", "SWIFTCNN_REQUIRE_TORCH": "0"}, False)],
                         ids=["CI=true", "SWIFTCNN_REQUIRE_TORCH=1", "CI=false", "CI=true,SWIFTCNN_REQUIRE_TORCH=0"])
def test_a_missing_torch_fails_the_run_where_torch_is_required(tmp_path, env, required):
    # conftest.py: under CI or SWIFTCNN_REQUIRE_TORCH=1 the torch test above must not skip. A child
    # pytest runs it with an unimportable `torch` package first on the path.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    child_env = {k: v for k, v in os.environ.items() if k not in ("CI", "SWIFTCNN_REQUIRE_TORCH")}
    child_env.update(env, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"{os.path.abspath(__file__)}::test_huge_logits_match_torch"],
                            capture_output=True, text=True, env=child_env, cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    if required:
        assert result.returncode == 1, output
        assert "torch is required" in output and "torch hidden by the test" in output, output
    else:
        assert result.returncode == 0 and "4 skipped" in output, output


# ---------------------------------------------------------------------------------------------
# NaN propagates (as in PyTorch) and crashes nothing
# ---------------------------------------------------------------------------------------------
def test_nan_propagates_through_the_activations_and_losses(dtype):
    nan = np.nan
    x = np.array([-1.0, nan, 2.0], dtype)
    y = F.sigmoid(x)
    assert np.isnan(y[1]) and np.isfinite(y[[0, 2]]).all()
    r = F.relu(x)
    assert np.isnan(r[1]) and r[0] == 0 and r[2] == 2
    assert np.isnan(F.sigmoid_backward(np.ones(3, dtype), y)[1])
    # a NaN gradient where x > 0 passes through (where x is NaN, PyTorch passes the gradient and
    # API.md's grad_out * (x > 0) gives 0: not pinned here)
    gr = F.relu_backward(np.array([1.0, 1.0, nan], dtype), x)
    assert gr[0] == 0 and np.isnan(gr[2])

    z = np.array([[nan, 0.0, 1.0], [1.0, 2.0, 3.0]], dtype)
    p = F.softmax(z)
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()
    np.testing.assert_allclose(p[1], ref_softmax(z[1:])[0], rtol=64 * EPS[dtype])
    loss, g = F.softmax_cross_entropy(z, np.array([1, 2]))
    assert np.isnan(loss) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
    loss, g = F.softmax_cross_entropy(z, np.full((2, 3), 1 / 3, dtype))
    assert np.isnan(loss) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
    loss, g = F.softmax_cross_entropy(np.array([[0.0, 1.0]], dtype), np.array([[nan, 1.0]], dtype))
    assert np.isnan(loss)
    loss, g = F.binary_cross_entropy_with_logits(z, np.zeros((2, 3), dtype))
    assert np.isnan(loss) and np.isnan(g[0, 0]) and np.isfinite(g.ravel()[1:]).all()
    loss, g = F.binary_cross_entropy_with_logits(np.zeros(2, dtype), np.array([nan, 0.5], dtype))
    assert np.isnan(loss) and np.isnan(g[0]) and np.isfinite(g[1])


def test_nan_propagates_through_conv_pool_linear_and_signal(dtype):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    y = F.conv2d(x, np.ones((1, 1, 2, 2), dtype))
    assert np.isnan(y[0, 0, 0, 0]) and np.isfinite(y.ravel()[1:]).all()
    gx, gw, gb = F.conv2d_backward(np.ones_like(y), x, np.ones((1, 1, 2, 2), dtype))
    assert np.isfinite(gx).all() and np.isfinite(gb).all()
    assert np.isnan(gw[0, 0, 0, 0]) and np.isfinite(gw.ravel()[1:]).all()  # only w[0,0] meets x[0,0]
    for pool in (F.max_pool2d, F.avg_pool2d):
        p = pool(x, 2)
        assert np.isnan(p[0, 0, 0, 0]) and np.isfinite(p.ravel()[1:]).all(), pool.__name__
    gp = F.max_pool2d_backward(np.ones((1, 1, 2, 2), dtype), x, 2)
    assert gp.sum() == 4  # every window's gradient lands somewhere exactly once
    ga = F.avg_pool2d_backward(np.ones((1, 1, 2, 2), dtype), x, 2)
    np.testing.assert_array_equal(ga, np.full_like(x, 0.25))
    yl = F.linear(np.array([[np.nan, 1.0], [1.0, 1.0]], dtype), np.ones((3, 2), dtype))
    assert np.isnan(yl[0]).all() and (yl[1] == 2).all()
    c = F.correlate2d(x[0, 0], np.ones((2, 2), dtype))
    assert np.isnan(c[0, 0]) and np.isfinite(c.ravel()[1:]).all()
    c = F.convolve2d(x[0, 0], np.ones((2, 2), dtype), "full")
    assert np.isnan(c[:2, :2]).all() and np.isfinite(c[2:, 2:]).all()


def check_all_nan_and_infinite_inputs(dtype):
    """Every op on inputs filled with NaN, +inf or -inf: right shapes and dtypes, and the values IEEE
    arithmetic gives (PyTorch's), wherever they do not depend on how a kernel treats 0 * inf in the
    padding. Run in a child interpreter by the test below (a crash must not take pytest down)."""
    dtype = np.dtype(dtype)
    for fill in (np.nan, np.inf, -np.inf):
        # product of two fills: NaN, or +inf (inf*inf and -inf*-inf); a sum of fills: the fill
        product = np.nan if np.isnan(fill) else np.inf

        def check(a, shape, what, equal=None, among=None):
            a = np.asarray(a)
            assert a.shape == shape and a.dtype == dtype, f"{what} ({fill}): {a.shape} {a.dtype}"
            if equal is not None:
                np.testing.assert_array_equal(a, np.full(shape, equal, dtype), err_msg=f"{what} ({fill})")
            if among is not None:  # every value is one of these (NaN matches NaN)
                ok = np.zeros(shape, bool)
                for value in among:
                    ok |= np.isnan(a) if np.isnan(value) else (a == value)
                assert ok.all(), f"{what} ({fill}): values {np.unique(a)} not among {among}"

        x = np.full((2, 2, 5, 5), fill, dtype)
        w = np.full((3, 2, 3, 3), fill, dtype)
        y = F.conv2d(x, w, np.zeros(3, dtype), 1, 1)
        # each output sums fill*fill over the interior (+ 0*fill where a kernel multiplies padding)
        check(y, (2, 3, 5, 5), "conv2d", equal=None if product == np.inf else np.nan,
              among=(np.inf, np.nan))
        gx, gw, gb = F.conv2d_backward(np.full_like(y, fill), x, w, 1, 1)
        check(gx, x.shape, "conv2d_backward grad_x", among=(product, np.nan))
        check(gw, w.shape, "conv2d_backward grad_weight", among=(product, np.nan))
        check(gb, (3,), "conv2d_backward grad_bias", equal=fill)  # a sum of 50 fills
        # max pooling ignores padding (PyTorch pads with -inf), average pooling counts it as zeros
        p = F.max_pool2d(x, 3, 2, 1)
        check(p, (2, 2, 3, 3), "max_pool2d", equal=fill)
        gp = F.max_pool2d_backward(np.full_like(p, fill), x, 3, 2, 1)
        check(gp, x.shape, "max_pool2d_backward", among=(0.0, fill))
        assert (gp != 0).sum() >= 1, f"max_pool2d_backward ({fill}): no gradient routed anywhere"
        a = F.avg_pool2d(x, 3, 2, 1)
        check(a, (2, 2, 3, 3), "avg_pool2d", equal=fill)
        check(F.avg_pool2d_backward(np.full_like(a, fill), x, 3, 2, 1), x.shape, "avg_pool2d_backward",
              equal=fill)
        z = np.full((4, 6), fill, dtype)
        wl = np.full((2, 6), fill, dtype)
        check(F.linear(z, wl), (4, 2), "linear", equal=product)
        lx, lw, lb = F.linear_backward(np.full((4, 2), fill, dtype), z, wl)
        check(lx, z.shape, "linear_backward grad_x", equal=product)
        check(lw, wl.shape, "linear_backward grad_weight", equal=product)
        check(lb, (2,), "linear_backward grad_bias", equal=fill)
        check(F.softmax(z), z.shape, "softmax", equal=np.nan)  # inf - inf, as torch.softmax
        for target in (np.array([0, 1, 2, 5]), np.full_like(z, fill)):
            loss, g = F.softmax_cross_entropy(z, target)
            assert np.isnan(loss), f"softmax_cross_entropy ({fill}): loss {loss}"
            check(g, z.shape, "softmax_cross_entropy grad", equal=np.nan)
        loss, g = F.binary_cross_entropy_with_logits(z, np.full_like(z, fill))
        assert not np.isfinite(loss), f"binary_cross_entropy_with_logits ({fill}): loss {loss}"
        assert np.isnan(loss) or loss == -np.inf, f"binary_cross_entropy_with_logits ({fill}): loss {loss}"
        check(g, z.shape, "binary_cross_entropy_with_logits grad",
              equal={np.inf: -np.inf, -np.inf: np.inf}.get(fill, np.nan))  # (sigmoid(z) - t) / n
        s = F.sigmoid(z)
        check(s, z.shape, "sigmoid", equal={np.inf: 1.0, -np.inf: 0.0}.get(fill, np.nan))
        check(F.sigmoid_backward(z, s), z.shape, "sigmoid_backward", equal=np.nan)  # fill * s * (1 - s)
        r = F.relu(z)
        check(r, z.shape, "relu", equal=max(fill, 0.0) if not np.isnan(fill) else np.nan)
        # grad_out * (x > 0) where x = relu(z): pinned only where it involves no NaN or 0 * inf
        check(F.relu_backward(z, r), z.shape, "relu_backward", equal=np.inf if fill == np.inf else None)
        kernel = np.full((2, 3), fill, dtype)
        for mode, shape in (("valid", (3, 4)), ("same", (4, 6)), ("full", (5, 8))):
            exact = product if mode == "valid" or product != np.inf else None
            check(F.correlate2d(z, kernel, mode), shape, f"correlate2d {mode}", equal=exact,
                  among=(product, np.nan))
            check(F.convolve2d(z, kernel, mode), shape, f"convolve2d {mode}", equal=exact,
                  among=(product, np.nan))


def test_all_nan_and_infinite_inputs_give_ieee_results_and_crash_nothing(dtype, run_python):
    result = run_python(f"""
        import test_numerics
        test_numerics.check_all_nan_and_infinite_inputs({dtype.name!r})
        print("checked")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "checked", \
        f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
