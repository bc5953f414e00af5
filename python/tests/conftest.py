"""Shared fixtures for the swiftcnn pytest suite.

- `rng`: a seeded NumPy Generator (a fresh one per test, so tests do not depend on order).
- `dtype`: parametrizes a test over float32 and float64.
- `torch`: the torch module, or skip the test when torch cannot be imported. Under CI (`CI` set to
  true/1/yes) or with `SWIFTCNN_REQUIRE_TORCH=1` (scripts/test.sh sets it) a missing or broken torch
  FAILS the run instead: the session stops at its start with exit status 1, so the PyTorch parity
  tests can never pass by being skipped. An explicit `SWIFTCNN_REQUIRE_TORCH=0` (for runs that hide
  torch on purpose, such as scripts/sanitize.sh) turns the requirement off even under CI.
- `run_python`: run a Python snippet in a fresh interpreter (crash- or import-isolation).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

try:  # hypothesis: no deadlines (the first call of an op may be slow), modest example counts.
    from hypothesis import settings

    settings.register_profile("swiftcnn", deadline=None, max_examples=25, derandomize=True, database=None)
    settings.load_profile("swiftcnn")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def rng(request):
    # One fixed seed per test (derived from its name), so each test sees different but reproducible data.
    seed = sum(map(ord, request.node.name)) * 7919 % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


_TORCH = None
_TORCH_ERROR = None


def _import_torch():
    global _TORCH, _TORCH_ERROR
    if _TORCH is None and _TORCH_ERROR is None:
        try:
            import torch as _t  # noqa: F401

            _t.zeros(1)  # a broken install can import but fail at first use
            _TORCH = _t
        except Exception as e:  # ImportError, OSError from a bad shared library, ...
            _TORCH_ERROR = f"{type(e).__name__}: {e}"
    return _TORCH


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def torch_required():
    """True under CI or with SWIFTCNN_REQUIRE_TORCH=1: then the parity tests must run, not skip.

    An explicit SWIFTCNN_REQUIRE_TORCH=0 wins over CI: for runs that hide torch on purpose
    (scripts/sanitize.sh, where torch's libraries cannot run under an LD_PRELOADed ASan)."""
    explicit = os.environ.get("SWIFTCNN_REQUIRE_TORCH", "").strip().lower()
    if explicit in _FALSE:
        return False
    return explicit in _TRUE or os.environ.get("CI", "").strip().lower() in _TRUE


def _torch_requirement_message():
    return (f"torch is required here (CI={os.environ.get('CI')!r}, "
            f"SWIFTCNN_REQUIRE_TORCH={os.environ.get('SWIFTCNN_REQUIRE_TORCH')!r}) but is not usable: "
            f"{_TORCH_ERROR}. Install it (pip install '.[test]') or unset both variables to skip the "
            f"PyTorch parity tests.")


def pytest_sessionstart(session):
    if torch_required() and _import_torch() is None:
        pytest.exit(_torch_requirement_message(), returncode=pytest.ExitCode.TESTS_FAILED)


@pytest.fixture
def torch():
    t = _import_torch()
    if t is None:
        if torch_required():  # unreachable after pytest_sessionstart, kept so it can never skip
            pytest.fail(_torch_requirement_message())
        pytest.skip(f"torch is not importable ({_TORCH_ERROR})")
    return t


def _run_python(code, timeout=120, env_extra=None, cwd=None):
    """Run `code` (dedented) in a fresh interpreter; returns the CompletedProcess (text mode)."""
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    if env_extra:
        env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or TESTS_DIR)


@pytest.fixture
def run_python():
    return _run_python
