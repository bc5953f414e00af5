"""Sequential.fit / predict / evaluate and History (API.md "Sequential also has")."""
import re

import numpy as np
import pytest

import swiftcnn

import references as R

S = swiftcnn


def make_data(n=96, seed=0, dtype=np.float32):
    """3 classes of 1x8x8 images: a bright 3x3 patch top-left, centre or bottom-right, plus noise."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    x = r.standard_normal((n, 1, 8, 8)) * 0.3
    for i, c in enumerate(y):
        o = [0, 2, 5][c]
        x[i, 0, o:o + 3, o:o + 3] += 2.0
    return x.astype(dtype), y


def make_model(dtype="float32", seed=1):
    return S.Sequential(S.Conv2d(1, 4, 3, padding=1, dtype=dtype, seed=seed), S.ReLU(), S.MaxPool2d(2),
                        S.Flatten(), S.Linear(64, 3, dtype=dtype, seed=seed + 1))


def clone(model, dtype="float32"):
    c = make_model(dtype, seed=99)
    c.load_state_dict(model.state_dict())
    return c


def test_fit_reduces_the_loss_and_returns_a_history():
    x, y = make_data()
    model = make_model()
    hist = model.fit(x, y, epochs=5, batch_size=16, progress=False)
    h = hist.history
    assert set(h) == {"loss", "accuracy"}
    assert len(h["loss"]) == 5 and len(h["accuracy"]) == 5
    assert all(isinstance(v, float) for v in h["loss"] + h["accuracy"])
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert all(0 <= a <= 1 for a in h["accuracy"])
    assert h["accuracy"][-1] > 0.9
    ev = model.evaluate(x, y)
    assert set(ev) == {"loss", "accuracy"} and isinstance(ev["loss"], float) and isinstance(ev["accuracy"], float)
    assert ev["accuracy"] > 0.9 and 0 <= ev["accuracy"] <= 1


def test_fit_runs_the_canonical_step_per_batch_with_weighted_epoch_figures(dtype):
    # N = 50 with batch_size 16: batches of 16, 16, 16 and a kept partial batch of 2.
    x, y = make_data(50, seed=3, dtype=dtype)
    model = make_model(dtype)
    manual = clone(model, dtype)
    hist = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, progress=False)
    opt = S.optim.SGD(manual.parameters(), lr=0.1)  # the default optimizer
    losses, accs = [], []
    for epoch in range(2):
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, 50, 16):
            xb, yb = x[i:i + 16], y[i:i + 16]
            opt.zero_grad()
            logits = manual(xb)
            loss, g = S.softmax_cross_entropy(logits, yb)
            manual.backward(g)
            opt.step()
            tot_loss += loss * len(yb)
            tot_correct += int((logits.argmax(axis=1) == yb).sum())
        losses.append(tot_loss / 50)
        accs.append(tot_correct / 50)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(hist.history["loss"], losses, rtol=tol)
    np.testing.assert_allclose(hist.history["accuracy"], accs, atol=1e-12)
    for k, v in model.state_dict().items():
        assert R.max_rel_diff(v, manual.state_dict()[k]) <= (1e-4 if dtype == np.float32 else 1e-10), k


def test_fit_with_a_given_optimizer_and_validation_data():
    x, y = make_data(80, seed=4)
    xv, yv = make_data(30, seed=5)
    model = make_model()
    opt = S.optim.Adam(model.parameters(), lr=0.01)
    hist = model.fit(x, y, epochs=3, batch_size=32, optimizer=opt, validation_data=(xv, yv), progress=False)
    h = hist.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in h.values())
    ev = model.evaluate(xv, yv)  # measured after the (last) epoch
    assert h["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert h["val_accuracy"][-1] == pytest.approx(ev["accuracy"], abs=1e-12)


def test_validation_figures_are_measured_after_each_epoch():
    x, y = make_data(40, seed=6)
    xv, yv = make_data(20, seed=7)
    a, b = make_model(seed=3), make_model(seed=3)
    ha = a.fit(x, y, epochs=2, batch_size=8, shuffle=False, validation_data=(xv, yv), progress=False).history
    b.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    ev1 = b.evaluate(xv, yv)
    assert ha["val_loss"][0] == pytest.approx(ev1["loss"], rel=1e-6)
    assert ha["val_accuracy"][0] == pytest.approx(ev1["accuracy"], abs=1e-12)


def test_default_optimizer_is_made_anew_per_call():
    # SGD(lr=0.1) with no state: two calls of one epoch equal one call of two epochs.
    x, y = make_data(32, seed=8)
    a, b = make_model(seed=5), make_model(seed=5)
    a.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    a.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    b.fit(x, y, epochs=2, batch_size=8, shuffle=False, progress=False)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    # A stateless SGD reused across calls would pass the above too: what "anew per call" rules out
    # observably is an optimizer kept from an earlier call, i.e. over another model's parameters.
    # A second model's fit must train that model (as a by-hand SGD(lr=0.1) does) and leave a alone.
    c, manual = make_model(seed=6), make_model(seed=6)
    a_before = a.state_dict()
    c.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    opt = S.optim.SGD(manual.parameters(), lr=0.1)
    for start in range(0, 32, 8):
        opt.zero_grad()
        _, g = S.softmax_cross_entropy(manual(x[start:start + 8]), y[start:start + 8])
        manual.backward(g)
        opt.step()
    for k, v in c.state_dict().items():
        np.testing.assert_allclose(v, manual.state_dict()[k], rtol=1e-5, atol=1e-7, err_msg=k)
        assert not np.array_equal(v, make_model(seed=6).state_dict()[k]), f"{k}: c was not trained"
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, a_before[k])


def test_evaluate_and_predict_match_the_model(dtype):
    x, y = make_data(37, seed=9, dtype=dtype)
    model = make_model(dtype, seed=7)
    logits = model(x)
    for bs in (256, 10, 1):
        p = model.predict(x, batch_size=bs)
        assert p.shape == (37, 3) and p.dtype == dtype
        np.testing.assert_allclose(p, logits, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    ev = model.evaluate(x, y, batch_size=10)
    loss, _ = R.softmax_cross_entropy(logits.astype(np.float64), y)
    assert ev["loss"] == pytest.approx(loss, rel=1e-5)
    assert ev["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-12)
    assert model.predict(x[:0]).shape == (0, 3)


def test_fit_casts_x_to_the_model_dtype_and_accepts_any_int_labels():
    x, y = make_data(24, seed=10, dtype=np.float64)
    a, b = make_model(seed=11), make_model(seed=11)
    a.fit(x, y.astype(np.int32), epochs=1, batch_size=8, shuffle=False, progress=False)
    b.fit(x.astype(np.float32), y.astype(np.uint8), epochs=1, batch_size=8, shuffle=False, progress=False)
    for k, v in a.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert a.predict(x).dtype == np.float32


def test_same_seed_gives_bit_identical_weights_and_history():
    x, y = make_data(60, seed=12)
    runs = []
    for _ in range(2):
        S.manual_seed(2024)
        m = S.Sequential(S.Conv2d(1, 4, 3, padding=1), S.ReLU(), S.MaxPool2d(2), S.Flatten(), S.Linear(64, 3))
        h = m.fit(x, y, epochs=2, batch_size=16, shuffle=True, seed=77, progress=False)
        runs.append((m.state_dict(), h.history))
    (sa, ha), (sb, hb) = runs
    assert ha == hb
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    # a different shuffle seed gives a different trajectory
    m = make_model(seed=13)
    m2 = make_model(seed=13)
    h1 = m.fit(x, y, epochs=1, batch_size=16, shuffle=True, seed=1, progress=False).history
    h2 = m2.fit(x, y, epochs=1, batch_size=16, shuffle=True, seed=2, progress=False).history
    assert h1 != h2 or not np.array_equal(m.state_dict()["4.weight"], m2.state_dict()["4.weight"])


def test_shuffle_false_is_order_dependent_only_through_the_batches():
    x, y = make_data(32, seed=14)
    a, b = make_model(seed=15), make_model(seed=15)
    ha = a.fit(x, y, epochs=1, batch_size=32, shuffle=False, progress=False).history
    perm = np.random.default_rng(0).permutation(32)
    hb = b.fit(x[perm], y[perm], epochs=1, batch_size=32, shuffle=False, progress=False).history
    # one full batch: the order of samples does not matter (up to summation order)
    assert ha["loss"][0] == pytest.approx(hb["loss"][0], rel=1e-5)
    for k, v in a.state_dict().items():
        np.testing.assert_allclose(v, b.state_dict()[k], rtol=1e-4, atol=1e-6)


def _epoch_batch(msg):
    e = re.search(r"epoch\D{0,3}(\d+)", msg, re.I)
    b = re.search(r"batch\D{0,3}(\d+)", msg, re.I)
    assert e and b, f"message does not name the epoch and batch: {msg!r}"
    return int(e.group(1)), int(b.group(1))


def test_non_finite_loss_raises_naming_epoch_and_batch_before_the_step():
    x, y = make_data(40, seed=16)
    # first batch bad: weights untouched
    xb = x.copy()
    xb[3, 0, 0, 0] = np.nan
    model = make_model(seed=17)
    before = model.state_dict()
    with pytest.raises(FloatingPointError) as ei:
        model.fit(xb, y, epochs=2, batch_size=8, shuffle=False, progress=False)
    assert _epoch_batch(str(ei.value)) in {(0, 0), (1, 1)}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # third batch (0-based index 2): the two steps before it are applied, its own is not
    model = make_model(seed=17)
    manual = clone(model)
    xh = x.copy()
    xh[17, 0, 4, 4] = np.nan  # sample 17 is in batch index 2 with batch_size 8
    with pytest.raises(FloatingPointError) as ei:
        model.fit(xh, y, epochs=1, batch_size=8, shuffle=False, progress=False)
    assert _epoch_batch(str(ei.value)) in {(0, 2), (1, 3)}, str(ei.value)
    opt = S.optim.SGD(manual.parameters(), lr=0.1)
    for i in (0, 8):
        opt.zero_grad()
        _, g = S.softmax_cross_entropy(manual(xh[i:i + 8]), y[i:i + 8])
        manual.backward(g)
        opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, manual.state_dict()[k], rtol=1e-5, atol=1e-7)


def test_progress_false_prints_nothing(capfd):
    x, y = make_data(20, seed=18)
    xv, yv = make_data(10, seed=19)
    model = make_model()
    model.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv), progress=False)
    model.predict(x)
    model.evaluate(x, y)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_without_tqdm_prints_one_line_per_epoch(run_python):
    res = run_python("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "tqdm" or name.startswith("tqdm."):
                    raise ImportError("tqdm is blocked for this test")
                return None
        sys.meta_path.insert(0, Block())
        import numpy as np, swiftcnn as S
        r = np.random.default_rng(0)
        x = r.standard_normal((20, 1, 6, 6)).astype(np.float32)
        y = r.integers(0, 2, 20)
        m = S.Sequential(S.Conv2d(1, 2, 3, seed=1), S.ReLU(), S.Flatten(), S.Linear(32, 2, seed=2))
        print("BEGIN", flush=True)
        m.fit(x, y, epochs=3, batch_size=8)
        print("END", flush=True)
    """)
    assert res.returncode == 0, res.stderr
    body = res.stdout.split("BEGIN\n", 1)[1].split("END")[0]
    lines = [ln for ln in body.splitlines() if ln.strip()]
    assert len(lines) == 3, res.stdout
    assert all(re.search(r"\d", ln) for ln in lines)


def test_loss_argument_accepts_cross_entropy():
    x, y = make_data(16, seed=20)
    a, b = make_model(seed=21), make_model(seed=21)
    ha = a.fit(x, y, epochs=1, batch_size=8, loss="cross_entropy", shuffle=False, progress=False).history
    hb = b.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False).history
    assert ha == hb


# ---- fit(scheduler=..., augment=...), History.seconds, random_shift ------------------------------
class _RecordingScheduler:
    """A scheduler that halves the lr at each step() and records the lr every step saw."""

    def __init__(self, optimizer, log):
        self.optimizer = optimizer
        self.log = log

    def step(self):
        self.log.append(("step", self.optimizer.lr))
        self.optimizer.lr = self.optimizer.lr / 2


def test_scheduler_steps_after_every_epoch_and_its_lr_is_used(dtype):
    x, y = make_data(40, seed=30, dtype=dtype)
    model = make_model(dtype, seed=31)
    manual = clone(model, dtype)
    opt = S.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)  # the fused Swift step
    log = []
    hist = model.fit(x, y, epochs=3, batch_size=16, optimizer=opt, shuffle=False, progress=False,
                     scheduler=_RecordingScheduler(opt, log))
    assert log == [("step", 0.2), ("step", 0.1), ("step", 0.05)]  # once per epoch, after it
    assert opt.lr == pytest.approx(0.025) and len(hist.epoch) == 3
    ref = S.optim.SGD(manual.parameters(), lr=0.2, momentum=0.9)
    for epoch in range(3):
        for i in range(0, 40, 16):
            ref.zero_grad()
            _, g = S.softmax_cross_entropy(manual(x[i:i + 16]), y[i:i + 16])
            manual.backward(g)
            ref.step()
        ref.lr /= 2
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for k, v in model.state_dict().items():
        assert R.max_rel_diff(v, manual.state_dict()[k]) <= tol, k


def test_scheduler_and_augment_are_checked_before_any_step():
    x, y = make_data(24, seed=32)
    model = make_model(seed=33)
    before = model.state_dict()
    with pytest.raises(TypeError, match="scheduler"):
        model.fit(x, y, scheduler=object(), progress=False)
    with pytest.raises(TypeError, match="augment"):
        model.fit(x, y, augment=3, progress=False)
    with pytest.raises(ValueError, match=r"augment returned shape \(8, 1, 6, 6\)"):
        model.fit(x, y, batch_size=8, augment=lambda b, rng: b[:, :, 1:-1, 1:-1], progress=False)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_augment_gets_each_batch_and_the_seeded_generator():
    x, y = make_data(40, seed=34)
    seen = []

    def augment(batch, rng):
        assert isinstance(rng, np.random.Generator)
        out = batch + rng.standard_normal(batch.shape) * 0.1  # float64: fit casts it back
        seen.append(out.astype(np.float32))
        return out

    model = make_model(seed=35)
    manual = clone(model)
    hist = model.fit(x, y, epochs=2, batch_size=16, shuffle=True, seed=5, augment=augment, progress=False)
    assert [b.shape[0] for b in seen] == [16, 16, 8] * 2
    # the same steps by hand on the very batches augment returned, with the labels of fit's order
    rng = np.random.default_rng(5)
    opt = S.optim.SGD(manual.parameters(), lr=0.1)
    k = 0
    for epoch in range(2):
        order = rng.permutation(40)
        for i in range(0, 40, 16):
            rng.standard_normal((len(order[i:i + 16]), 1, 8, 8))  # keep the generator in step
            opt.zero_grad()
            _, g = S.softmax_cross_entropy(manual(seen[k]), y[order[i:i + 16]])
            manual.backward(g)
            opt.step()
            k += 1
    for key, v in model.state_dict().items():
        np.testing.assert_allclose(v, manual.state_dict()[key], rtol=1e-4, atol=1e-6)
    # reproducible: the same seed gives the same augmented run, bit for bit
    again = make_model(seed=35)
    seen.clear()
    hist2 = again.fit(x, y, epochs=2, batch_size=16, shuffle=True, seed=5, augment=augment, progress=False)
    assert hist2.history == hist.history
    for key, v in again.state_dict().items():
        np.testing.assert_array_equal(v, model.state_dict()[key])


def test_history_seconds_are_per_epoch_training_times():
    x, y = make_data(32, seed=36)
    xv, yv = make_data(16, seed=37)
    hist = make_model().fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), progress=False)
    assert len(hist.seconds) == 3 and all(isinstance(s, float) and s > 0 for s in hist.seconds)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}  # not a history key


def test_random_shift_moves_each_image_by_at_most_max_shift():
    rng = np.random.default_rng(0)
    x = np.zeros((60, 2, 12, 10), np.float32)
    x[:, :, 3:9, 3:7] = rng.random((60, 2, 6, 4), dtype=np.float32)
    s = S.training.random_shift(x, np.random.default_rng(1), max_shift=2)
    assert s.shape == x.shape and s.dtype == x.dtype and s.flags.c_contiguous
    offsets = set()
    for a, b in zip(x, s):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(np.roll(a, (dy, dx), axis=(1, 2)), b)]  # both channels alike
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) >= 20  # all 25 offsets are drawn (60 images)
    # content moved past the border is cut, the uncovered border is zero
    edge = np.ones((1, 1, 4, 4), np.float64)
    moved = S.training.random_shift(edge, np.random.default_rng(3), max_shift=1)
    assert moved.dtype == np.float64 and moved.sum() in (16, 12, 9)
    assert S.training.random_shift(x, rng, max_shift=0) is x
    with pytest.raises(ValueError, match="N, C, H, W"):
        S.training.random_shift(x[0], rng)
