"""swiftcnn: a small convolutional-network library with a Swift core and a NumPy interface.

Layers and models (PyTorch's layouts and state-dict names)::

    import swiftcnn as sc
    model = sc.Sequential(sc.Conv2d(1, 6, 5, padding=2), sc.Sigmoid(), sc.MaxPool2d(2),
                          sc.Conv2d(6, 16, 5), sc.Sigmoid(), sc.MaxPool2d(2), sc.Flatten(),
                          sc.Linear(400, 120), sc.Sigmoid(), sc.Linear(120, 84), sc.Sigmoid(),
                          sc.Linear(84, 10))
    history = model.fit(x_train, y_train, epochs=5, validation_data=(x_test, y_test))
    model.save("lenet.npz"); model = sc.load("lenet.npz")

The functional ops (``conv2d``, ``conv2d_backward``, ``max_pool2d``, ..., ``softmax_cross_entropy``,
``correlate2d``, ``convolve2d``) live in ``swiftcnn.functional`` and are re-exported here; the
optimizers in ``swiftcnn.optim`` (``SGD``, ``Adam``). ``swiftcnn.datasets`` and ``swiftcnn.viz``
are imported on first use (``viz`` needs matplotlib). See API.md for the full contract.
"""
import importlib

from . import _loader
_loader.load(__name__)  # installs swiftcnn._core: the build for the best ISA this CPU runs (or SWIFTCNN_ISA's)
from . import _core  # noqa: E402
from . import functional, optim
from ._random import manual_seed
from .functional import *  # noqa: F401,F403  every functional op, re-exported at top level
from .functional import __all__ as _FUNCTIONAL_OPS
from .gradcheck import GradcheckReport, gradcheck
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,
                     LeakyReLU, Linear, MaxPool2d, Module, ReLU, Residual, Sequential, Sigmoid, Tanh)
from .optim import SGD, Adam, AdamW
from .parameter import Parameter
from .serialization import load, save
from .training import History

__version__ = _core.version()  # the Swift core's version string: the one place it is written down


def _check_installed_version(version):
    """ImportError if the installed distribution's metadata names another version than the
    compiled core (a stale build: the Swift library or the extension was rebuilt without
    reinstalling, or the other way round). Skipped when there is no metadata (a source checkout)
    or when the metadata found belongs to another copy of swiftcnn than this one."""
    import json
    import os
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        dist = metadata.distribution("swiftcnn")
    except metadata.PackageNotFoundError:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.abspath(str(dist.locate_file(os.path.join("swiftcnn", "__init__.py"))))
    ours = os.path.dirname(installed) == here
    if not ours:  # an editable install records its source tree in direct_url.json (PEP 610)
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            info = {}
        url = urlparse(info.get("url", ""))
        if info.get("dir_info", {}).get("editable") and url.scheme == "file":
            source = os.path.abspath(unquote(url.path))
            ours = os.path.commonpath([source, here]) == source
    if ours and dist.version != version:
        raise ImportError(
            f"swiftcnn: the installed package's metadata says version {dist.version} but its "
            f"compiled Swift core ({_core.__file__}) is version {version}: the build is stale or "
            f"mixed. Reinstall it (pip install --force-reinstall --no-deps <source folder>, or "
            f"pip install -e <source folder> for a development checkout).")


_check_installed_version(__version__)

set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads
show_config = _loader.show_config

_LAZY_SUBMODULES = ("datasets", "viz")

__all__ = [
    "__version__", "manual_seed", "load", "save", "set_num_threads", "get_num_threads", "show_config",
    "gradcheck", "GradcheckReport",
    # layers and models
    "Module", "Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "Sigmoid", "ReLU", "Flatten",
    "Tanh", "LeakyReLU", "AdaptiveAvgPool2d", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "Sequential", "Residual", "Parameter", "History",
    # optimizers
    "SGD", "Adam", "AdamW",
    # submodules
    "functional", "optim", "datasets", "viz",
    # functional ops: functional.__all__ (adding an op there exports it here too)
    *_FUNCTIONAL_OPS,
]


def __getattr__(name):
    """Import ``swiftcnn.datasets`` and ``swiftcnn.viz`` on first use (viz needs matplotlib)."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'swiftcnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
