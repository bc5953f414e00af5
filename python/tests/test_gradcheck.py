"""swiftcnn.gradcheck: passes on correct modules, reports per-tensor errors, leaves the module
unchanged, prints nothing, samples large tensors, and detects a wrong gradient (ReLU at its kink,
where the analytic derivative 0 differs from the central difference 1/2)."""
import time

import numpy as np
import pytest

import swiftcnn

import references as R

S = swiftcnn


def snapshot(model):
    return {p.name: (p.data.copy(), p.grad.copy(), p.data) for p in model.parameters()}


def assert_unchanged(model, snap):
    for p in model.parameters():
        d, g, arr = snap[p.name]
        assert p.data is arr, f"{p.name}: .data replaced"
        assert p.data.dtype == d.dtype, f"{p.name}: dtype changed"
        assert np.array_equal(p.data, d), f"{p.name}: data changed"
        assert np.array_equal(p.grad, g), f"{p.name}: grad changed"


@pytest.mark.parametrize("make,xshape,keys", [
    (lambda dt: S.Conv2d(2, 3, 3, stride=2, padding=1, dtype=dt, seed=1), (2, 2, 6, 6), ["input", "weight", "bias"]),
    (lambda dt: S.Linear(5, 3, dtype=dt, seed=2), (4, 5), ["input", "weight", "bias"]),
    (lambda dt: S.Linear(5, 3, bias=False, dtype=dt, seed=2), (4, 5), ["input", "weight"]),
    (lambda dt: S.Sigmoid(), (3, 4), ["input"]),
    (lambda dt: S.AvgPool2d(2), (1, 2, 4, 4), ["input"]),
    (lambda dt: S.Sequential(S.Conv2d(1, 2, 3, padding=1, dtype=dt, seed=3), S.Sigmoid(), S.AvgPool2d(2),
                             S.Flatten(), S.Linear(8, 3, dtype=dt, seed=4)), (2, 1, 4, 4),
     ["input", "0.weight", "0.bias", "4.weight", "4.bias"]),
], ids=["Conv2d", "Linear", "Linear-nobias", "Sigmoid", "AvgPool2d", "Sequential"])
def test_gradcheck_passes_on_correct_modules(rng, capfd, dtype, make, xshape, keys):
    module = make(dtype)
    x = rng.standard_normal(xshape).astype(dtype)
    snap = snapshot(module)
    report = S.gradcheck(module, x)
    assert report.passed is True
    assert set(report.errors) == set(keys)
    for k, e in report.errors.items():
        assert isinstance(e, float) and np.isfinite(e) and 0 <= e < 1e-3, (k, e)
    table = str(report)
    for k in keys:
        assert k in table
    assert len(table.splitlines()) >= len(keys)
    assert_unchanged(module, snap)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_gradcheck_on_the_lecture_network(rng, capfd):
    model = S.Sequential(S.Conv2d(1, 6, 5, padding=2, seed=1), S.Sigmoid(), S.MaxPool2d(2),
                         S.Conv2d(6, 16, 5, seed=2), S.Sigmoid(), S.MaxPool2d(2), S.Flatten(),
                         S.Linear(400, 120, seed=3), S.Sigmoid(), S.Linear(120, 84, seed=4), S.Sigmoid(),
                         S.Linear(84, 10, seed=5))
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    model(x)
    model.backward(np.ones((1, 10), np.float32))  # non-zero grads that must survive
    snap = snapshot(model)
    t0 = time.perf_counter()
    report = S.gradcheck(model, x)
    elapsed = time.perf_counter() - t0
    assert report.passed, str(report)
    assert set(report.errors) == {"input", "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                                  "9.weight", "9.bias", "11.weight", "11.bias"}
    assert_unchanged(model, snap)
    assert model[0].dtype == np.float32
    # the module's own forward state is untouched too: backward still refers to the forward above
    model.backward(np.ones((1, 10), np.float32))
    for p in model.parameters():
        np.testing.assert_allclose(p.grad, 2 * snap[p.name][1], rtol=1e-5, atol=1e-8)
    # 7.weight has 48000 > 10^4 elements and 9.weight 10080: they are sampled, so the whole
    # check stays far below the ~120k forward passes a full check would take.
    assert elapsed < 60
    assert capfd.readouterr() == ("", "")


def test_gradcheck_sampling_is_seeded(rng):
    model = S.Linear(200, 60, dtype="float64", seed=6)  # 12000 weights > 10^4
    x = rng.standard_normal((2, 200))
    r1 = S.gradcheck(model, x)
    r2 = S.gradcheck(model, x)
    assert r1.passed and r2.passed
    assert r1.errors == r2.errors


def test_gradcheck_reports_a_wrong_gradient():
    # ReLU at exactly 0: analytic 0, central difference 0.5 -> the element fails.
    x = np.zeros((2, 3))
    report = S.gradcheck(S.ReLU(), x)
    assert report.passed is False
    assert set(report.errors) == {"input"}
    # per tensor max|a - n| / max(max|n|, atol): here |a - n| = |n| = 0.5 * |R| elementwise -> 1
    assert report.errors["input"] == pytest.approx(1.0, rel=1e-6)
    assert "input" in str(report)


def test_gradcheck_error_is_relative_to_atol_floor():
    # Away from the kink ReLU passes, and a layer with a zero gradient tensor reports error 0.
    x = np.array([[0.5, -0.5, 2.0]])
    report = S.gradcheck(S.ReLU(), x)
    assert report.passed and report.errors["input"] < 1e-6
    lin = S.Linear(3, 2, dtype="float64", seed=1)
    report = S.gradcheck(lin, np.zeros((2, 3)))  # grad of weight = R^T x = 0 exactly
    assert report.passed and report.errors["weight"] == 0.0


def test_gradcheck_options(rng):
    model = S.Linear(4, 3, dtype="float64", seed=7)
    x = rng.standard_normal((2, 4))
    assert S.gradcheck(model, x, eps=1e-5, atol=1e-4, rtol=1e-2).passed
    # the thresholds are the report's: with a wildly large eps on a nonlinear module the check fails
    sig = S.Sigmoid()
    bad = S.gradcheck(sig, rng.standard_normal((3, 3)) * 2, eps=1.0, atol=1e-9, rtol=1e-9)
    assert bad.passed is False
    assert bad.errors["input"] > 1e-3
