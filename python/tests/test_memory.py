"""Memory: nothing swiftcnn does from Python leaks, and nothing it holds outlives its owner.

- Every functional op called 100k times (small shapes, one worker thread) keeps the resident set
  flat: RSS (from /proc/self/statm) after the calls minus RSS after a warm-up stays under 4 MB.
  All 18 op variants take ~16 s together on an idle 2-core machine (up to ~3x that when the
  machine is busy). Set SWIFTCNN_QUICK_MEMORY=1 to run 25k calls of the eight slower ops (conv2d
  and its backward, pooling, linear, correlate2d/convolve2d) instead. Each op's result is at least
  ~0.5 KB, so a leaked result per call (or leaked Swift scratch) would grow RSS by >= 12 MB.
- 1k create / train / destroy cycles of a small model (layers, Sequential, optimizer, fit and a
  manual step) keep RSS flat.
- sys.getrefcount of every input of a functional op (arrays, lists, `out=`, tuples of ints) is the
  same before and after the call, including calls that raise.
- When a model is deleted and nothing else holds it, its parameter arrays, layers and Swift memory
  are freed (weakrefs die; a 32 MB model's memory is returned).
"""
from __future__ import annotations

import gc
import os
import sys
import weakref

import numpy as np
import pytest

import swiftcnn as S
import swiftcnn.functional as F

QUICK = bool(os.environ.get("SWIFTCNN_QUICK_MEMORY"))
FULL = 100_000
REDUCED = 25_000 if QUICK else FULL
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
RSS_BOUND = 4 * MB
SANITIZED = bool(os.environ.get("SWIFTCNN_SANITIZED"))  # set by scripts/sanitize.sh

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")


try:  # glibc: give free heap memory back to the OS before measuring, so RSS tracks live memory
    import ctypes

    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _malloc_trim = None


def rss():
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _inputs():
    r = np.random.default_rng(0)
    d = {}
    d["x"] = r.standard_normal((2, 2, 6, 6))
    d["w"] = r.standard_normal((3, 2, 3, 3))
    d["b"] = r.standard_normal(3)
    d["gy"] = r.standard_normal((2, 3, 6, 6))       # conv2d(x, w, b, 1, 1) output shape
    d["gp"] = r.standard_normal((2, 2, 3, 3))       # pool(x, 2) output shape
    d["xl"] = r.standard_normal((8, 10))
    d["wl"] = r.standard_normal((8, 10))
    d["bl"] = r.standard_normal(8)
    d["gl"] = r.standard_normal((8, 8))
    d["z"] = r.standard_normal((8, 10)) * 3
    d["lab"] = r.integers(0, 10, 8)
    d["t"] = r.random((8, 10))
    d["img"] = r.standard_normal((8, 8))
    d["k"] = r.standard_normal((3, 3))
    return d


D = _inputs()

# (name, call, number of calls)
OPS = [
    ("conv2d", lambda: F.conv2d(D["x"], D["w"], D["b"], 1, 1), REDUCED),
    ("conv2d_backward", lambda: F.conv2d_backward(D["gy"], D["x"], D["w"], 1, 1), REDUCED),
    ("max_pool2d", lambda: F.max_pool2d(D["x"], 2), REDUCED),
    ("max_pool2d_backward", lambda: F.max_pool2d_backward(D["gp"], D["x"], 2), REDUCED),
    ("avg_pool2d", lambda: F.avg_pool2d(D["x"], 2), REDUCED),
    ("avg_pool2d_backward", lambda: F.avg_pool2d_backward(D["gp"], D["x"], 2), REDUCED),
    ("linear", lambda: F.linear(D["xl"], D["wl"], D["bl"]), REDUCED),
    ("linear_backward", lambda: F.linear_backward(D["gl"], D["xl"], D["wl"]), REDUCED),
    ("sigmoid", lambda: F.sigmoid(D["xl"]), FULL),
    ("sigmoid_backward", lambda: F.sigmoid_backward(D["z"], D["t"]), FULL),
    ("relu", lambda: F.relu(D["xl"]), FULL),
    ("relu_backward", lambda: F.relu_backward(D["z"], D["xl"]), FULL),
    ("softmax", lambda: F.softmax(D["z"]), FULL),
    ("softmax_cross_entropy(labels)", lambda: F.softmax_cross_entropy(D["z"], D["lab"]), FULL),
    ("softmax_cross_entropy(probs)", lambda: F.softmax_cross_entropy(D["z"], D["t"]), FULL),
    ("binary_cross_entropy_with_logits", lambda: F.binary_cross_entropy_with_logits(D["z"], D["t"]), FULL),
    ("correlate2d", lambda: F.correlate2d(D["img"], D["k"], "same"), REDUCED),
    ("convolve2d", lambda: F.convolve2d(D["img"], D["k"], "full"), REDUCED),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Small shapes: the worker pool only adds overhead (and RSS noise from thread stacks).
    old = S.get_num_threads()
    S.set_num_threads(1)
    yield
    S.set_num_threads(old)


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator quarantine makes RSS meaningless")
@pytest.mark.parametrize("name,call,n", OPS, ids=[o[0] for o in OPS])
def test_many_calls_of_a_functional_op_keep_rss_flat(name, call, n):
    for _ in range(2000):
        call()
    gc.collect()
    before = rss()
    for _ in range(n):
        call()
    gc.collect()
    grown = rss() - before
    assert grown < RSS_BOUND, f"{name}: RSS grew by {grown / MB:.1f} MB over {n} calls"


def _small_model(seed):
    return S.Sequential(S.Conv2d(1, 3, 3, padding=1, seed=seed), S.ReLU(), S.MaxPool2d(2),
                        S.Conv2d(3, 4, 3, seed=seed + 1), S.Sigmoid(), S.AvgPool2d(2),
                        S.Flatten(), S.Linear(4, 5, seed=seed + 2))


def _cycle(i, x, y):
    model = _small_model(i)
    model.fit(x, y, epochs=1, batch_size=8, progress=False, seed=i,
              optimizer=S.Adam(model.parameters(), lr=1e-3))
    opt = S.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.zero_grad()
    loss, g = S.softmax_cross_entropy(model(x), y)
    model.backward(g)
    opt.step()
    model.state_dict()
    return loss


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator quarantine makes RSS meaningless")
def test_create_train_destroy_cycles_keep_rss_flat():
    r = np.random.default_rng(3)
    x = r.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = r.integers(0, 5, 16)
    for i in range(100):
        _cycle(i, x, y)
    gc.collect()
    before = rss()
    for i in range(1000):
        assert np.isfinite(_cycle(i, x, y))
    gc.collect()
    grown = rss() - before
    assert grown < RSS_BOUND, f"RSS grew by {grown / MB:.1f} MB over 1000 create/train/destroy cycles"


# ---------------------------------------------------------------------------------------------
# reference counts of inputs, after calls that succeed and calls that raise
# ---------------------------------------------------------------------------------------------
def _refcount_cases():
    r = np.random.default_rng(1)
    x = r.standard_normal((2, 2, 6, 6))
    x32 = x.astype(np.float32)
    xs = x[:, :, ::2, ::-1]                    # non-contiguous: converted
    w = r.standard_normal((3, 2, 3, 3))
    wbad = r.standard_normal((3, 4, 3, 3))     # wrong channels
    b = r.standard_normal(3)
    out = np.empty((2, 3, 6, 6))
    outbad = np.empty((2, 3, 5, 5))
    gy = r.standard_normal((2, 3, 6, 6))
    gp = r.standard_normal((2, 2, 3, 3))
    xl = r.standard_normal((4, 5))
    xl_list = xl.tolist()
    wl = r.standard_normal((3, 5))
    z = r.standard_normal((4, 3))
    lab = np.array([0, 1, 2, 0])
    labbad = np.array([0, 1, 7, 0])
    t = r.random((4, 3))
    img = r.standard_normal((5, 5))
    k = r.standard_normal((3, 3))
    kbig = r.standard_normal((7, 7))
    ints = np.arange(4)
    stride = (1, 1)
    pad = (1, 1)
    mode = "same"
    objs = dict(locals())
    del objs["r"]
    cases = [
        # successful calls
        ("conv2d", lambda: F.conv2d(x, w, b, stride, pad, out=out), False),
        ("conv2d noncontig", lambda: F.conv2d(xs, w, b), False),
        ("conv2d_backward", lambda: F.conv2d_backward(gy, x, w, stride, pad), False),
        ("max_pool2d", lambda: F.max_pool2d(x, 2), False),
        ("max_pool2d_backward", lambda: F.max_pool2d_backward(gp, x, 2), False),
        ("avg_pool2d_backward", lambda: F.avg_pool2d_backward(gp, x, 2), False),
        ("linear list", lambda: F.linear(xl_list, wl), False),
        ("linear_backward", lambda: F.linear_backward(z, xl, wl), False),
        ("sigmoid out=x", lambda: F.sigmoid(t, out=t), False),
        ("relu_backward", lambda: F.relu_backward(z, z), False),
        ("softmax", lambda: F.softmax(z), False),
        ("sce labels", lambda: F.softmax_cross_entropy(z, lab), False),
        ("sce probs", lambda: F.softmax_cross_entropy(z, t), False),
        ("bce", lambda: F.binary_cross_entropy_with_logits(z, t), False),
        ("correlate2d", lambda: F.correlate2d(img, k, mode), False),
        # calls that raise
        ("conv2d bad channels", lambda: F.conv2d(x, wbad, b), True),
        ("conv2d mixed dtypes", lambda: F.conv2d(x32, w, b), True),
        ("conv2d bad out", lambda: F.conv2d(x, w, b, stride, pad, out=outbad), True),
        ("conv2d out overlaps", lambda: F.conv2d(x, w, b, out=x), True),
        ("conv2d bad stride", lambda: F.conv2d(x, w, b, (0, 1)), True),
        ("conv2d bad keyword", lambda: F.conv2d(x, w, b, bogus=stride), True),
        ("conv2d_backward bad grad", lambda: F.conv2d_backward(gp, x, w), True),
        ("max_pool2d bad padding", lambda: F.max_pool2d(x, 2, None, 3), True),
        ("max_pool2d_backward bad grad", lambda: F.max_pool2d_backward(gy, x, 2), True),
        ("linear bad shape", lambda: F.linear(xl_list, w), True),
        ("sigmoid int", lambda: F.sigmoid(ints), True),
        ("sigmoid_backward mismatch", lambda: F.sigmoid_backward(z, xl), True),
        ("sce bad label", lambda: F.softmax_cross_entropy(z, labbad), True),
        ("sce bad target", lambda: F.softmax_cross_entropy(z, xl), True),
        ("bce mismatch", lambda: F.binary_cross_entropy_with_logits(z, xl), True),
        ("correlate2d kernel too big", lambda: F.correlate2d(img, kbig), True),
        ("correlate2d bad mode", lambda: F.correlate2d(img, k, "bogus"), True),
    ]
    return objs, cases


def test_input_refcounts_are_unchanged_by_calls_and_by_calls_that_raise():
    objs, cases = _refcount_cases()
    for name, call, raises in cases:
        for _ in range(3):  # warm up (interned strings, caches)
            try:
                call()
            except (ValueError, TypeError, OverflowError):
                pass
        before = {k: sys.getrefcount(v) for k, v in objs.items()}
        for _ in range(50):
            try:
                result = call()
                assert not raises, f"{name}: expected an exception"
                del result
            except (ValueError, TypeError, OverflowError):
                assert raises, f"{name}: raised unexpectedly"
        after = {k: sys.getrefcount(v) for k, v in objs.items()}
        changed = {k: (before[k], after[k]) for k in objs if before[k] != after[k]}
        assert not changed, f"{name}: refcounts changed {changed}"


def test_results_hold_no_extra_references():
    r = np.random.default_rng(2)
    x = r.standard_normal((2, 2, 6, 6))
    w = r.standard_normal((3, 2, 3, 3))
    y = F.conv2d(x, w)
    assert sys.getrefcount(y) == 2 and y.base is None
    gx, gw, gb = F.conv2d_backward(y, x, w)
    assert sys.getrefcount(gx) == 2 and sys.getrefcount(gw) == 2 and sys.getrefcount(gb) == 2
    loss, g = F.softmax_cross_entropy(r.standard_normal((3, 4)), np.array([0, 1, 2]))
    assert sys.getrefcount(g) == 2 and g.base is None


# ---------------------------------------------------------------------------------------------
# deleting a model frees its parameters, layers and Swift memory
# ---------------------------------------------------------------------------------------------
def test_deleting_a_model_frees_its_parameters_and_layers():
    model = _small_model(0)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    opt = S.SGD(model.parameters(), lr=0.1)
    model.backward(np.ones_like(model(x)))
    opt.step()
    refs = [weakref.ref(model)] + [weakref.ref(layer) for layer in model.layers]
    for p in model.parameters():
        refs += [weakref.ref(p.data), weakref.ref(p.grad)]
    del model, opt, p
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert not alive, f"{len(alive)} objects outlived the model: {[type(r()).__name__ for r in alive][:5]}"


def test_a_parameter_array_keeps_the_memory_until_it_is_dropped():
    model = S.Sequential(S.Linear(10, 4, seed=0), S.ReLU(), S.Linear(4, 2, seed=1))
    w = model[0].weight.data
    expected = w.copy()
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    np.testing.assert_array_equal(w, expected)  # still valid memory
    wr = weakref.ref(w)
    del w
    gc.collect()
    assert wr() is None


@pytest.mark.skipif(SANITIZED, reason="ASan's allocator quarantine makes RSS meaningless")
def test_swift_memory_of_a_deleted_model_is_returned():
    # Each model holds ~32 MB in Swift memory: layer-owned activation and gradient buffers for a
    # (2000, 1000) float64 output (16 MB each) plus its parameters. A leak of one model per cycle
    # would grow RSS by >= 320 MB over the 10 measured cycles; the bound (two models' worth) leaves
    # room for what the allocator keeps cached or fragmented. The growth is measured from the
    # fourth cycle on.
    x = np.ones((2000, 100))

    def make_and_drop():
        model = S.Sequential(S.Linear(100, 1000, dtype="float64", seed=0), S.ReLU())
        y = model(x)
        g = model.backward(y)
        assert g.shape == x.shape
        del model, y, g

    for _ in range(3):
        make_and_drop()
    gc.collect()
    before = rss()
    for _ in range(10):
        make_and_drop()
        gc.collect()
    grown = rss() - before
    assert grown < 64 * MB, f"RSS grew by {grown / MB:.1f} MB over 10 models of ~32 MB each"
