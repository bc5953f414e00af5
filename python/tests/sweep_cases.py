"""The generated boundary sweep of the functional ops (issue 11): cases, references, child runner.

Everything is driven by ``swiftcnn._core.op_table()`` (the very table the extension's functions are
built from) plus BASE below: one valid call per op name. For every argument of a row, by its kind,
the sweep tries the boundary values of issue 11 (see ``values_for_kind``); every other argument keeps
its base value. The outcome of each case must be one of:

- a working call whose result has the expected dtype and matches the NumPy reference of this file
  (checked when the result is small; results of more than ``HUGE`` elements are never computed), or
- ValueError / TypeError / OverflowError whose message names the argument that was changed (as a
  whole word). ``ALIASES`` lists the few documented exceptions where the core names a related
  quantity instead, e.g. "kernel height 3 (dilated: ...) is larger than the padded input" for a
  dilation, or the first of two operands whose shapes disagree.
- MemoryError only when the reference says the result really is huge (> HUGE elements).

Which outcome a case must have is decided by the reference: if the reference accepts the call and
its result is small, the call must work (``work``); if the reference rejects it, the call must raise
a named error (``error``); if the result would be huge, any of the errors above (``huge``).

Cases are plain descriptors (op, dtype, argument, variant) generated identically in the pytest
process and in the child interpreter that runs them (``python sweep_cases.py OP [START]``), so a
crash (a signal) in the child is reported with the exact call; the parent restarts the child after
the crashing case. Nothing here imports swiftcnn at module level except through op_table, which
the caller passes in.
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
import sys
import zlib

import numpy as np

import references as R

# A result of more elements than this is never checked against (or built by) the reference.
SMALL = 1 << 16
# Above this many elements, MemoryError is an acceptable answer (the allocation may really fail).
HUGE = 1 << 26

INT_VALUES = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, -2**63, 2**64, 10**30,
              True, np.int8(3), np.uint64(2**63 + 5)]
FLOAT_VALUES = [0.0, -0.0, 5e-324, 1e308, math.inf, -math.inf, math.nan]
# Pairs mixing boundary values in one (h, w) argument.
PAIR_MIXES = [(1, 2**62), (2**62, 1), (2**63 - 1, -1), (-1, 2**63 - 1), (2**62, 2**62),
              (2**63 - 1, 2**63 - 1), (1, 2**31 - 1), (2**31, 1), (0, 2**62), (2**64, 1), (1, 10**30),
              (np.int8(3), np.uint64(2**63 + 5)), (np.int64(2), np.int32(1)), [2**62, 1]]
# Things that are not an int or a pair of ints at all.
PAIR_MALFORMED = [(), (1,), (1, 2, 3), [1, 2, 3], (1.5, 1), 1.5, "2", b"2", (None, 1), (True, 1),
                  np.array([2, 2]), np.float64(2.0), object()]
INT_MALFORMED = [1.5, "1", np.float64(2.0), np.array([1, 2]), object()]
REAL_MALFORMED = ["1.0", object(), 10**400, 1j]
PADDING_STRINGS = ["same", "valid", "full", "", "SAME", "same ", b"same"]
BOOL_VALUES = [True, False, 0, 1, None, "x", "", np.bool_(True), 2.5]
STATE_VARIANTS = ["base", "None", "read-only", "noncontig", "other-float", "int64", "list", "byteswapped",
                  "wrong-shape", "ndim+1"]
MODE_VALUES = ["valid", "same", "full", "VALID", "", "same ", "vali\x00d", b"valid", 0, None, ["valid"]]


# ---------------------------------------------------------------------------------------------
# The base calls: one valid call per op name (array arguments by shape)
# ---------------------------------------------------------------------------------------------
class A:
    """A float operand of the given shape (standard normal values of the dtype under test)."""

    def __init__(self, *shape):
        self.shape = tuple(shape)


class Derived:
    """An operand whose shape follows the other arguments: ``grad`` of a forward op (the forward's
    output shape under the current settings), ``like`` another operand, or class ``labels`` for a
    logits operand. Falls back to `fallback` when the forward's geometry is invalid or huge."""

    def __init__(self, how, source, fallback):
        self.how, self.source, self.fallback = how, source, tuple(fallback)


# Each entry: the arguments of a valid call (others take the table's defaults), and `inplace`: out=
# may be the first input itself (API.md: the elementwise ops).
BASE = {
    # 16 output channels: the float32 direct (channel-lane) kernels are chosen for this shape
    # and a grouped variant (groups=2: 4 input channels, 2 per group), whose cases are swept too
    "conv2d": dict(args=dict(x=A(2, 3, 7, 7), weight=A(16, 3, 3, 3), bias=A(16)),
                   more=[dict(x=A(2, 4, 7, 7), weight=A(6, 2, 3, 3), bias=A(6), groups=2, padding="same")]),
    "conv2d_backward": dict(args=dict(grad_out=Derived("grad", "conv2d", (2, 16, 5, 5)), x=A(2, 3, 7, 7),
                                      weight=A(16, 3, 3, 3)),
                            more=[dict(grad_out=Derived("grad", "conv2d", (2, 6, 7, 7)), x=A(2, 4, 7, 7),
                                       weight=A(6, 2, 3, 3), groups=2, padding="same")]),
    "max_pool2d": dict(args=dict(x=A(2, 3, 7, 7), kernel_size=3, padding=1)),
    "max_pool2d_backward": dict(args=dict(grad_out=Derived("grad", "max_pool2d", (2, 3, 3, 3)), x=A(2, 3, 7, 7),
                                          kernel_size=3, padding=1)),
    "avg_pool2d": dict(args=dict(x=A(2, 3, 7, 7), kernel_size=3, padding=1)),
    "avg_pool2d_backward": dict(args=dict(grad_out=Derived("grad", "avg_pool2d", (2, 3, 3, 3)), x=A(2, 3, 7, 7),
                                          kernel_size=3, padding=1)),
    "linear": dict(args=dict(x=A(3, 5), weight=A(4, 5), bias=A(4))),
    "linear_backward": dict(args=dict(grad_out=Derived("grad", "linear", (3, 4)), x=A(3, 5), weight=A(4, 5))),
    "sigmoid": dict(args=dict(x=A(2, 3, 4)), inplace=True),
    "sigmoid_backward": dict(args=dict(grad_out=Derived("like", "y", (2, 3, 4)), y=A(2, 3, 4))),
    "relu": dict(args=dict(x=A(2, 3, 4)), inplace=True),
    "relu_backward": dict(args=dict(grad_out=Derived("like", "x", (2, 3, 4)), x=A(2, 3, 4))),
    "softmax": dict(args=dict(logits=A(3, 5))),
    "softmax_cross_entropy": dict(args=dict(logits=A(3, 5), target=Derived("labels", "logits", (3,)))),
    "binary_cross_entropy_with_logits": dict(args=dict(logits=A(3, 5), target=Derived("like", "logits", (3, 5)))),
    "correlate2d": dict(args=dict(image=A(7, 6), kernel=A(3, 2))),
    "convolve2d": dict(args=dict(image=A(7, 6), kernel=A(3, 2))),
    "tanh": dict(args=dict(x=A(2, 3, 4)), inplace=True),
    "tanh_backward": dict(args=dict(grad_out=Derived("like", "y", (2, 3, 4)), y=A(2, 3, 4))),
    "leaky_relu": dict(args=dict(x=A(2, 3, 4), negative_slope=0.2), inplace=True),
    "leaky_relu_backward": dict(args=dict(grad_out=Derived("like", "x", (2, 3, 4)), x=A(2, 3, 4), negative_slope=0.2)),
    # training mode: the running statistics (state) are updated in place and checked
    "batch_norm": dict(args=dict(x=A(4, 3, 2, 2), running_mean=A(3), running_var=Derived("var", "x", (3,)),
                                 weight=A(3), bias=A(3), training=True, momentum=0.3, eps=1e-3)),
    "batch_norm_backward": dict(args=dict(grad_out=Derived("like", "x", (4, 3, 2, 2)), x=A(4, 3, 2, 2), weight=A(3),
                                          eps=1e-3)),
    "adaptive_avg_pool2d": dict(args=dict(x=A(2, 3, 7, 5), output_size=(3, 2))),
    "adaptive_avg_pool2d_backward": dict(args=dict(grad_out=Derived("grad", "adaptive_avg_pool2d", (2, 3, 3, 2)),
                                                   x=A(2, 3, 7, 5), output_size=(3, 2))),
}

# Argument kinds this sweep knows. A row with another kind fails the sweep loudly (extend it).
KNOWN_KINDS = {"array", "array_or_none", "target", "pair", "pair_or_none", "mode", "out", "real", "int", "bool",
               "state", "padding"}

# Documented aliases: the only words a message may name instead of the changed argument.
#  - kernel_size: "kernel height 2147483647 is larger than the padded input height 9";
#  - dilation: "kernel height 3 (dilated: 4294967295) is larger than the padded input height 7" and
#    "dilated kernel height: 4611686018427387904 * 2 overflows a 64-bit integer";
#    with padding='same', "padding: 4611686018427387904 * 2 overflows a 64-bit integer" (the total
#    padding d*(k-1) is computed from the dilation);
#  - padding: "the output (2, 4, 4294967299, 4294967299) has more elements than fit in 64 bits" (the
#    padding makes the output too large) and "padded input height ... overflows";
#  - any array operand of the op, for a changed array operand: two operands whose shapes or dtypes
#    disagree are reported at one of them ("x has dtype float32 but bias has dtype float64");
#  - grad_out, for a sliding-window setting of a backward op whose forward output under that
#    setting is invalid or huge: grad_out then keeps its base shape and the core may report it.
ARG_ALIASES = {
    "kernel_size": {"kernel"},
    "dilation": {"dilated", "padding"},
    "padding": {"padded", "output"},
    "output_size": {"output"},
}


def aliases(op_row, arg, kind):
    names = {arg} | ARG_ALIASES.get(arg, set())
    arrays = [a for a, k, _ in op_row[1] if k in ("array", "array_or_none", "target", "state")]
    if kind in ("pair", "pair_or_none", "int", "padding"):
        names.update(a for a in arrays if a == "grad_out")
    if kind in ("array", "array_or_none", "target", "state"):
        names.update(arrays)
    return names


def names_any(message, names):
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", message) for n in names)


# ---------------------------------------------------------------------------------------------
# Case generation (no arrays: a case is a descriptor rebuilt identically in the child)
# ---------------------------------------------------------------------------------------------
class Case:
    __slots__ = ("op", "dtype", "arg", "kind", "variant", "value", "label", "bi")

    def __init__(self, op, dtype, arg, kind, variant, value=None, label=None, bi=0):
        self.op, self.dtype, self.arg, self.kind, self.variant, self.value = op, dtype, arg, kind, variant, value
        self.label = label if label is not None else variant
        self.bi = bi  # which base call of the op (0: BASE[op]["args"], i: BASE[op]["more"][i - 1])

    @property
    def id(self):
        b = f"#{self.bi}" if self.bi else ""
        return f"{self.op}{b}[{self.dtype}]:{self.arg}={self.label}"


def _vrepr(v):
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r}, dtype={v.dtype})"
    if isinstance(v, np.generic):
        return f"np.{type(v).__name__}({v.item()!r})"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_vrepr(e) for e in v)
        return f"({inner},)" if isinstance(v, tuple) and len(v) == 1 else (f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
    if isinstance(v, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan" if v != v else repr(v))
    if type(v) is object:
        return "object()"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**20:
        for e in range(20, 130):
            for off in (-1, 0, 1, 5):
                for sign in (1, -1):
                    if v == sign * (2**e + off):
                        s = f"2**{e}" + (f"{off:+d}" if off else "")
                        return s if sign > 0 else f"-{s}" if not off else f"-({s})"
        if v == 10**30:
            return "10**30"
        if v == 10**400:
            return "10**400"
    return repr(v)


def values_for_kind(kind, base_value):
    """[(label, value)] of the boundary values tried for one scalar argument of `kind`."""
    out = []
    if kind == "padding":  # an int, a pair, or one of the strings 'valid' / 'same'
        return [(_vrepr(v), v) for v in PADDING_STRINGS] + values_for_kind("pair", base_value)
    if kind == "bool":  # bool(x) semantics (PyTorch's training flag): any truthy / falsy object
        return [(_vrepr(v), v) for v in BOOL_VALUES]
    if kind in ("pair", "pair_or_none", "int"):
        for v in INT_VALUES:
            out.append((_vrepr(v), v))
        if kind == "int":
            out.append(("3", 3))  # groups: a value that divides nothing of the base call
        if kind != "int":
            b = base_value if isinstance(base_value, int) and not isinstance(base_value, bool) else 1
            for v in INT_VALUES:
                out.append((_vrepr((v, b)), (v, b)))
                out.append((_vrepr((b, v)), (b, v)))
            for v in PAIR_MIXES + PAIR_MALFORMED:
                out.append((_vrepr(v), v))
        else:
            for v in INT_MALFORMED:
                out.append((_vrepr(v), v))
        out.append(("None", None))
    elif kind == "real":
        for v in FLOAT_VALUES + [np.float32(0.5), np.float64(-2.0), 1, True]:
            out.append((_vrepr(v), v))
        for v in REAL_MALFORMED:
            out.append((_vrepr(v), v))
        out.append(("None", None))
    elif kind == "mode":
        for v in MODE_VALUES:
            out.append((_vrepr(v), v))
    else:
        raise KeyError(kind)
    seen, unique = set(), []
    for label, v in out:  # (1, 2**62) is both an element sweep and a mix: one case
        if label not in seen:
            seen.add(label)
            unique.append((label, v))
    return unique


ARRAY_VARIANTS = ["base", "ndim-1", "ndim+1", "int64", "int32", "bool", "float16", "complex128", "noncontig",
                  "negstride", "fortran", "byteswapped", "unaligned", "other-float", "list", "None", "scalar",
                  "str", "object"]
TARGET_VARIANTS = ["base", "labels-neg", "labels-K", "labels-int64max", "labels-int8", "labels-uint64",
                   "labels-uint64-huge", "labels-bool", "labels-float", "labels-2d", "labels-short", "labels-list",
                   "labels-noncontig", "labels-empty", "probs", "probs-other-float", "probs-wrong-shape",
                   "probs-list", "None", "str"]
OUT_VARIANTS = ["correct", "wrong-shape", "other-float", "int64", "read-only", "noncontig", "list", "byteswapped",
                "first-input"]


def op_cases(row, dtypes=("float32", "float64")):
    """Every case of one table row (raises KeyError naming an unknown kind / missing base call)."""
    name, args, npos, nreq, nres = row
    if name not in BASE:
        raise KeyError(f"op {name!r} of op_table() has no base call in sweep_cases.BASE")
    cases = []
    for bi, base in enumerate(bases(name)):
        cases.extend(_op_cases(row, dtypes, base, bi))
    return cases


def bases(name):
    return [BASE[name]["args"]] + list(BASE[name].get("more", []))


def _op_cases(row, dtypes, base, bi):
    name, args, npos, nreq, nres = row
    cases = []
    for dt in dtypes:
        cases.append(Case(name, dt, "-", "-", "base", label="base call", bi=bi))
        for arg, kind, dflt in args:
            if kind not in KNOWN_KINDS:
                raise KeyError(f"op {name!r}: argument {arg!r} has kind {kind!r}, which the sweep does not know; "
                               f"add its values to sweep_cases.values_for_kind")
            if kind in ("array", "array_or_none"):
                ndim = len(_base_shape(base.get(arg)))
                variants = list(ARRAY_VARIANTS) + [f"zero-axis{i}" for i in range(ndim)]
                for v in variants:
                    cases.append(Case(name, dt, arg, kind, v, bi=bi))
            elif kind == "state":
                for v in STATE_VARIANTS:
                    cases.append(Case(name, dt, arg, kind, v, bi=bi))
            elif kind == "target":
                for v in TARGET_VARIANTS:
                    cases.append(Case(name, dt, arg, kind, v, bi=bi))
            elif kind == "out":
                for v in OUT_VARIANTS:
                    cases.append(Case(name, dt, arg, kind, v, bi=bi))
                for other, k2, _ in args:
                    if k2 in ("array", "array_or_none", "target") and other in base:
                        cases.append(Case(name, dt, arg, kind, f"overlaps-{other}", bi=bi))
            else:
                bv = base.get(arg, dflt)
                for label, v in values_for_kind(kind, bv):
                    cases.append(Case(name, dt, arg, kind, "value", v, label, bi=bi))
    return cases


def _base_shape(spec):
    if isinstance(spec, A):
        return spec.shape
    if isinstance(spec, Derived):
        return spec.fallback
    return ()


# ---------------------------------------------------------------------------------------------
# Building a call
# ---------------------------------------------------------------------------------------------
def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _geometry_out_shape(fwd, call):
    """The forward op's output shape for `call`'s settings, or None when invalid (reference rules)."""
    entry = REFS[fwd]
    try:
        if "shape" in entry:
            return tuple(entry["shape"](call))
        call = {k: v for k, v in call.items() if k != "out"}
        return entry["ref"](call)[0][0].shape
    except Invalid:
        return None


def _array_variant(v, base_arr, dtype, rng):
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    if v == "base":
        return base_arr
    if v == "ndim-1":
        return base_arr[0] if base_arr.ndim else base_arr
    if v == "ndim+1":
        return base_arr[None]
    if v.startswith("zero-axis"):
        ax = int(v[len("zero-axis"):])
        sl = [slice(None)] * base_arr.ndim
        sl[ax] = slice(0, 0)
        return base_arr[tuple(sl)].copy()
    if v in ("int64", "int32", "bool", "float16", "complex128"):
        return (base_arr * 3).astype(v)
    if v == "noncontig":
        big = np.empty(base_arr.shape[:-1] + (base_arr.shape[-1] * 2,), dtype) if base_arr.ndim else None
        if big is None:
            return base_arr
        big[..., ::2] = base_arr
        big[..., 1::2] = np.nan
        return big[..., ::2]
    if v == "negstride":
        return base_arr[::-1].copy()[::-1] if base_arr.ndim else base_arr
    if v == "fortran":
        return np.asfortranarray(base_arr)
    if v == "byteswapped":
        return base_arr.astype(base_arr.dtype.newbyteorder())
    if v == "unaligned":
        raw = np.zeros(base_arr.nbytes + 1, np.uint8)
        u = raw[1:].view(base_arr.dtype).reshape(base_arr.shape)
        u[...] = base_arr
        return u
    if v == "other-float":
        return base_arr.astype(other)
    if v == "list":
        return base_arr.tolist()
    if v == "None":
        return None
    if v == "scalar":
        return 1.5
    if v == "str":
        return "abc"
    if v == "object":
        return np.array([object()] * max(1, base_arr.size), dtype=object).reshape(base_arr.shape or (1,))
    raise KeyError(v)


def _target_variant(v, call, dtype, rng):
    logits = call.get("logits")
    n, k = (logits.shape if isinstance(logits, np.ndarray) and logits.ndim == 2 else (3, 5))
    labels = rng.integers(0, max(k, 1), size=n)
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    probs = rng.random((n, k)).astype(dtype)
    table = {
        "base": labels,
        "labels-neg": np.array([-1] + [0] * (n - 1)),
        "labels-K": np.array([k] + [0] * (n - 1)),
        "labels-int64max": np.array([2**63 - 1] + [0] * (n - 1), np.int64),
        "labels-int8": labels.astype(np.int8),
        "labels-uint64": labels.astype(np.uint64),
        "labels-uint64-huge": np.array([2**63 + 5] + [0] * (n - 1), np.uint64),
        "labels-bool": (labels > 0),
        "labels-float": labels.astype(dtype),
        "labels-2d": labels[:, None],
        "labels-short": labels[:-1],
        "labels-list": [int(i) for i in labels],
        "labels-noncontig": np.repeat(labels, 2)[::2],
        "labels-empty": labels[:0],
        "probs": probs,
        "probs-other-float": probs.astype(other),
        "probs-wrong-shape": rng.random((n, k + 1)).astype(dtype),
        "probs-list": probs.tolist(),
        "None": None,
        "str": "abc",
    }
    return table[v]


def _state_variant(v, b, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    if v == "base":
        return b
    if v == "None":
        return None
    if v == "read-only":
        r = b.copy()
        r.flags.writeable = False
        return r
    if v == "noncontig":
        big = np.repeat(b, 2)
        return big[::2]
    if v in ("int64",):
        return (b * 3).astype(v)
    if v == "other-float":
        return b.astype(other)
    if v == "list":
        return b.tolist()
    if v == "byteswapped":
        return b.astype(b.dtype.newbyteorder())
    if v == "wrong-shape":
        return np.concatenate([b, b[:1]])
    if v == "ndim+1":
        return b[None].copy()
    raise KeyError(v)


def build_call(case, row):
    """(kwargs, extras): the call of `case` (keyword arguments; absent optional ones left out)."""
    name, args, *_ = row
    spec = BASE[name]
    base = bases(name)[case.bi]
    dtype = np.dtype(case.dtype)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    call = {}
    # Plain arrays and scalar settings first, then the derived operands (they follow the others).
    for arg, kind, dflt in args:
        b = base.get(arg)
        if isinstance(b, A):
            call[arg] = _rand(rng, b.shape, dtype)
        elif b is not None and not isinstance(b, Derived):
            call[arg] = b
    if case.variant == "value":
        call[case.arg] = case.value
    for arg, kind, dflt in args:
        b = base.get(arg)
        if not isinstance(b, Derived):
            continue
        shape = None
        if b.how == "grad":
            shape = _geometry_out_shape(b.source, call)
            if shape is None or math.prod(shape) > SMALL:
                shape = b.fallback
            call[arg] = _rand(rng, shape, dtype)
        elif b.how == "like":
            src = call.get(b.source)
            shape = src.shape if isinstance(src, np.ndarray) else b.fallback
            call[arg] = _rand(rng, shape, dtype)
        elif b.how == "labels":
            src = call.get(b.source)
            n, k = src.shape if isinstance(src, np.ndarray) and src.ndim == 2 else (3, 5)
            call[arg] = rng.integers(0, max(k, 1), size=n)
        elif b.how == "var":  # a positive per-channel variance
            call[arg] = (rng.random(b.fallback) + 0.5).astype(dtype)
    extras = {}
    if case.kind in ("array", "array_or_none"):
        b = call.get(case.arg)
        if b is None:
            b = _rand(rng, _base_shape(base.get(case.arg)) or (3,), dtype)
        v = _array_variant(case.variant, b, dtype, rng)
        if v is None and case.variant == "None":
            call[case.arg] = None
        else:
            call[case.arg] = v
        # a backward op's grad_out follows a changed x (e.g. N = 0) when the geometry allows
        for arg, kind, dflt in args:
            d = base.get(arg)
            if isinstance(d, Derived) and arg != case.arg and d.source != case.arg and d.how == "grad":
                shape = _geometry_out_shape(d.source, call)
                if shape is not None and math.prod(shape) <= SMALL:
                    call[arg] = _rand(rng, shape, dtype)
            elif isinstance(d, Derived) and arg != case.arg and d.source == case.arg:
                src = call[case.arg]
                if d.how == "like" and isinstance(src, np.ndarray) and src.dtype.kind == "f" and src.ndim:
                    call[arg] = _rand(rng, src.shape, dtype)
                elif d.how == "labels" and isinstance(src, np.ndarray) and src.ndim == 2:
                    call[arg] = rng.integers(0, max(src.shape[1], 1), size=src.shape[0])
    elif case.kind == "target":
        call[case.arg] = _target_variant(case.variant, call, dtype, rng)
    elif case.kind == "state":
        call[case.arg] = _state_variant(case.variant, call.get(case.arg), dtype)
    elif case.kind == "out":
        ref = reference(name, call)
        first = ref["results"][0] if ref["ok"] else None
        shape = first.shape if first is not None else (1,)
        inputs = [a for a, k, _ in args if k in ("array", "array_or_none", "target") and isinstance(call.get(a), np.ndarray)]
        v = case.variant
        if v == "correct":
            out = np.full(shape, 7.0, dtype)
        elif v == "wrong-shape":
            out = np.full(shape + (2,), 7.0, dtype)
        elif v == "other-float":
            out = np.full(shape, 7.0, np.float64 if dtype == np.float32 else np.float32)
        elif v == "int64":
            out = np.full(shape, 7, np.int64)
        elif v == "read-only":
            out = np.full(shape, 7.0, dtype)
            out.flags.writeable = False
        elif v == "noncontig":
            out = np.full(shape[:-1] + (shape[-1] * 2,), 7.0, dtype)[..., ::2] if shape else np.full(shape, 7.0, dtype)
        elif v == "list":
            out = np.full(shape, 7.0, dtype).tolist()
        elif v == "byteswapped":
            out = np.full(shape, 7.0, dtype.newbyteorder())
        elif v == "first-input":
            out = call[inputs[0]]
            extras["inplace"] = bool(spec.get("inplace")) and out.shape == shape and out.dtype == dtype
        elif v.startswith("overlaps-"):
            other = v[len("overlaps-"):]
            src = call[other]
            if not isinstance(src, np.ndarray) or src.dtype != dtype:
                out = np.full(shape, 7.0, dtype)
                extras["no_overlap"] = True
            else:
                # one buffer: the input at its start, out starting at the input's last element
                nin, nout = src.size, math.prod(shape)
                buf = np.empty(nin + nout + 1, dtype)
                inp = buf[:nin].reshape(src.shape)
                inp[...] = src
                call[other] = inp
                start = max(nin - 1, 0)
                out = buf[start:start + nout].reshape(shape)
        else:
            raise KeyError(v)
        call["out"] = out
    return call, extras


# ---------------------------------------------------------------------------------------------
# References (float64; loop-based where settings can be huge: no padded copies, window taps
# clipped to the input by integer arithmetic, so a stride or padding of 2**62 costs nothing)
# ---------------------------------------------------------------------------------------------
class Invalid(Exception):
    """The reference rejects the call: the API requires an error."""


def _int(v, what):
    if isinstance(v, (bool, np.bool_)):
        raise Invalid(f"{what}: bool")
    try:
        i = operator.index(v)
    except TypeError:
        raise Invalid(f"{what}: not an int") from None
    if not -2**63 <= i < 2**63:
        raise Invalid(f"{what}: beyond int64")
    return i


def _pair(v, what):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise Invalid(f"{what}: length")
        return _int(v[0], what), _int(v[1], what)
    i = _int(v, what)
    return i, i


def _real(v, what):
    if isinstance(v, (str, bytes)) or v is None or isinstance(v, complex):
        raise Invalid(what)
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise Invalid(what) from None


def _floats(call, names, optional=()):
    """The float operands as float64 arrays, with the API's dtype rules (ndarray operands must be
    float32/float64 and share one dtype; lists take that dtype, float64 without ndarrays)."""
    dt = None
    for n in names:
        v = call.get(n)
        if v is None:
            if n in optional:
                continue
            raise Invalid(f"{n}: None")
        if isinstance(v, np.ndarray):
            if v.dtype.kind != "f" or v.dtype.itemsize not in (4, 8):
                raise Invalid(f"{n}: dtype {v.dtype}")
            if dt is None:
                dt = v.dtype.newbyteorder("=")
            elif v.dtype.newbyteorder("=") != dt:
                raise Invalid(f"{n}: mixed dtypes")
    out = {}
    for n in names:
        v = call.get(n)
        if v is None:
            out[n] = None
            continue
        if isinstance(v, str) or not isinstance(v, (np.ndarray, list, tuple, int, float)):
            raise Invalid(f"{n}: not an array")
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise Invalid(f"{n}: dtype {a.dtype}")
        out[n] = a.astype(np.float64)
    return out, (dt or np.dtype(np.float64))


def _taps(o, stride, pad, k, dil, size):
    """[(r, index)] of the kernel taps r in [0, k) of output o whose input index is in [0, size)."""
    start = o * stride - pad
    lo = max(0, -(-(-start) // dil)) if start < 0 else 0  # ceil(-start / dil)
    hi = min(k - 1, (size - 1 - start) // dil) if size - 1 - start >= 0 else -1
    return [(r, start + r * dil) for r in range(lo, hi + 1)]


def _conv_geom(call):
    """((N, K, Ho, Wo), (sh, sw, ph, pw, dh, dw), groups); ph/pw are the padding BEFORE (top/left):
    'same' pads d*(k-1) in total, floor half before and the rest after (PyTorch), which the taps
    clipped to the input cover without an explicit after-padding."""
    f, _ = _floats({"x": call.get("x"), "weight": call.get("weight")}, ["x", "weight"])
    x, w = f["x"], f["weight"]
    if x.ndim != 4 or w.ndim != 4:
        raise Invalid("ndim")
    n, c, h, wd = x.shape
    k, c2, kh, kw = w.shape
    (sh, sw), (dh, dw) = _pair(call.get("stride", 1), "stride"), _pair(call.get("dilation", 1), "dilation")
    groups = _int(call.get("groups", 1), "groups")
    pad = call.get("padding", 0)
    same = False
    if isinstance(pad, str):
        if pad == "valid":
            (ph, pw) = (0, 0)
        elif pad == "same":
            same, (ph, pw) = True, (0, 0)
        else:
            raise Invalid("padding string")
    else:
        ph, pw = _pair(pad, "padding")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0 or groups < 1:
        raise Invalid("settings")
    if same and (sh, sw) != (1, 1):
        raise Invalid("padding='same' needs stride 1")
    if c < 1 or h < 1 or wd < 1 or k < 1 or kh < 1 or kw < 1 or c % groups or k % groups or c2 != c // groups:
        raise Invalid("shapes")
    if same:
        if max(dh * (kh - 1), dw * (kw - 1)) >= 2**63:
            raise Invalid("the total 'same' padding d*(k-1) does not fit in 64 bits")
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
        return (n, k, h, wd), (sh, sw, ph, pw, dh, dw), groups
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h + 2 * ph < dh * (kh - 1) + 1 or wd + 2 * pw < dw * (kw - 1) + 1:
        raise Invalid("window larger than the padded input")
    return (n, k, ho, wo), (sh, sw, ph, pw, dh, dw), groups


def _ungroup(w, c, groups):
    """The grouped weight (K, C/groups, kh, kw) as the block-diagonal (K, C, kh, kw) of the same
    convolution: output channel block g only sees input channel block g (per-group convolution)."""
    k, cg = w.shape[:2]
    full = np.zeros((k, c) + w.shape[2:])
    kg = k // groups
    for g in range(groups):
        full[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] = w[g * kg:(g + 1) * kg]
    return full


def _regroup(full, cg, groups):
    k = full.shape[0]
    kg = k // groups
    return np.concatenate([full[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] for g in range(groups)], axis=0)


def conv2d_ref(call):
    (n, k, ho, wo), (sh, sw, ph, pw, dh, dw), groups = _conv_geom(call)
    f, dt = _floats(call, ["x", "weight", "bias"], optional=("bias",))
    x, w, b = f["x"], f["weight"], f["bias"]
    w = _ungroup(w, x.shape[1], groups)
    if b is not None and b.shape != (k,):
        raise Invalid("bias shape")
    _, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    y = np.zeros((n, k, ho, wo))
    for i in range(ho):
        rows = _taps(i, sh, ph, kh, dh, h)
        for j in range(wo):
            cols = _taps(j, sw, pw, kw, dw, wd)
            acc = np.zeros((n, k))
            for r, hi in rows:
                for s, wi in cols:
                    acc += x[:, :, hi, wi] @ w[:, :, r, s].T
            y[:, :, i, j] = acc + (b if b is not None else 0.0)
    return [y], dt


def conv2d_backward_ref(call):
    (n, k, ho, wo), (sh, sw, ph, pw, dh, dw), groups = _conv_geom(call)
    f, dt = _floats(call, ["grad_out", "x", "weight"])
    g, x, w = f["grad_out"], f["x"], f["weight"]
    cg = w.shape[1]
    w = _ungroup(w, x.shape[1], groups)
    if g.shape != (n, k, ho, wo):
        raise Invalid("grad_out shape")
    _, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for i in range(ho):
        rows = _taps(i, sh, ph, kh, dh, h)
        for j in range(wo):
            cols = _taps(j, sw, pw, kw, dw, wd)
            for r, hi in rows:
                for s, wi in cols:
                    gx[:, :, hi, wi] += g[:, :, i, j] @ w[:, :, r, s]
                    gw[:, :, r, s] += g[:, :, i, j].T @ x[:, :, hi, wi]
    return [gx, _regroup(gw, cg, groups), g.sum(axis=(0, 2, 3))], dt


def _pool_geom(call):
    f, _ = _floats({"x": call.get("x")}, ["x"])
    x = f["x"]
    if x.ndim != 4:
        raise Invalid("ndim")
    n, c, h, w = x.shape
    kh, kw = _pair(call.get("kernel_size"), "kernel_size")
    st = call.get("stride")
    sh, sw = (kh, kw) if st is None else _pair(st, "stride")
    ph, pw = _pair(call.get("padding", 0), "padding")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or ph > kh // 2 or pw > kw // 2:
        raise Invalid("settings")
    if c < 1 or h < 1 or w < 1:
        raise Invalid("shape")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise Invalid("window larger than the padded input")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return (n, c, ho, wo), (kh, kw, sh, sw, ph, pw)


def _pool_ref(call, kind, backward):
    (n, c, ho, wo), (kh, kw, sh, sw, ph, pw) = _pool_geom(call)
    names = ["grad_out", "x"] if backward else ["x"]
    f, dt = _floats(call, names)
    x = f["x"]
    h, w = x.shape[2:]
    if backward and f["grad_out"].shape != (n, c, ho, wo):
        raise Invalid("grad_out shape")
    g = f["grad_out"] if backward else None
    y = np.zeros((n, c, ho, wo))
    gx = np.zeros_like(x)
    area = float(kh * kw)
    for i in range(ho):
        rows = [hi for _, hi in _taps(i, sh, ph, kh, 1, h)]
        for j in range(wo):
            cols = [wi for _, wi in _taps(j, sw, pw, kw, 1, w)]
            win = x[:, :, rows][:, :, :, cols].reshape(n, c, len(rows) * len(cols))
            if kind == "avg":
                y[:, :, i, j] = win.sum(axis=2) / area
                if backward:
                    for hi in rows:
                        for wi in cols:
                            gx[:, :, hi, wi] += g[:, :, i, j] / area
            else:
                if win.shape[2] == 0:
                    y[:, :, i, j] = -np.inf
                    continue
                am = np.argmax(win, axis=2)  # first maximum, row-major
                y[:, :, i, j] = win.max(axis=2)
                if backward:
                    for nn in range(n):
                        for cc in range(c):
                            r, s = divmod(int(am[nn, cc]), len(cols))
                            gx[nn, cc, rows[r], cols[s]] += g[nn, cc, i, j]
    return ([gx] if backward else [y]), dt


def linear_ref(call):
    f, dt = _floats(call, ["x", "weight", "bias"], optional=("bias",))
    x, w, b = f["x"], f["weight"], f["bias"]
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] < 1 or w.shape[0] < 1 or w.shape[1] != x.shape[1]:
        raise Invalid("shapes")
    if b is not None and b.shape != (w.shape[0],):
        raise Invalid("bias")
    return [x @ w.T + (b if b is not None else 0.0)], dt


def linear_backward_ref(call):
    f, dt = _floats(call, ["grad_out", "x", "weight"])
    g, x, w = f["grad_out"], f["x"], f["weight"]
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] < 1 or w.shape[0] < 1 or w.shape[1] != x.shape[1]:
        raise Invalid("shapes")
    if g.shape != (x.shape[0], w.shape[0]):
        raise Invalid("grad_out")
    return list(R.linear_backward(g, x, w)), dt


def _elementwise(names, fn):
    def ref(call):
        f, dt = _floats(call, names)
        arrs = [f[n] for n in names]
        if any(a.shape != arrs[0].shape for a in arrs):
            raise Invalid("shapes")
        return [fn(*arrs)], dt
    return ref


def softmax_ref(call):
    f, dt = _floats(call, ["logits"])
    z = f["logits"]
    if z.ndim != 2 or z.shape[1] < 1:
        raise Invalid("shape")
    return [R.softmax(z)], dt


def softmax_ce_ref(call):
    f, dt = _floats(call, ["logits"])
    z = f["logits"]
    if z.ndim != 2 or z.shape[1] < 1:
        raise Invalid("shape")
    n, k = z.shape
    t = call.get("target")
    if t is None or isinstance(t, str):
        raise Invalid("target")
    ta = np.asarray(t) if not isinstance(t, np.ndarray) else t
    if ta.ndim == 1 and (isinstance(t, np.ndarray) or ta.size == 0 or ta.dtype.kind in "iu"):
        if ta.size and (ta.dtype.kind not in "iu"):
            raise Invalid("labels dtype")
        if ta.shape != (n,):
            raise Invalid("labels shape")
        labels = [int(v) for v in ta]
        if any(not 0 <= v < k for v in labels):
            raise Invalid("labels range")
        target = np.array(labels, dtype=np.int64)
    else:
        f2, dt2 = _floats({"logits": call["logits"], "target": t}, ["logits", "target"])
        if f2["target"].shape != (n, k):
            raise Invalid("probs shape")
        target = f2["target"]
    with np.errstate(all="ignore"):
        if n == 0:
            return [math.nan, np.zeros((0, k))], dt
        loss, grad = R.softmax_cross_entropy(z, target)
    return [loss, grad], dt


def bce_ref(call):
    f, dt = _floats(call, ["logits", "target"])
    z, t = f["logits"], f["target"]
    if z.shape != t.shape:
        raise Invalid("shapes")
    with np.errstate(all="ignore"):
        if z.size == 0:
            return [math.nan, np.zeros(z.shape)], dt
        loss, grad = R.bce_with_logits(z, t)
    return [loss, grad], dt


def _signal_ref(convolve):
    def ref(call):
        f, dt = _floats(call, ["image", "kernel"])
        im, k = f["image"], f["kernel"]
        mode = call.get("mode", "valid")
        if type(mode) is not str or mode not in ("valid", "same", "full"):
            raise Invalid("mode")
        if im.ndim != 2 or k.ndim != 2 or min(im.shape) < 1 or min(k.shape) < 1:
            raise Invalid("shapes")
        if mode == "valid" and (k.shape[0] > im.shape[0] or k.shape[1] > im.shape[1]):
            raise Invalid("kernel larger than the image")
        try:
            import scipy.signal as S
            fn = S.convolve2d if convolve else S.correlate2d
            return [fn(im, k, mode)], dt
        except ImportError:
            return [(R.convolve2d if convolve else R.correlate2d)(im, k, mode)], dt
    return ref


def _signal_shape(call):
    im, k = call.get("image"), call.get("kernel")
    mode = call.get("mode", "valid")
    h, w = np.shape(im)
    kh, kw = np.shape(k)
    return {"valid": (h - kh + 1, w - kw + 1), "same": (h, w), "full": (h + kh - 1, w + kw - 1)}.get(mode, (h, w))


def _slope(call, dt):
    return dt.type(_real(call.get("negative_slope", 0.01), "negative_slope"))


def leaky_relu_ref(call):
    f, dt = _floats(call, ["x"])
    s = _slope(call, dt)
    x = f["x"].astype(dt)
    with np.errstate(all="ignore"):  # in the dtype: a slope of 1e308 is inf in float32
        return [np.where(x > 0, x, s * x).astype(np.float64)], dt


def leaky_relu_backward_ref(call):
    f, dt = _floats(call, ["grad_out", "x"])
    if f["grad_out"].shape != f["x"].shape:
        raise Invalid("shapes")
    s = _slope(call, dt)
    g = f["grad_out"].astype(dt)
    with np.errstate(all="ignore"):
        return [np.where(f["x"] > 0, g, g * s).astype(np.float64)], dt


STATE_ARGS = ("running_mean", "running_var")


def _bn_common(x, per_channel, eps, training):
    if x.ndim < 2:
        raise Invalid("x ndim")
    c = x.shape[1]
    for name, t in per_channel.items():
        if t is not None and t.shape != (c,):
            raise Invalid(f"{name} shape")
    if not (math.isfinite(eps) and eps >= 0):
        raise Invalid("eps")
    vpc = math.prod(x.shape[:1] + x.shape[2:])
    if training and vpc == 1:
        raise Invalid("one value per channel when training")
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    return c, vpc, axes, bshape


def batch_norm_ref(call):
    """torch.nn.functional.batch_norm by its formula; the third result is the expected running
    statistics after the call (updated in place in training mode)."""
    for n in STATE_ARGS:  # used in place: never converted
        v = call.get(n)
        if v is not None and not (isinstance(v, np.ndarray) and v.flags.c_contiguous and v.flags.writeable
                                  and v.dtype.isnative):
            raise Invalid(f"{n}: not a writable C-contiguous native ndarray")
    names = ["x", "running_mean", "running_var", "weight", "bias"]
    f, dt = _floats(call, names, optional=tuple(names[1:]))
    for n in STATE_ARGS:
        v = call.get(n)
        if v is not None and v.dtype != dt:
            raise Invalid(f"{n}: dtype")
    x, rm, rv, w, b = (f[n] for n in names)
    training = bool(call.get("training", False))
    momentum = _real(call.get("momentum", 0.1), "momentum")
    eps = _real(call.get("eps", 1e-5), "eps")
    c, vpc, axes, bshape = _bn_common(x, dict(running_mean=rm, running_var=rv, weight=w, bias=b), eps, training)
    if (rm is None) != (rv is None):
        raise Invalid("only one running statistic")
    if not math.isfinite(momentum):
        raise Invalid("momentum")
    if not training and rm is None:
        raise Invalid("eval mode without running statistics")
    state = {n: f[n] for n in STATE_ARGS if f[n] is not None}
    if x.size == 0:
        return [np.zeros(x.shape)], dt, state
    with np.errstate(all="ignore"):
        if training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            if rm is not None:  # in the dtype, keep * old + m * new (a momentum of 1e308 overflows alike)
                m, keep = dt.type(momentum), dt.type(1 - momentum)
                mean_t, unb_t = mean.astype(dt), (var * vpc / (vpc - 1)).astype(dt)
                state = {"running_mean": (keep * rm.astype(dt) + m * mean_t).astype(np.float64),
                         "running_var": (keep * rv.astype(dt) + m * unb_t).astype(np.float64)}
        else:
            mean, var = rm, rv
        y = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
        if w is not None:
            y = y * w.reshape(bshape)
        if b is not None:
            y = y + b.reshape(bshape)
    return [y], dt, state


def batch_norm_backward_ref(call):
    f, dt = _floats(call, ["grad_out", "x", "weight"], optional=("weight",))
    g, x, w = f["grad_out"], f["x"], f["weight"]
    eps = _real(call.get("eps", 1e-5), "eps")
    if x.ndim < 2:
        raise Invalid("x ndim")
    if g.shape != x.shape:
        raise Invalid("grad_out shape")
    c, vpc, axes, bshape = _bn_common(x, dict(weight=w), eps, True)
    if x.size == 0:
        return [np.zeros(x.shape), np.zeros(c), np.zeros(c)], dt
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    gb = g.sum(axis=axes)
    gw = (g * xhat).sum(axis=axes)
    wv = w if w is not None else np.ones(c)
    # dx = w * invstd / m * (m * g - sum(g) - x_hat * sum(g * x_hat)), m = values per channel
    gx = (wv * invstd).reshape(bshape) / vpc * (vpc * g - gb.reshape(bshape) - xhat * gw.reshape(bshape))
    return [gx, gw, gb], dt


def _adaptive_geom(call):
    f, _ = _floats({"x": call.get("x")}, ["x"])
    x = f["x"]
    if x.ndim != 4:
        raise Invalid("ndim")
    oh, ow = _pair(call.get("output_size"), "output_size")
    n, c, h, w = x.shape
    if min(oh, ow) < 1 or min(c, h, w) < 1:
        raise Invalid("sizes")
    return (n, c, oh, ow)


def _adaptive_ref(call, backward):
    n, c, oh, ow = _adaptive_geom(call)
    f, dt = _floats(call, ["grad_out", "x"] if backward else ["x"])
    x = f["x"]
    h, w = x.shape[2:]
    if backward and f["grad_out"].shape != (n, c, oh, ow):
        raise Invalid("grad_out shape")
    y, gx = np.zeros((n, c, oh, ow)), np.zeros_like(x)
    for i in range(oh):
        r0, r1 = i * h // oh, -(-(i + 1) * h // oh)  # PyTorch's bins: floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1
        for j in range(ow):
            c0, c1 = j * w // ow, -(-(j + 1) * w // ow)
            area = (r1 - r0) * (c1 - c0)
            if backward:
                gx[:, :, r0:r1, c0:c1] += f["grad_out"][:, :, i, j][:, :, None, None] / area
            else:
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / area
    return ([gx] if backward else [y]), dt


REFS = {
    "conv2d": dict(ref=conv2d_ref, shape=lambda c: _conv_geom(c)[0]),
    "conv2d_backward": dict(ref=conv2d_backward_ref, shape=lambda c: _conv_geom(c)[0]),
    "max_pool2d": dict(ref=lambda c: _pool_ref(c, "max", False), shape=lambda c: _pool_geom(c)[0]),
    "max_pool2d_backward": dict(ref=lambda c: _pool_ref(c, "max", True), shape=lambda c: _pool_geom(c)[0]),
    "avg_pool2d": dict(ref=lambda c: _pool_ref(c, "avg", False), shape=lambda c: _pool_geom(c)[0]),
    "avg_pool2d_backward": dict(ref=lambda c: _pool_ref(c, "avg", True), shape=lambda c: _pool_geom(c)[0]),
    "linear": dict(ref=linear_ref),
    "linear_backward": dict(ref=linear_backward_ref),
    "sigmoid": dict(ref=_elementwise(["x"], R.sigmoid)),
    "sigmoid_backward": dict(ref=_elementwise(["grad_out", "y"], lambda g, y: g * y * (1 - y))),
    "relu": dict(ref=_elementwise(["x"], R.relu)),
    "relu_backward": dict(ref=_elementwise(["grad_out", "x"], lambda g, x: g * (x > 0))),
    "softmax": dict(ref=softmax_ref),
    "softmax_cross_entropy": dict(ref=softmax_ce_ref),
    "binary_cross_entropy_with_logits": dict(ref=bce_ref),
    "correlate2d": dict(ref=_signal_ref(False)),
    "convolve2d": dict(ref=_signal_ref(True)),
    "tanh": dict(ref=_elementwise(["x"], lambda x: np.asarray(np.tanh(x)))),
    "tanh_backward": dict(ref=_elementwise(["grad_out", "y"], lambda g, y: g * (1 - y * y))),
    "leaky_relu": dict(ref=leaky_relu_ref),
    "leaky_relu_backward": dict(ref=leaky_relu_backward_ref),
    "batch_norm": dict(ref=batch_norm_ref),
    "batch_norm_backward": dict(ref=batch_norm_backward_ref),
    "adaptive_avg_pool2d": dict(ref=lambda c: _adaptive_ref(c, False), shape=_adaptive_geom),
    "adaptive_avg_pool2d_backward": dict(ref=lambda c: _adaptive_ref(c, True), shape=_adaptive_geom),
}


def reference(name, call):
    """{"ok": True, "results": [...], "dtype": dt} or {"ok": False, "why": ...} or {"huge": n}."""
    entry = REFS[name]
    call = {k: v for k, v in call.items() if k != "out"}
    try:
        if "shape" in entry:
            shape = entry["shape"](call)
            n = math.prod(shape)
            if n > SMALL:
                return {"ok": False, "huge": n, "why": f"result {shape} too large to check"}
        results, dt, *state = entry["ref"](call)
    except Invalid as e:
        return {"ok": False, "why": str(e)}
    return {"ok": True, "results": results, "dtype": dt, "state": state[0] if state else {}}


# ---------------------------------------------------------------------------------------------
# Running one case (in the child)
# ---------------------------------------------------------------------------------------------
def _close(actual, expected, dtype):
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return f"shape {a.shape} != reference {e.shape}"
    if a.size == 0:
        return None
    if not np.array_equal(np.isnan(a), np.isnan(e)):
        return "NaN positions differ from the reference"
    fin = ~np.isnan(e)
    if not np.array_equal(np.isinf(a[fin]) * np.sign(a[fin]), np.isinf(e[fin]) * np.sign(e[fin])):
        return "infinities differ from the reference"
    ok = np.isfinite(e)
    if not ok.any():
        return None
    scale = np.max(np.abs(e[ok]))
    tol = (1e-5 if dtype == np.float32 else 1e-11) * scale + (1e-37 if dtype == np.float32 else 1e-300)
    err = np.max(np.abs(a[ok] - e[ok]))
    if not err <= tol:
        return f"max |actual - reference| = {err:.3g} > {tol:.3g}"
    return None


def run_case(case, row, fn):
    """Runs one case; returns (outcome, detail): outcome 'work', 'error', 'huge' or 'FAIL'."""
    name, args, *_ = row
    call, extras = build_call(case, row)
    ref = reference(name, call)
    inputs = {k: v.copy() for k, v in call.items() if isinstance(v, np.ndarray) and k != "out"}
    states = {a: inputs.pop(a) for a, k, _ in args if k == "state" and a in inputs}
    out = call.get("out")
    out_before = out.copy() if isinstance(out, np.ndarray) else None
    expect = "work" if ref["ok"] else ("huge" if "huge" in ref else "error")
    if case.kind == "out":
        if case.variant == "correct" or (case.variant == "first-input" and extras.get("inplace")) \
                or extras.get("no_overlap"):
            expect = "work" if ref["ok"] else expect
        elif ref["ok"]:
            expect = "error"
    names = aliases(row, case.arg, case.kind)
    try:
        result = fn(**call)
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        msg = f"{type(e).__name__}: {e}"
        if isinstance(out_before, np.ndarray) and not (case.variant == "first-input") \
                and not np.array_equal(out, out_before, equal_nan=True):
            return "FAIL", f"rejected ({msg}) but wrote into out"
        for k, before in states.items():
            if not np.array_equal(call[k], before, equal_nan=True):
                return "FAIL", f"rejected ({msg}) but changed the state {k!r}"
        if isinstance(e, MemoryError):
            if expect == "huge":
                return "huge", msg
            return "FAIL", f"MemoryError for a result the reference finds small ({ref.get('why', 'valid')}): {msg}"
        if expect == "work":
            return "FAIL", f"raised {msg}; the reference accepts the call"
        if not names_any(str(e), names):
            return "FAIL", f"the message does not name {case.arg!r} (nor {sorted(names - {case.arg})}): {msg}"
        return "error" if expect == "error" else "huge", msg
    except BaseException as e:  # noqa: BLE001 - anything else is a finding
        return "FAIL", f"unexpected {type(e).__name__}: {e}"
    if expect != "work":
        return "FAIL", f"returned {_describe_result(result)}; expected an error ({ref.get('why')})"
    # It worked: check against the reference.
    for k, before in inputs.items():
        if case.kind == "out" and call.get("out") is call[k]:
            continue
        if not np.array_equal(call[k], before, equal_nan=True):
            return "FAIL", f"the call modified its input {k!r}"
    exp, dt = ref["results"], ref["dtype"]
    for k, before in states.items():  # updated in place as the reference says (or unchanged)
        bad = _close(call[k], ref["state"].get(k, before), dt)
        if bad:
            return "FAIL", f"state {k!r} after the call: {bad}"
    got = list(result) if isinstance(result, tuple) else [result]
    if len(got) != len(exp):
        return "FAIL", f"returned {len(got)} results, the reference {len(exp)}"
    if case.kind == "out" and got[0] is not call["out"]:
        return "FAIL", "out= given but the result is not out"
    bad = _guarded_out_check(row, fn, call, got[0])
    if bad:
        return "FAIL", bad
    for i, (g, e) in enumerate(zip(got, exp)):
        if isinstance(e, float):
            if not isinstance(g, float):
                return "FAIL", f"result {i} is {type(g).__name__}, not a Python float"
            bad = _close(np.array(g), np.array(e), dt)
        else:
            if not isinstance(g, np.ndarray):
                return "FAIL", f"result {i} is {type(g).__name__}, not an ndarray"
            if g.dtype != dt:
                return "FAIL", f"result {i} has dtype {g.dtype}, expected {dt}"
            bad = _close(g, e, dt)
        if bad:
            return "FAIL", f"result {i}: {bad}"
    return "work", _describe_result(result)


GUARD = 64  # elements of sentinel on each side of a guarded out=


def _guarded_out_check(row, fn, call, first):
    """For an op with out=: the same call again, writing into a view in the middle of a larger
    buffer of sentinels; a write outside the result (a heap overflow in the normal build, silent
    there) shows in the sentinels, and the values must equal the first result's."""
    if case_has_out(row) is False or "out" in call or not isinstance(first, np.ndarray) or first.dtype.kind != "f":
        return None
    n = first.size
    buf = np.full(n + 2 * GUARD, -12345.0, first.dtype)
    out = buf[GUARD:GUARD + n].reshape(first.shape)
    try:
        got = fn(**dict(call, out=out))
    except Exception as e:  # noqa: BLE001
        return f"the call worked but raised {type(e).__name__} with out= of the result's shape: {e}"
    got = got[0] if isinstance(got, tuple) else got
    if got is not out:
        return "with out=, the result is not out"
    if not (np.all(buf[:GUARD] == -12345.0) and np.all(buf[GUARD + n:] == -12345.0)):
        lo = np.flatnonzero(buf[:GUARD] != -12345.0)
        hi = np.flatnonzero(buf[GUARD + n:] != -12345.0)
        return (f"with out= in a guarded buffer, the call wrote OUTSIDE the result: {len(lo)} elements before "
                f"it, {len(hi)} after it (first after: +{hi[0] if len(hi) else '-'}): a heap buffer overflow")
    if not np.array_equal(out, first, equal_nan=True):
        return "with out=, the values differ from the same call without out="
    return None


def case_has_out(row):
    return any(k == "out" for _, k, _ in row[1])


def _describe_result(r):
    if isinstance(r, tuple):
        return "(" + ", ".join(_describe_result(x) for x in r) + ")"
    if isinstance(r, np.ndarray):
        return f"ndarray{r.shape} {r.dtype}"
    return repr(r)


def describe_call(case, row):
    """The exact call of a case, as text (arrays as dtype+shape+layout; built as the child builds it)."""
    call, _ = build_call(case, row)
    parts = []
    for k, v in call.items():
        if isinstance(v, np.ndarray) and v.ndim > 0 and v.dtype != object:
            lay = "" if v.flags.c_contiguous and v.flags.aligned and v.dtype.isnative else \
                " (non-contiguous)" if not v.flags.c_contiguous else " (unaligned)" if not v.flags.aligned else " (byte-swapped)"
            parts.append(f"{k}=<{v.dtype} array {v.shape}{lay}>")
        elif isinstance(v, list) and len(str(v)) > 60:
            parts.append(f"{k}=<list of shape {np.shape(v)}>")
        else:
            parts.append(f"{k}={_vrepr(v)}")
    return f"swiftcnn.functional.{case.op}({', '.join(parts)})"


def child_main(argv):
    """python sweep_cases.py OP START: runs the op's cases from START, one JSON line per case; a
    line {"start": i} goes out (flushed) before case i, so a crash names its case."""
    import faulthandler

    faulthandler.enable()
    if os.environ.get("SWIFTCNN_SANITIZED") != "1" and "asan" not in os.environ.get("LD_PRELOAD", ""):
        try:  # a huge allocation must fail fast here, not swap the machine (ASan reserves more)
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        except (ImportError, ValueError, OSError):
            pass
    import warnings

    warnings.simplefilter("ignore")
    from swiftcnn import _core

    op, start = argv[0], int(argv[1])
    row = next(r for r in _core.op_table() if r[0] == op)
    fn = getattr(_core, op)
    cases = op_cases(row)
    skip = {int(i) for i in os.environ.get("SWIFTCNN_SWEEP_SKIP", "").split(",") if i}
    w = sys.stdout
    for i in range(start, len(cases)):
        if i in skip:
            w.write(json.dumps({"i": i, "outcome": "skipped", "detail": "known failure, not run"}) + "\n")
            continue
        w.write(json.dumps({"start": i}) + "\n")
        w.flush()
        try:
            outcome, detail = run_case(cases[i], row, fn)
        except Exception as e:  # a bug in the sweep itself, not in swiftcnn: report, keep going
            outcome, detail = "FAIL", f"sweep error {type(e).__name__}: {e}"
        w.write(json.dumps({"i": i, "outcome": outcome, "detail": detail[:600]}) + "\n")
        w.flush()
    w.write(json.dumps({"end": len(cases)}) + "\n")
    w.flush()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    child_main(sys.argv[1:])
