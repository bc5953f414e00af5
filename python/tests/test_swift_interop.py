"""The Swift-only training program ``swiftcnn-train`` (Sources/SwiftCNNTrain) against Python.

Small MNIST-format IDX files are written here; the built binary trains the lecture's network on them
for one epoch and saves a model; ``swiftcnn.load`` must read it, with the lecture's architecture, and
Python's ``evaluate`` on the test files must give the test accuracy the binary printed.

The binary is looked up at ``$SWIFTCNN_TRAIN_BIN``, else ``.build/release/swiftcnn-train`` (then
``.build/debug``) in the repository. Without it the tests are skipped with the reason, unless
``SWIFTCNN_REQUIRE_SWIFT_TRAIN=1`` (scripts/test.sh sets it, after building it), which fails them.
"""
import os
import re
import subprocess

import numpy as np
import pytest

import swiftcnn
import swiftcnn.datasets
from swiftcnn.__main__ import build_lenet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train_binary():
    explicit = os.environ.get("SWIFTCNN_TRAIN_BIN")
    candidates = [explicit] if explicit else [os.path.join(REPO, ".build", config, "swiftcnn-train")
                                              for config in ("release", "debug")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    reason = (f"swiftcnn-train is not built (looked for {', '.join(map(repr, candidates))}); "
              f"build it with `swift build -c release --product swiftcnn-train`")
    if os.environ.get("SWIFTCNN_REQUIRE_SWIFT_TRAIN") == "1":
        pytest.fail(f"SWIFTCNN_REQUIRE_SWIFT_TRAIN=1 but {reason}")
    pytest.skip(reason)


def _write_idx(path, array):
    """An unsigned-byte IDX file (MNIST's format): 0, 0, type 0x08, rank, big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def _digits(rng, count):
    """Images whose class k is a bright bar at rows 2k+4..2k+5 on dim noise (easy to learn)."""
    labels = np.arange(count) % 10
    images = rng.integers(0, 60, size=(count, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 * k + 4:2 * k + 6, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture
def idx_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for split, count in (("train", 96), ("test", 40)):
        images, labels = _digits(rng, count)
        paths[f"{split}_images"] = str(tmp_path / f"{split}-images-idx3-ubyte")
        paths[f"{split}_labels"] = str(tmp_path / f"{split}-labels-idx1-ubyte")
        _write_idx(paths[f"{split}_images"], images)
        _write_idx(paths[f"{split}_labels"], labels)
    return paths


def _run(binary, args):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=600)


def test_swift_trained_model_loads_in_python(idx_files, tmp_path):
    binary = _train_binary()
    output = str(tmp_path / "swift-lenet.npz")
    result = _run(binary, ["--train-images", idx_files["train_images"], "--train-labels", idx_files["train_labels"],
                           "--test-images", idx_files["test_images"], "--test-labels", idx_files["test_labels"],
                           "--epochs", "1", "--batch-size", "16", "--lr", "0.004", "--seed", "3", "--output", output])
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.isfile(output)

    model = swiftcnn.load(output)
    # The lecture's network with ReLU: python -m swiftcnn train --arch lenet's architecture.
    reference = build_lenet("relu")
    assert [type(layer).__name__ for layer in model] == [type(layer).__name__ for layer in reference]
    assert model._spec() == reference._spec()
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.dtype == np.float32

    # Python's evaluation of the loaded model reproduces the accuracy the Swift program printed.
    match = re.search(r"test accuracy: ([0-9.]+)", result.stdout)
    assert match, result.stdout
    x_test = swiftcnn.datasets.read_idx(idx_files["test_images"]).astype(np.float32)[:, None] / np.float32(255)
    y_test = swiftcnn.datasets.read_idx(idx_files["test_labels"]).astype(np.int64)
    measured = model.evaluate(x_test, y_test)
    assert abs(measured["accuracy"] - float(match.group(1))) < 1e-4, (measured, result.stdout)
    # One epoch on these easy images already beats chance by far.
    assert measured["accuracy"] > 0.3, (measured, result.stdout)
    assert "images/s" in result.stdout


def test_swift_train_reports_bad_input(idx_files, tmp_path):
    binary = _train_binary()
    broken = tmp_path / "broken-idx"
    broken.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09" + b"\x01" * 3)  # declares 9 labels, holds 3
    result = _run(binary, ["--train-images", idx_files["train_images"], "--train-labels", str(broken),
                           "--output", str(tmp_path / "never.npz")])
    assert result.returncode == 1
    assert "holds 3 data bytes" in result.stderr
    assert not (tmp_path / "never.npz").exists()
    result = _run(binary, ["--epochs", "2"])
    assert result.returncode == 2 and "--train-images and --train-labels are required" in result.stderr
