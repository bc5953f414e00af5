"""Version 2 layers, functional ops, modes, AdamW and schedules (API.md "Version 2 additions").

Each new op is checked three ways: against central finite differences in float64 (the same bound
as the version 1 ops), float32 against float64, and against PyTorch in float64 (forward, backward
and the running statistics), in training and evaluation mode where the layer has modes.
"""
import numpy as np
import pytest

import swiftcnn as S
from swiftcnn import functional as F

FD_BOUND = 1e-6      # max|analytic - numeric| / max|numeric| for float64 central differences
F32_BOUND = 1e-4     # float32 against float64, relative to the float64 result's scale


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f at x (float64, perturbed in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = f()
        flat[i] = orig - eps
        minus = f()
        flat[i] = orig
        gflat[i] = (plus - minus) / (2 * eps)
    return g


def rel_err(a, n):
    return np.max(np.abs(a - n)) / max(np.max(np.abs(n)), 1e-12)


def tt(torch, a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


# ---- functional ops against finite differences ----------------------------------------------------
@pytest.mark.parametrize("name", ["tanh", "leaky_relu", "adaptive_avg_pool2d", "batch_norm"])
def test_functional_backward_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    if name == "tanh":
        x = rng.standard_normal((2, 3, 4))
        r = rng.standard_normal(x.shape)
        forward = lambda: F.tanh(x)
        analytic = lambda: F.tanh_backward(r, F.tanh(x))
    elif name == "leaky_relu":
        x = rng.standard_normal((3, 5)) + 0.05  # away from the kink at 0
        x[np.abs(x) < 1e-3] = 0.5
        r = rng.standard_normal(x.shape)
        forward = lambda: F.leaky_relu(x, 0.2)
        analytic = lambda: F.leaky_relu_backward(r, x, 0.2)
    elif name == "adaptive_avg_pool2d":
        x = rng.standard_normal((2, 2, 7, 5))
        r = rng.standard_normal((2, 2, 3, 2))
        forward = lambda: F.adaptive_avg_pool2d(x, (3, 2))
        analytic = lambda: F.adaptive_avg_pool2d_backward(r, x, (3, 2))
    else:
        x = rng.standard_normal((4, 3, 2, 2))
        w, b = rng.standard_normal(3), rng.standard_normal(3)
        r = rng.standard_normal(x.shape)
        forward = lambda: F.batch_norm(x, None, None, w, b, training=True)
        analytic = lambda: F.batch_norm_backward(r, x, w)[0]
    numeric = numeric_grad(lambda: float(np.sum(forward() * r)), x)
    assert rel_err(analytic(), numeric) < FD_BOUND


def test_batch_norm_backward_parameter_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    r = rng.standard_normal(x.shape)
    gx, gw, gb = F.batch_norm_backward(r, x, w, eps=1e-5)
    objective = lambda: float(np.sum(F.batch_norm(x, None, None, w, b, training=True) * r))
    assert rel_err(gw, numeric_grad(objective, w)) < FD_BOUND
    assert rel_err(gb, numeric_grad(objective, b)) < FD_BOUND


# ---- functional ops against PyTorch (float64) --------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 4)])
def test_batch_norm_matches_torch_with_running_statistics(torch, training, shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    trm, trv = tt(torch, rm), tt(torch, rv)
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-4)
    ty = torch.nn.functional.batch_norm(tt(torch, x), trm, trv, tt(torch, w), tt(torch, b), training=training,
                                        momentum=0.3, eps=1e-4)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12, atol=1e-14)  # updated in place
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12, atol=1e-14)


def test_batch_norm_backward_matches_torch_autograd(torch):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(2)
    g = rng.standard_normal(x.shape)
    tx, tw, tb = tt(torch, x, True), tt(torch, w, True), tt(torch, np.zeros(2), True)
    torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True).backward(tt(torch, g))
    gx, gw, gb = F.batch_norm_backward(g, x, w)
    for mine, theirs in ((gx, tx), (gw, tw), (gb, tb)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_elementwise_and_adaptive_ops_match_torch(torch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 9))
    g = rng.standard_normal(x.shape)
    tx = tt(torch, x, True)
    torch.tanh(tx).backward(tt(torch, g))
    np.testing.assert_allclose(F.tanh(x), np.tanh(x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(F.tanh_backward(g, F.tanh(x)), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    tx = tt(torch, x, True)
    torch.nn.functional.leaky_relu(tx, 0.3).backward(tt(torch, g))
    np.testing.assert_array_equal(F.leaky_relu(x, 0.3), np.where(x > 0, x, 0.3 * x))
    np.testing.assert_allclose(F.leaky_relu_backward(g, x, 0.3), tx.grad.numpy(), rtol=0, atol=0)
    for size in [(3, 4), (1, 1), (7, 9), (10, 12), 2]:
        tx = tt(torch, x, True)
        ty = torch.nn.functional.adaptive_avg_pool2d(tx, size)
        gy = rng.standard_normal(ty.shape)
        ty.backward(tt(torch, gy))
        np.testing.assert_allclose(F.adaptive_avg_pool2d(x, size), ty.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(gy, x, size), tx.grad.numpy(), rtol=1e-13,
                                   atol=1e-15)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 5))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    cases = [
        lambda a: F.tanh(a), lambda a: F.leaky_relu(a, 0.1), lambda a: F.adaptive_avg_pool2d(a, (2, 3)),
        lambda a: F.batch_norm(a, None, None, w.astype(a.dtype), b.astype(a.dtype), training=True),
    ]
    for f in cases:
        y64, y32 = f(x), f(x.astype(np.float32))
        assert y32.dtype == np.float32
        assert np.max(np.abs(y32 - y64)) <= F32_BOUND * max(1.0, np.max(np.abs(y64)))


def test_elementwise_out_may_be_the_input():
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    expected = np.tanh(x)
    assert F.tanh(x, out=x) is x
    np.testing.assert_allclose(x, expected, rtol=1e-15)
    z = np.linspace(-2, 2, 12)
    assert F.leaky_relu(z, 0.5, out=z) is z
    np.testing.assert_array_equal(z, np.where(np.linspace(-2, 2, 12) > 0, np.linspace(-2, 2, 12),
                                              0.5 * np.linspace(-2, 2, 12)))


# ---- layers, modes, buffers ---------------------------------------------------------------------
def test_modes_flip_on_every_layer_and_return_the_module():
    model = S.Sequential(S.Conv2d(1, 2, 3), S.BatchNorm2d(2), S.Residual(S.ReLU(), S.Dropout(0.5)))
    assert model.training and model[2][1].training
    assert model.eval() is model
    assert not model.training and not model[1].training and not model[2][1].training
    assert model.train() is model and model[2][1].training
    with pytest.raises(TypeError, match="mode"):
        model.train("yes")


def test_batchnorm_buffers_are_stable_arrays_updated_by_training(torch):
    bn = S.BatchNorm2d(3, momentum=None, dtype="float64")
    mean_array, var_array = bn.running_mean, bn.running_var
    tbn = torch.nn.BatchNorm2d(3, momentum=None, dtype=torch.float64)
    rng = np.random.default_rng(6)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2))
        bn(x)
        tbn(tt(torch, x))
    assert bn.running_mean is mean_array and bn.running_var is var_array
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
    assert bn.num_batches_tracked.dtype == np.int64 and int(bn.num_batches_tracked) == 3
    assert set(bn.state_dict()) == set(tbn.state_dict())
    assert all(p.name in ("weight", "bias") for p in bn.parameters())


def test_batchnorm_rejects_one_value_per_channel_in_training_and_changes_nothing():
    bn = S.BatchNorm1d(4, dtype="float64")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 4)))
    assert int(bn.num_batches_tracked) == 0 and np.all(bn.running_mean == 0)
    bn.eval()
    assert bn(np.ones((1, 4))).shape == (1, 4)  # running statistics: fine in eval mode


@pytest.mark.parametrize("bad, error, words", [
    (dict(p=1.5), ValueError, "p"), (dict(p=float("nan")), ValueError, "p"), (dict(p="x"), TypeError, "p"),
])
def test_dropout_rejects_bad_probabilities(bad, error, words):
    with pytest.raises(error, match=words):
        S.Dropout(**bad)


def test_dropout_statistics_mask_reuse_and_modes():
    d = S.Dropout(0.3, seed=7)
    x = np.ones((200, 500))
    y = d(x)
    zeroed = np.mean(y == 0)
    assert abs(zeroed - 0.3) < 0.01                       # ~100,000 draws: 4 sigma is 0.006
    np.testing.assert_allclose(y[y != 0], 1 / 0.7)
    g = d.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(g == 0, y == 0)         # the last forward's mask
    np.testing.assert_allclose(g[g != 0], 2 / 0.7)
    assert not np.array_equal(d(x) == 0, y == 0)           # a fresh mask each forward
    d.eval()
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(S.Dropout(1.0)(x), np.zeros_like(x))
    a, b = S.Dropout(0.5, seed=3)(x), S.Dropout(0.5, seed=3)(x)
    np.testing.assert_array_equal(a, b)                    # same seed, same masks


@pytest.mark.parametrize("layer_factory, shape", [
    (lambda: S.Tanh(), (2, 3, 4)),
    (lambda: S.LeakyReLU(0.2), (3, 7)),
    (lambda: S.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
    (lambda: S.BatchNorm1d(3), (5, 3)),
    (lambda: S.BatchNorm1d(3), (4, 3, 6)),
    (lambda: S.BatchNorm2d(2), (3, 2, 4, 4)),
    (lambda: S.Residual(S.Conv2d(2, 2, 3, padding=1), S.Tanh()), (2, 2, 5, 5)),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layers_pass_gradcheck(layer_factory, shape, mode):
    S.manual_seed(11)
    layer = layer_factory()
    x = np.random.default_rng(8).standard_normal(shape) + 0.05
    if mode == "eval":
        layer.train()
        layer(x.astype(layer.dtype or np.float32))  # give BatchNorm running statistics
        layer.eval()
    report = S.gradcheck(layer, x)
    assert report.passed, str(report)


def _torch_composite(torch, p_drop):
    nn = torch.nn

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())

        def forward(self, x):
            return x + self.f(x)

    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), Res(),
                        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d((3, 2)), nn.Flatten(), nn.Dropout(p_drop),
                        nn.Linear(36, 5)).double()
    return net


def _swift_composite(p_drop, dtype="float64"):
    return S.Sequential(S.Conv2d(2, 6, 3, padding=1, bias=False, dtype=dtype), S.BatchNorm2d(6, dtype=dtype), S.ReLU(),
                        S.Residual(S.Conv2d(6, 6, 3, padding=1, bias=False, dtype=dtype), S.BatchNorm2d(6, dtype=dtype),
                                   S.ReLU()),
                        S.MaxPool2d(2), S.AdaptiveAvgPool2d((3, 2)), S.Flatten(), S.Dropout(p_drop),
                        S.Linear(36, 5, dtype=dtype))


def _torch_state_for_swift(net):
    """The torch Residual keeps its branch under `.f`; swiftcnn's Residual is the branch itself."""
    return {k.replace(".f.", "."): v.detach().numpy() for k, v in net.state_dict().items()}


def test_composite_network_matches_torch_in_both_modes_and_through_training(torch):
    torch.manual_seed(0)
    net = _torch_composite(torch, 0.0)
    model = _swift_composite(0.0)
    model.load_state_dict(_torch_state_for_swift(net))
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((8, 2, 10, 9)), rng.integers(0, 5, 8)
    opt = S.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    sched = S.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    topt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.5)
    for step in range(5):
        opt.zero_grad()
        loss, g = S.softmax_cross_entropy(model(x), y)
        model.backward(g)
        opt.step()
        sched.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(tt(torch, x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        tsched.step()
        assert abs(loss - tloss.item()) < 1e-10
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
    state = model.state_dict()
    for key, value in _torch_state_for_swift(net).items():
        np.testing.assert_allclose(state[key], value, rtol=1e-8, atol=1e-10, err_msg=key)
    model.eval()
    net.eval()
    np.testing.assert_allclose(model(x), net(tt(torch, x)).detach().numpy(), rtol=1e-9, atol=1e-10)


def test_composite_network_float32_follows_float64():
    S.manual_seed(3)
    m64 = _swift_composite(0.25)
    m32 = _swift_composite(0.25, dtype="float32")
    m32.load_state_dict(m64.state_dict())
    x = np.random.default_rng(10).standard_normal((4, 2, 10, 9))
    m64.eval()
    m32.eval()
    y64, y32 = m64(x), m32(x.astype(np.float32))
    assert np.max(np.abs(y32 - y64)) <= F32_BOUND * max(1.0, np.max(np.abs(y64)))


def test_schedules_match_torch(torch):
    p = torch.nn.Parameter(torch.zeros(1))
    for make, tmake in [
        (lambda o: S.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.01)),
        (lambda o: S.optim.lr_scheduler.StepLR(o, 3, gamma=0.3),
         lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.3)),
    ]:
        opt = S.SGD(S.Linear(2, 2).parameters(), lr=0.2)
        topt = torch.optim.SGD([p], lr=0.2)
        s, ts = make(opt), tmake(topt)
        for _ in range(9):
            topt.step()
            s.step()
            ts.step()
            assert opt.lr == pytest.approx(ts.get_last_lr()[0], rel=1e-12, abs=1e-15)


def test_adamw_decays_the_weights_not_the_gradient(torch):
    layer = S.Linear(3, 2, dtype="float64", seed=1)
    tlayer = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        tlayer.weight.copy_(torch.tensor(layer.weight.data))
        tlayer.bias.copy_(torch.tensor(layer.bias.data))
    opt = S.AdamW(layer.parameters(), lr=0.1, weight_decay=0.5)
    topt = torch.optim.AdamW(tlayer.parameters(), lr=0.1, weight_decay=0.5)
    rng = np.random.default_rng(12)
    for _ in range(4):
        g = rng.standard_normal((2, 3))
        layer.weight.grad[...] = g
        layer.bias.grad[...] = g[:, 0]
        tlayer.weight.grad = torch.tensor(g)
        tlayer.bias.grad = torch.tensor(g[:, 0].copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(layer.weight.data, tlayer.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.bias.data, tlayer.bias.detach().numpy(), rtol=1e-12)


def test_fit_runs_the_scheduler_and_new_layers_save_and_load(tmp_path):
    S.manual_seed(4)
    model = S.Sequential(S.Conv2d(1, 3, 3), S.BatchNorm2d(3), S.LeakyReLU(), S.Flatten(), S.Dropout(0.1),
                         S.Linear(3 * 6 * 6, 4), S.Tanh())
    rng = np.random.default_rng(13)
    x, y = rng.random((32, 1, 8, 8)), rng.integers(0, 4, 32)
    model.fit(x, y, epochs=2, progress=False)
    model.eval()
    path = tmp_path / "m.npz"
    model.save(str(path))
    loaded = S.load(str(path))
    assert [type(layer).__name__ for layer in loaded] == [type(layer).__name__ for layer in model]
    loaded.eval()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert int(loaded[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 2


# ---- grouped and "same" convolutions ---------------------------------------------------------------
@pytest.mark.parametrize("C, K, groups, k, padding, dilation", [
    (4, 6, 2, 3, 1, 1), (4, 4, 4, 3, "same", 1), (3, 6, 3, 4, "same", 2), (2, 2, 1, 2, "same", 1),
    (4, 8, 2, 3, "valid", 1), (6, 6, 6, 5, 2, 1),
])
def test_grouped_and_same_conv2d_match_torch(torch, C, K, groups, k, padding, dilation):
    rng = np.random.default_rng(14)
    x, w, b = rng.standard_normal((2, C, 7, 6)), rng.standard_normal((K, C // groups, k, k)), rng.standard_normal(K)
    tx, tw, tb = tt(torch, x, True), tt(torch, w, True), tt(torch, b, True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(ty.shape)
    ty.backward(tt(torch, g))
    y = F.conv2d(x, w, b, padding=padding, dilation=dilation, groups=groups)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(F.conv2d_backward(g, x, w, padding=padding, dilation=dilation, groups=groups),
                            (tx, tw, tb)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_grouped_same_conv_layer_gradcheck_state_dict_and_attributes(torch):
    S.manual_seed(5)
    layer = S.Conv2d(4, 6, 4, padding="same", dilation=2, groups=2)
    assert layer.padding == "same" and layer.groups == 2 and layer.weight.shape == (6, 2, 4, 4)
    assert S.gradcheck(layer, np.random.default_rng(15).standard_normal((2, 4, 6, 5))).passed
    depthwise = S.Conv2d(8, 8, 3, padding=1, groups=8, dtype="float64")
    t = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8).double()
    depthwise.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(16).standard_normal((3, 8, 9, 9))
    np.testing.assert_allclose(depthwise(x), t(tt(torch, x)).detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), ValueError, "divisible by groups"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", stride=2), ValueError, "same"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding="full"), ValueError, "padding"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, groups=0), ValueError, "groups"),
])
def test_conv2d_rejects_bad_groups_and_padding(kwargs, error, words):
    with pytest.raises(error, match=words):
        S.Conv2d(**kwargs)


def test_functional_conv2d_rejects_bad_groups_naming_the_argument():
    x, w = np.ones((1, 3, 5, 5)), np.ones((4, 1, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, w, groups=2)
    with pytest.raises(ValueError, match="same"):
        F.conv2d(np.ones((1, 4, 5, 5)), w, stride=2, padding="same", groups=4)
