"""Bad inputs (API.md "Conventions"): the right exception, a message naming the argument (and, for
dtype errors, both dtypes), nothing changed by a rejected call, and never a crash or a hang.

Every case runs in a child interpreter, one child per group (one group per function), so a crash
(segfault, abort, trap) is reported as a failure of the case that was running, and the remaining
cases of the group continue in a new child. Each case is a function defined at module level: the
child imports this module and runs the group's cases by id.

Case kinds:
  expect=None             the call must succeed; the function asserts the result itself
  expect=Exc or (E1, E2)  the call must raise one of them (subclasses count)
  names=(...)             at least one of these argument names appears in the message as a word
  mentions=(...)          each item must appear in the message (a tuple item: any one of its strings)
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import swiftcnn

S = swiftcnn
F = swiftcnn.functional
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


class Case:
    def __init__(self, fn, expect, names, mentions):
        self.fn, self.expect, self.names, self.mentions = fn, expect, tuple(names), tuple(mentions)


CASES = {}


def case(group, cid, fn, expect=None, names=(), mentions=()):
    g = CASES.setdefault(group, {})
    assert cid not in g, f"duplicate case id {group}:{cid}"
    g[cid] = Case(fn, expect, names, mentions)


def arr(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed + len(shape) * 101 + sum(shape)).standard_normal(shape).astype(dtype)


def unchanged(fn, *arrays):
    """Run fn(); whatever happens, the given arrays must hold their old values afterwards."""
    snaps = [a.copy() for a in arrays]
    try:
        return fn()
    finally:
        for i, (a, s) in enumerate(zip(arrays, snaps)):
            if not np.array_equal(a, s, equal_nan=True):
                raise AssertionError(f"the call modified argument #{i} although it was rejected or read-only")


def same_result(call, *variants):
    """call(*args) on contiguous copies vs on the given (non-contiguous, byte-swapped...) arrays."""
    ref = call(*[np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("=")) for v in variants])
    got = call(*variants)
    if isinstance(ref, tuple):
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_array_equal(got, ref)
        assert got.dtype.newbyteorder("=") == ref.dtype, (got.dtype, ref.dtype)


def unaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    u = np.ndarray(a.shape, a.dtype, buffer=raw, offset=1)
    u[...] = a
    assert not u.flags.aligned
    return u


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def overlapping_out(x, out_shape):
    """x copied into the start of a buffer and an out= view starting inside x (C-contiguous)."""
    n_out = int(np.prod(out_shape))
    base = np.zeros(x.size + n_out, x.dtype)
    xv = base[:x.size].reshape(x.shape)
    xv[...] = x
    start = max(0, x.size - n_out // 2 - 1)
    out = base[start:start + n_out].reshape(out_shape)
    assert np.shares_memory(xv, out) and out.flags.c_contiguous
    return xv, out


def nan_pattern_matches(got, ref):
    assert got.shape == ref.shape
    for pred in (np.isnan, np.isposinf, np.isneginf):
        if not np.array_equal(pred(got), pred(ref)):
            raise AssertionError(f"{pred.__name__} pattern differs: got {np.argwhere(pred(got)).tolist()[:10]}, "
                                 f"expected {np.argwhere(pred(ref)).tolist()[:10]}")
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-10, atol=1e-10)


def _ref(name):
    sys.path.insert(0, TESTS_DIR)
    import references
    return getattr(references, name)


# =============================================================================================
# conv2d
# =============================================================================================
X, W, B = (lambda: arr(2, 3, 8, 8)), (lambda: arr(4, 3, 3, 3)), (lambda: arr(4))


def _first_array(r):
    if isinstance(r, tuple):
        return next(a for a in r if isinstance(a, np.ndarray))
    return r


def add_common_array_cases(group, call, arg_names, make_args, out_shape=None, elementwise=False, dtype_args=None,
                           optional=()):
    """dtype/type/layout cases shared by every functional op. call(*args, **kw); make_args() -> list.

    dtype_args: the arguments that get the int/bool/float16/... and mixed-float cases (default all);
    optional: arguments for which None is valid (bias)."""
    first = arg_names[0]
    dtype_args = arg_names if dtype_args is None else dtype_args

    def with_arg(i, value):
        def fn():
            args = make_args()
            args[i] = value(args[i]) if callable(value) else value
            return call(*args)
        return fn

    for i, name in enumerate(arg_names):
        if name in dtype_args:
            for dt in ("int64", "int32", "bool", "float16", "complex128", "uint8"):
                case(group, f"{name}_{dt}", with_arg(i, lambda a, dt=dt: a.astype(dt)), TypeError, (name,), (dt,))
            case(group, f"{name}_object", with_arg(i, lambda a: a.astype(object)), TypeError, (name,))
            # mixed float dtypes: this operand float32, the others float64
            if len(arg_names) > 1:
                case(group, f"{name}_float32_with_float64", with_arg(i, lambda a: a.astype(np.float32)), TypeError,
                     (name,) + tuple(n for n in arg_names if n != name), ("float32", "float64"))
        if name not in optional:
            case(group, f"{name}_none", with_arg(i, None), TypeError, (name,))
        case(group, f"{name}_string", with_arg(i, "abc"), TypeError, (name,))

        def layouts(i=i):
            args = make_args()
            variants = {
                "negative strides": lambda a: np.flip(np.flip(a.copy(), axis=-1).copy(), axis=-1),
                "fortran": np.asfortranarray,
                "byteswapped": lambda a: a.astype(a.dtype.newbyteorder(">" if sys.byteorder == "little" else "<")),
                "unaligned": unaligned,
                "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
            }
            for vname, make in variants.items():
                v = list(args)
                v[i] = make(args[i])
                assert np.array_equal(v[i], args[i])
                try:
                    same_result(call, *v)
                except AssertionError as e:
                    raise AssertionError(f"{vname} {arg_names[i]}: {e}") from None
        case(group, f"{name}_layouts_give_the_contiguous_result", layouts)

        def as_list(i=i):
            args = make_args()
            ref = call(*args)
            v = list(args)
            v[i] = args[i].tolist()
            got, ref = _first_array(call(*v)), _first_array(ref)
            np.testing.assert_allclose(got, ref, rtol=1e-12)
            assert got.dtype == np.float64
        case(group, f"{name}_as_list", as_list)

    def float32_list(i=0):
        args = [a.astype(np.float32) for a in make_args()]
        v = list(args)
        v[0] = args[0].tolist()
        got = _first_array(call(*v))
        assert got.dtype == np.float32, got.dtype
    if len(arg_names) > 1:
        case(group, f"list_{first}_takes_the_float32_dtype_of_the_others", float32_list)

    if out_shape is not None:
        def out_case(make_out, expect_ok=False):
            def fn():
                args = make_args()
                o = make_out(args)
                return unchanged(lambda: call(*args, out=o), *[a for a in args if isinstance(a, np.ndarray)])
            return fn

        case(group, "out_wrong_shape", out_case(lambda a: np.zeros(tuple(s + 1 for s in out_shape))),
             ValueError, ("out",))
        case(group, "out_wrong_ndim", out_case(lambda a: np.zeros((int(np.prod(out_shape)),))), ValueError, ("out",))
        case(group, "out_wrong_dtype", out_case(lambda a: np.zeros(out_shape, np.float32)), (TypeError, ValueError),
             ("out",), ("float32",))
        case(group, "out_int_dtype", out_case(lambda a: np.zeros(out_shape, np.int64)), (TypeError, ValueError),
             ("out",))
        case(group, "out_readonly", out_case(lambda a: readonly(np.zeros(out_shape))), ValueError, ("out",))
        case(group, "out_noncontiguous", out_case(lambda a: np.zeros(out_shape[:-1] + (2 * out_shape[-1],))[..., ::2]),
             ValueError, ("out",))
        if len(out_shape) > 1 and out_shape[-1] > 1 and out_shape[-2] > 1:
            case(group, "out_fortran", out_case(lambda a: np.asfortranarray(np.zeros(out_shape))), ValueError, ("out",))
        case(group, "out_list", out_case(lambda a: np.zeros(out_shape).tolist()), TypeError, ("out",))

        def out_overlap():
            args = make_args()
            xv, o = overlapping_out(args[0], out_shape)
            args[0] = xv
            unchanged(lambda: call(*args, out=o), xv)
        def out_overlap_second():
            args = make_args()
            wv, o = overlapping_out(args[1], out_shape)
            args[1] = wv
            unchanged(lambda: call(*args, out=o), wv)
        if not elementwise:
            case(group, f"out_overlapping_{first}", out_overlap, ValueError, ("out",))
            if len(arg_names) > 1:
                case(group, f"out_overlapping_{arg_names[1]}", out_overlap_second, ValueError, ("out",))
        else:
            def out_is_input():
                args = make_args()
                x = args[0].copy()
                ref = call(*args)
                args[0] = x
                r = call(*args, out=x)
                assert r is x
                np.testing.assert_array_equal(x, ref)
            case(group, "out_is_the_input", out_is_input)

        def rejected_leaves_out_unchanged():
            args = make_args()
            o = np.full(out_shape, 7.0)
            args[0] = args[0].astype(np.float32)  # mixed dtypes -> TypeError, out untouched
            unchanged(lambda: call(*args, out=o), o)
        case(group, "rejected_call_leaves_out_unchanged", rejected_leaves_out_unchanged, (TypeError, ValueError))

        def out_ok():
            args = make_args()
            o = np.full(out_shape, np.nan)
            r = call(*args, out=o)
            assert r is o
            np.testing.assert_array_equal(o, call(*args))
        case(group, "out_valid", out_ok)


# ---- conv2d ---------------------------------------------------------------------------------
G = "conv2d"
add_common_array_cases(G, lambda x, w, b=None, **kw: F.conv2d(x, w, b, **kw), ["x", "weight", "bias"],
                       lambda: [X(), W(), B()], out_shape=(2, 4, 6, 6), optional=("bias",))
case(G, "x_ndim3", lambda: F.conv2d(arr(3, 8, 8), W()), ValueError, ("x",), ("(3, 8, 8)",))
case(G, "x_ndim5", lambda: F.conv2d(arr(1, 2, 3, 8, 8), W()), ValueError, ("x",))
case(G, "x_ndim0", lambda: F.conv2d(np.float64(1.0), W()), (ValueError, TypeError), ("x",))
case(G, "weight_ndim2", lambda: F.conv2d(X(), arr(4, 27)), ValueError, ("weight",), ("(4, 27)",))
case(G, "channel_mismatch", lambda: F.conv2d(X(), arr(4, 2, 3, 3)), ValueError, ("weight", "x"),
     (("(4, 2, 3, 3)", "(2, 3, 8, 8)"),))
case(G, "bias_length", lambda: F.conv2d(X(), W(), arr(3)), ValueError, ("bias",), ("(3,)",))
case(G, "bias_ndim2", lambda: F.conv2d(X(), W(), arr(4, 1)), ValueError, ("bias",))
for name, kw in [("stride0", dict(stride=0)), ("stride_negative", dict(stride=-1)), ("stride_pair0", dict(stride=(1, 0))),
                 ("dilation0", dict(dilation=0)), ("dilation_negative", dict(dilation=(-2, 1))),
                 ("padding_negative", dict(padding=-1)), ("padding_pair_negative", dict(padding=(0, -2)))]:
    case(G, name, lambda kw=kw: F.conv2d(X(), W(), **kw), ValueError, (name.split("_")[0].rstrip("0"),))
for name, kw in [("stride_string", dict(stride="2")), ("stride_float", dict(stride=1.5)),
                 ("padding_float", dict(padding=0.5)), ("dilation_none", dict(dilation=None))]:
    case(G, name, lambda kw=kw: F.conv2d(X(), W(), **kw), TypeError, (name.split("_")[0],))
case(G, "stride_triple", lambda: F.conv2d(X(), W(), stride=(1, 1, 1)), (ValueError, TypeError), ("stride",))
case(G, "kernel_larger_than_input", lambda: F.conv2d(arr(1, 1, 4, 4), arr(1, 1, 5, 5)), ValueError,
     ("x", "weight", "kernel", "output", "padding", "kernel_size"))
case(G, "dilated_kernel_larger_than_input", lambda: F.conv2d(arr(1, 1, 5, 5), arr(1, 1, 3, 3), dilation=3),
     ValueError, ("x", "weight", "kernel", "output", "dilation", "padding"))


def _conv_padding_makes_it_fit():
    y = F.conv2d(arr(1, 1, 4, 4), arr(1, 1, 5, 5), padding=1)
    assert y.shape == (1, 1, 2, 2)


case(G, "kernel_fits_thanks_to_padding", _conv_padding_makes_it_fit)
case(G, "height_zero", lambda: F.conv2d(arr(1, 3, 0, 8), W()), ValueError, ("x",))
case(G, "width_zero", lambda: F.conv2d(arr(1, 3, 8, 0), W()), ValueError, ("x",))
case(G, "channels_zero", lambda: F.conv2d(arr(1, 0, 8, 8), arr(4, 0, 3, 3)), ValueError, ("x", "weight"))
case(G, "out_channels_zero", lambda: F.conv2d(X(), arr(0, 3, 3, 3)), ValueError, ("weight",))
case(G, "kernel_height_zero", lambda: F.conv2d(X(), arr(4, 3, 0, 3)), ValueError, ("weight",))
case(G, "padding_overflows_int64", lambda: F.conv2d(X(), W(), padding=2**62), OverflowError)
case(G, "dilation_overflows_int64", lambda: F.conv2d(X(), W(), dilation=2**62), OverflowError)
case(G, "stride_beyond_int64", lambda: F.conv2d(X(), W(), stride=2**64), OverflowError)
case(G, "padding_beyond_int64", lambda: F.conv2d(X(), W(), padding=(0, 2**70)), OverflowError)


def _conv_n0(dt):
    def fn():
        y = F.conv2d(arr(0, 3, 8, 8, dtype=dt), W().astype(dt), B().astype(dt), 2, 1)
        assert y.shape == (0, 4, 4, 4) and y.dtype == dt
    return fn


case(G, "batch_zero_float64", _conv_n0(np.float64))
case(G, "batch_zero_float32", _conv_n0(np.float32))


def _conv_nan():
    conv2d_ref = _ref("conv2d")
    x, w = X(), W()
    x[0, 1, 3, 4] = np.nan
    x[1, 0, 0, 0] = np.inf
    x[1, 2, 7, 7] = -np.inf
    y = unchanged(lambda: F.conv2d(x, w), x, w)
    nan_pattern_matches(y, conv2d_ref(x, w))
    w2 = W()
    w2[2, 0, 1, 1] = np.nan
    y2 = F.conv2d(X(), w2)
    assert np.isnan(y2[:, 2]).all() and np.isfinite(np.delete(y2, 2, axis=1)).all()


case(G, "nan_and_inf_propagate", _conv_nan)

# ---- conv2d_backward ------------------------------------------------------------------------
G = "conv2d_backward"
GO = lambda: arr(2, 4, 6, 6)  # noqa: E731
add_common_array_cases(G, lambda g, x, w: F.conv2d_backward(g, x, w), ["grad_out", "x", "weight"],
                       lambda: [GO(), X(), W()])
case(G, "grad_out_wrong_spatial", lambda: F.conv2d_backward(arr(2, 4, 5, 5), X(), W()), ValueError, ("grad_out",),
     ("(2, 4, 5, 5)",))
case(G, "grad_out_wrong_channels", lambda: F.conv2d_backward(arr(2, 3, 6, 6), X(), W()), ValueError, ("grad_out",))
case(G, "grad_out_wrong_batch", lambda: F.conv2d_backward(arr(3, 4, 6, 6), X(), W()), ValueError, ("grad_out",))
case(G, "grad_out_ndim3", lambda: F.conv2d_backward(arr(4, 6, 6), X(), W()), ValueError, ("grad_out",))
case(G, "x_ndim3", lambda: F.conv2d_backward(GO(), arr(3, 8, 8), W()), ValueError, ("x",))
case(G, "channel_mismatch", lambda: F.conv2d_backward(GO(), X(), arr(4, 2, 3, 3)), ValueError, ("weight", "x"))
case(G, "stride0", lambda: F.conv2d_backward(GO(), X(), W(), 0), ValueError, ("stride",))
case(G, "padding_negative", lambda: F.conv2d_backward(GO(), X(), W(), 1, -1), ValueError, ("padding",))
case(G, "dilation0", lambda: F.conv2d_backward(GO(), X(), W(), 1, 0, 0), ValueError, ("dilation",))
case(G, "stride_changes_expected_grad_out", lambda: F.conv2d_backward(GO(), X(), W(), 2), ValueError, ("grad_out",))
case(G, "padding_overflows_int64", lambda: F.conv2d_backward(GO(), X(), W(), 1, 2**62), OverflowError)


def _convb_n0():
    gx, gw, gb = F.conv2d_backward(arr(0, 4, 6, 6), arr(0, 3, 8, 8), W())
    assert gx.shape == (0, 3, 8, 8) and gw.shape == (4, 3, 3, 3) and gb.shape == (4,)
    assert (gw == 0).all() and (gb == 0).all()


case(G, "batch_zero", _convb_n0)


def _convb_nan():
    ref = _ref("conv2d_backward")
    g, x, w = GO(), X(), W()
    g[1, 2, 3, 3] = np.nan
    got = F.conv2d_backward(g, x, w)
    for a, b in zip(got, ref(g, x, w)):
        nan_pattern_matches(a, b)


case(G, "nan_propagates", _convb_nan)

# =============================================================================================
# pooling
# =============================================================================================
PX = lambda: arr(2, 3, 6, 6)  # noqa: E731
for kind in ("max", "avg"):
    fwd = getattr(F, f"{kind}_pool2d")
    bwd = getattr(F, f"{kind}_pool2d_backward")
    G = f"{kind}_pool2d"
    add_common_array_cases(G, lambda x, fwd=fwd, **kw: fwd(x, 2, **kw), ["x"], lambda: [PX()], out_shape=(2, 3, 3, 3))
    case(G, "x_ndim3", lambda fwd=fwd: fwd(arr(3, 6, 6), 2), ValueError, ("x",), ("(3, 6, 6)",))
    case(G, "x_ndim2", lambda fwd=fwd: fwd(arr(6, 6), 2), ValueError, ("x",))
    case(G, "kernel_size0", lambda fwd=fwd: fwd(PX(), 0), ValueError, ("kernel_size",))
    case(G, "kernel_size_negative", lambda fwd=fwd: fwd(PX(), (2, -1)), ValueError, ("kernel_size",))
    case(G, "stride0", lambda fwd=fwd: fwd(PX(), 2, 0), ValueError, ("stride",))
    case(G, "padding_negative", lambda fwd=fwd: fwd(PX(), 3, 1, -1), ValueError, ("padding",))
    case(G, "kernel_larger_than_input", lambda fwd=fwd: fwd(arr(1, 1, 3, 3), 4), ValueError,
         ("x", "kernel_size", "kernel", "output"))
    case(G, "height_zero", lambda fwd=fwd: fwd(arr(1, 2, 0, 4), 1), ValueError, ("x",))
    case(G, "channels_zero", lambda fwd=fwd: fwd(arr(1, 0, 4, 4), 2), ValueError, ("x",))
    case(G, "kernel_size_string", lambda fwd=fwd: fwd(PX(), "2"), TypeError, ("kernel_size",))
    case(G, "kernel_size_float", lambda fwd=fwd: fwd(PX(), 2.5), TypeError, ("kernel_size",))
    case(G, "kernel_size_none", lambda fwd=fwd: fwd(PX(), None), TypeError, ("kernel_size",))
    case(G, "kernel_size_beyond_int64", lambda fwd=fwd: fwd(PX(), 2**64), OverflowError)
    case(G, "stride_beyond_int64", lambda fwd=fwd: fwd(PX(), 2, 2**63), OverflowError)

    def _pool_n0(fwd=fwd):
        y = fwd(arr(0, 3, 6, 6, dtype=np.float32), 3, 2, 1)
        assert y.shape == (0, 3, 3, 3) and y.dtype == np.float32
    case(G, "batch_zero", _pool_n0)

    def _pool_fits_with_padding(fwd=fwd):
        assert fwd(arr(1, 1, 3, 3), 4, 4, 2).shape == (1, 1, 1, 1)
    case(G, "kernel_fits_thanks_to_padding", _pool_fits_with_padding)

    def _pool_nan(fwd=fwd, kind=kind):
        ref = _ref(f"{kind}_pool2d")
        x = PX()
        x[0, 0, 1, 1] = np.nan
        x[1, 2, 4, 5] = np.inf
        x[1, 1, :2, :2] = -np.inf
        nan_pattern_matches(unchanged(lambda: fwd(x, 2), x), ref(x, 2))
        nan_pattern_matches(fwd(x, 3, 1, 1), ref(x, 3, 1, 1))
    case(G, "nan_and_inf_propagate", _pool_nan)

    G = f"{kind}_pool2d_backward"
    add_common_array_cases(G, lambda g, x, bwd=bwd: bwd(g, x, 2), ["grad_out", "x"], lambda: [arr(2, 3, 3, 3), PX()])
    case(G, "grad_out_wrong_shape", lambda bwd=bwd: bwd(arr(2, 3, 2, 2), PX(), 2), ValueError, ("grad_out",),
         ("(2, 3, 2, 2)",))
    case(G, "grad_out_wrong_channels", lambda bwd=bwd: bwd(arr(2, 4, 3, 3), PX(), 2), ValueError, ("grad_out",))
    case(G, "grad_out_ndim3", lambda bwd=bwd: bwd(arr(3, 3, 3), PX(), 2), ValueError, ("grad_out",))
    case(G, "x_ndim3", lambda bwd=bwd: bwd(arr(2, 3, 3, 3), arr(3, 6, 6), 2), ValueError, ("x",))
    case(G, "kernel_size0", lambda bwd=bwd: bwd(arr(2, 3, 3, 3), PX(), 0), ValueError, ("kernel_size",))
    case(G, "stride_negative", lambda bwd=bwd: bwd(arr(2, 3, 3, 3), PX(), 2, -2), ValueError, ("stride",))

    def _poolb_n0(bwd=bwd):
        gx = bwd(arr(0, 3, 3, 3), arr(0, 3, 6, 6), 2)
        assert gx.shape == (0, 3, 6, 6)
    case(G, "batch_zero", _poolb_n0)

    def _poolb_nan(bwd=bwd):
        x = PX()
        x[0, 0, 0, 0] = np.nan
        g = arr(2, 3, 3, 3)
        g[1, 1, 1, 1] = np.inf
        gx = bwd(g, x, 2)
        assert gx.shape == x.shape
        assert np.isfinite(gx[0, 1:]).all() and np.isfinite(gx[1, 0]).all()
    case(G, "nan_and_inf_do_not_crash", _poolb_nan)

G = "max_pool2d"
case(G, "padding_more_than_half_the_kernel", lambda: F.max_pool2d(PX(), 2, 2, 2), ValueError, ("padding",))
case(G, "padding_more_than_half_the_kernel_pair", lambda: F.max_pool2d(PX(), (3, 4), 1, (1, 3)), ValueError,
     ("padding",))
G = "avg_pool2d"  # API.md states the rule for max_pool2d; PyTorch's avg_pool2d has it too
case(G, "padding_more_than_half_the_kernel", lambda: F.avg_pool2d(PX(), 2, 2, 2), ValueError, ("padding",))
G = "max_pool2d_backward"
case(G, "padding_more_than_half_the_kernel", lambda: F.max_pool2d_backward(arr(2, 3, 5, 5), PX(), 2, 2, 2),
     ValueError, ("padding",))

# =============================================================================================
# linear
# =============================================================================================
LX, LW, LB = (lambda: arr(5, 6)), (lambda: arr(3, 6)), (lambda: arr(3))
G = "linear"
add_common_array_cases(G, lambda x, w, b=None, **kw: F.linear(x, w, b, **kw), ["x", "weight", "bias"],
                       lambda: [LX(), LW(), LB()], out_shape=(5, 3), optional=("bias",))
case(G, "x_ndim1", lambda: F.linear(arr(6), LW()), ValueError, ("x",), ("(6,)",))
case(G, "x_ndim3", lambda: F.linear(arr(5, 2, 3), LW()), ValueError, ("x",))
case(G, "weight_ndim1", lambda: F.linear(LX(), arr(6)), ValueError, ("weight",))
case(G, "in_features_mismatch", lambda: F.linear(LX(), arr(3, 7)), ValueError, ("weight", "x"),
     (("(3, 7)", "(5, 6)"),))
case(G, "bias_length", lambda: F.linear(LX(), LW(), arr(4)), ValueError, ("bias",), ("(4,)",))
case(G, "bias_ndim2", lambda: F.linear(LX(), LW(), arr(1, 3)), ValueError, ("bias",))
case(G, "in_features_zero", lambda: F.linear(arr(5, 0), arr(3, 0)), ValueError, ("x", "weight"))
case(G, "out_features_zero", lambda: F.linear(LX(), arr(0, 6)), ValueError, ("weight",))


def _linear_n0():
    y = F.linear(arr(0, 6), LW(), LB())
    assert y.shape == (0, 3)


case(G, "batch_zero", _linear_n0)


def _linear_nan():
    x, w = LX(), LW()
    x[2, 3] = np.nan
    w[1, 0] = np.inf
    y = F.linear(x, w)
    nan_pattern_matches(y, _ref("linear")(x, w))


case(G, "nan_and_inf_propagate", _linear_nan)

G = "linear_backward"
add_common_array_cases(G, lambda g, x, w: F.linear_backward(g, x, w), ["grad_out", "x", "weight"],
                       lambda: [arr(5, 3), LX(), LW()])
case(G, "grad_out_wrong_batch", lambda: F.linear_backward(arr(4, 3), LX(), LW()), ValueError, ("grad_out",),
     ("(4, 3)",))
case(G, "grad_out_wrong_features", lambda: F.linear_backward(arr(5, 2), LX(), LW()), ValueError, ("grad_out",))
case(G, "grad_out_ndim1", lambda: F.linear_backward(arr(15), LX(), LW()), ValueError, ("grad_out",))
case(G, "in_features_mismatch", lambda: F.linear_backward(arr(5, 3), LX(), arr(3, 7)), ValueError, ("weight", "x"))


def _linearb_n0():
    gx, gw, gb = F.linear_backward(arr(0, 3), arr(0, 6), LW())
    assert gx.shape == (0, 6) and gw.shape == (3, 6) and gb.shape == (3,)
    assert (gw == 0).all() and (gb == 0).all()


case(G, "batch_zero", _linearb_n0)

# =============================================================================================
# activations
# =============================================================================================
AX = lambda: arr(2, 3, 4)  # noqa: E731
for name in ("sigmoid", "relu"):
    op = getattr(F, name)
    G = name
    add_common_array_cases(G, lambda x, op=op, **kw: op(x, **kw), ["x"], lambda: [AX()], out_shape=(2, 3, 4),
                           elementwise=True)

    def _act_empty(op=op):
        for shape in [(0,), (0, 3), (2, 0, 4)]:
            y = op(np.zeros(shape, np.float32))
            assert y.shape == shape and y.dtype == np.float32
    case(G, "empty_arrays", _act_empty)

    def _act_special(op=op, name=name):
        x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300])
        y = unchanged(lambda: op(x), x)
        assert np.isnan(y[0]), f"{name}(nan) = {y[0]}"
        if name == "sigmoid":
            assert y[1] == 1 and y[2] == 0 and y[3] == 0.5
        else:
            assert y[1] == np.inf and y[2] == 0 and y[3] == 0 and y[5] == 1e-300 and y[6] == 0
    case(G, "nan_and_inf_propagate", _act_special)

    G = f"{name}_backward"
    bop = getattr(F, f"{name}_backward")
    second = "y" if name == "sigmoid" else "x"
    add_common_array_cases(G, lambda g, s, bop=bop: bop(g, s), ["grad_out", second], lambda: [AX(), AX() * 0.2 + 0.5])
    case(G, "shape_mismatch", lambda bop=bop: bop(arr(2, 3, 5), AX()), ValueError, ("grad_out", second),
         (("(2, 3, 5)", "(2, 3, 4)"),))
    case(G, "same_size_different_shape", lambda bop=bop: bop(arr(4, 3, 2), AX()), ValueError, ("grad_out", second))

    def _actb_nan(bop=bop):
        g = AX()
        g[0, 0, 0] = np.nan
        r = bop(g, np.full((2, 3, 4), 0.5))
        assert np.isnan(r[0, 0, 0]) and np.isfinite(r.reshape(-1)[1:]).all()
    case(G, "nan_propagates", _actb_nan)

# =============================================================================================
# softmax and losses
# =============================================================================================
Z = lambda: arr(5, 4)  # noqa: E731
LAB = lambda: np.array([0, 3, 1, 2, 3])  # noqa: E731
G = "softmax"
add_common_array_cases(G, lambda z: F.softmax(z), ["logits"], lambda: [Z()])
case(G, "logits_ndim1", lambda: F.softmax(arr(4)), ValueError, ("logits",), ("(4,)",))
case(G, "logits_ndim3", lambda: F.softmax(arr(2, 3, 4)), ValueError, ("logits",))
case(G, "classes_zero", lambda: F.softmax(arr(3, 0)), ValueError, ("logits",))


def _softmax_n0():
    assert F.softmax(arr(0, 4)).shape == (0, 4)


def _softmax_nan_rows():
    z = Z()
    z[1, 2] = np.nan
    z[3, 0] = np.inf
    p = F.softmax(z)
    assert np.isnan(p[1]).all()
    np.testing.assert_allclose(p[[0, 2, 4]], _ref("softmax")(z[[0, 2, 4]]), rtol=1e-12)


case(G, "batch_zero", _softmax_n0)
case(G, "nan_and_inf_rows_do_not_spread", _softmax_nan_rows)

G = "softmax_cross_entropy"
add_common_array_cases(G, lambda z, t: F.softmax_cross_entropy(z, t), ["logits", "target"],
                       lambda: [Z(), np.full((5, 4), 0.25)], dtype_args=["logits"])
for cid, t in [("label_equal_to_classes", np.array([0, 4, 1, 2, 3])), ("label_negative", np.array([0, -1, 1, 2, 3])),
               ("label_huge_uint64", np.array([0, 2**63 + 1, 1, 2, 3], dtype=np.uint64)),
               ("label_int8_negative", np.array([0, 1, -128, 2, 3], dtype=np.int8)),
               ("labels_too_short", np.array([0, 1, 2, 3])), ("labels_too_long", np.array([0, 1, 2, 3, 0, 1])),
               ("probabilities_wrong_shape", np.full((5, 5), 0.2)), ("probabilities_wrong_batch", np.full((4, 4), 0.25))]:
    case(G, cid, lambda t=t: F.softmax_cross_entropy(Z(), t), ValueError, ("target",))
case(G, "labels_float_1d", lambda: F.softmax_cross_entropy(Z(), LAB().astype(np.float64)), (TypeError, ValueError),
     ("target",))
case(G, "labels_bool", lambda: F.softmax_cross_entropy(Z(), LAB() > 1), TypeError, ("target",), ("bool",))
case(G, "labels_2d_int", lambda: F.softmax_cross_entropy(Z(), np.zeros((5, 4), np.int64)), (TypeError, ValueError),
     ("target",))
case(G, "labels_3d", lambda: F.softmax_cross_entropy(Z(), np.zeros((5, 4, 1), np.float64)), ValueError, ("target",))
case(G, "logits_ndim1", lambda: F.softmax_cross_entropy(arr(4), np.array([1])), ValueError, ("logits",))
case(G, "classes_zero", lambda: F.softmax_cross_entropy(arr(3, 0), np.array([0, 0, 0])), ValueError,
     ("logits", "target"))
case(G, "probabilities_float32_with_float64_logits",
     lambda: F.softmax_cross_entropy(Z(), np.full((5, 4), 0.25, np.float32)), TypeError, ("target", "logits"),
     ("float32", "float64"))


def _ce_all_int_dtypes():
    ref = F.softmax_cross_entropy(Z(), LAB())
    for dt in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64):
        loss, g = F.softmax_cross_entropy(Z(), LAB().astype(dt))
        assert loss == ref[0]
        np.testing.assert_array_equal(g, ref[1])
    loss, g = F.softmax_cross_entropy(Z(), LAB()[::-1].copy()[::-1])  # negative strides
    assert loss == ref[0]


def _ce_nan():
    z = Z()
    z[2, 1] = np.nan
    loss, g = F.softmax_cross_entropy(z, LAB())
    assert np.isnan(loss) and np.isnan(g[2]).all() and np.isfinite(np.delete(g, 2, axis=0)).all()


case(G, "labels_of_every_int_dtype", _ce_all_int_dtypes)
case(G, "nan_propagates", _ce_nan)

G = "binary_cross_entropy_with_logits"
add_common_array_cases(G, lambda z, t: F.binary_cross_entropy_with_logits(z, t), ["logits", "target"],
                       lambda: [Z(), np.full((5, 4), 0.5)])
case(G, "target_wrong_shape", lambda: F.binary_cross_entropy_with_logits(Z(), np.full((4, 5), 0.5)), ValueError,
     ("target",), ("(4, 5)",))
case(G, "target_labels", lambda: F.binary_cross_entropy_with_logits(Z(), LAB()), (TypeError, ValueError), ("target",))


def _bce_nan():
    z = Z()
    z[0, 0] = np.nan
    loss, g = F.binary_cross_entropy_with_logits(z, np.full((5, 4), 0.5))
    assert np.isnan(loss) and np.isnan(g[0, 0]) and np.isfinite(g.reshape(-1)[1:]).all()
    loss, g = F.binary_cross_entropy_with_logits(np.array([np.inf, -np.inf, 1.0]), np.array([1.0, 0.0, 0.5]))
    assert g.shape == (3,) and np.isfinite(g[2])  # infinite logits: no crash (values as PyTorch's, unchecked)


case(G, "nan_and_inf", _bce_nan)

# =============================================================================================
# correlate2d / convolve2d
# =============================================================================================
IM, KE = (lambda: arr(6, 7)), (lambda: arr(3, 2))
for name in ("correlate2d", "convolve2d"):
    op = getattr(F, name)
    G = name
    add_common_array_cases(G, lambda a, k, op=op: op(a, k, "full"), ["image", "kernel"], lambda: [IM(), KE()])
    case(G, "image_ndim3", lambda op=op: op(arr(1, 6, 7), KE()), ValueError, ("image",), ("(1, 6, 7)",))
    case(G, "image_ndim1", lambda op=op: op(arr(6), KE()), ValueError, ("image",))
    case(G, "kernel_ndim1", lambda op=op: op(IM(), arr(3)), ValueError, ("kernel",))
    case(G, "valid_kernel_taller", lambda op=op: op(arr(3, 7), arr(4, 2), "valid"), ValueError, ("kernel",))
    case(G, "valid_kernel_wider", lambda op=op: op(arr(6, 2), arr(3, 3)), ValueError, ("kernel",))
    case(G, "valid_kernel_larger_in_both", lambda op=op: op(arr(2, 2), arr(3, 3)), ValueError, ("kernel",))
    case(G, "mode_unknown", lambda op=op: op(IM(), KE(), "bogus"), ValueError, ("mode",), ("bogus",))
    case(G, "mode_none", lambda op=op: op(IM(), KE(), None), (TypeError, ValueError), ("mode",))
    case(G, "mode_int", lambda op=op: op(IM(), KE(), 1), (TypeError, ValueError), ("mode",))
    case(G, "image_empty", lambda op=op: op(arr(0, 5), KE(), "full"), ValueError, ("image",))
    case(G, "kernel_empty", lambda op=op: op(IM(), arr(2, 0), "full"), ValueError, ("kernel",))

    def _sig_larger_kernel_ok(op=op):
        assert op(arr(2, 2), arr(3, 3), "full").shape == (4, 4)
        assert op(arr(2, 2), arr(3, 3), "same").shape == (2, 2)
    case(G, "larger_kernel_ok_in_full_and_same", _sig_larger_kernel_ok)

    def _sig_nan(op=op, name=name):
        a = IM()
        a[2, 3] = np.nan
        for mode in ("valid", "same", "full"):
            nan_pattern_matches(op(a, KE(), mode), _ref(name)(a, KE(), mode))
    case(G, "nan_propagates", _sig_nan)


# =============================================================================================
# layers, models, optimizers, fit: a rejected call changes nothing
# =============================================================================================
def _lecture(dtype="float32"):
    return S.Sequential(S.Conv2d(1, 6, 5, padding=2, dtype=dtype, seed=1), S.Sigmoid(), S.MaxPool2d(2),
                        S.Conv2d(6, 16, 5, dtype=dtype, seed=2), S.Sigmoid(), S.MaxPool2d(2), S.Flatten(),
                        S.Linear(400, 120, dtype=dtype, seed=3), S.Sigmoid(), S.Linear(120, 84, dtype=dtype, seed=4),
                        S.Sigmoid(), S.Linear(84, 10, dtype=dtype, seed=5))


def rejected(model_factory, action, prepare=None):
    """Build a model, optionally run prepare(model) (e.g. a forward), snapshot, run action(model), which
    must raise; then check every parameter and gradient is unchanged and the model still works."""
    def fn():
        model = model_factory()
        if prepare:
            prepare(model)
        snap = [(p.data.copy(), p.grad.copy()) for p in model.parameters()]
        try:
            action(model)
        finally:
            for p, (d, g) in zip(model.parameters(), snap):
                if not (np.array_equal(p.data, d) and np.array_equal(p.grad, g)):
                    raise AssertionError(f"{p.name} changed by a rejected call")
    return fn


def _fwd(shape, dtype=np.float32):
    return lambda m: m(arr(*shape, dtype=dtype))


G = "layers"
conv = lambda: S.Conv2d(3, 4, 3, seed=1)  # noqa: E731
lin = lambda: S.Linear(6, 3, seed=1)  # noqa: E731
case(G, "conv_forward_x_ndim3", rejected(conv, _fwd((3, 8, 8))), ValueError, ("x",))
case(G, "conv_forward_channel_mismatch", rejected(conv, _fwd((2, 2, 8, 8))), ValueError, ("x", "weight"))
case(G, "conv_forward_too_small", rejected(conv, _fwd((2, 3, 2, 2))), ValueError,
     ("x", "weight", "kernel_size", "output", "kernel"))
case(G, "conv_forward_float64_into_float32", rejected(conv, _fwd((2, 3, 8, 8), np.float64)), TypeError, ("x",),
     ("float32", "float64"))
case(G, "conv_forward_int", rejected(conv, lambda m: m(np.ones((2, 3, 8, 8), np.int64))), TypeError, ("x",),
     ("int64",))
case(G, "conv_forward_float16", rejected(conv, lambda m: m(np.ones((2, 3, 8, 8), np.float16))), TypeError, ("x",),
     ("float16",))
case(G, "conv_forward_none", rejected(conv, lambda m: m(None)), TypeError, ("x",))
case(G, "conv_backward_wrong_shape", rejected(conv, lambda m: m.backward(arr(2, 4, 5, 5, dtype=np.float32)),
                                              _fwd((2, 3, 8, 8))), ValueError, ("grad_out",))
case(G, "conv_backward_wrong_dtype", rejected(conv, lambda m: m.backward(arr(2, 4, 6, 6)), _fwd((2, 3, 8, 8))),
     TypeError, ("grad_out",), ("float32", "float64"))
case(G, "conv_backward_before_forward", rejected(conv, lambda m: m.backward(arr(2, 4, 6, 6, dtype=np.float32))),
     RuntimeError)
case(G, "linear_forward_features_mismatch", rejected(lin, _fwd((4, 5))), ValueError, ("x", "weight"))
case(G, "linear_forward_ndim3", rejected(lin, _fwd((4, 2, 3))), ValueError, ("x",))
case(G, "linear_backward_wrong_shape", rejected(lin, lambda m: m.backward(arr(4, 2, dtype=np.float32)), _fwd((4, 6))),
     ValueError, ("grad_out",))
case(G, "lecture_forward_wrong_image_size", rejected(_lecture, _fwd((2, 1, 32, 32))), ValueError)
case(G, "lecture_forward_wrong_channels", rejected(_lecture, _fwd((2, 3, 28, 28))), ValueError)
case(G, "lecture_forward_too_small", rejected(_lecture, _fwd((2, 1, 8, 8))), ValueError)
case(G, "lecture_backward_wrong_shape", rejected(_lecture, lambda m: m.backward(arr(2, 9, dtype=np.float32)),
                                                 _fwd((2, 1, 28, 28))), ValueError, ("grad_out",))
case(G, "lecture_backward_before_forward",
     rejected(_lecture, lambda m: m.backward(arr(2, 10, dtype=np.float32))), RuntimeError)
case(G, "flatten_ndim1", lambda: S.Flatten()(arr(5, dtype=np.float32)), ValueError, ("x",))
case(G, "maxpool_layer_padding_too_large", lambda: S.MaxPool2d(2, 2, 2)(arr(1, 1, 6, 6)), ValueError, ("padding",))


def _model_still_works_after_rejection():
    m = _lecture()
    x = arr(2, 1, 28, 28, dtype=np.float32)
    y1 = m(x)
    for bad in (arr(2, 1, 32, 32, dtype=np.float32), arr(2, 1, 28, 28)):
        try:
            m(bad)
        except (ValueError, TypeError):
            pass
    g = m.backward(np.ones_like(y1))  # backward of the last *successful* forward
    assert g.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(m(x), y1)


def _lecture_batch_zero():
    m = _lecture()
    y = m(np.zeros((0, 1, 28, 28), np.float32))
    assert y.shape == (0, 10)
    g = m.backward(np.zeros((0, 10), np.float32))
    assert g.shape == (0, 1, 28, 28)
    assert all((p.grad == 0).all() for p in m.parameters())


case(G, "model_still_works_after_rejected_calls", _model_still_works_after_rejection)
case(G, "lecture_batch_zero", _lecture_batch_zero)
for cid, make, nm in [
    ("conv_in_channels0", lambda: S.Conv2d(0, 6, 5), "in_channels"),
    ("conv_out_channels0", lambda: S.Conv2d(1, 0, 5), "out_channels"),
    ("conv_out_channels_negative", lambda: S.Conv2d(1, -3, 5), "out_channels"),
    ("conv_kernel_size0", lambda: S.Conv2d(1, 6, 0), "kernel_size"),
    ("conv_stride0", lambda: S.Conv2d(1, 6, 5, stride=0), "stride"),
    ("conv_padding_negative", lambda: S.Conv2d(1, 6, 5, padding=-1), "padding"),
    ("conv_dilation0", lambda: S.Conv2d(1, 6, 5, dilation=(1, 0)), "dilation"),
    ("linear_in_features0", lambda: S.Linear(0, 3), "in_features"),
    ("linear_out_features0", lambda: S.Linear(3, 0), "out_features"),
    ("maxpool_kernel_size0", lambda: S.MaxPool2d(0)(arr(1, 1, 4, 4)), "kernel_size"),
    ("avgpool_stride0", lambda: S.AvgPool2d(2, 0)(arr(1, 1, 4, 4)), "stride"),
]:
    case(G, cid, make, ValueError, (nm,))
for cid, make in [("conv_dtype_float16", lambda: S.Conv2d(1, 2, 3, dtype="float16")),
                  ("linear_dtype_int32", lambda: S.Linear(2, 2, dtype=np.int32)),
                  ("linear_dtype_bogus", lambda: S.Linear(2, 2, dtype="bogus"))]:
    case(G, cid, make, (TypeError, ValueError), ("dtype",))
case(G, "conv_in_channels_string", lambda: S.Conv2d("1", 2, 3), TypeError, ("in_channels",))
case(G, "linear_features_float", lambda: S.Linear(2.5, 2), TypeError, ("in_features",))
case(G, "conv_weight_count_overflows", lambda: S.Conv2d(1, 2**62, 3), OverflowError)
case(G, "linear_weight_count_overflows", lambda: S.Linear(2**40, 2**40), OverflowError)
case(G, "conv_channels_beyond_int64", lambda: S.Conv2d(2**64, 1, 1), OverflowError)


def _overcommit_allows_huge():
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return True


if not _overcommit_allows_huge():
    # 2^40 float64 weights = 8 TiB: the allocation must fail cleanly.
    case(G, "linear_allocation_fails", lambda: S.Linear(2**20, 2**20, dtype="float64"), MemoryError)

G = "optim"


def _opt_model():
    return S.Sequential(S.Linear(3, 2, dtype="float64", seed=1))


def _opt_rejects(setting):
    def fn():
        m = _opt_model()
        opt = S.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        twin = _opt_model()
        ropt = S.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
        for p, q in zip(m.parameters(), twin.parameters()):
            p.grad[...] = 1.0
            q.grad[...] = 1.0
        opt.step()
        ropt.step()
        try:
            setting(opt)
        finally:
            assert opt.lr == 0.1, f"lr changed to {opt.lr}"
            opt.step()
            ropt.step()  # momentum buffers must be as if the rejected call never happened
            for p, q in zip(m.parameters(), twin.parameters()):
                np.testing.assert_array_equal(p.data, q.data)
    return fn


case(G, "lr_negative_assignment", _opt_rejects(lambda o: setattr(o, "lr", -1.0)), ValueError, ("lr", "learning rate"))
case(G, "lr_nan_assignment", _opt_rejects(lambda o: setattr(o, "lr", float("nan"))), ValueError, ("lr", "learning rate"))
case(G, "lr_string_assignment", _opt_rejects(lambda o: setattr(o, "lr", "0.5")), TypeError, ("lr",))
case(G, "sgd_lr_nan", lambda: S.optim.SGD(_opt_model().parameters(), lr=float("nan")), ValueError, ("lr", "learning rate"))
case(G, "adam_eps_nan", lambda: S.optim.Adam(_opt_model().parameters(), eps=float("nan")), ValueError,
     ("eps", "epsilon"))
case(G, "sgd_momentum_negative", lambda: S.optim.SGD(_opt_model().parameters(), lr=0.1, momentum=-1), ValueError,
     ("momentum",))
case(G, "adam_beta_one", lambda: S.optim.Adam(_opt_model().parameters(), betas=(1.0, 0.9)), ValueError,
     ("betas", "beta1", "beta"))
case(G, "sgd_lr_string", lambda: S.optim.SGD(_opt_model().parameters(), lr="0.1"), TypeError, ("lr",))
case(G, "sgd_params_none", lambda: S.optim.SGD(None, lr=0.1), TypeError, ("params",))
case(G, "sgd_params_arrays", lambda: S.optim.SGD([np.zeros(3)], lr=0.1), TypeError, ("params",))

G = "threads"


def _threads_rejects(value, exc):
    def fn():
        old = S.get_num_threads()
        try:
            S.set_num_threads(value)
        finally:
            assert S.get_num_threads() == old
    return fn


case(G, "set_num_threads_0", _threads_rejects(0, ValueError), ValueError, ("n", "num_threads", "threads"))
case(G, "set_num_threads_negative", _threads_rejects(-2, ValueError), ValueError, ("n", "num_threads", "threads"))
case(G, "set_num_threads_string", _threads_rejects("2", TypeError), TypeError)
case(G, "set_num_threads_float", _threads_rejects(2.5, TypeError), TypeError)
case(G, "set_num_threads_beyond_int64", _threads_rejects(2**64, OverflowError), (OverflowError, ValueError))

G = "fit"
_small = lambda: S.Sequential(S.Conv2d(1, 2, 3, seed=1), S.ReLU(), S.Flatten(), S.Linear(8, 3, seed=2))  # noqa: E731
_fx = lambda: arr(10, 1, 4, 4, dtype=np.float32)  # noqa: E731
_fy = lambda: np.arange(10) % 3  # noqa: E731


def _fit(x=None, y=None, **kw):
    kw.setdefault("progress", False)
    return lambda m: m.fit(_fx() if x is None else x, _fy() if y is None else y, **kw)


case(G, "y_wrong_length", rejected(_small, _fit(y=np.arange(9) % 3)), ValueError, ("y",))
case(G, "y_out_of_range_in_the_last_batch", rejected(_small, _fit(y=np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3]),
                                                                   batch_size=4)), ValueError, ("y", "target"))
case(G, "y_negative", rejected(_small, _fit(y=-(np.arange(10) % 3))), ValueError, ("y", "target"))
case(G, "y_float", rejected(_small, _fit(y=(np.arange(10) % 3).astype(float))), (TypeError, ValueError),
     ("y", "target"))
case(G, "x_wrong_shape", rejected(_small, _fit(x=arr(10, 1, 5, 5, dtype=np.float32))), ValueError)
case(G, "x_ndim2", rejected(_small, _fit(x=arr(10, 16, dtype=np.float32))), ValueError, ("x",))
case(G, "batch_size0", rejected(_small, _fit(batch_size=0)), ValueError, ("batch_size",))
case(G, "epochs_negative", rejected(_small, _fit(epochs=-1)), ValueError, ("epochs",))
case(G, "loss_unknown", rejected(_small, _fit(loss="mse")), ValueError, ("loss",), ("mse",))
case(G, "validation_data_not_a_pair", rejected(_small, _fit(validation_data=_fx())), (TypeError, ValueError),
     ("validation_data",))
case(G, "predict_wrong_shape", lambda: _small().predict(arr(3, 1, 5, 5, dtype=np.float32)), ValueError)
case(G, "evaluate_y_wrong_length", lambda: _small().evaluate(_fx(), np.arange(9) % 3), ValueError, ("y",))
case(G, "predict_batch_size0", lambda: _small().predict(_fx(), batch_size=0), ValueError, ("batch_size",))


# =============================================================================================
# the runner: one child interpreter per group (a new one after a crash)
# =============================================================================================
CHILD = r"""
import json, sys, traceback
sys.path.insert(0, {tests_dir!r})
import test_bad_inputs as T
cases = T.CASES[{group!r}]
for cid in {ids!r}:
    sys.stdout.write("@@START " + json.dumps(cid) + "\n")
    sys.stdout.flush()
    try:
        cases[cid].fn()
        res = {{"id": cid, "exc": None}}
    except BaseException as e:
        res = {{"id": cid, "exc": type(e).__name__, "mro": [k.__name__ for k in type(e).__mro__],
               "msg": str(e), "tb": traceback.format_exc()[-2500:]}}
    sys.stdout.write("@@RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()
"""

_RESULTS = {}


def _text(v):
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def group_results(group):
    if group in _RESULTS:
        return _RESULTS[group]
    results = {}
    remaining = list(CASES[group])
    while remaining:
        code = CHILD.format(tests_dir=TESTS_DIR, group=group, ids=remaining)
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                                  cwd=TESTS_DIR, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
            out, err, status = proc.stdout, proc.stderr, f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired as e:
            out, err, status = _text(e.stdout), _text(e.stderr), "timeout (hang) after 240 s"
        running = None
        for line in out.splitlines():
            if line.startswith("@@START "):
                running = json.loads(line[len("@@START "):])
            elif line.startswith("@@RESULT "):
                r = json.loads(line[len("@@RESULT "):])
                results[r["id"]] = r
                running = None
        left = [c for c in remaining if c not in results]
        if left:
            victim = running if running in left else left[0]
            results[victim] = {"crash": f"the child interpreter died ({status}) while running this case",
                               "stderr": err[-4000:]}
            if running is None:  # died outside any case (e.g. import): report it for every case
                for c in left:
                    results[c] = results[victim]
        remaining = [c for c in remaining if c not in results]
    _RESULTS[group] = results
    return results


def _word(name, msg):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", msg) is not None


ALL = [(g, c) for g in CASES for c in CASES[g]]


@pytest.mark.parametrize("group,cid", ALL, ids=[f"{g}:{c}" for g, c in ALL])
def test_bad_input(group, cid):
    c = CASES[group][cid]
    r = group_results(group)[cid]
    if "crash" in r:
        pytest.fail(f"{r['crash']}\n--- stderr ---\n{r['stderr']}", pytrace=False)
    if c.expect is None:
        if r["exc"] is not None:
            pytest.fail(f"raised {r['exc']}: {r['msg']}\n{r['tb']}", pytrace=False)
        return
    expected = c.expect if isinstance(c.expect, tuple) else (c.expect,)
    want = " or ".join(e.__name__ for e in expected)
    if r["exc"] is None:
        pytest.fail(f"no exception raised; expected {want}", pytrace=False)
    if not any(e.__name__ in r["mro"] for e in expected):
        pytest.fail(f"raised {r['exc']}: {r['msg']!r}; expected {want}\n{r['tb']}", pytrace=False)
    msg = r["msg"]
    if c.names and not any(_word(n, msg) for n in c.names):
        pytest.fail(f"{r['exc']} message does not name the argument ({' or '.join(c.names)}): {msg!r}",
                    pytrace=False)
    for m in c.mentions:
        alts = m if isinstance(m, tuple) else (m,)
        if not any(a.lower() in msg.lower() for a in alts):
            pytest.fail(f"{r['exc']} message does not mention {' or '.join(map(repr, alts))}: {msg!r}",
                        pytrace=False)
