"""Coverage-guided fuzzing of swiftcnn with atheris (issue 11); also the corpus replay's decoder.

``decode_and_call(data)`` turns a byte string into one or a few calls:
- a functional op, picked from ``swiftcnn._core.op_table()`` (so every new row is fuzzed), with
  arguments built from its kinds: arrays of float32/float64 (sometimes int, bool, float16, complex),
  shapes with 0 and small sizes, zero-stride broadcast views with huge sizes, non-contiguous,
  reversed, Fortran-order, byte-swapped and unaligned layouts, lists, views overlapping each other
  or ``out=`` in one shared buffer; int settings from boundary values (0, -1, 2**31, 2**62, 2**63-1,
  2**64, bools, numpy scalars, malformed pairs); paddings ('same', 'valid' and bad strings or
  ints/pairs); groups; reals (slopes, momentum, eps: nan, inf, huge ints); flags (training: bool(x)
  semantics, and an ndarray whose truth is ambiguous); state operands updated in place (the
  running statistics: well-formed, None, read-only, non-contiguous, other dtypes, lists, views
  into the shared buffer); modes; class labels or probabilities;
- layer objects (Conv2d, Linear, pools, activations, Flatten and any Version 2 layer the package
  has), forward and backward, and a Sequential of a few of them forward/backward (and backward
  before forward).

ValueError, TypeError, OverflowError, MemoryError and RuntimeError are the documented ways to
refuse a call: they are swallowed. Anything else propagates (atheris records the input as a crash),
and a signal kills the process (libFuzzer records the input). The decoder never needs atheris:
tests/test_fuzz_corpus.py replays every corpus file through ``decode_and_call``.

Run: ``scripts/fuzz.sh SECONDS`` (it sets up the corpus, the sanitized build and the options).
"""
from __future__ import annotations

import os
import sys

import numpy as np

ALLOWED = (ValueError, TypeError, OverflowError, MemoryError, RuntimeError)

INTS = [0, 1, 2, 3, 4, 5, 7, 8, -1, -2, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, -2**63, 2**64,
        10**30, True, False]
DIMS = [0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 11, 16, 17]
HUGE_DIMS = [2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]
FLOATS = [0.0, -0.0, 5e-324, 1e-308, 1e308, float("inf"), float("-inf"), float("nan"), 0.01, 0.5, 1.0, -1.0, 2.0,
          0.999, 1e-5]


# Ops whose array operands are often built to fit together (their shapes follow the first operand).
CORRELATED = {"tanh_backward", "leaky_relu_backward", "batch_norm", "batch_norm_backward"}


class Bytes:
    """A little-endian consumer of the fuzzer's bytes; past the end it yields zeros (deterministic)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u8(self):
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self):
        return self.u8() | (self.u8() << 8)

    def below(self, n):
        return (self.u16() if n > 256 else self.u8()) % n if n > 0 else 0

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, percent):
        return self.u8() * 100 < percent * 256

    def i64(self):
        v = 0
        for i in range(8):
            v |= self.u8() << (8 * i)
        return v - (1 << 64) if v >= 1 << 63 else v

    def f64(self):
        return float(np.frombuffer(bytes(self.u8() for _ in range(8)), np.float64)[0])


def _int_value(b: Bytes):
    r = b.below(10)
    if r < 6:
        return b.pick(INTS)
    if r == 6:
        return b.i64()
    if r == 7:
        return b.pick([np.int8(3), np.uint64(2**63 + 5), np.int64(2), np.int32(-1), np.uint8(0), np.array(2)])
    if r == 8:
        return b.pick([1.5, "2", None, np.float64(2.0), np.array([2, 2]), (), b"\x01", object()])
    return b.below(6)


def _pair_value(b: Bytes):
    r = b.below(6)
    if r < 3:
        return _int_value(b)
    if r < 5:
        t = (_int_value(b), _int_value(b))
        return list(t) if b.chance(20) else t
    return tuple(_int_value(b) for _ in range(b.pick([0, 1, 3])))


def _real_value(b: Bytes):
    r = b.below(8)
    if r < 5:
        return b.pick(FLOATS)
    if r == 5:
        return b.f64()
    if r == 6:
        return b.pick([np.float32(0.5), np.float64(-2.0), 1, True, 10**400])
    return b.pick(["1.0", None, 1j, object()])


class Arrays:
    """Arrays for one call; some are views into one shared buffer (overlaps with each other/out)."""

    def __init__(self, b: Bytes, dtype):
        self.b, self.dtype = b, dtype
        self.shared = np.random.default_rng(b.u8()).standard_normal(4096).astype(dtype)
        self.made = []

    def shape(self, ndim=None):
        b = self.b
        if ndim is None or b.chance(15):
            ndim = b.below(6)
        return tuple(b.pick(DIMS) for _ in range(ndim))

    def make(self, ndim=None, shape=None):
        b = self.b
        shape = self.shape(ndim) if shape is None else shape
        size = int(np.prod(shape, dtype=object))
        dtype = self.dtype
        if b.chance(8):
            dtype = b.pick([np.int64, np.int32, np.bool_, np.float16, np.complex128, np.uint8,
                            np.float32 if dtype == np.float64 else np.float64])
        layout = b.below(16)
        if layout == 0 and shape and self.made:  # a view overlapping the shared buffer
            if size <= self.shared.size and self.shared.dtype == dtype:
                off = b.below(max(1, self.shared.size - size + 1))
                a = self.shared[off:off + size].reshape(shape)
                self.made.append(a)
                return a
        if layout == 1:  # a zero-stride broadcast view, possibly of a huge size
            big = list(shape) or [1]
            big[b.below(len(big))] = b.pick(HUGE_DIMS + DIMS)
            try:
                a = np.broadcast_to(np.asarray(1.5, dtype), tuple(big))
            except ValueError:
                a = np.zeros(shape, dtype)
            self.made.append(a)
            return a
        if size > 1 << 16:
            shape = tuple(min(d, 4) for d in shape)
        rng = np.random.default_rng(b.u8())
        base = rng.standard_normal(shape) * b.pick([1.0, 1e-3, 1e3, 1e30, 0.0])
        if b.chance(5):
            base.flat[: b.below(4)] = b.pick([np.nan, np.inf, -np.inf])
        with np.errstate(all="ignore"):
            a = base.astype(dtype) if np.dtype(dtype).kind != "b" else base > 0
        if layout == 2 and a.ndim:
            big = np.repeat(a, 2, axis=-1)
            a = big[..., ::2]
        elif layout == 3 and a.ndim:
            a = a[::-1]
        elif layout == 4:
            a = np.asfortranarray(a)
        elif layout == 5:
            a = a.astype(a.dtype.newbyteorder())
        elif layout == 6 and a.nbytes:
            raw = np.zeros(a.nbytes + 1, np.uint8)
            u = raw[1:].view(a.dtype).reshape(a.shape)
            u[...] = a
            a = u
        elif layout == 7:
            self.made.append(a)
            return a.tolist()
        elif layout == 8 and a.ndim:
            a = np.swapaxes(a, 0, -1)
        elif layout == 9:
            a.flags.writeable = False
        self.made.append(a)
        return a


def _state_value(b: Bytes, arrs: Arrays, x):
    """A state operand (updated in place): mostly a well-formed (C,) array of the call's dtype."""
    c = x.shape[1] if isinstance(x, np.ndarray) and x.ndim >= 2 else b.pick(DIMS)
    r = b.below(16)  # 8..15: well-formed
    if r == 0:
        return None
    if r == 1:
        return arrs.make(1)  # any layout, dtype, list, view into the shared buffer
    if r == 2 and arrs.shared.size >= c and arrs.made:  # overlapping another operand's memory
        off = b.below(max(1, arrs.shared.size - c + 1))
        return arrs.shared[off:off + c]
    a = np.random.default_rng(b.u8()).random(c + (1 if r == 3 else 0)).astype(arrs.dtype) + 0.5
    if r == 4:
        a.flags.writeable = False
    elif r == 5:
        a = np.repeat(a, 2)[::2]
    elif r == 6:
        a = a.astype(np.float64 if arrs.dtype == np.float32 else np.float32)
    elif r == 7:
        return a.tolist()
    arrs.made.append(a)
    return a


def _call_op(b: Bytes, table):
    import swiftcnn._core as core

    name, args, npos, nreq, nres = b.pick(table)
    fn = getattr(core, name)
    dtype = np.float32 if b.chance(50) else np.float64
    arrs = Arrays(b, dtype)
    ndim = 4 if ("conv" in name or "pool" in name) and "2d" in name and "correlate" not in name \
        and "convolve" not in name else 2
    if name.startswith("batch_norm"):
        ndim = b.pick([2, 3, 4])
    kw = {}
    for arg, kind, dflt in args:
        if arg not in [a for a, _, _ in args[:nreq]] and b.chance(40):
            continue  # leave an optional argument out
        first = next((v for v in kw.values() if isinstance(v, np.ndarray)), None)
        if name in CORRELATED and first is not None and first.ndim >= 2 and b.chance(60) \
                and kind in ("array", "array_or_none"):
            # version 2 ops (added after the corpus was grown): operands that fit together often,
            # so the fuzzer reaches the computation: x-like operands, per-channel (C,) weights
            kw[arg] = arrs.make(shape=(first.shape[1],) if arg in ("weight", "bias") else first.shape)
        elif kind == "array":
            kw[arg] = arrs.make(ndim) if not b.chance(2) else None
        elif kind == "array_or_none":
            kw[arg] = None if b.chance(30) else arrs.make(1 if arg == "bias" else ndim)
        elif kind == "target":
            r = b.below(4)
            if r == 0:
                kw[arg] = arrs.make(2)
            else:
                n = b.pick(DIMS)
                kw[arg] = np.array([b.pick([0, 1, 2, 3, -1, 2**63 - 1]) for _ in range(n)],
                                   dtype=b.pick([np.int64, np.int8, np.uint64, np.int32, np.bool_, np.float64]))
        elif kind in ("pair", "pair_or_none"):
            kw[arg] = None if kind == "pair_or_none" and b.chance(30) else _pair_value(b)
        elif kind == "int":
            kw[arg] = _int_value(b) if b.chance(60) else b.pick([1, 2, 3, 4, 8, 16])  # groups
        elif kind == "padding":
            kw[arg] = b.pick(["same", "valid", "full", "", "SAME", b"same"]) if b.chance(35) else _pair_value(b)
        elif kind == "bool":
            kw[arg] = b.pick([True, False, 0, 1, None, "x", "", np.bool_(True), 2.5, np.array([1, 2])])
        elif kind == "state":
            kw[arg] = _state_value(b, arrs, kw.get("x"))
        elif kind == "real":
            kw[arg] = _real_value(b)
        elif kind == "mode":
            kw[arg] = b.pick(["valid", "same", "full", "VALID", "", 0, None])
        elif kind == "out":
            r = b.below(4)
            if r == 0 and arrs.made:
                kw[arg] = b.pick(arrs.made)  # out is an input (in place or overlapping)
            elif r == 1:
                kw[arg] = arrs.make(ndim)
        else:  # a kind this harness does not know: fuzz it with anything
            kw[arg] = b.pick([_int_value(b), _real_value(b), arrs.make()])
    if b.chance(10):  # positional call
        pos = [kw.pop(a) for a, _, _ in args[:npos] if a in kw]
        return fn(*pos, **kw)
    if b.chance(3):
        kw["bogus_keyword"] = 1
    return fn(**kw)


def _layer(b: Bytes, sc, dtype):
    r = b.below(12)
    p = _pair_value
    if r == 0:
        kw = {}
        if b.chance(30):  # Version 2: groups and 'same' / 'valid' padding
            kw = dict(groups=b.pick([1, 2, 3, 4, 0, -1]), padding=b.pick(["same", "valid", 0, 1, "full"]))
        kw.setdefault("padding", p(b) if b.chance(30) else b.pick([0, 1]))
        return sc.Conv2d(b.pick(DIMS[1:8]), b.pick(DIMS[1:8]), p(b) if b.chance(20) else b.pick([1, 2, 3]),
                         stride=p(b) if b.chance(30) else 1, dilation=p(b) if b.chance(20) else 1,
                         bias=b.chance(70), dtype=dtype, seed=b.u8(), **kw)
    if r == 1:
        return sc.Linear(b.pick(DIMS[1:]), b.pick(DIMS[1:]), bias=b.chance(70), dtype=dtype, seed=b.u8())
    if r == 2:
        return sc.MaxPool2d(p(b) if b.chance(30) else 2, stride=p(b) if b.chance(30) else None,
                            padding=p(b) if b.chance(20) else 0)
    if r == 3:
        return sc.AvgPool2d(p(b) if b.chance(30) else 2, stride=p(b) if b.chance(30) else None,
                            padding=p(b) if b.chance(20) else 0)
    if r == 4:
        return sc.ReLU()
    if r == 5:
        return sc.Sigmoid()
    if r == 6:
        return sc.Flatten()
    # Version 2 layers, when the package has them
    extra = [("Tanh", lambda: ()), ("LeakyReLU", lambda: (_real_value(b),)),
             ("Dropout", lambda: (b.pick([0.0, 0.5, 1.0, -0.1, float("nan")]),)),
             ("AdaptiveAvgPool2d", lambda: (p(b),)), ("BatchNorm2d", lambda: (b.pick(DIMS[1:8]),)),
             ("BatchNorm1d", lambda: (b.pick(DIMS[1:8]),))]
    name, ctor_args = extra[r - 7] if r - 7 < len(extra) else extra[0]
    cls = getattr(sc, name, None)
    if cls is None:
        return sc.ReLU()
    return cls(*ctor_args())


def _call_layers(b: Bytes, sequential):
    import swiftcnn as sc

    dtype = "float32" if b.chance(50) else "float64"
    arrs = Arrays(b, np.float32 if dtype == "float32" else np.float64)
    if sequential:
        layers = [_layer(b, sc, dtype) for _ in range(1 + b.below(4))]
        if b.chance(20) and hasattr(sc, "Residual"):
            layers = [sc.Residual(*layers)]
        model = sc.Sequential(*layers)
    else:
        model = _layer(b, sc, dtype)
    if b.chance(5):
        model.backward(arrs.make())  # before any forward: RuntimeError
    if b.chance(20) and hasattr(model, "eval"):
        model.eval()
    for _ in range(1 + b.below(2)):
        x = arrs.make(b.pick([4, 4, 2, 3]))
        y = model(x)
        if not isinstance(y, np.ndarray):
            raise AssertionError(f"forward returned {type(y).__name__}")
        g = arrs.make(shape=y.shape) if b.chance(80) else arrs.make()
        gx = model.backward(g)
        if isinstance(gx, np.ndarray) and isinstance(x, np.ndarray) and gx.shape != x.shape:
            raise AssertionError(f"backward returned shape {gx.shape} for an input of shape {x.shape}")
        if b.chance(30):
            model.zero_grad()
        if b.chance(10):
            model.load_state_dict(model.state_dict())


def decode_and_call(data: bytes):
    """Decodes `data` into calls and runs them; refusals of the documented kinds are swallowed."""
    import swiftcnn._core as core

    b = Bytes(data)
    what = b.below(10)
    try:
        if what < 7:
            _call_op(b, core.op_table())
        else:
            _call_layers(b, sequential=what >= 9)
    except ALLOWED:
        pass


def _limit_memory():
    """Outside AddressSanitizer, a huge allocation must fail fast (MemoryError), not swap."""
    if "asan" in os.environ.get("LD_PRELOAD", "") or os.environ.get("SWIFTCNN_SANITIZED") == "1":
        return
    try:
        import resource

        limit = int(os.environ.get("SWIFTCNN_FUZZ_RLIMIT_AS", str(4 << 30)))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


def main():
    import warnings

    import atheris

    warnings.simplefilter("ignore")
    _limit_memory()
    with atheris.instrument_imports():
        import swiftcnn  # noqa: F401
        import swiftcnn._core  # noqa: F401
    atheris.instrument_func(decode_and_call)
    for f in (_call_op, _call_layers, _layer, Arrays.make, _int_value, _pair_value, _real_value, _state_value):
        atheris.instrument_func(f)

    def one(data):
        decode_and_call(data)

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
