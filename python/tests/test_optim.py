"""SGD and Adam vs a NumPy re-implementation of PyTorch's documented update rules (references.RefSGD,
RefAdam), several steps, every option; invalid settings; lr writable; step never changes .grad."""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import optim

import references as R

S = swiftcnn
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}
STEPS = 6


def make_model(dtype, seed=0):
    return S.Sequential(S.Conv2d(1, 2, 2, dtype=dtype, seed=seed), S.Flatten(),
                        S.Linear(8, 3, dtype=dtype, seed=seed + 1))


def run_against_reference(opt_factory, ref_factory, dtype, rng, lr_schedule=None):
    model = make_model(dtype)
    params = model.parameters()
    opt = opt_factory(params)
    ref = ref_factory([p.data.copy() for p in params])
    for step in range(STEPS):
        if lr_schedule is not None and step in lr_schedule:
            opt.lr = lr_schedule[step]
            ref.lr = lr_schedule[step]
        grads = []
        for p in params:
            p.grad[...] = rng.standard_normal(p.grad.shape)
            grads.append(p.grad.copy())
        opt.step()
        for p, g in zip(params, grads):
            assert np.array_equal(p.grad, g), "step() changed .grad"
        ref.step([g.astype(np.float64) for g in grads])
        for p, rp in zip(params, ref.params):
            assert p.data.dtype == dtype
            err = R.max_rel_diff(p.data, rp)
            assert err <= TOL[np.dtype(dtype)], f"step {step + 1}, {p.name}: max rel diff {err:.3g}"
    return model, opt


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.5),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
    dict(lr=0.02, momentum=0.5, dampening=0.1, weight_decay=0.2),
    dict(lr=0.0, momentum=0.9),
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_pytorch_update_rules(rng, dtype, cfg):
    run_against_reference(lambda p: optim.SGD(p, **cfg), lambda p: R.RefSGD(p, **cfg), dtype, rng)


def test_sgd_positional_arguments(rng):
    cfg = (0.05, 0.9, 0.3, 0.01, False)
    run_against_reference(lambda p: optim.SGD(p, *cfg), lambda p: R.RefSGD(p, *cfg), np.float64, rng)


ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99)),
    dict(lr=0.01, eps=1e-3),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.05, betas=(0.0, 0.5), eps=1e-6, weight_decay=0.01),
]


@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_adam_matches_pytorch_update_rules(rng, dtype, cfg):
    run_against_reference(lambda p: optim.Adam(p, **cfg), lambda p: R.RefAdam(p, **cfg), dtype, rng)


def test_adam_defaults():
    opt = optim.Adam(make_model("float64").parameters())
    assert opt.lr == pytest.approx(0.001)


def test_lr_is_writable_and_takes_effect_at_the_next_step(rng, dtype):
    _, opt = run_against_reference(lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                   lambda p: R.RefSGD(p, lr=0.1, momentum=0.9), dtype, rng,
                                   lr_schedule={2: 0.01, 4: 0.3})
    assert opt.lr == pytest.approx(0.3)
    _, opt = run_against_reference(lambda p: optim.Adam(p, lr=0.01), lambda p: R.RefAdam(p, lr=0.01), dtype, rng,
                                   lr_schedule={1: 0.05, 3: 0.0})
    assert opt.lr == 0.0


def test_optimizers_are_exported_from_the_package():
    assert S.SGD is optim.SGD and S.Adam is optim.Adam


def test_zero_grad_zeroes_every_parameter_gradient_in_place(rng):
    model = make_model("float32")
    params = model.parameters()
    for opt in (optim.SGD(params, lr=0.1), optim.Adam(params)):
        grads = [p.grad for p in params]
        for p in params:
            p.grad[...] = 1
        data = [p.data.copy() for p in params]
        opt.zero_grad()
        for p, g, d in zip(params, grads, data):
            assert p.grad is g and (p.grad == 0).all()
            assert np.array_equal(p.data, d)


def test_params_may_be_a_generator_or_a_module(rng):
    model = make_model("float64")
    opt = optim.SGD((p for p in model.parameters()), lr=0.5)
    for p in model.parameters():
        p.grad[...] = 1
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_allclose(p.data, b - 0.5)
    opt2 = optim.Adam(model, lr=0.1)
    opt2.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_allclose(p.data, b - 0.5 - 0.1, rtol=1e-6)  # Adam's first step is lr*sign(g)


def test_canonical_training_step_lowers_the_loss(rng, dtype):
    model = make_model(dtype, seed=3)
    x = rng.standard_normal((16, 1, 3, 3)).astype(dtype)
    y = rng.integers(0, 3, 16)
    for opt in (optim.SGD(model.parameters(), lr=0.5, momentum=0.5), optim.Adam(model.parameters(), lr=0.05)):
        first = None
        for _ in range(20):
            opt.zero_grad()
            loss, g = S.softmax_cross_entropy(model(x), y)
            model.backward(g)
            opt.step()
            first = loss if first is None else first
        assert loss < first


@pytest.mark.parametrize("kwargs", [
    dict(lr=-0.1), dict(lr=0.1, momentum=-0.5), dict(lr=0.1, weight_decay=-1e-4),
    dict(lr=0.1, nesterov=True), dict(lr=0.1, momentum=0.9, dampening=0.5, nesterov=True),
])
def test_sgd_rejects_what_pytorch_rejects(kwargs):
    params = make_model("float32").parameters()
    with pytest.raises(ValueError):
        optim.SGD(params, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(lr=-1e-3), dict(eps=-1e-8), dict(weight_decay=-0.1), dict(betas=(1.0, 0.999)), dict(betas=(0.9, 1.0)),
    dict(betas=(-0.1, 0.999)), dict(betas=(0.9, -0.5)), dict(betas=(1.5, 0.9)),
])
def test_adam_rejects_what_pytorch_rejects(kwargs):
    params = make_model("float32").parameters()
    with pytest.raises(ValueError):
        optim.Adam(params, **kwargs)


def test_edge_settings_pytorch_accepts():
    params = make_model("float32").parameters()
    optim.SGD(params, lr=0.0)
    optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.0, nesterov=True)
    optim.Adam(params, lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)


def test_invalid_lr_assignment_is_rejected_and_changes_nothing(rng):
    model = make_model("float64")
    opt = optim.SGD(model.parameters(), lr=0.25)
    with pytest.raises(ValueError):
        opt.lr = -1.0
    assert opt.lr == 0.25
    for p in model.parameters():
        p.grad[...] = 1
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_allclose(p.data, b - 0.25)


def test_empty_or_mixed_parameter_lists_are_rejected():
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError):
        optim.Adam(S.Sequential(S.ReLU()).parameters())
    mixed = S.Linear(2, 2, dtype="float32").parameters() + S.Linear(2, 2, dtype="float64").parameters()
    with pytest.raises(TypeError):
        optim.SGD(mixed, lr=0.1)


def test_two_models_one_optimizer(rng):
    # an optimizer over several layers' parameters updates each of them
    a, b = S.Linear(3, 2, dtype="float64", seed=1), S.Linear(2, 2, dtype="float64", seed=2)
    opt = optim.SGD(a.parameters() + b.parameters(), lr=1.0)
    for p in a.parameters() + b.parameters():
        p.grad[...] = 2
    before = [p.data.copy() for p in a.parameters() + b.parameters()]
    opt.step()
    for p, d in zip(a.parameters() + b.parameters(), before):
        np.testing.assert_allclose(p.data, d - 2)
