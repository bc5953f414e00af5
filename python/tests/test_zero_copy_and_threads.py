"""Zero-copy views, memory lifetime, the GIL and threads."""
import gc
import threading
import time

import numpy as np
import pytest

import swiftcnn
from swiftcnn import functional as F

import references as R

S = swiftcnn


# ---------------------------------------------------------------------------------------------
# out= and parameter views
# ---------------------------------------------------------------------------------------------
def test_out_is_written_in_place(rng, dtype):
    x = rng.standard_normal((2, 3, 10, 10)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    out = np.zeros((2, 4, 8, 8), dtype)
    addr = out.__array_interface__["data"][0]
    res = F.conv2d(x, w, out=out)
    assert res is out and out.__array_interface__["data"][0] == addr
    np.testing.assert_allclose(out, R.conv2d(x, w), rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    # a view into a larger buffer: only that region is written
    big = np.full((3, 4, 8, 8), -7, dtype)
    view = big[1:2]
    assert view.flags.c_contiguous
    F.conv2d(x[:1], w, out=view)
    assert (big[0] == -7).all() and (big[2] == -7).all()
    np.testing.assert_allclose(big[1:2], R.conv2d(x[:1], w), rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    y = np.empty_like(x)
    F.relu(x, out=y)
    F.sigmoid(y, out=y)
    np.testing.assert_allclose(y, R.sigmoid(R.relu(x)), rtol=1e-6)


def _peak_traced_bytes(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_contiguous_inputs_are_read_in_place_without_a_copy(dtype_):
    # NumPy reports its allocations to tracemalloc: a converted (copied) input shows up in the peak,
    # an input read in place does not. The output here is tiny (one 16x16 pooling window per plane).
    x = np.random.default_rng(0).standard_normal((8, 8, 64, 64)).astype(dtype_)
    w = np.ones((1, 8, 1, 1), dtype_)
    F.max_pool2d(x, 16)  # warm-up (first-call allocations)
    copied = _peak_traced_bytes(lambda: F.max_pool2d(x[:, :, ::-1], 16))
    if copied < x.nbytes // 2:
        pytest.skip("this build's input conversion is not visible to tracemalloc")
    for name, fn in [("max_pool2d", lambda: F.max_pool2d(x, 16)), ("avg_pool2d", lambda: F.avg_pool2d(x, 16)),
                     ("relu", lambda: F.relu(x[:1, :1])), ("conv2d", lambda: F.conv2d(x, w, stride=16))]:
        peak = _peak_traced_bytes(fn)
        assert peak < x.nbytes // 8, f"{name}: {peak} bytes allocated for a {x.nbytes}-byte contiguous input"
    lin = S.Linear(8 * 64 * 64, 2, dtype=dtype_, seed=1)
    xf = x.reshape(8, -1)
    lin(xf)
    peak = _peak_traced_bytes(lambda: lin(xf))
    assert peak < x.nbytes // 8, f"Linear.forward: {peak} bytes for a {x.nbytes}-byte contiguous input"


def test_a_layer_keeps_a_reference_to_its_input_not_a_copy(rng):
    # API.md: "A layer keeps a reference to its last input, not a copy": a contiguous input of the
    # layer's dtype is used in place, so backward sees a mutation made after forward.
    lin = S.Linear(3, 2, dtype="float64", seed=2)
    x = rng.standard_normal((4, 3))
    y = lin(x)
    x *= 2
    g = rng.standard_normal(y.shape)
    lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, g.T @ x, rtol=1e-12)


def test_parameters_view_the_layer_memory():
    model = S.Sequential(S.Conv2d(1, 2, 3, seed=1), S.ReLU(), S.Flatten(), S.Linear(8, 3, seed=2))
    for p, own in zip(model.parameters(), [model[0].weight, model[0].bias, model[3].weight, model[3].bias]):
        assert np.shares_memory(p.data, own.data) and np.shares_memory(p.grad, own.grad)
        assert not np.shares_memory(p.data, p.grad)
        assert p.data.flags.writeable and p.grad.flags.writeable
        assert p.data.flags.c_contiguous and p.grad.flags.c_contiguous
    # distinct parameters never alias each other
    arrays = [a for p in model.parameters() for a in (p.data, p.grad)]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j])


def test_writes_through_parameter_views_are_seen_by_forward_and_optimizer(rng):
    lin = S.Linear(4, 2, dtype="float64", seed=3)
    w = lin.parameters()[0].data
    w[...] = 0
    lin.bias.data[...] = [1, 2]
    np.testing.assert_array_equal(lin(rng.standard_normal((3, 4))), [[1, 2]] * 3)
    opt = S.optim.SGD(lin.parameters(), lr=1.0)
    lin.weight.grad[...] = 1
    opt.step()
    assert (w == -1).all()


def test_parameter_memory_outlives_the_model():
    model = S.Sequential(S.Conv2d(1, 2, 3, seed=4), S.Flatten(), S.Linear(8, 3, seed=5))
    params = model.parameters()
    values = [p.data.copy() for p in params]
    del model
    gc.collect()
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p.data, v)
        p.data[...] += 1  # still writable, still valid memory
        p.grad[...] = 3
    arr = S.Linear(5, 5, seed=6).weight.data  # the layer object is gone right away
    gc.collect()
    keep = arr.copy()
    _ = [np.ones(10000) for _ in range(50)]  # churn the allocator
    np.testing.assert_array_equal(arr, keep)


def test_an_optimizer_keeps_its_parameters_alive(rng):
    model = S.Sequential(S.Linear(3, 2, dtype="float64", seed=7))
    opt = S.optim.Adam(model.parameters(), lr=0.1)
    weight = model.parameters()[0].data
    before = weight.copy()
    del model
    gc.collect()
    for _ in range(3):
        opt.zero_grad()
        opt.step()  # zero gradients: Adam leaves the weights unchanged
    np.testing.assert_array_equal(weight, before)


def test_forward_outputs_are_not_views_of_layer_buffers(rng):
    model = S.Sequential(S.Linear(3, 4, seed=8), S.ReLU())
    x1 = rng.standard_normal((2, 3)).astype(np.float32)
    y1 = model(x1)
    keep = y1.copy()
    g1 = model.backward(np.ones_like(y1))
    gkeep = g1.copy()
    model(rng.standard_normal((2, 3)).astype(np.float32))
    model.backward(np.full((2, 4), 2, np.float32))
    np.testing.assert_array_equal(y1, keep)
    np.testing.assert_array_equal(g1, gkeep)
    for p in model.parameters():
        assert not np.shares_memory(y1, p.data)


def test_state_dict_copies_outlive_and_do_not_alias():
    lin = S.Linear(3, 2, seed=9)
    sd = lin.state_dict()
    del lin
    gc.collect()
    assert sd["weight"].shape == (2, 3) and np.isfinite(sd["weight"]).all()


# ---------------------------------------------------------------------------------------------
# the GIL is released during compute
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["functional", "layer"])
def test_a_python_thread_keeps_running_during_a_long_conv2d(how):
    rng = np.random.default_rng(0)
    old = S.get_num_threads()
    S.set_num_threads(1)  # leave a core for the counting thread
    layer = S.Conv2d(16, 32, 5, seed=1)
    try:
        n = 4
        for _ in range(6):  # grow the problem until one call takes >= 0.15 s
            x = rng.standard_normal((n, 16, 48, 48)).astype(np.float32)
            w = layer.weight.data
            call = (lambda: F.conv2d(x, w)) if how == "functional" else (lambda: layer(x))
            t0 = time.perf_counter()
            call()
            if time.perf_counter() - t0 >= 0.15:
                break
            n *= 2
        count = [0]
        stop = threading.Event()

        def counter():
            while not stop.is_set():
                count[0] += 1

        th = threading.Thread(target=counter)
        th.start()
        time.sleep(0.05)
        start = count[0]
        t0 = time.perf_counter()
        call()
        elapsed = time.perf_counter() - t0
        during = count[0] - start
        stop.set()
        th.join()
        # measure the thread's rate with nothing else running, for scale
        count2 = [0]
        stop2 = threading.Event()

        def counter2():
            while not stop2.is_set():
                count2[0] += 1

        th2 = threading.Thread(target=counter2)
        th2.start()
        time.sleep(elapsed)
        stop2.set()
        th2.join()
        assert during > 0.1 * count2[0], (
            f"the counting thread advanced {during} times during a {elapsed:.3f} s conv2d "
            f"(vs {count2[0]} when idle): the GIL was held")
    finally:
        S.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------
def _jobs(seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((3, 3, 16, 16))
    w = r.standard_normal((5, 3, 3, 3))
    xl = r.standard_normal((8, 30))
    wl = r.standard_normal((7, 30))
    z = r.standard_normal((8, 7))
    lab = r.integers(0, 7, 8)
    return [
        lambda: F.conv2d(x, w, None, 1, 1),
        lambda: F.conv2d_backward(np.ones((3, 5, 16, 16)), x, w, 1, 1)[1],
        lambda: F.max_pool2d(x, 2),
        lambda: F.avg_pool2d_backward(np.ones((3, 3, 8, 8)), x, 2),
        lambda: F.linear(xl, wl),
        lambda: F.sigmoid(x),
        lambda: F.softmax_cross_entropy(z, lab)[1],
        lambda: F.correlate2d(x[0, 0], w[0, 0], "full"),
    ]


def test_functional_ops_from_four_threads_give_the_serial_results():
    serial = {s: [job() for job in _jobs(s)] for s in range(4)}
    results = {}
    errors = []
    barrier = threading.Barrier(4)

    def worker(s):
        try:
            barrier.wait()
            out = []
            for _ in range(5):
                out.append([job() for job in _jobs(s)])
            results[s] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for s in range(4):
        for rep in results[s]:
            for a, b in zip(rep, serial[s]):
                np.testing.assert_array_equal(a, b)


def test_a_model_used_from_two_threads_works_or_raises_runtime_error():
    model = S.Sequential(S.Conv2d(1, 4, 3, dtype="float64", seed=1), S.ReLU(), S.Flatten(),
                         S.Linear(4 * 10 * 10, 5, dtype="float64", seed=2))
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 1, 12, 12)) for _ in range(2)]
    expected = [model(x) for x in xs]
    unexpected, ok, busy = [], [0], [0]

    def worker(i):
        for _ in range(40):
            try:
                y = model(xs[i])
                np.testing.assert_array_equal(y, expected[i])
                model.backward(np.ones_like(y))
                ok[0] += 1
            except RuntimeError:
                busy[0] += 1
            except Exception as e:
                unexpected.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not unexpected, unexpected[:5]
    assert ok[0] > 0
    # the model is still consistent afterwards
    np.testing.assert_array_equal(model(xs[0]), expected[0])
    model.zero_grad()
    model(xs[1])
    g = model.backward(np.ones((8, 5)))
    assert g.shape == (8, 1, 12, 12) and np.isfinite(g).all()


def test_two_models_train_concurrently_like_serially():
    def train(seed, steps=5):
        m = S.Sequential(S.Conv2d(1, 3, 3, dtype="float64", seed=seed), S.Sigmoid(), S.Flatten(),
                         S.Linear(3 * 6 * 6, 4, dtype="float64", seed=seed + 1))
        opt = S.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        r = np.random.default_rng(seed)
        x = r.standard_normal((16, 1, 8, 8))
        y = r.integers(0, 4, 16)
        for _ in range(steps):
            opt.zero_grad()
            loss, g = S.softmax_cross_entropy(m(x), y)
            m.backward(g)
            opt.step()
        return m.state_dict()

    serial = [train(s) for s in (1, 10)]
    out = {}
    threads = [threading.Thread(target=lambda s=s, i=i: out.__setitem__(i, train(s))) for i, s in enumerate((1, 10))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(2):
        for k, v in serial[i].items():
            np.testing.assert_array_equal(out[i][k], v)
