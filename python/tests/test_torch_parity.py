"""Parity with PyTorch (skipped when torch is not importable).

Every functional op forward/backward vs torch in float64 and float32; the lecture's network and its
ReLU variant with the same weights (moved through state_dict in both directions): forward, backward,
several SGD and Adam steps; PyTorch state_dicts load into swiftcnn and back.
"""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

S = swiftcnn
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-11}


def close(a, b, dtype, what, tol=None):
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs torch {b.shape}"
    if a.ndim:
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}"
    err = R.max_rel_diff(a, b)
    t = tol if tol is not None else TOL[np.dtype(dtype)]
    assert err <= t, f"{what}: max|swiftcnn - torch| / max|torch| = {err:.3g} > {t:g}"


def T(torch, a, grad=False):
    t = torch.tensor(np.ascontiguousarray(a))
    if grad:
        t.requires_grad_(True)
    return t


# ---------------------------------------------------------------------------------------------
# functional ops
# ---------------------------------------------------------------------------------------------
CONV = [((2, 3, 9, 8), (4, 3, 3, 3), 1, 0, 1), ((1, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1),
        ((2, 2, 11, 10), (3, 2, 3, 2), (2, 3), (1, 2), (2, 1)), ((3, 4, 6, 6), (2, 4, 1, 1), 2, 0, 1)]


@pytest.mark.parametrize("case", CONV)
def test_conv2d_vs_torch(torch, rng, dtype, case):
    xs, ws, s, p, d = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    xt, wt, bt = T(torch, x, True), T(torch, w, True), T(torch, b, True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, s, p, d)
    y = F.conv2d(x, w, b, s, p, d)
    close(y, yt.detach().numpy(), dtype, "conv2d")
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(T(torch, g))
    gx, gw, gb = F.conv2d_backward(g, x, w, s, p, d)
    close(gx, xt.grad.numpy(), dtype, "grad_x")
    close(gw, wt.grad.numpy(), dtype, "grad_weight")
    close(gb, bt.grad.numpy(), dtype, "grad_bias")


POOL = [((2, 3, 8, 8), 2, None, 0), ((1, 2, 7, 9), 3, 2, 1), ((2, 1, 6, 6), (3, 2), (1, 2), (1, 1)),
        ((1, 1, 5, 5), 3, 1, 1)]


@pytest.mark.parametrize("case", POOL)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_vs_torch(torch, rng, dtype, case, kind):
    shape, k, s, p = case
    x = (R.distinct_values(rng, shape) if kind == "max" else rng.standard_normal(shape)).astype(dtype)
    xt = T(torch, x, True)
    tf = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    yt = tf(xt, k, s, p)
    fwd = F.max_pool2d if kind == "max" else F.avg_pool2d
    bwd = F.max_pool2d_backward if kind == "max" else F.avg_pool2d_backward
    y = fwd(x, k, s, p)
    close(y, yt.detach().numpy(), dtype, f"{kind}_pool2d")
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(T(torch, g))
    close(bwd(g, x, k, s, p), xt.grad.numpy(), dtype, f"{kind}_pool2d_backward")


def test_max_pool_ties_vs_torch(torch, dtype):
    x = np.zeros((1, 2, 5, 5), dtype=dtype)
    x[0, 1, 1:3, 1:3] = 1
    xt = T(torch, x, True)
    torch.nn.functional.max_pool2d(xt, 3, 1, 1).sum().backward()
    g = np.ones((1, 2, 5, 5), dtype=dtype)
    np.testing.assert_array_equal(F.max_pool2d_backward(g, x, 3, 1, 1), xt.grad.numpy())


def test_dense_activations_and_losses_vs_torch(torch, rng, dtype):
    tf = torch.nn.functional
    x = rng.standard_normal((5, 7)).astype(dtype)
    w = rng.standard_normal((3, 7)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    xt, wt, bt = T(torch, x, True), T(torch, w, True), T(torch, b, True)
    yt = tf.linear(xt, wt, bt)
    y = F.linear(x, w, b)
    close(y, yt.detach().numpy(), dtype, "linear")
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(T(torch, g))
    gx, gw, gb = F.linear_backward(g, x, w)
    close(gx, xt.grad.numpy(), dtype, "linear grad_x")
    close(gw, wt.grad.numpy(), dtype, "linear grad_weight")
    close(gb, bt.grad.numpy(), dtype, "linear grad_bias")

    a = (rng.standard_normal((2, 3, 4, 4)) * 3).astype(dtype)
    a[np.abs(a) < 1e-3] = 0.5
    for name, top in [("sigmoid", torch.sigmoid), ("relu", torch.relu)]:
        at = T(torch, a, True)
        yt = top(at)
        y = getattr(F, name)(a)
        close(y, yt.detach().numpy(), dtype, name)
        g = rng.standard_normal(a.shape).astype(dtype)
        yt.backward(T(torch, g))
        gx = F.sigmoid_backward(g, y) if name == "sigmoid" else F.relu_backward(g, a)
        close(gx, at.grad.numpy(), dtype, f"{name}_backward")

    z = (rng.standard_normal((6, 5)) * 3).astype(dtype)
    close(F.softmax(z), torch.softmax(T(torch, z), dim=1).numpy(), dtype, "softmax")
    labels = rng.integers(0, 5, 6)
    for target in (labels, rng.dirichlet(np.ones(5), 6).astype(dtype), (rng.random((6, 5)) * 2).astype(dtype)):
        zt = T(torch, z, True)
        lt = tf.cross_entropy(zt, torch.tensor(target))
        lt.backward()
        loss, g = F.softmax_cross_entropy(z, target)
        close(loss, lt.item(), dtype, "cross entropy loss", tol=TOL[np.dtype(dtype)] * 10)
        close(g, zt.grad.numpy(), dtype, "cross entropy grad")
    t = rng.random((6, 5)).astype(dtype)
    zt = T(torch, z * 10, True)
    lt = tf.binary_cross_entropy_with_logits(zt, T(torch, t))
    lt.backward()
    loss, g = F.binary_cross_entropy_with_logits(z * 10, t)
    close(loss, lt.item(), dtype, "bce loss", tol=TOL[np.dtype(dtype)] * 10)
    close(g, zt.grad.numpy(), dtype, "bce grad")


# ---------------------------------------------------------------------------------------------
# the lecture's network and its ReLU variant
# ---------------------------------------------------------------------------------------------
def lecture_swift(act, dtype, seed=0):
    return S.Sequential(S.Conv2d(1, 6, 5, padding=2, dtype=dtype, seed=seed), act(), S.MaxPool2d(2),
                        S.Conv2d(6, 16, 5, dtype=dtype, seed=seed + 1), act(), S.MaxPool2d(2), S.Flatten(),
                        S.Linear(400, 120, dtype=dtype, seed=seed + 2), act(),
                        S.Linear(120, 84, dtype=dtype, seed=seed + 3), act(),
                        S.Linear(84, 10, dtype=dtype, seed=seed + 4))


def lecture_torch(torch, act, dtype):
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), act(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), act(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), act(), nn.Linear(120, 84), act(),
                      nn.Linear(84, 10))
    return m.to(torch.float32 if dtype == np.float32 else torch.float64)


def pair_models(torch, act_name, dtype, seed=0):
    ours = lecture_swift(getattr(S, act_name), dtype, seed)
    theirs = lecture_torch(torch, getattr(torch.nn, act_name), dtype)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


NET_TOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


def compare_params(ours, theirs, dtype, what, adam_lr=None, steps=1):
    tsd = theirs.state_dict()
    for k, v in ours.state_dict().items():
        t = tsd[k].detach().numpy()
        if adam_lr is not None and np.dtype(dtype) == np.float32:
            # Adam normalises each element's step to ~lr: where a float32 gradient is tiny and
            # rounding-dominated (|g| ~ eps), both frameworks' steps are legitimately different
            # fractions of lr. Require near-agreement almost everywhere and a bounded difference.
            d = np.abs(v.astype(np.float64) - t)
            assert d.max() <= 0.1 * adam_lr * steps, f"{what} {k}: max diff {d.max():.3g} (lr {adam_lr})"
            frac = np.mean(d > 1e-3 * adam_lr * steps + 1e-6 * np.abs(t))
            assert frac <= 0.01, f"{what} {k}: {frac:.2%} of elements differ"
            continue
        err = R.max_rel_diff(v, t)
        assert err <= NET_TOL[np.dtype(dtype)], f"{what} {k}: {err:.3g}"


@pytest.mark.parametrize("act", ["Sigmoid", "ReLU"])
def test_lecture_network_forward_backward_vs_torch(torch, rng, dtype, act):
    ours, theirs = pair_models(torch, act, dtype)
    x = rng.standard_normal((4, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 4)
    xt = T(torch, x, True)
    logits_t = theirs(xt)
    logits = ours(x)
    close(logits, logits_t.detach().numpy(), dtype, "logits", NET_TOL[np.dtype(dtype)])
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(y))
    loss_t.backward()
    loss, g = S.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(loss_t.item(), rel=NET_TOL[np.dtype(dtype)])
    gx = ours.backward(g)
    close(gx, xt.grad.numpy(), dtype, "input gradient", NET_TOL[np.dtype(dtype)] * 5)
    named = dict(theirs.named_parameters())
    for p in ours.parameters():
        err = R.max_rel_diff(p.grad, named[p.name].grad.numpy())
        assert err <= NET_TOL[np.dtype(dtype)] * 5, f"{p.name}.grad: {err:.3g}"


@pytest.mark.parametrize("act", ["Sigmoid", "ReLU"])
@pytest.mark.parametrize("opt_name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=2e-3, betas=(0.8, 0.99), weight_decay=1e-2)),
])
def test_lecture_network_training_steps_vs_torch(torch, rng, dtype, act, opt_name, kwargs):
    ours, theirs = pair_models(torch, act, dtype)
    opt = getattr(S.optim, opt_name)(ours.parameters(), **kwargs)
    topt = getattr(torch.optim, opt_name)(theirs.parameters(), **kwargs)
    x = rng.standard_normal((8, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 8)
    xt, yt = T(torch, x), torch.tensor(y)
    for step in range(3):
        opt.zero_grad()
        loss, g = S.softmax_cross_entropy(ours(x), y)
        ours.backward(g)
        opt.step()
        topt.zero_grad()
        lt = torch.nn.functional.cross_entropy(theirs(xt), yt)
        lt.backward()
        topt.step()
        assert loss == pytest.approx(lt.item(), rel=NET_TOL[np.dtype(dtype)] * 10), f"step {step}"
        compare_params(ours, theirs, dtype, f"{opt_name} step {step + 1}",
                       adam_lr=kwargs["lr"] if opt_name == "Adam" else None, steps=step + 1)


def test_fit_matches_a_torch_training_loop(torch, rng):
    ours, theirs = pair_models(torch, "ReLU", np.float64)
    x = rng.standard_normal((40, 1, 28, 28))
    y = rng.integers(0, 10, 40)
    hist = ours.fit(x, y, epochs=2, batch_size=16, optimizer=S.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9),
                    shuffle=False, progress=False)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    epoch_losses = []
    for epoch in range(2):
        total = 0.0
        for i in range(0, 40, 16):
            xb, yb = T(torch, x[i:i + 16]), torch.tensor(y[i:i + 16])
            topt.zero_grad()
            lt = torch.nn.functional.cross_entropy(theirs(xb), yb)
            lt.backward()
            topt.step()
            total += lt.item() * len(yb)
        epoch_losses.append(total / 40)
    np.testing.assert_allclose(hist.history["loss"], epoch_losses, rtol=1e-9)
    compare_params(ours, theirs, np.float64, "after fit")


def test_state_dict_moves_between_torch_and_swiftcnn(torch, rng, dtype):
    theirs = lecture_torch(torch, torch.nn.ReLU, dtype)
    ours = lecture_swift(S.ReLU, dtype, seed=100)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    compare_params(ours, theirs, dtype, "torch -> swiftcnn")
    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    with torch.no_grad():
        close(ours(x), theirs(T(torch, x)).numpy(), dtype, "logits after torch -> swiftcnn", NET_TOL[np.dtype(dtype)])
    # and back: a fresh torch model loads swiftcnn's state_dict with strict=True
    back = lecture_torch(torch, torch.nn.ReLU, dtype)
    back.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()}, strict=True)
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), theirs.state_dict()[k].numpy())
    # a float32 torch model loads into a float64 swiftcnn model (values cast)
    ours64 = lecture_swift(S.ReLU, "float64", seed=5)
    ours64.load_state_dict({k: v.float().numpy() for k, v in theirs.state_dict().items()})
    for k, v in ours64.state_dict().items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, theirs.state_dict()[k].float().numpy().astype(np.float64))


def test_init_distribution_matches_torch_defaults(torch):
    # Same family and bounds as torch's default init: compare the spread of a big layer.
    ours = S.Linear(256, 512, seed=1).weight.data
    theirs = torch.nn.Linear(256, 512).weight.detach().numpy()
    assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 1e-3
    assert abs(ours.std() - theirs.std()) < 0.02 * theirs.std()
