"""Layers and models: Conv2d, MaxPool2d, AvgPool2d, Linear, Sigmoid, ReLU, Flatten and Sequential.

Every layer has ``forward(x)`` (also ``layer(x)``), which returns the output and keeps what backward
needs, and ``backward(grad_out)``, which returns the gradient for the last forward's input and ADDS
the parameter gradients into each parameter's ``.grad`` (as PyTorch accumulates). Weights use
PyTorch's layouts (OIHW for convolutions, (out, in) for linear layers) and state-dict names, so
``model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})`` works.

How the work is split with the Swift core (see docs/ARCHITECTURE.md):

- ``Conv2d`` and ``Linear`` each own one Swift layer handle, created in ``__init__``. Their
  ``.weight``/``.bias`` Parameters view that handle's memory, so whatever runs the handle (the layer
  itself, a ``Sequential`` holding it, an optimizer) sees the same arrays.
- The parameterless layers, used on their own, run the functional ops of ``swiftcnn.functional``.
- A ``Sequential`` builds one Swift sequential handle from its children (their own handles for
  ``Conv2d``/``Linear``, fresh ones for parameterless layers), so a forward or backward through the
  whole model is a single call into Swift.

Layers keep a reference to their last input (not a copy), because the Swift core reads it in
backward: mutating that array before backward gives wrong gradients, never a crash.
"""
import contextlib
import functools

import numpy as np

from . import _core
from ._convert import (as_layer_input, check_bool, check_dtype, check_int, check_pair,
                       check_real, describe_type)
from ._random import check_seed, next_seed
from .parameter import Parameter
from .training import TrainingMixin

__all__ = ["Module", "Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "Sigmoid", "ReLU", "Flatten",
           "Tanh", "LeakyReLU", "AdaptiveAvgPool2d", "Dropout", "BatchNorm1d", "BatchNorm2d",
           "Sequential", "Residual", "Parameter", "IncompatibleKeys"]


def _describe_shape(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class IncompatibleKeys(tuple):
    """``load_state_dict``'s result: the pair ``(missing_keys, unexpected_keys)`` (both lists)."""

    __slots__ = ()

    def __new__(cls, missing_keys, unexpected_keys):
        return super().__new__(cls, (list(missing_keys), list(unexpected_keys)))

    @property
    def missing_keys(self):
        """Names the model has but the state dict lacked."""
        return self[0]

    @property
    def unexpected_keys(self):
        """Names the state dict had but the model lacks."""
        return self[1]

    def __repr__(self):
        return f"IncompatibleKeys(missing_keys={self[0]!r}, unexpected_keys={self[1]!r})"


class Module:
    """The base class of every layer and of ``Sequential``.

    Subclasses implement ``forward`` and ``backward``; layers with weights also return their
    Parameters from ``parameters()``. Everything else (``__call__``, ``zero_grad``, ``state_dict``,
    ``load_state_dict``, ``save``) is shared and built on those.
    """

    def __call__(self, x):
        """Same as ``forward(x)``."""
        return self.forward(x)

    def forward(self, x):
        """Return the layer's output for ``x`` and keep what ``backward`` needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out):
        """Return the gradient for the last forward's input; add parameter gradients into ``.grad``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    @property
    def dtype(self):
        """The parameters' dtype (np.float32 or np.float64), or None for a layer without parameters."""
        return None

    def parameters(self):
        """A new list of this module's Parameters, in PyTorch's order (names relative to this module)."""
        return []

    def buffers(self):
        """``[(name, array)]``: state that is not trained by gradients (BatchNorm's running
        statistics), as PyTorch's ``named_buffers``; the arrays are the layer's own (written in place)."""
        return []

    # -- modes --------------------------------------------------------------------------------
    _training = True  # every module starts in training mode

    @property
    def training(self):
        """True in training mode (as created), False after ``eval()``."""
        return self._training

    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode; containers set every child. Only
        BatchNorm and Dropout act differently in the two modes. Returns the module."""
        mode = check_bool(mode, "mode", f"{type(self).__name__}.train")
        self._training = mode
        for handle in self.__dict__.get("_handles", {}).values():
            _core.layer_set_training(handle, mode)
        for child in self._children():
            child.train(mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``. Returns the module."""
        return self.train(False)

    def _children(self):
        """The modules a container holds (none for a layer)."""
        return []

    def _cached_handle(self, dtype, kind, ints=(), reals=(), children=(), seed=0):
        """This module's Swift layer handle for ``dtype``, created on first use in the module's
        current mode (a handle per dtype: parameterless layers run in the dtype of their input)."""
        dtype = np.dtype(dtype)
        handles = self.__dict__.setdefault("_handles", {})
        handle = handles.get(dtype)
        if handle is None:
            handle = _core.layer_create(kind, dtype.name, tuple(ints), tuple(reals), tuple(children), seed)
            if not self._training:
                _core.layer_set_training(handle, False)
            handles[dtype] = handle
        return handle

    def zero_grad(self):
        """Fill every parameter's ``.grad`` with zeros, in place."""
        for parameter in self.parameters():
            parameter.grad.fill(0)

    def state_dict(self):
        """``{name: copy}`` of every parameter and buffer, with PyTorch's names (``"0.weight"``,
        ``"1.running_mean"``, ...)."""
        state = {parameter.name: parameter.data.copy() for parameter in self.parameters()}
        state.update({name: array.copy() for name, array in self.buffers()})
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of ``state_dict`` into the parameters, in place.

        Every name and shape is checked before anything is written: a missing or unexpected key
        (with ``strict=True``) or a value of the wrong shape raises ``ValueError`` naming the key,
        and the model is left unchanged. Values are cast to the model's dtype, so float64 arrays load
        into a float32 model and a PyTorch state dict loads as ``{k: v.numpy() for k, v in ...}``.

        Returns:
            ``(missing_keys, unexpected_keys)``: with ``strict=False`` the keys that were skipped
            (both lists are empty with ``strict=True``, which raises instead).
        """
        owner = f"{type(self).__name__}.load_state_dict"
        strict = check_bool(strict, "strict", owner)
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"{owner}: state_dict must be a dict of arrays, got "
                            f"{describe_type(state_dict)}")
        parameters = {parameter.name: parameter.data for parameter in self.parameters()}
        parameters.update(self.buffers())
        given = list(state_dict.keys())
        for key in given:
            if not isinstance(key, str):
                raise TypeError(f"{owner}: state_dict keys must be str, got {key!r}")
        missing = [name for name in parameters if name not in state_dict]
        unexpected = [key for key in given if key not in parameters]
        if strict and (missing or unexpected):
            problems = []
            if missing:
                problems.append("missing key" + ("s " if len(missing) > 1 else " ")
                                + ", ".join(repr(k) for k in missing))
            if unexpected:
                problems.append("unexpected key" + ("s " if len(unexpected) > 1 else " ")
                                + ", ".join(repr(k) for k in unexpected))
            raise ValueError(f"{owner}: {'; '.join(problems)} (the model's keys are "
                             f"{list(parameters)})")
        converted = []
        for name, target in parameters.items():
            if name not in state_dict:
                continue
            value = _state_value(state_dict[name], name, owner)
            if value.shape != target.shape:
                raise ValueError(f"{owner}: {name!r} has shape {_describe_shape(value.shape)} but "
                                 f"the model expects {_describe_shape(target.shape)}")
            converted.append((target, value.astype(target.dtype, copy=True)))
        for target, value in converted:
            np.copyto(target, value)
        return IncompatibleKeys(missing, unexpected)

    def save(self, path):
        """Write the architecture and the weights to one ``.npz`` file at exactly ``path``.

        ``swiftcnn.load(path)`` rebuilds the model with its dtype. The file is written atomically
        (a temporary file in the same directory, then renamed).
        """
        from .serialization import save
        save(self, path)

    def __deepcopy__(self, memo):
        """An independent module with the same architecture, dtype, weights and gradients."""
        from .serialization import rebuild
        duplicate = rebuild(self)
        for original, copied in zip(self.parameters(), duplicate.parameters()):
            np.copyto(copied.grad, original.grad)
        memo[id(self)] = duplicate
        return duplicate

    # -- plumbing shared with Sequential, serialization and gradcheck -----------------------------
    def _config(self):
        """The constructor settings, JSON-serialisable (how save and gradcheck rebuild the module)."""
        return {}

    def _spec(self):
        """``{"type": class name, **settings}``: a complete, JSON-serialisable description."""
        return {"type": type(self).__name__, **self._config()}

    def _output_shape(self, shape):
        """The output shape for an input of ``shape``, as the Swift core computes it (the one
        place shape rules live); ValueError if the layer cannot take it."""
        return _core.layer_output_shape(self._handle_for(self.dtype or np.float64), tuple(shape))

    def _handle_for(self, dtype):
        """A Swift layer handle computing this module in ``dtype``, for use inside a Sequential."""
        raise TypeError(f"{type(self).__name__} has no Swift implementation")


def _state_value(value, name, owner):
    """A state-dict value as an ndarray of real numbers (torch tensors via their __array__)."""
    try:
        array = np.asarray(value)
    except Exception as error:
        raise TypeError(f"{owner}: {name!r} cannot be converted to an array: {error}") from None
    if array.dtype.kind not in "fiu" or array.dtype.fields is not None:
        raise TypeError(f"{owner}: {name!r} must be an array of real numbers, got dtype {array.dtype}")
    return array


# ---- layers with parameters (own a Swift handle) -------------------------------------------------
class _LayerWithParameters(Module):
    """A layer owning one Swift layer handle whose weight (and bias) arrays it exposes."""

    def _adopt_handle(self, handle, dtype):
        self._dtype = dtype
        self._handle = handle
        self._input = None
        self._params = [Parameter(data, grad, name)
                        for name, data, grad in _core.layer_parameters(handle)]
        by_name = {parameter.name: parameter for parameter in self._params}
        self._weight = by_name["weight"]
        self._bias = by_name.get("bias")

    @property
    def dtype(self):
        """The parameters' dtype: np.dtype('float32') or np.dtype('float64')."""
        return self._dtype

    @property
    def weight(self):
        """The weight Parameter."""
        return self._weight

    @property
    def bias(self):
        """The bias Parameter, or None for a layer built with ``bias=False``."""
        return self._bias

    def parameters(self):
        """``[weight, bias]`` (or ``[weight]`` without bias), named "weight" and "bias"."""
        return list(self._params)

    def zero_grad(self):
        """Fill ``weight.grad`` (and ``bias.grad``) with zeros, in place."""
        _core.layer_zero_grad(self._handle)

    def forward(self, x):
        """Return the output for ``x`` (a new array) and keep a reference to ``x`` for backward.

        ``x`` must have the layer's dtype (a float ndarray of the other float dtype raises
        ``TypeError``); lists are converted to it.
        """
        name = type(self).__name__
        x = as_layer_input(x, self._dtype, f"{name}.forward")
        y = _core.layer_forward(self._handle, x)
        self._input = x  # the Swift layer reads this memory again in backward
        return y

    def backward(self, grad_out):
        """Return the gradient for the last forward's input; ADD the weight/bias gradients into ``.grad``."""
        name = type(self).__name__
        if self._input is None:
            raise RuntimeError(f"{name}.backward was called before forward")
        grad_out = as_layer_input(grad_out, self._dtype, f"{name}.backward", "grad_out")
        return _core.layer_backward(self._handle, grad_out)

    def _handle_for(self, dtype):
        return self._handle


class Conv2d(_LayerWithParameters):
    """2-D convolution (cross-correlation, as in PyTorch) over NCHW images.

    ``y[n,k,i,j] = b[k] + sum_{c,r,s} x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw] * w[k,c,r,s]``;
    the output is ``(N, out_channels, H_out, W_out)`` with
    ``H_out = (H + 2*ph - dh*(kH-1) - 1) // sh + 1``.

    Args:
        in_channels, out_channels: channel counts (positive ints).
        kernel_size, stride, dilation: positive int or (h, w) pair; stride and dilation default to 1.
        padding: non-negative int or (h, w) pair of zero padding on each side (default 0).
        bias: whether to add a learned bias per output channel.
        dtype: "float32" (default) or "float64".
        seed: the seed of the default initialisation (PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            with fan_in = in_channels*kH*kW); None draws one from ``swiftcnn.manual_seed``'s generator.

    Attributes: ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``,
    ``dilation`` (as (h, w) pairs), ``dtype``, and the Parameters ``weight`` (out_channels,
    in_channels, kH, kW) and ``bias`` (out_channels,) or None.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, dtype="float32", seed=None):
        owner = "Conv2d"
        self._in_channels = check_int(in_channels, "in_channels", owner)
        self._out_channels = check_int(out_channels, "out_channels", owner)
        self._kernel_size = check_pair(kernel_size, "kernel_size", owner)
        self._stride = check_pair(stride, "stride", owner)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"{owner}: padding must be an int, an (h, w) pair, 'valid' or 'same', "
                                 f"got {padding!r}")
            self._padding = padding
            pad_ints = (1, 0, 0) if padding == "same" else (0, 0, 0)
        else:
            self._padding = check_pair(padding, "padding", owner, minimum=0)
            pad_ints = (0, *self._padding)
        self._dilation = check_pair(dilation, "dilation", owner)
        self._groups = check_int(groups, "groups", owner)
        has_bias = check_bool(bias, "bias", owner)
        dtype = check_dtype(dtype, owner)
        seed = next_seed() if seed is None else check_seed(seed, "seed", owner)
        if self._groups == 1 and pad_ints[0] == 0:  # the plain layer: fused paths in a Sequential
            ints, kind = (self._in_channels, self._out_channels, *self._kernel_size, *self._stride,
                          *pad_ints[1:], *self._dilation, int(has_bias)), "conv2d"
        else:
            ints, kind = (self._in_channels, self._out_channels, *self._kernel_size, *self._stride, *pad_ints,
                          *self._dilation, self._groups, int(has_bias)), "grouped_conv2d"
        handle = _core.layer_create(kind, dtype.name, ints, (), (), seed)
        self._adopt_handle(handle, dtype)

    in_channels = property(lambda self: self._in_channels, doc="Input channels.")
    out_channels = property(lambda self: self._out_channels, doc="Output channels (filters).")
    kernel_size = property(lambda self: self._kernel_size, doc="(kH, kW).")
    stride = property(lambda self: self._stride, doc="(sh, sw).")
    padding = property(lambda self: self._padding,
                       doc="(ph, pw) zeros added on each side, or the string 'same' / 'valid' as given.")
    dilation = property(lambda self: self._dilation, doc="(dh, dw).")
    groups = property(lambda self: self._groups, doc="Channel groups (in_channels for depthwise).")

    def _config(self):
        return {"in_channels": self._in_channels, "out_channels": self._out_channels,
                "kernel_size": list(self._kernel_size), "stride": list(self._stride),
                "padding": self._padding if isinstance(self._padding, str) else list(self._padding),
                "dilation": list(self._dilation), "groups": self._groups,
                "bias": self._bias is not None, "dtype": self._dtype.name}

    def __repr__(self):
        text = (f"Conv2d({self._in_channels}, {self._out_channels}, kernel_size={self._kernel_size}"
                f", stride={self._stride}")
        if self._padding != (0, 0):
            text += f", padding={self._padding!r}" if isinstance(self._padding, str) else f", padding={self._padding}"
        if self._dilation != (1, 1):
            text += f", dilation={self._dilation}"
        if self._groups != 1:
            text += f", groups={self._groups}"
        if self._bias is None:
            text += ", bias=False"
        if self._dtype != np.float32:
            text += f", dtype={self._dtype.name}"
        return text + ")"


class Linear(_LayerWithParameters):
    """Fully connected layer: ``y = x @ weight.T + bias`` for x of shape (N, in_features).

    Args:
        in_features, out_features: sizes (positive ints).
        bias: whether to add a learned bias.
        dtype: "float32" (default) or "float64".
        seed: the seed of the default initialisation (PyTorch's, U(-1/sqrt(in_features),
            1/sqrt(in_features))); None draws one from ``swiftcnn.manual_seed``'s generator.

    Attributes: ``in_features``, ``out_features``, ``dtype``, and the Parameters ``weight``
    (out_features, in_features) and ``bias`` (out_features,) or None.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype="float32", seed=None):
        owner = "Linear"
        self._in_features = check_int(in_features, "in_features", owner)
        self._out_features = check_int(out_features, "out_features", owner)
        has_bias = check_bool(bias, "bias", owner)
        dtype = check_dtype(dtype, owner)
        seed = next_seed() if seed is None else check_seed(seed, "seed", owner)
        handle = _core.layer_create("linear", dtype.name,
                                    (self._in_features, self._out_features, int(has_bias)), (), (), seed)
        self._adopt_handle(handle, dtype)

    in_features = property(lambda self: self._in_features, doc="Input features.")
    out_features = property(lambda self: self._out_features, doc="Output features.")

    def _config(self):
        return {"in_features": self._in_features, "out_features": self._out_features,
                "bias": self._bias is not None, "dtype": self._dtype.name}

    def __repr__(self):
        text = (f"Linear(in_features={self._in_features}, out_features={self._out_features}, "
                f"bias={self._bias is not None}")
        if self._dtype != np.float32:
            text += f", dtype={self._dtype.name}"
        return text + ")"


# ---- layers without parameters (functional ops on their own, Swift handles in a Sequential) ---
class _LayerWithoutParameters(Module):
    """A layer without weights: works in float32 and float64 alike (the dtype of its input)."""

    def __init__(self):
        self._saved = None  # what backward needs from the last forward

    def _check_forward_done(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward")


class _Pool2d(_LayerWithoutParameters):
    """Shared by MaxPool2d and AvgPool2d, which set the pooling kind and its functional ops."""

    _kind = None            # "max_pool2d" or "avg_pool2d": the Swift layer kind
    _forward_op = None      # the functional forward (standalone use)
    _backward_op = None     # the functional backward

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        owner = type(self).__name__
        self._kernel_size = check_pair(kernel_size, "kernel_size", owner)
        self._stride_given = None if stride is None else check_pair(stride, "stride", owner)
        self._padding = check_pair(padding, "padding", owner, minimum=0)
        self._handle_for(np.float64)  # the Swift layer checks the settings (padding <= kernel // 2)

    kernel_size = property(lambda self: self._kernel_size, doc="(kH, kW) window size.")
    stride = property(lambda self: self._stride_given or self._kernel_size,
                      doc="(sh, sw); kernel_size when None was given (PyTorch's default).")
    padding = property(lambda self: self._padding, doc="(ph, pw) added on each side.")

    def forward(self, x):
        """Pool ``x`` (N, C, H, W); returns a new (N, C, H_out, W_out) array and keeps ``x``."""
        x = as_layer_input(x, None, f"{type(self).__name__}.forward")
        y = self._forward_op(x, self._kernel_size, self._stride_given, self._padding)
        self._saved = x
        return y

    def backward(self, grad_out):
        """Return the gradient for the last forward's input."""
        self._check_forward_done()
        return self._backward_op(grad_out, self._saved, self._kernel_size, self._stride_given,
                                 self._padding)

    def _handle_for(self, dtype):
        stride = (0, 0, 0) if self._stride_given is None else (1, *self._stride_given)
        return self._cached_handle(dtype, self._kind, (*self._kernel_size, *stride, *self._padding))

    def _config(self):
        return {"kernel_size": list(self._kernel_size), "stride": list(self.stride),
                "padding": list(self._padding)}

    def __repr__(self):
        return (f"{type(self).__name__}(kernel_size={self._kernel_size}, stride={self.stride}, "
                f"padding={self._padding})")


class MaxPool2d(_Pool2d):
    """2-D max pooling over NCHW images.

    Each output is the maximum of its ``kernel_size`` window; padding counts as -inf and must be at
    most half the window (``padding <= kernel_size // 2``). In backward each window's gradient goes
    to its first maximum in row-major order (overlapping windows accumulate).

    Args:
        kernel_size: positive int or (h, w) pair.
        stride: positive int or (h, w) pair; None (default) means kernel_size.
        padding: non-negative int or (h, w) pair, at most kernel_size // 2.
    """

    _kind = "max_pool2d"
    _forward_op = staticmethod(_core.max_pool2d)
    _backward_op = staticmethod(_core.max_pool2d_backward)


class AvgPool2d(_Pool2d):
    """2-D average pooling over NCHW images.

    Padded zeros count in the divisor (PyTorch's ``count_include_pad=True``).

    Args:
        kernel_size: positive int or (h, w) pair.
        stride: positive int or (h, w) pair; None (default) means kernel_size.
        padding: non-negative int or (h, w) pair of zeros added on each side, at most
            kernel_size // 2 (as PyTorch).
    """

    _kind = "avg_pool2d"
    _forward_op = staticmethod(_core.avg_pool2d)
    _backward_op = staticmethod(_core.avg_pool2d_backward)


class Sigmoid(_LayerWithoutParameters):
    """Elementwise logistic function ``1 / (1 + exp(-x))``, any shape."""

    def forward(self, x):
        """Return sigmoid(x) (a new array); keeps that output for backward."""
        x = as_layer_input(x, None, "Sigmoid.forward")
        y = _core.sigmoid(x)
        self._saved = y
        return y

    def backward(self, grad_out):
        """Return ``grad_out * y * (1 - y)`` with y the last forward's output."""
        self._check_forward_done()
        return _core.sigmoid_backward(grad_out, self._saved)

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "sigmoid")

    def __repr__(self):
        return "Sigmoid()"


class ReLU(_LayerWithoutParameters):
    """Elementwise rectifier ``max(x, 0)``, any shape."""

    def forward(self, x):
        """Return relu(x) (a new array); keeps ``x`` for backward."""
        x = as_layer_input(x, None, "ReLU.forward")
        y = _core.relu(x)
        self._saved = x
        return y

    def backward(self, grad_out):
        """Return ``grad_out * (x > 0)`` with x the last forward's input."""
        self._check_forward_done()
        return _core.relu_backward(grad_out, self._saved)

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "relu")

    def __repr__(self):
        return "ReLU()"


class Flatten(_LayerWithoutParameters):
    """Flattens every dimension after the first: (N, C, H, W) -> (N, C*H*W); needs ndim >= 2."""

    def forward(self, x):
        """Return ``x`` reshaped to (N, features), as a new array."""
        x = as_layer_input(x, None, "Flatten.forward")
        problem = self._shape_problem(x.shape)
        if problem:
            raise ValueError(f"Flatten.forward: x {problem}")
        y = x.reshape(x.shape[0], -1).copy()
        self._saved = (x.shape, x.dtype)
        return y

    def backward(self, grad_out):
        """Return ``grad_out`` reshaped to the last forward's input shape, as a new array."""
        self._check_forward_done()
        in_shape, dtype = self._saved
        grad_out = as_layer_input(grad_out, dtype, "Flatten.backward", "grad_out",
                                  expected="the last forward's input was")
        expected = (in_shape[0], int(np.prod(in_shape[1:])))
        if grad_out.shape != expected:
            raise ValueError(f"Flatten.backward: grad_out must have the last output's shape "
                             f"{_describe_shape(expected)}, got {_describe_shape(grad_out.shape)}")
        return grad_out.reshape(in_shape).copy()

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "flatten")

    @staticmethod
    def _shape_problem(shape):
        if len(shape) < 2:
            return f"must have at least 2 dimensions (N, ...), got shape {_describe_shape(shape)}"
        if int(np.prod(shape[1:])) == 0:
            return f"must have at least one feature per sample, got shape {_describe_shape(shape)}"
        return None

    def __repr__(self):
        return "Flatten()"


class Tanh(_LayerWithoutParameters):
    """Elementwise hyperbolic tangent, any shape; backward uses the output: ``1 - y**2``."""

    def forward(self, x):
        """Return tanh(x) (a new array); keeps that output for backward."""
        x = as_layer_input(x, None, "Tanh.forward")
        self._saved = _core.tanh(x)
        return self._saved

    def backward(self, grad_out):
        """Return ``grad_out * (1 - y**2)`` with y the last forward's output."""
        self._check_forward_done()
        return _core.tanh_backward(grad_out, self._saved)

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "tanh")

    def __repr__(self):
        return "Tanh()"


class LeakyReLU(_LayerWithoutParameters):
    """Elementwise ``where(x > 0, x, negative_slope * x)``, any shape."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self._negative_slope = check_real(negative_slope, "negative_slope", "LeakyReLU")

    negative_slope = property(lambda self: self._negative_slope, doc="The slope for x <= 0.")

    def forward(self, x):
        """Return leaky_relu(x) (a new array); keeps ``x`` for backward."""
        x = as_layer_input(x, None, "LeakyReLU.forward")
        y = _core.leaky_relu(x, self._negative_slope)
        self._saved = x
        return y

    def backward(self, grad_out):
        """Return ``grad_out * where(x > 0, 1, negative_slope)`` with x the last forward's input."""
        self._check_forward_done()
        return _core.leaky_relu_backward(grad_out, self._saved, self._negative_slope)

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "leaky_relu", reals=(self._negative_slope,))

    def _config(self):
        return {"negative_slope": self._negative_slope}

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self._negative_slope})"


class AdaptiveAvgPool2d(_LayerWithoutParameters):
    """Adaptive average pooling of (N, C, H, W) to ``output_size`` (int or (h, w)) with PyTorch's
    bins: output cell (i, j) averages rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` and the
    columns likewise."""

    def __init__(self, output_size):
        super().__init__()
        self._output_size = check_pair(output_size, "output_size", "AdaptiveAvgPool2d")

    output_size = property(lambda self: self._output_size, doc="(Ho, Wo).")

    def forward(self, x):
        """Pool ``x``; returns a new array and keeps ``x`` for backward."""
        x = as_layer_input(x, None, "AdaptiveAvgPool2d.forward")
        y = _core.adaptive_avg_pool2d(x, self._output_size)
        self._saved = x
        return y

    def backward(self, grad_out):
        """Return the gradient for the last forward's input (each bin's gradient spread evenly)."""
        self._check_forward_done()
        return _core.adaptive_avg_pool2d_backward(grad_out, self._saved, self._output_size)

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "adaptive_avg_pool2d", self._output_size)

    def _config(self):
        return {"output_size": list(self._output_size)}

    def __repr__(self):
        return f"AdaptiveAvgPool2d(output_size={self._output_size})"


class _HandleLayer(Module):
    """A layer without parameters whose forward and backward run its Swift handle for the input's
    dtype (Dropout: the handle draws and keeps the mask)."""

    _kind = None

    def _handle_for(self, dtype):
        raise NotImplementedError

    def forward(self, x):
        """Return the layer's output for ``x`` (a new array); keeps ``x`` for backward."""
        x = as_layer_input(x, None, f"{type(self).__name__}.forward")
        handle = self._handle_for(x.dtype)
        y = _core.layer_forward(handle, x)
        self._input = x  # the Swift layer may read it again in backward
        self._last_handle = handle
        return y

    def backward(self, grad_out):
        """Return the gradient for the last forward's input."""
        handle = self.__dict__.get("_last_handle")
        if handle is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward")
        grad_out = as_layer_input(grad_out, self._input.dtype, f"{type(self).__name__}.backward", "grad_out",
                                  expected="the last forward ran in")
        return _core.layer_backward(handle, grad_out)


class Dropout(_HandleLayer):
    """In training mode each forward zeroes every element with probability ``p`` and scales the
    others by ``1 / (1 - p)`` (a fresh mask each forward; backward applies the last one); in
    evaluation mode it is the identity. ``p`` in [0, 1] (p = 1 gives zeros). The masks come from
    ``seed`` or, when None, the global generator (``swiftcnn.manual_seed``), so runs repeat."""

    def __init__(self, p=0.5, *, seed=None):
        owner = "Dropout"
        self._p = check_real(p, "p", owner)
        if not 0.0 <= self._p <= 1.0:
            raise ValueError(f"{owner}: p must be in [0, 1], got {p!r}")
        self._seed = next_seed() if seed is None else check_seed(seed, "seed", owner)

    p = property(lambda self: self._p, doc="The probability of zeroing an element.")

    def _handle_for(self, dtype):
        return self._cached_handle(dtype, "dropout", reals=(self._p,), seed=self._seed)

    def _config(self):
        return {"p": self._p}

    def __repr__(self):
        return f"Dropout(p={self._p})"


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d: one Swift handle (the layer's dtype) owning the
    affine parameters and the running statistics."""

    _kind = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 *, dtype="float32"):
        owner = type(self).__name__
        self._num_features = check_int(num_features, "num_features", owner)
        self._eps = check_real(eps, "eps", owner)
        self._momentum = None if momentum is None else check_real(momentum, "momentum", owner)
        self._affine = check_bool(affine, "affine", owner)
        self._track = check_bool(track_running_stats, "track_running_stats", owner)
        self._dtype = check_dtype(dtype, owner)
        reals = (self._eps, float("nan") if self._momentum is None else self._momentum)
        handle = self._cached_handle(self._dtype, self._kind, (self._num_features, int(self._affine), int(self._track)),
                                     reals)
        self._params = [Parameter(data, grad, name) for name, data, grad in _core.layer_parameters(handle)]
        self._buffers = [(name, data) for name, data in _core.layer_buffers(handle)]
        by_name = dict(self._buffers)
        self._input = None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(self, "_" + name, by_name.get(name))

    @property
    def dtype(self):
        return self._dtype

    num_features = property(lambda self: self._num_features, doc="C, the channels normalized.")
    eps = property(lambda self: self._eps, doc="Added to the variance.")
    momentum = property(lambda self: self._momentum, doc="Running-statistics factor (None: cumulative).")
    affine = property(lambda self: self._affine, doc="Whether weight and bias are learned.")
    track_running_stats = property(lambda self: self._track, doc="Whether running statistics are kept.")
    weight = property(lambda self: self._params[0] if self._affine else None, doc="The scale (ones), or None.")
    bias = property(lambda self: self._params[1] if self._affine else None, doc="The shift (zeros), or None.")
    running_mean = property(lambda self: self._running_mean, doc="Buffer (C,), updated in place.")
    running_var = property(lambda self: self._running_var, doc="Buffer (C,), updated in place.")
    num_batches_tracked = property(lambda self: self._num_batches_tracked, doc="Buffer: a 0-d int64 array.")

    def parameters(self):
        """``[weight, bias]`` when affine, else ``[]``."""
        return list(self._params)

    def buffers(self):
        """``[("running_mean", a), ("running_var", a), ("num_batches_tracked", a)]`` when tracking."""
        return list(self._buffers)

    def zero_grad(self):
        """Fill ``weight.grad`` and ``bias.grad`` with zeros."""
        _core.layer_zero_grad(self._handle_for(self._dtype))

    def forward(self, x):
        """Normalize ``x``: batch statistics in training mode (updating the running ones), running
        statistics in evaluation mode."""
        x = as_layer_input(x, self._dtype, f"{type(self).__name__}.forward")
        y = _core.layer_forward(self._handle_for(self._dtype), x)
        self._input = x
        return y

    def backward(self, grad_out):
        """Return the gradient for the last forward's input (through the batch statistics in
        training mode) and ADD into weight.grad and bias.grad."""
        if self._input is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward")
        grad_out = as_layer_input(grad_out, self._dtype, f"{type(self).__name__}.backward", "grad_out")
        return _core.layer_backward(self._handle_for(self._dtype), grad_out)

    def _handle_for(self, dtype):
        return self.__dict__["_handles"][np.dtype(self._dtype)]

    def _config(self):
        return {"num_features": self._num_features, "eps": self._eps, "momentum": self._momentum,
                "affine": self._affine, "track_running_stats": self._track, "dtype": self._dtype.name}

    def __repr__(self):
        text = f"{type(self).__name__}({self._num_features}, eps={self._eps}, momentum={self._momentum}"
        text += f", affine={self._affine}, track_running_stats={self._track}"
        if self._dtype != np.float32:
            text += f", dtype={self._dtype.name}"
        return text + ")"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) over N, H, W per channel, PyTorch's rules: training mode
    normalizes with the batch mean and biased variance and moves ``running_mean``/``running_var``
    toward the batch mean and the UNBIASED variance by ``momentum`` (None: cumulative average);
    evaluation mode uses the running statistics. ``weight`` (ones) and ``bias`` (zeros) are
    Parameters when ``affine``; the running statistics and ``num_batches_tracked`` are buffers."""

    _kind = "batch_norm2d"


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) per channel; otherwise as ``BatchNorm2d``."""

    _kind = "batch_norm1d"


# ---- Sequential -------------------------------------------------------------------------------
class _LayerList(list):
    """``Sequential.layers``: a list that refuses changes (the model is fixed at construction)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("Sequential.layers cannot be changed; build a new Sequential "
                        "(e.g. Sequential(*model.layers, new_layer))")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


@contextlib.contextmanager
def _modes(module, training):
    """Run a block with ``module`` in training (True) or evaluation mode, then restore every
    layer's own mode (they may differ: a model in training mode with one layer in eval)."""
    saved = []

    def remember(m):
        saved.append((m, m.training))
        for child in m._children():
            remember(child)

    remember(module)
    module.train(training)
    try:
        yield
    finally:
        for m, mode in saved:
            if m.training != mode:
                m._training = mode
                for handle in m.__dict__.get("_handles", {}).values():
                    _core.layer_set_training(handle, mode)


def _indent(text, spaces=2):
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * spaces + line for line in lines[1:]])


class Sequential(TrainingMixin, Module):
    """A model that applies its layers one after another: ``Sequential(*layers)``.

    It holds the very layer objects given (their parameters are shared, not copied) and runs the
    whole chain as one call into the Swift core. ``model.layers`` is the list of layers,
    ``model[i]`` one layer (a slice gives a Sequential of the same layer objects); ``len`` and
    iteration work as on a list. Parameters and state-dict keys are prefixed by the layer's index
    (``"0.weight"``, ``"2.0.weight"`` for nested Sequentials), as in PyTorch.

    The model's dtype is that of its layers with parameters, which must agree; a Sequential
    without any parameters works in the dtype of each input.

    Also: ``fit``, ``predict``, ``evaluate`` (training) and ``save``.
    """

    def __init__(self, *layers):
        dtype = None
        seen_parameters = {}
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: argument {index} must be a layer (a swiftcnn Module), "
                                f"got {describe_type(layer)}")
            if type(layer)._handle_for is Module._handle_for:
                raise TypeError(f"Sequential: argument {index} ({type(layer).__name__}) is not one "
                                f"of swiftcnn's layers, which a Sequential runs in the Swift core")
            if layer.dtype is not None:
                if dtype is not None and layer.dtype != dtype:
                    raise TypeError(f"Sequential: layer {index} ({layer!r}) has dtype "
                                    f"{layer.dtype} but the earlier layers have {dtype}; "
                                    f"all layers of a model must share one dtype")
                dtype = layer.dtype
            for parameter in layer.parameters():
                key = id(parameter.data)
                if key in seen_parameters:
                    raise ValueError(f"Sequential: layer {index} reuses the parameters of layer "
                                     f"{seen_parameters[key]}; a layer with parameters may appear "
                                     f"only once in a model")
                seen_parameters[key] = index
        self._layers = _LayerList(layers)
        self._dtype = dtype
        self._params = [parameter._renamed(f"{index}.{parameter.name}")
                        for index, layer in enumerate(layers) for parameter in layer.parameters()]
        self._handles = {}        # dtype -> Swift sequential handle
        self._inputs = {}         # dtype -> last input run through that handle (kept alive)
        self._last_dtype = None   # dtype of the last forward
        if dtype is not None:
            self._handle_for(dtype)  # surface construction errors now

    @property
    def layers(self):
        """The layers, in order (a list that cannot be modified)."""
        return self._layers

    @property
    def dtype(self):
        """The parameters' dtype, or None for a model without parameters."""
        return self._dtype

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        try:
            return self._layers[index]
        except IndexError:
            raise IndexError(f"Sequential index {index} is out of range for a model of "
                             f"{len(self._layers)} layers") from None
        except TypeError:
            raise TypeError(f"Sequential indices must be ints or slices, got "
                            f"{describe_type(index)}") from None

    def parameters(self):
        """All layers' Parameters in order, named ``"<layer index>.<name>"`` (``"0.weight"``, ...)."""
        return list(self._params)

    def buffers(self):
        """All layers' buffers in order, named ``"<layer index>.<name>"``."""
        return [(f"{index}.{name}", array) for index, layer in enumerate(self._layers)
                for name, array in layer.buffers()]

    def state_dict(self):
        """``{name: copy}`` layer by layer, each layer's parameters then its buffers: PyTorch's
        keys in PyTorch's order (``"0.weight"``, ``"1.weight"``, ``"1.running_mean"``, ...)."""
        return {f"{index}.{name}": value for index, layer in enumerate(self._layers)
                for name, value in layer.state_dict().items()}

    def _children(self):
        return list(self._layers)

    def zero_grad(self):
        """Fill every parameter's ``.grad`` with zeros, in place."""
        for layer in self._layers:
            layer.zero_grad()

    def forward(self, x):
        """Run ``x`` through every layer; returns a new array and keeps what backward needs.

        ``x`` must have the model's dtype (a float ndarray of the other float dtype raises
        ``TypeError``); lists are converted to it.
        """
        x = as_layer_input(x, self._dtype, "Sequential.forward")
        handle = self._handle_for(x.dtype)
        y = _core.layer_forward(handle, x)
        self._inputs[x.dtype] = x  # the Swift layers read this memory again in backward
        self._last_dtype = x.dtype
        return y

    def backward(self, grad_out):
        """Backpropagate through every layer; returns the gradient for the last forward's input.

        Parameter gradients are ADDED into each ``.grad``.
        """
        if self._last_dtype is None:
            raise RuntimeError("Sequential.backward was called before forward")
        grad_out = as_layer_input(grad_out, self._last_dtype, "Sequential.backward", "grad_out",
                                  expected="the last forward ran in")
        return _core.layer_backward(self._handles[self._last_dtype], grad_out)

    def _handle_for(self, dtype):
        dtype = np.dtype(dtype)
        handle = self._handles.get(dtype)
        if handle is None:
            children = [layer._handle_for(dtype) for layer in self._layers]
            handle = _core.layer_create(self._kind, dtype.name, (), (), children, 0)
            self._handles[dtype] = handle
        return handle

    _kind = "sequential"  # the Swift container kind

    # Modes around the training entry points (API.md "Modes"): fit trains in training mode,
    # predict and evaluate (and fit's validation, which goes through _predict_array) run in
    # evaluation mode; each puts back the modes the layers had.
    @functools.wraps(TrainingMixin.fit)
    def fit(self, *args, **kwargs):
        with _modes(self, True):
            return super().fit(*args, **kwargs)

    def _predict_array(self, x, batch_size):
        with _modes(self, False):
            return super()._predict_array(x, batch_size)

    def _spec(self):
        return {"type": type(self).__name__, "layers": [layer._spec() for layer in self._layers]}

    def __repr__(self):
        if not self._layers:
            return "Sequential()"
        lines = [f"  ({index}): {_indent(repr(layer))}" for index, layer in enumerate(self._layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


class Residual(Sequential):
    """``y = x + f(x)``, f being the layers applied in order; f(x) must have x's shape.

    Indexing, ``len``, iteration and state-dict keys are those of a nested ``Sequential``
    (``"2.0.weight"`` for the first layer of a Residual at index 2 of a model). Backward adds the
    skip's gradient to the branch's.
    """

    _kind = "residual"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Residual(*self._layers[index])
        return super().__getitem__(index)

    def __repr__(self):
        return "Residual" + super().__repr__()[len("Sequential"):]
