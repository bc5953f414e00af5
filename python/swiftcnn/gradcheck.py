"""``gradcheck``: compare a module's analytic gradients with central finite differences.

The check runs on a float64 copy of the module (rebuilt from its architecture and state dict), so
the module itself, its weights and its ``.grad`` are left untouched. The scalar differentiated is
``f = sum(module(x) * R)`` with ``R`` standard normal from a fixed seed, so every output element
contributes with its own weight. For each checked element ``v`` of the input and of every
parameter, the numeric derivative is ``(f(v + eps) - f(v - eps)) / (2 * eps)``, computed in NumPy
from forward passes; the analytic one comes from one ``backward(R)``. An element passes if
``|a - n| <= atol + rtol * |n|``.
"""
import numpy as np

from ._convert import check_real, describe_type
from .layers import Module, Sequential
from .serialization import rebuild

__all__ = ["gradcheck", "GradcheckReport"]

_FULL_CHECK_LIMIT = 10_000   # tensors with more elements are checked on a sample
_SAMPLE_SIZE = 2_000         # elements checked in a sampled tensor
_SEED = 20240521             # fixed: the same call always checks the same elements with the same R


class GradcheckReport:
    """The result of :func:`gradcheck`.

    Attributes:
        passed: True if every checked element of every tensor passed.
        errors: ``{"input": e, "0.weight": e, ...}``, per tensor ``max|a - n| / max(max|n|, atol)``
            over its checked elements (0.0 for an empty tensor).
        rows: one dict per tensor with ``name``, ``shape``, ``checked``, ``size``,
            ``max_abs_diff``, ``error``, ``failures`` (elements outside tolerance) and ``passed``.

    ``str(report)`` is a readable table; ``bool(report)`` is ``passed``.
    """

    def __init__(self, rows, eps, atol, rtol):
        self.rows = rows
        self.eps, self.atol, self.rtol = eps, atol, rtol
        self.errors = {row["name"]: row["error"] for row in rows}
        self.passed = all(row["passed"] for row in rows)

    def __bool__(self):
        return self.passed

    def __str__(self):
        header = ("tensor", "shape", "checked", "max abs diff", "error", "result")
        table = [header]
        for row in self.rows:
            checked = (f"{row['checked']}" if row["checked"] == row["size"]
                       else f"{row['checked']} of {row['size']}")
            result = "pass" if row["passed"] else f"FAIL ({row['failures']} elements)"
            table.append((row["name"], str(row["shape"]), checked, f"{row['max_abs_diff']:.3e}",
                          f"{row['error']:.3e}", result))
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                 for line in table]
        lines.insert(1, "  ".join("-" * width for width in widths))
        verdict = "passed" if self.passed else "FAILED"
        lines.append(f"gradcheck {verdict} (eps={self.eps:g}, atol={self.atol:g}, "
                     f"rtol={self.rtol:g}: |a - n| <= atol + rtol * |n|)")
        return "\n".join(lines)

    def __repr__(self):
        worst = max(self.errors.values(), default=0.0)
        return f"GradcheckReport(passed={self.passed}, max_error={worst:.3e})"


def gradcheck(module, x, *, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check ``module``'s analytic gradients (input and every parameter) by finite differences.

    Args:
        module: any swiftcnn layer or ``Sequential`` (left unchanged: a float64 copy is checked).
        x: an input the module accepts (converted to a float64 copy).
        eps: the finite-difference step (> 0).
        atol, rtol: an element passes if ``|analytic - numeric| <= atol + rtol * |numeric|``.

    Returns:
        GradcheckReport: ``.passed``, ``.errors`` (``{"input": e, "0.weight": e, ...}``) and a
        readable table as ``str(report)``. Tensors of more than 10,000 elements are checked on a
        seeded sample of 2,000 elements. Nothing is printed.
    """
    owner = "gradcheck"
    if not isinstance(module, Module):
        raise TypeError(f"{owner}: module must be a swiftcnn layer or Sequential, got "
                        f"{describe_type(module)}")
    eps = check_real(eps, "eps", owner)
    atol = check_real(atol, "atol", owner)
    rtol = check_real(rtol, "rtol", owner)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"{owner}: eps must be a positive finite number, got {eps}")
    if not atol >= 0 or not rtol >= 0:
        raise ValueError(f"{owner}: atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    x = _float64_copy(x, owner)
    _reject_random_layers(module, owner)

    copy = rebuild(module, np.float64)  # in the module's current mode, layer by layer
    rng = np.random.default_rng(_SEED)
    y = copy.forward(x)
    weights = rng.standard_normal(y.shape)  # R

    copy.zero_grad()
    copy.forward(x)
    analytic = {"input": np.array(copy.backward(weights), dtype=np.float64)}
    targets = [("input", x)]
    for parameter in copy.parameters():
        analytic[parameter.name] = parameter.grad.copy()
        targets.append((parameter.name, parameter.data))

    rows = []
    for name, values in targets:
        objective = _objective(copy, name, x, weights)
        flat = values.reshape(-1)  # a view: perturbing it perturbs the tensor the copy reads
        if values.size and not np.shares_memory(flat, values):
            raise RuntimeError(f"{owner}: cannot perturb {name!r} in place (not contiguous)")
        if flat.size > _FULL_CHECK_LIMIT:
            indices = np.sort(rng.choice(flat.size, size=_SAMPLE_SIZE, replace=False))
        else:
            indices = np.arange(flat.size)
        numeric = np.empty(indices.size)
        for position, index in enumerate(indices):
            original = flat[index]
            flat[index] = original + eps
            plus = objective()
            flat[index] = original - eps
            minus = objective()
            flat[index] = original
            numeric[position] = (plus - minus) / (2 * eps)
        rows.append(_compare(name, values.shape, analytic[name].reshape(-1)[indices], numeric,
                             atol, rtol))
    return GradcheckReport(rows, eps, atol, rtol)


def _reject_random_layers(module, owner):
    """A Dropout in training mode draws a new mask at every forward, so finite differences of it
    mean nothing: ValueError (call ``module.eval()`` first, as API.md says)."""
    if type(module).__name__ == "Dropout" and module.training:
        raise ValueError(f"{owner}: the module contains a Dropout in training mode, whose every forward "
                         f"draws a new mask; call .eval() on it (or the model) before gradcheck")
    for child in module._children():
        _reject_random_layers(child, owner)


def _objective(copy, name, x, weights):
    """A function computing ``sum(copy(x) * weights)`` after ``name``'s values are perturbed.

    For a parameter of a Sequential's layer k, layers 0..k-1 are unaffected by the perturbation:
    their output is computed once and only layers k.. are rerun (the same layer objects).
    """
    flat_weights = weights.ravel()
    if isinstance(copy, Sequential) and name != "input":
        start = int(name.split(".", 1)[0])
        head, tail = copy[:start], copy[start:]
        activation = head.forward(x) if start else x
        return lambda: float(np.dot(tail.forward(activation).ravel(), flat_weights))
    return lambda: float(np.dot(copy.forward(x).ravel(), flat_weights))


def _float64_copy(x, owner):
    """``x`` as a new C-contiguous float64 array (float inputs and lists only)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise TypeError(f"{owner}: x must be a float array, got dtype {x.dtype}")
        return np.array(x, dtype=np.float64, order="C", copy=True)
    try:
        array = np.array(x, dtype=None)
    except Exception as error:
        raise TypeError(f"{owner}: x cannot be converted to an array: {error}") from None
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{owner}: x must hold real numbers, got {describe_type(x)}")
    return np.array(array, dtype=np.float64, order="C", copy=True)


def _compare(name, shape, analytic, numeric, atol, rtol):
    difference = np.abs(analytic - numeric)
    failures = int(np.count_nonzero(~(difference <= atol + rtol * np.abs(numeric))))
    if numeric.size:
        max_diff = float(difference.max())
        scale = max(float(np.abs(numeric).max()), atol)
        error = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf"))
    else:
        max_diff, error = 0.0, 0.0
    return {"name": name, "shape": tuple(shape), "checked": int(numeric.size),
            "size": int(np.prod(shape, dtype=np.int64)), "max_abs_diff": max_diff,
            "error": error, "failures": failures, "passed": failures == 0}
