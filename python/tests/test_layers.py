"""Layers, Sequential, Parameters, state dicts and initialisation (API.md "Layers and models")."""
import gc

import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

S = swiftcnn
LECTURE_KEYS = ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
                "11.weight", "11.bias"]
LECTURE_SHAPES = {"0.weight": (6, 1, 5, 5), "0.bias": (6,), "3.weight": (16, 6, 5, 5), "3.bias": (16,),
                  "7.weight": (120, 400), "7.bias": (120,), "9.weight": (84, 120), "9.bias": (84,),
                  "11.weight": (10, 84), "11.bias": (10,)}


def lecture(act=None, dtype="float32", seed=None):
    act = act or S.Sigmoid
    seeds = [None] * 5 if seed is None else [seed + i for i in range(5)]
    return S.Sequential(S.Conv2d(1, 6, 5, padding=2, dtype=dtype, seed=seeds[0]), act(), S.MaxPool2d(2),
                        S.Conv2d(6, 16, 5, dtype=dtype, seed=seeds[1]), act(), S.MaxPool2d(2), S.Flatten(),
                        S.Linear(400, 120, dtype=dtype, seed=seeds[2]), act(),
                        S.Linear(120, 84, dtype=dtype, seed=seeds[3]), act(),
                        S.Linear(84, 10, dtype=dtype, seed=seeds[4]))


def snapshot(model):
    return {p.name: (p.data.copy(), p.grad.copy()) for p in model.parameters()}


def assert_unchanged(model, snap):
    for p in model.parameters():
        d, g = snap[p.name]
        assert np.array_equal(p.data, d), f"{p.name}.data changed"
        assert np.array_equal(p.grad, g), f"{p.name}.grad changed"


# ---------------------------------------------------------------------------------------------
# attributes and reprs
# ---------------------------------------------------------------------------------------------
def test_conv2d_attributes():
    c = S.Conv2d(3, 8, 5, stride=2, padding=(1, 2), dilation=(2, 1))
    assert c.in_channels == 3 and c.out_channels == 8
    assert c.kernel_size == (5, 5) and isinstance(c.kernel_size, tuple)
    assert c.stride == (2, 2) and isinstance(c.stride, tuple)
    assert c.padding == (1, 2) and isinstance(c.padding, tuple)
    assert c.dilation == (2, 1) and isinstance(c.dilation, tuple)
    assert c.dtype == np.float32
    assert c.weight.data.shape == (8, 3, 5, 5) and c.bias.data.shape == (8,)
    c2 = S.Conv2d(3, 8, (3, 1), bias=False, dtype="float64")
    assert tuple(c2.kernel_size) == (3, 1)
    assert tuple(c2.stride) == (1, 1) and tuple(c2.padding) == (0, 0) and tuple(c2.dilation) == (1, 1)
    assert c2.bias is None
    assert c2.dtype == np.float64
    assert [p.name for p in c2.parameters()] == ["weight"]


@pytest.mark.parametrize("spec", ["float32", "float64", np.float32, np.float64, np.dtype("float64")])
def test_dtype_spellings(spec):
    lin = S.Linear(3, 2, dtype=spec)
    assert lin.dtype == np.dtype(spec)
    assert lin.weight.data.dtype == np.dtype(spec) and lin.weight.grad.dtype == np.dtype(spec)
    assert lin(np.ones((1, 3), np.dtype(spec))).dtype == np.dtype(spec)


def test_linear_and_pool_attributes():
    lin = S.Linear(400, 120)
    assert lin.in_features == 400 and lin.out_features == 120
    assert lin.weight.data.shape == (120, 400) and lin.bias.data.shape == (120,)
    assert S.Linear(4, 2, bias=False).bias is None
    mp = S.MaxPool2d(2)
    assert mp.kernel_size == (2, 2) and mp.stride == (2, 2) and mp.padding == (0, 0)
    assert all(isinstance(v, tuple) for v in (mp.kernel_size, mp.stride, mp.padding))
    ap = S.AvgPool2d((3, 2), stride=1, padding=(1, 0))
    assert ap.kernel_size == (3, 2) and ap.stride == (1, 1) and ap.padding == (1, 0)
    assert S.AvgPool2d([3, 3], [2, 2]).stride == (2, 2)


def test_reprs_are_readable():
    model = lecture()
    for layer in model:
        r = repr(layer)
        assert type(layer).__name__ in r and "object at 0x" not in r
    rc = repr(S.Conv2d(1, 6, 5, padding=2))
    assert "Conv2d" in rc and "6" in rc and "5" in rc
    assert "400" in repr(S.Linear(400, 120)) and "120" in repr(S.Linear(400, 120))
    rs = repr(model)
    assert rs.startswith("Sequential")
    for name in ["Conv2d", "Sigmoid", "MaxPool2d", "Flatten", "Linear"]:
        assert name in rs
    assert rs.count("Conv2d") == 2 and rs.count("Linear") == 3
    p = model.parameters()[0]
    assert "0.weight" in repr(p) or "Parameter" in repr(p)


# ---------------------------------------------------------------------------------------------
# Sequential containers
# ---------------------------------------------------------------------------------------------
def test_sequential_holds_the_very_layers_given():
    layers = [S.Conv2d(1, 2, 3), S.ReLU(), S.Flatten(), S.Linear(8, 3)]
    model = S.Sequential(*layers)
    assert isinstance(model.layers, list)
    assert len(model) == 4 and len(model.layers) == 4
    for i, layer in enumerate(layers):
        assert model[i] is layer and model.layers[i] is layer
    assert model[-1] is layers[-1]
    assert list(iter(model)) == layers and all(a is b for a, b in zip(model, layers))
    with pytest.raises(IndexError):
        model[4]


def test_sequential_forward_is_the_composition(rng, dtype):
    model = S.Sequential(S.Conv2d(2, 3, 3, padding=1, dtype=dtype, seed=1), S.ReLU(), S.MaxPool2d(2),
                         S.Flatten(), S.Linear(12, 4, dtype=dtype, seed=2), S.Sigmoid())
    x = rng.standard_normal((5, 2, 4, 4)).astype(dtype)
    c, l = model[0], model[4]
    h = F.conv2d(x, c.weight.data, c.bias.data, 1, 1)
    h = F.max_pool2d(F.relu(h), 2).reshape(5, -1)
    expect = F.sigmoid(F.linear(h, l.weight.data, l.bias.data))
    y = model(x)
    assert y.dtype == dtype and y.shape == (5, 4)
    np.testing.assert_allclose(y, expect, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    np.testing.assert_array_equal(model.forward(x), y)


def test_nested_sequential_names_and_forward(rng):
    inner = S.Sequential(S.Flatten(), S.Linear(18, 4, seed=3))
    model = S.Sequential(S.Conv2d(1, 2, 2, seed=4), S.ReLU(), inner)
    names = [p.name for p in model.parameters()]
    assert names == ["0.weight", "0.bias", "2.1.weight", "2.1.bias"]
    assert list(model.state_dict().keys()) == names
    assert [p.name for p in inner.parameters()] == ["1.weight", "1.bias"]
    assert model[2] is inner and model[2][1] is inner.layers[1]
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    y = model(x)
    np.testing.assert_allclose(y, inner(model[1](model[0](x))), rtol=1e-6, atol=1e-7)
    g = model.backward(np.ones_like(y))
    assert g.shape == x.shape


def test_a_layer_shared_by_two_models_shares_its_parameters(rng):
    lin = S.Linear(3, 2, seed=5)
    m1 = S.Sequential(lin)
    m2 = S.Sequential(S.ReLU(), lin)
    assert np.shares_memory(m1.parameters()[0].data, lin.weight.data)
    assert np.shares_memory(m2.parameters()[0].data, lin.weight.data)
    lin.weight.data[...] = 0.5
    assert (m1.parameters()[0].data == 0.5).all() and (m2.parameters()[0].data == 0.5).all()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(m1(x), 1.5 + lin.bias.data[None, :], rtol=1e-6)


def test_sequential_of_mixed_dtypes_is_a_type_error():
    with pytest.raises(TypeError, match="float32|float64"):
        S.Sequential(S.Linear(3, 2, dtype="float32"), S.Linear(2, 2, dtype="float64"))


def test_parameterless_sequential_adopts_the_input_dtype(rng):
    model = S.Sequential(S.ReLU(), S.MaxPool2d(2), S.Flatten())
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((2, 1, 4, 4)).astype(dt)
        y = model(x)
        assert y.dtype == dt and y.shape == (2, 4)
        g = model.backward(np.ones_like(y))
        assert g.dtype == dt and g.shape == x.shape


def test_empty_sequential_is_the_identity_or_rejected(rng):
    try:
        model = S.Sequential()
    except (ValueError, TypeError):
        return
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), x)
    assert len(model) == 0 and model.parameters() == []


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
def test_parameters_names_shapes_and_order():
    model = lecture()
    params = model.parameters()
    assert isinstance(params, list)
    assert [p.name for p in params] == LECTURE_KEYS
    for p in params:
        assert type(p).__name__ == "Parameter"
        assert p.data.shape == LECTURE_SHAPES[p.name] and p.grad.shape == p.data.shape
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    assert [p.name for p in model[0].parameters()] == ["weight", "bias"]
    assert [p.name for p in S.ReLU().parameters()] == []


def test_parameter_arrays_are_the_same_for_life(rng):
    model = lecture(seed=1)
    p0 = model.parameters()
    data_ids = [p.data for p in p0]
    for _ in range(2):
        x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
        model.backward(np.ones_like(model(x)))
        model.zero_grad()
        model.load_state_dict(lecture(seed=2).state_dict())
    p1 = model.parameters()
    for a, b, d in zip(p0, p1, data_ids):
        assert a.data is a.data and a.grad is a.grad
        assert b.data is a.data and b.grad is a.grad
        assert a.data is d
    # the Sequential's parameters are the layers' own arrays
    assert model.parameters()[0].data is model[0].weight.data or np.shares_memory(model.parameters()[0].data,
                                                                                 model[0].weight.data)
    assert np.shares_memory(model.parameters()[-1].grad, model[11].bias.grad)
    assert model[0].weight.data is model[0].parameters()[0].data


def test_parameter_attributes_cannot_be_assigned():
    lin = S.Linear(3, 2)
    p = lin.parameters()[0]
    for attr in ("data", "grad"):
        with pytest.raises(AttributeError):
            setattr(p, attr, np.zeros((2, 3), np.float32))
    assert p.data is lin.weight.data


def test_writing_into_parameter_data_changes_the_model(rng):
    lin = S.Linear(3, 2, seed=3)
    lin.weight.data[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    lin.bias.data[...] = [1, -1]
    y = lin(np.array([[1, 1, 1]], np.float32))
    np.testing.assert_allclose(y, [[4, 11]])


def test_grads_start_at_zero_accumulate_and_zero_grad_in_place(rng, dtype):
    model = S.Sequential(S.Conv2d(1, 2, 3, dtype=dtype, seed=5), S.Sigmoid(), S.Flatten(),
                         S.Linear(8, 3, dtype=dtype, seed=6))
    for p in model.parameters():
        assert (p.grad == 0).all()
    x = rng.standard_normal((2, 1, 4, 4)).astype(dtype)
    g = rng.standard_normal((2, 3)).astype(dtype)
    model(x)
    model.backward(g)
    once = {p.name: p.grad.copy() for p in model.parameters()}
    assert any(np.abs(v).max() > 0 for v in once.values())
    model(x)
    model.backward(g)
    for p in model.parameters():
        np.testing.assert_allclose(p.grad, 2 * once[p.name], rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-7)
    grads = [p.grad for p in model.parameters()]
    data = {p.name: p.data.copy() for p in model.parameters()}
    model.zero_grad()
    for p, gref in zip(model.parameters(), grads):
        assert p.grad is gref and (p.grad == 0).all()
        assert np.array_equal(p.data, data[p.name])
    # zero_grad of a child zeroes the shared arrays seen through the parent
    model(x)
    model.backward(g)
    model[3].zero_grad()
    assert (model.parameters()[2].grad == 0).all() and (model.parameters()[0].grad != 0).any()


def test_layer_forward_and_backward_match_the_functional_ops(rng, dtype):
    conv = S.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1, dtype=dtype, seed=7)
    x = rng.standard_normal((2, 2, 7, 7)).astype(dtype)
    y = conv(x)
    yf = F.conv2d(x, conv.weight.data, conv.bias.data, 2, 1, 1)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, yf, **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = conv.backward(g)
    fx, fw, fb = F.conv2d_backward(g, x, conv.weight.data, 2, 1, 1)
    np.testing.assert_allclose(gx, fx, **tol)
    np.testing.assert_allclose(conv.weight.grad, fw, **tol)
    np.testing.assert_allclose(conv.bias.grad, fb, **tol)
    lin = S.Linear(5, 4, dtype=dtype, seed=8)
    xl = rng.standard_normal((3, 5)).astype(dtype)
    np.testing.assert_allclose(lin(xl), F.linear(xl, lin.weight.data, lin.bias.data), **tol)
    gl = rng.standard_normal((3, 4)).astype(dtype)
    lx = lin.backward(gl)
    rx, rw, rb = F.linear_backward(gl, xl, lin.weight.data)
    np.testing.assert_allclose(lx, rx, **tol)
    np.testing.assert_allclose(lin.weight.grad, rw, **tol)
    np.testing.assert_allclose(lin.bias.grad, rb, **tol)


def test_parameterless_layers_match_the_functional_ops(rng, dtype):
    x = R.distinct_values(rng, (2, 3, 6, 6)).astype(dtype)
    cases = [
        (S.MaxPool2d(2), lambda: F.max_pool2d(x, 2), lambda g: F.max_pool2d_backward(g, x, 2)),
        (S.AvgPool2d(3, 2, 1), lambda: F.avg_pool2d(x, 3, 2, 1), lambda g: F.avg_pool2d_backward(g, x, 3, 2, 1)),
        (S.Sigmoid(), lambda: F.sigmoid(x), lambda g: F.sigmoid_backward(g, F.sigmoid(x))),
        (S.ReLU(), lambda: F.relu(x), lambda g: F.relu_backward(g, x)),
    ]
    for layer, fwd, bwd in cases:
        y = layer(x)
        np.testing.assert_allclose(y, fwd(), rtol=1e-6, atol=1e-7)
        g = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_allclose(layer.backward(g), bwd(g), rtol=1e-6, atol=1e-7)
    fl = S.Flatten()
    y = fl(x)
    assert y.shape == (2, 108)
    np.testing.assert_array_equal(y, x.reshape(2, 108))
    np.testing.assert_array_equal(fl.backward(y * 2), x * 2)
    assert S.Flatten()(np.zeros((3, 4), dtype)).shape == (3, 4)
    assert S.Flatten()(np.zeros((3, 2, 5), dtype)).shape == (3, 10)
    assert S.Flatten()(np.zeros((3, 1, 2, 2, 2), dtype)).shape == (3, 8)


@pytest.mark.parametrize("make", [lambda: S.Conv2d(1, 2, 3), lambda: S.Linear(3, 2), lambda: S.MaxPool2d(2),
                                  lambda: S.AvgPool2d(2), lambda: S.Sigmoid(), lambda: S.ReLU(),
                                  lambda: S.Flatten(), lambda: lecture(), lambda: S.Sequential(S.ReLU())],
                         ids=["Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "Sigmoid", "ReLU", "Flatten",
                              "lecture", "Sequential(ReLU)"])
def test_backward_before_forward_is_a_runtime_error(make):
    layer = make()
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="(?i)forward"):
        layer.backward(np.ones((1, 2, 2, 2), np.float32))
    assert_unchanged(layer, snap)


def test_backward_uses_the_last_forward(rng):
    lin = S.Linear(3, 2, dtype="float64", seed=9)
    x1 = rng.standard_normal((4, 3))
    x2 = rng.standard_normal((5, 3))
    lin(x1)
    lin(x2)
    g = rng.standard_normal((5, 2))
    gx = lin.backward(g)
    assert gx.shape == (5, 3)
    np.testing.assert_allclose(lin.weight.grad, g.T @ x2, rtol=1e-12)
    with pytest.raises(ValueError):
        lin.backward(rng.standard_normal((4, 2)))  # the shape of the first forward's output


def test_mutating_the_input_before_backward_never_crashes(rng):
    model = lecture(act=S.ReLU, seed=3)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = model(x)
    x[...] = np.nan
    g = model.backward(np.ones_like(y))
    assert g.shape == x.shape
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = model(x)
    del x
    gc.collect()
    assert model.backward(np.ones_like(y)).shape == (2, 1, 28, 28)


def test_lists_and_other_layouts_are_converted(rng):
    lin = S.Linear(3, 2, seed=10)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    ref = lin(x)
    np.testing.assert_allclose(lin(x.tolist()), ref, rtol=1e-6)
    assert lin(x.tolist()).dtype == np.float32
    np.testing.assert_array_equal(lin(np.asfortranarray(x)), ref)
    np.testing.assert_array_equal(lin(x[::-1].copy()[::-1]), ref)
    np.testing.assert_array_equal(lin(x.astype(">f4")), ref)


# ---------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ---------------------------------------------------------------------------------------------
def test_state_dict_names_shapes_and_copies():
    model = lecture()
    sd = model.state_dict()
    assert isinstance(sd, dict)
    assert list(sd.keys()) == LECTURE_KEYS
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.shape == LECTURE_SHAPES[k] and v.dtype == np.float32
    for p in model.parameters():
        assert not np.shares_memory(sd[p.name], p.data)
        np.testing.assert_array_equal(sd[p.name], p.data)
    before = model.parameters()[0].data.copy()
    sd["0.weight"][...] = 123
    np.testing.assert_array_equal(model.parameters()[0].data, before)
    assert list(S.Conv2d(1, 2, 3).state_dict()) == ["weight", "bias"]
    assert list(S.Linear(2, 2, bias=False).state_dict()) == ["weight"]
    assert S.ReLU().state_dict() == {}


def test_load_state_dict_writes_in_place_and_casts(dtype):
    model = lecture(dtype=dtype, seed=1)
    other = lecture(dtype="float64" if dtype == np.float32 else "float32", seed=2)
    arrays = [p.data for p in model.parameters()]
    sd = other.state_dict()
    model.load_state_dict(sd)
    for p, a in zip(model.parameters(), arrays):
        assert p.data is a and p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, sd[p.name].astype(dtype))


def test_load_state_dict_strict_errors_name_the_key_and_change_nothing(rng):
    model = lecture(seed=1)
    snap = snapshot(model)
    good = lecture(seed=2).state_dict()

    missing = dict(good)
    del missing["9.bias"]
    with pytest.raises(ValueError, match=r"9\.bias"):
        model.load_state_dict(missing)
    assert_unchanged(model, snap)

    unexpected = dict(good)
    unexpected["12.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"12\.weight"):
        model.load_state_dict(unexpected)
    assert_unchanged(model, snap)

    wrong = dict(good)
    wrong["7.weight"] = np.zeros((400, 120), np.float32)  # transposed
    with pytest.raises(ValueError, match=r"7\.weight"):
        model.load_state_dict(wrong)
    assert_unchanged(model, snap)
    with pytest.raises(ValueError, match=r"7\.weight"):
        model.load_state_dict(wrong, strict=False)
    assert_unchanged(model, snap)


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    model = lecture(seed=1)
    before = model.state_dict()
    src = lecture(seed=2).state_dict()
    partial = {k: v for k, v in src.items() if k.startswith(("0.", "3."))}
    partial["head.weight"] = np.zeros(3, np.float32)
    missing, unexpected = model.load_state_dict(partial, strict=False)
    assert sorted(missing) == sorted(k for k in LECTURE_KEYS if not k.startswith(("0.", "3.")))
    assert list(unexpected) == ["head.weight"]
    after = model.state_dict()
    for k in LECTURE_KEYS:
        np.testing.assert_array_equal(after[k], src[k] if k.startswith(("0.", "3.")) else before[k])


def test_nested_state_dict_round_trip():
    def make(seed):
        return S.Sequential(S.Conv2d(1, 2, 3, seed=seed), S.ReLU(),
                            S.Sequential(S.Flatten(), S.Linear(8, 3, seed=seed + 1)))

    a, b = make(1), make(5)
    assert list(a.state_dict()) == ["0.weight", "0.bias", "2.1.weight", "2.1.bias"]
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


# ---------------------------------------------------------------------------------------------
# initialisation and seeds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,fan_in", [(lambda: S.Conv2d(3, 16, 5, seed=1), 75),
                                         (lambda: S.Conv2d(6, 16, (5, 3), seed=2, dtype="float64"), 90),
                                         (lambda: S.Linear(400, 120, seed=3), 400),
                                         (lambda: S.Linear(84, 10, seed=4, dtype="float64"), 84)])
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(make, fan_in):
    layer = make()
    bound = 1 / np.sqrt(fan_in)
    w = layer.weight.data.astype(np.float64)
    b = layer.bias.data.astype(np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(b).max() <= bound * (1 + 1e-6)
    # uniform on (-bound, bound): spans the interval, mean ~0, std ~ bound/sqrt(3)
    assert np.abs(w).max() > 0.9 * bound
    assert w.min() < -0.8 * bound and w.max() > 0.8 * bound
    assert abs(w.mean()) < 0.1 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound / np.sqrt(3)
    assert len(np.unique(w)) > 0.95 * w.size
    if b.size >= 10:
        assert np.abs(b).max() > 0.5 * bound and len(np.unique(b)) == b.size


def test_seed_makes_layers_reproducible():
    a = S.Conv2d(2, 4, 3, seed=42)
    b = S.Conv2d(2, 4, 3, seed=42)
    c = S.Conv2d(2, 4, 3, seed=43)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    assert not np.array_equal(S.Linear(5, 5, seed=0).weight.data, S.Linear(5, 5, seed=1).weight.data)


def test_manual_seed_makes_models_reproducible():
    S.manual_seed(1234)
    a = lecture()
    S.manual_seed(1234)
    b = lecture()
    c = lecture()  # the generator moved on
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(b.state_dict()["0.weight"], c.state_dict()["0.weight"])
    # layers of one model get different weights even when shaped alike
    S.manual_seed(7)
    m = S.Sequential(S.Linear(4, 4), S.Linear(4, 4))
    assert not np.array_equal(m[0].weight.data, m[1].weight.data)
    S.manual_seed(8)
    assert not np.array_equal(S.Linear(4, 4).weight.data, m[0].weight.data)
