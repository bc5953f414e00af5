"""Argument checking and array conversion shared by layers, optimizers, training and gradcheck.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value)
with a message that starts with the caller (``owner``, e.g. ``"Conv2d"`` or ``"Sequential.fit"``),
names the argument, and says what was expected and what was given.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe_type(value):
    """A short description of ``value``'s type for error messages ("list", "ndarray of int64")."""
    if isinstance(value, np.ndarray):
        return f"ndarray of {value.dtype}"
    return type(value).__name__


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value, argument, owner, minimum=1):
    """Return ``value`` as an int >= ``minimum``; ``bool`` and floats are rejected."""
    if not _is_int(value):
        raise TypeError(f"{owner}: {argument} must be an int, got {describe_type(value)}")
    value = int(value)
    if value < minimum:
        what = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{owner}: {argument} must be {what}, got {value}")
    return value


def check_pair(value, argument, owner, minimum=1):
    """Return ``value`` (an int or an (h, w) pair of ints) as an (h, w) tuple of ints >= ``minimum``."""
    what = "positive" if minimum == 1 else "non-negative"
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{owner}: {argument} must be an int or an (h, w) pair of ints, "
                        f"got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{owner}: {argument} must be {what}, got {value!r}")
    return pair


def check_bool(value, argument, owner):
    """Return ``value`` as a bool; only ``True``/``False`` (or NumPy booleans) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {argument} must be True or False, got {describe_type(value)}")
    return bool(value)


def check_real(value, argument, owner):
    """Return ``value`` as a Python float; ``bool``, complex and non-numbers are rejected."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {argument} must be a real number, got {describe_type(value)}")
    return float(value)


def check_dtype(dtype, owner):
    """Return ``dtype`` ("float32", "float64", np.float32, np.float64 or a np.dtype) as a np.dtype."""
    try:
        resolved = np.dtype(dtype) if dtype is not None else None
    except (TypeError, ValueError):
        resolved = None
    if resolved is None or resolved not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def _float_dtype_or_raise(array, argument, owner):
    """The float32/float64 dtype of ``array`` (byte order ignored), or TypeError for anything else."""
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
    if native.fields is None and native in FLOAT_DTYPES:
        return native
    raise TypeError(f"{owner}: {argument} must be a float32 or float64 array, got dtype {array.dtype}")


def _ready(array, dtype):
    """``array`` itself if C-contiguous, aligned, native-endian and of ``dtype``; else one copy."""
    if (array.dtype == dtype and array.flags.c_contiguous and array.flags.aligned
            and type(array) is np.ndarray):
        return array
    return np.array(array, dtype=dtype, order="C", copy=True, subok=False)


def as_layer_input(x, dtype, owner, argument="x", expected="the layer's parameters are"):
    """Convert ``x`` for a layer whose parameters have ``dtype`` (None: a layer without parameters).

    A float32/float64 ndarray must have the layer's dtype (TypeError naming both otherwise) and is
    used in place when C-contiguous, aligned and native-endian, else copied once. int, bool,
    float16, complex and object arrays raise TypeError. Anything that is not an ndarray (lists,
    scalars, other array types) is converted with ``np.asarray`` to the layer's dtype, or float64
    for a layer without one. ``expected`` words the dtype mismatch message ("... but {expected} float32").
    """
    if isinstance(x, np.ndarray):
        own = _float_dtype_or_raise(x, argument, owner)
        if dtype is not None and own != dtype:
            raise TypeError(f"{owner}: {argument} has dtype {own} but {expected} {dtype}; "
                            f"convert it with {argument}.astype(np.{dtype})")
        return _ready(x, own)
    target = dtype if dtype is not None else np.dtype(np.float64)
    return _convert_non_array(x, target, argument, owner)


def _convert_non_array(x, target, argument, owner):
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{owner}: {argument} must be an array of numbers, got {describe_type(x)}")
    try:
        probe = np.asarray(x)
    except Exception as error:  # ragged lists, objects without __array__, ...
        raise TypeError(f"{owner}: {argument} cannot be converted to an array: {error}") from None
    if probe.dtype.kind not in "fiu" or probe.dtype.kind == "b":
        raise TypeError(f"{owner}: {argument} must hold real numbers, got an array of {probe.dtype}")
    return _ready(probe, target)


def as_cast_input(x, dtype, owner, argument="x"):
    """Convert ``x`` to a C-contiguous array of ``dtype`` for fit/predict/evaluate.

    Unlike :func:`as_layer_input`, every real dtype (float16, float32, float64, integer images) is
    cast to ``dtype``; bool, complex, object and string data raise TypeError. ``dtype`` None means
    "the array's own float dtype, or float64".
    """
    if isinstance(x, np.ndarray):
        array = x
    else:
        if x is None or isinstance(x, (str, bytes, dict, set)):
            raise TypeError(f"{owner}: {argument} must be an array of numbers, got {describe_type(x)}")
        try:
            array = np.asarray(x)
        except Exception as error:
            raise TypeError(f"{owner}: {argument} cannot be converted to an array: {error}") from None
    if array.dtype.kind not in "fiu" or array.dtype.fields is not None:
        raise TypeError(f"{owner}: {argument} must hold real numbers, got dtype {array.dtype}")
    if dtype is None:
        native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
        dtype = native if native in FLOAT_DTYPES and isinstance(x, np.ndarray) else np.dtype(np.float64)
    return _ready(array, dtype)


def as_labels(y, owner, argument="y"):
    """Convert class labels to a C-contiguous int64 array of shape (N,).

    Any signed or unsigned integer dtype is accepted (bool is not); values are checked to be >= 0 and
    to fit in int64 here, and against the number of classes by :func:`check_label_range`.
    """
    if isinstance(y, np.ndarray):
        array = y
    else:
        if y is None or isinstance(y, (str, bytes, dict, set)):
            raise TypeError(f"{owner}: {argument} must be an array of integer class labels, "
                            f"got {describe_type(y)}")
        try:
            array = np.asarray(y)
        except Exception as error:
            raise TypeError(f"{owner}: {argument} cannot be converted to an array: {error}") from None
        if array.size == 0 and array.dtype.kind == "f":
            array = array.astype(np.int64)  # np.asarray([]) is float64
    if array.dtype.kind not in "iu":
        raise TypeError(f"{owner}: {argument} must hold integer class labels (any int dtype, not "
                        f"bool), got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{owner}: {argument} must have shape (N,), got shape {array.shape}")
    if array.size and array.dtype.kind == "i" and array.min() < 0:
        raise ValueError(f"{owner}: {argument} holds a negative class label ({array.min()})")
    if array.size and array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{owner}: {argument} holds a class label too large for int64 ({array.max()})")
    return _ready(array, np.dtype(np.int64))


def check_label_range(labels, num_classes, owner, argument="y"):
    """Raise ValueError unless every label is in [0, num_classes)."""
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"{owner}: {argument} holds class label {labels.max()} but the model "
                         f"outputs {num_classes} classes (labels must be in [0, {num_classes}))")
