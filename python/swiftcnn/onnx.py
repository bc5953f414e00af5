"""ONNX interchange: ``export(model, path, *, input_shape)`` and ``load(path)``.

Needs the ``onnx`` package (``pip install swiftcnn[onnx]``, which also brings ``onnxruntime`` to run
the exported graphs). ``import swiftcnn.onnx`` works without it; the functions raise ``ImportError``
saying what to install.

Export writes the model in evaluation mode as a chain of standard ONNX ops, one group per layer,
with the weights as initializers named by their state-dict keys (``"0.weight"``):

========================  ==========================================================================
layer                     ONNX
========================  ==========================================================================
Conv2d                    ``Conv`` with explicit ``pads`` (``"same"`` too: ``auto_pad`` SAME is
                          refused by onnxruntime for dilated kernels), ``group``
MaxPool2d                 ``MaxPool`` (padding counts as -inf in both)
AvgPool2d                 ``AveragePool`` with ``count_include_pad=1`` (ONNX defaults to 0; swiftcnn,
                          like PyTorch's default, counts the padded zeros)
Linear                    ``Gemm`` with ``transB=1`` (its input is 2-D: a ``Flatten`` comes before)
Flatten                   ``Flatten`` with ``axis=1``
Sigmoid, ReLU, Tanh       ``Sigmoid``, ``Relu``, ``Tanh``
LeakyReLU                 ``LeakyRelu`` (``alpha`` = negative_slope)
BatchNorm1d/2d            ``BatchNormalization`` in inference form (running statistics); without
                          running statistics, the batch statistics written out with ``ReduceMean``
Dropout                   ``Dropout`` without ``training_mode``: the identity, as in eval mode
AdaptiveAvgPool2d         ``GlobalAveragePool`` (1x1), ``AveragePool`` (bins of one size), otherwise
                          two ``MatMul`` with constant pooling matrices (``y = A x B^T``)
Sequential                its layers in order (nested ones flattened)
Residual                  its layers, then ``Add`` of the block's input
========================  ==========================================================================

Load reads a chain of those ops as ``torch.onnx.export`` writes it for a ``torch.nn.Sequential``
(both exporters, opsets 13-18, weights inline or in external data files) into a ``Sequential``.
"""
import os
import tempfile

import numpy as np

__all__ = ["export", "load", "SUPPORTED_OPS"]

#: The ONNX ops ``load`` understands (any other raises ``ValueError`` naming the op and its node).
SUPPORTED_OPS = ("Conv", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "ReduceMean", "BatchNormalization", "Gemm", "MatMul", "Add",
                 "Flatten", "Reshape", "Dropout", "Identity", "Constant")

_MIN_OPSET = 13


def _import_onnx(owner):
    """The top-level ``onnx`` package (not this module), or ImportError saying how to get it."""
    try:
        import onnx as onnx_package  # absolute import: the ``onnx`` distribution
    except ImportError as error:
        raise ImportError(f"{owner} needs the 'onnx' package: pip install 'swiftcnn[onnx]' "
                          f"(or pip install onnx onnxruntime); {error}") from None
    if getattr(onnx_package, "__file__", None) == __file__:  # pragma: no cover - path misuse
        raise ImportError(f"{owner}: 'import onnx' found swiftcnn/onnx.py itself; do not put the "
                          f"swiftcnn package folder on sys.path")
    return onnx_package


def _pair(value):
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value), int(value))


def _array(value):
    """A Parameter's ``.data`` or a buffer, as an ndarray (no copy)."""
    if value is None:
        return None
    return np.asarray(getattr(value, "data", value))


def _children(container):
    layers = getattr(container, "layers", None)
    return list(layers) if layers is not None else list(iter(container))


def _adaptive_bins(size, out):
    """PyTorch's adaptive-pooling bins: output i averages [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_matrix(size, out, dtype):
    """(out, size) matrix whose row i averages bin i: ``y = P @ x`` pools one axis."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i, (start, stop) in enumerate(_adaptive_bins(size, out)):
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def _conv_pads(layer, spatial):
    """(top, left, bottom, right) for a Conv2d, resolving "same"/"valid" like PyTorch."""
    padding = layer.padding
    kernel, dilation = _pair(layer.kernel_size), _pair(layer.dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if _pair(layer.stride) != (1, 1):
                raise ValueError(f"Conv2d with padding='same' needs stride 1, got {layer.stride}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            # PyTorch puts the extra row/column of an odd total at the bottom/right.
            return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
        raise ValueError(f"Conv2d padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = _pair(padding)
    return (ph, pw, ph, pw)


def _window_output(size, kernel, stride, pad_begin, pad_end, dilation=1):
    span = dilation * (kernel - 1) + 1
    padded = size + pad_begin + pad_end
    if size < 1 or padded < span:
        raise ValueError(f"an input size {size} (padded {padded}) is smaller than the window {span}")
    return (padded - span) // stride + 1


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
class _GraphBuilder:
    """Collects nodes and initializers while the model's layers are walked in order."""

    def __init__(self, onnx_package, dtype, opset):
        self.onnx = onnx_package
        self.dtype = np.dtype(dtype)
        self.elem_type = (onnx_package.TensorProto.FLOAT if self.dtype == np.float32
                          else onnx_package.TensorProto.DOUBLE)
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.names = set()

    def fresh(self, base):
        name, counter = base, 1
        while name in self.names:
            name, counter = f"{base}_{counter}", counter + 1
        self.names.add(name)
        return name

    def constant(self, name, array, dtype=None):
        array = np.array(array, dtype=dtype or self.dtype, order="C")  # keeps 0-d scalars 0-d
        name = self.fresh(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, prefix, **attributes):
        name = self.fresh(f"/{prefix.rstrip('.').replace('.', '/')}/{op}" if prefix else f"/{op}")
        output = self.fresh(f"{name}_output_0")
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], name=name,
                                                     **attributes))
        return output

    def reduce_mean(self, x, axes, prefix):
        if self.opset >= 18:  # axes became an input at opset 18
            axes_name = self.constant(f"{prefix}axes", np.array(axes, dtype=np.int64), np.int64)
            return self.node("ReduceMean", [x, axes_name], prefix, keepdims=1)
        return self.node("ReduceMean", [x], prefix, axes=list(axes), keepdims=1)

    # -- one method per layer kind: (input name, input shape) -> (output name, output shape) -----
    def emit(self, layer, x, shape, prefix):
        kind = type(layer).__name__
        method = getattr(self, f"_emit_{kind}", None)
        if method is None:
            raise ValueError(f"swiftcnn.onnx.export: layer {prefix.rstrip('.') or '(model)'} is a "
                             f"{kind}, which has no ONNX export (supported: "
                             f"{', '.join(sorted(_EXPORTED))})")
        try:
            return method(layer, x, tuple(shape), prefix)
        except ValueError as error:
            if str(error).startswith("swiftcnn.onnx.export"):
                raise
            raise ValueError(f"swiftcnn.onnx.export: layer {prefix.rstrip('.') or '(model)'} "
                             f"({kind}): {error}") from None

    def _emit_Sequential(self, layer, x, shape, prefix):
        for index, child in enumerate(_children(layer)):
            x, shape = self.emit(child, x, shape, f"{prefix}{index}.")
        return x, shape

    def _emit_Residual(self, layer, x, shape, prefix):
        y, out_shape = self._emit_Sequential(layer, x, shape, prefix)
        if tuple(out_shape) != tuple(shape):
            raise ValueError(f"the residual branch maps shape {shape} to {out_shape}; y = x + f(x) "
                             f"needs f(x) of x's shape")
        return self.node("Add", [x, y], prefix), shape

    def _emit_Conv2d(self, layer, x, shape, prefix):
        if len(shape) != 4:
            raise ValueError(f"input must be (N, C, H, W), got shape {shape}")
        weight = _array(layer.weight)
        bias = _array(layer.bias)
        groups = int(getattr(layer, "groups", 1))
        kernel, stride, dilation = (_pair(layer.kernel_size), _pair(layer.stride),
                                    _pair(layer.dilation))
        if shape[1] != weight.shape[1] * groups:
            raise ValueError(f"input has {shape[1]} channels, the weight expects "
                             f"{weight.shape[1] * groups}")
        pads = _conv_pads(layer, shape[2:])
        inputs = [x, self.constant(f"{prefix}weight", weight)]
        if bias is not None:
            inputs.append(self.constant(f"{prefix}bias", bias))
        out = [shape[0], weight.shape[0]] + [
            _window_output(shape[2 + a], kernel[a], stride[a], pads[a], pads[2 + a], dilation[a])
            for a in range(2)]
        y = self.node("Conv", inputs, prefix, kernel_shape=list(kernel), strides=list(stride),
                      pads=list(pads), dilations=list(dilation), group=groups)
        return y, tuple(out)

    def _pool(self, op, layer, x, shape, prefix, **extra):
        if len(shape) != 4:
            raise ValueError(f"input must be (N, C, H, W), got shape {shape}")
        kernel, stride, padding = (_pair(layer.kernel_size), _pair(layer.stride),
                                   _pair(layer.padding))
        out = list(shape[:2]) + [_window_output(shape[2 + a], kernel[a], stride[a], padding[a],
                                                padding[a]) for a in range(2)]
        y = self.node(op, [x], prefix, kernel_shape=list(kernel), strides=list(stride),
                      pads=[padding[0], padding[1], padding[0], padding[1]], ceil_mode=0, **extra)
        return y, tuple(out)

    def _emit_MaxPool2d(self, layer, x, shape, prefix):
        return self._pool("MaxPool", layer, x, shape, prefix)

    def _emit_AvgPool2d(self, layer, x, shape, prefix):
        # ONNX's default count_include_pad=0 divides by the unpadded count; swiftcnn counts the zeros.
        return self._pool("AveragePool", layer, x, shape, prefix, count_include_pad=1)

    def _emit_Linear(self, layer, x, shape, prefix):
        weight = _array(layer.weight)
        bias = _array(layer.bias)
        if len(shape) != 2 or shape[1] != weight.shape[1]:
            raise ValueError(f"input must be (N, {weight.shape[1]}) (Gemm takes 2-D input; put a "
                             f"Flatten before), got shape {shape}")
        inputs = [x, self.constant(f"{prefix}weight", weight)]
        if bias is not None:
            inputs.append(self.constant(f"{prefix}bias", bias))
        return (self.node("Gemm", inputs, prefix, alpha=1.0, beta=1.0, transB=1),
                (shape[0], weight.shape[0]))

    def _emit_Flatten(self, layer, x, shape, prefix):
        if len(shape) < 2:
            raise ValueError(f"input must have at least 2 dimensions, got shape {shape}")
        return self.node("Flatten", [x], prefix, axis=1), (shape[0], int(np.prod(shape[1:])))

    def _emit_Sigmoid(self, layer, x, shape, prefix):
        return self.node("Sigmoid", [x], prefix), shape

    def _emit_ReLU(self, layer, x, shape, prefix):
        return self.node("Relu", [x], prefix), shape

    def _emit_Tanh(self, layer, x, shape, prefix):
        return self.node("Tanh", [x], prefix), shape

    def _emit_LeakyReLU(self, layer, x, shape, prefix):
        slope = float(getattr(layer, "negative_slope", 0.01))
        return self.node("LeakyRelu", [x], prefix, alpha=slope), shape

    def _emit_Dropout(self, layer, x, shape, prefix):
        # Without a training_mode input ONNX's Dropout is the identity (eval mode); the ratio is
        # kept so that load() can rebuild the layer.
        p = float(layer.p)
        if not 0.0 <= p < 1.0:  # ONNX wants a ratio in [0, 1); eval mode is the identity anyway
            return self.node("Identity", [x], prefix), shape
        ratio = self.constant(f"{prefix}ratio", np.array(p))
        return self.node("Dropout", [x, ratio], prefix), shape

    def _emit_BatchNorm(self, layer, x, shape, prefix, ranks):
        if len(shape) not in ranks:
            raise ValueError(f"input must have {' or '.join(str(r) for r in ranks)} dimensions, "
                             f"got shape {shape}")
        channels = shape[1]
        eps = float(layer.eps)
        weight = _array(getattr(layer, "weight", None))
        bias = _array(getattr(layer, "bias", None))
        scale = weight if weight is not None else np.ones(channels)
        shift = bias if bias is not None else np.zeros(channels)
        mean = _array(getattr(layer, "running_mean", None))
        var = _array(getattr(layer, "running_var", None))
        if scale.shape != (channels,):
            raise ValueError(f"input has {channels} channels, the layer has {scale.shape[0]}")
        if mean is not None and var is not None:
            momentum = getattr(layer, "momentum", 0.1)
            extra = {} if momentum is None else {"momentum": 1.0 - float(momentum)}
            inputs = [x, self.constant(f"{prefix}weight", scale),
                      self.constant(f"{prefix}bias", shift),
                      self.constant(f"{prefix}running_mean", mean),
                      self.constant(f"{prefix}running_var", var)]
            return self.node("BatchNormalization", inputs, prefix, epsilon=eps, **extra), shape
        # No running statistics (track_running_stats=False): eval mode normalises with the batch's
        # mean and biased variance over every axis but 1, as PyTorch does.
        axes = [0] + list(range(2, len(shape)))
        stat_shape = [1, channels] + [1] * (len(shape) - 2)
        mu = self.reduce_mean(x, axes, prefix)
        centred = self.node("Sub", [x, mu], prefix)
        variance = self.reduce_mean(self.node("Mul", [centred, centred], prefix), axes, prefix)
        std = self.node("Sqrt", [self.node("Add", [variance, self.constant(
            f"{prefix}eps", np.array(eps))], prefix)], prefix)
        y = self.node("Div", [centred, std], prefix)
        y = self.node("Mul", [y, self.constant(f"{prefix}weight", scale.reshape(stat_shape))], prefix)
        y = self.node("Add", [y, self.constant(f"{prefix}bias", shift.reshape(stat_shape))], prefix)
        return y, shape

    def _emit_BatchNorm1d(self, layer, x, shape, prefix):
        return self._emit_BatchNorm(layer, x, shape, prefix, (2, 3))

    def _emit_BatchNorm2d(self, layer, x, shape, prefix):
        return self._emit_BatchNorm(layer, x, shape, prefix, (4,))

    def _emit_AdaptiveAvgPool2d(self, layer, x, shape, prefix):
        if len(shape) != 4:
            raise ValueError(f"input must be (N, C, H, W), got shape {shape}")
        size = layer.output_size
        size = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
        out_h, out_w = (shape[2] if size[0] is None else int(size[0]),
                        shape[3] if size[1] is None else int(size[1]))
        height, width = shape[2], shape[3]
        out_shape = (shape[0], shape[1], out_h, out_w)
        if (out_h, out_w) == (1, 1):
            return self.node("GlobalAveragePool", [x], prefix), out_shape
        if height % out_h == 0 and width % out_w == 0:
            kernel = [height // out_h, width // out_w]
            return self.node("AveragePool", [x], prefix, kernel_shape=kernel, strides=kernel,
                             pads=[0, 0, 0, 0], ceil_mode=0, count_include_pad=1), out_shape
        # Bins of different sizes: y[n,c] = A @ x[n,c] @ B^T with A (out_h, H), B (out_w, W) the
        # constant averaging matrices. MatMul broadcasts the 2-D matrices over (N, C).
        cols = self.constant(f"{prefix}pool_cols", _adaptive_matrix(width, out_w, self.dtype).T)
        rows = self.constant(f"{prefix}pool_rows", _adaptive_matrix(height, out_h, self.dtype))
        t = self.node("MatMul", [x, cols], prefix)
        return self.node("MatMul", [rows, t], prefix), out_shape


_EXPORTED = [name[len("_emit_"):] for name in vars(_GraphBuilder) if name.startswith("_emit_")
             and name != "_emit_BatchNorm"]


def _modes(module, found):
    """(module, training flag) for the module and every descendant that has a mode, preorder."""
    if hasattr(module, "training") and callable(getattr(module, "train", None)):
        found.append((module, bool(module.training)))
    if type(module).__name__ in ("Sequential", "Residual"):
        for child in _children(module):
            _modes(child, found)
    return found


def _model_dtype(model):
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype)
    parameters = getattr(model, "parameters", None)
    for parameter in (parameters() if callable(parameters) else []):
        return np.dtype(_array(parameter).dtype)
    return np.dtype(np.float32)


def export(model, path, *, input_shape, opset=17, dynamic_batch=False, dtype=None):
    """Write ``model`` to ``path`` as an ONNX graph, in evaluation mode.

    Args:
        model: a swiftcnn ``Sequential`` or a single layer.
        path: the file to write (exactly this path; written atomically, no file on failure).
        input_shape: the full input shape, batch included, e.g. ``(1, 1, 28, 28)``.
        opset: the ONNX opset (13 up to what the installed ``onnx`` knows; default 17).
        dynamic_batch: write the batch dimension as a symbolic ``"N"`` so any batch size runs.
        dtype: the graph's float type, "float32" or "float64"; None (default) takes the model's
            dtype, float32 for a model without parameters. It must agree with a model's own dtype.

    The model runs in eval mode while it is written (BatchNorm uses its running statistics,
    Dropout is the identity) and gets back each module's mode afterwards. The graph passes
    ``onnx.checker.check_model`` before it is written; a rejected model raises ``ValueError`` or
    ``TypeError`` naming the layer and leaves no file.

    Returns:
        the path written.
    """
    owner = "swiftcnn.onnx.export"
    onnx_package = _import_onnx(owner)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"{owner}: opset must be an int, got {type(opset).__name__}")
    newest = onnx_package.defs.onnx_opset_version()
    if not _MIN_OPSET <= int(opset) <= newest:
        raise ValueError(f"{owner}: opset must be in [{_MIN_OPSET}, {newest}], got {opset}")
    opset = int(opset)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{owner}: input_shape must be a tuple of ints, got "
                        f"{type(input_shape).__name__}") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                        for s in shape):
        raise ValueError(f"{owner}: input_shape must be positive ints (batch included), got "
                         f"{input_shape!r}")
    shape = tuple(int(s) for s in shape)
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    from ._convert import check_dtype
    model_dtype = _model_dtype(model)
    if model_dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: the model's dtype must be float32 or float64, got {model_dtype}")
    if dtype is None:
        dtype = model_dtype
    else:
        dtype = check_dtype(dtype, owner)
        if getattr(model, "dtype", None) is not None and np.dtype(model.dtype) != dtype:
            raise TypeError(f"{owner}: dtype={dtype.name} but the model's parameters are "
                            f"{np.dtype(model.dtype).name}")

    modes = _modes(model, [])
    if modes:
        model.eval()
    try:
        builder = _GraphBuilder(onnx_package, dtype, opset)
        builder.names.update({"input", "output"})
        output, out_shape = builder.emit(model, "input", shape, "")
    finally:
        for module, training in modes:  # preorder: children get their own mode last
            module.train(training)
    helper = onnx_package.helper
    batch = "N" if dynamic_batch else None
    dims_in = [batch or shape[0]] + list(shape[1:])
    dims_out = [batch or out_shape[0]] + list(out_shape[1:])
    nodes = builder.nodes
    if output == "input":  # a model without layers: still a valid graph
        output = builder.node("Identity", ["input"], "")
    nodes[-1].output[0] = "output"
    for node in nodes:  # rename the last node's output everywhere (Residual reuses inputs)
        for i, name in enumerate(node.input):
            if name == output:
                node.input[i] = "output"
    graph = helper.make_graph(
        nodes, "swiftcnn",
        [helper.make_tensor_value_info("input", builder.elem_type, dims_in)],
        [helper.make_tensor_value_info("output", builder.elem_type, dims_out)],
        initializer=builder.initializers)
    proto = helper.make_model_gen_version(
        graph, opset_imports=[helper.make_opsetid("", opset)],
        producer_name="swiftcnn", producer_version=_version())
    try:
        onnx_package.checker.check_model(proto, full_check=True)
    except Exception as error:
        raise ValueError(f"{owner}: the graph fails onnx.checker: {error}") from None
    _write_atomically(path, proto.SerializeToString())
    return path


def _version():
    try:
        from . import __version__
        return str(__version__)
    except ImportError:  # pragma: no cover
        return ""


def _write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".onnx-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
class _Act:
    """An activation tensor while the graph is read: the layer chain (specs) from the input."""

    __slots__ = ("path", "shape", "fresh", "pending")

    def __init__(self, path, shape, fresh=None, pending=None):
        self.path = path          # tuple of layer specs (dicts) from the graph input to here
        self.shape = shape        # tuple, None for an unknown size
        self.fresh = fresh        # the spec whose raw output this is (bias/BN may fold into it)
        self.pending = pending    # ("cols", out_w) after the first MatMul of an adaptive pool


class _Reader:
    def __init__(self, onnx_package, model):
        self.onnx = onnx_package
        self.graph = model.graph
        self.consts = {}
        self.acts = {}
        self.uses = {}
        for tensor in self.graph.initializer:
            self.consts[tensor.name] = onnx_package.numpy_helper.to_array(tensor)
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        for out in self.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, node, message):
        raise ValueError(f"swiftcnn.onnx.load: {node.op_type} node {node.name or '(unnamed)'!r}: "
                         f"{message}")

    def attrs(self, node):
        get = self.onnx.helper.get_attribute_value
        values = {}
        for attribute in node.attribute:
            value = get(attribute)
            values[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def act(self, node, name):
        if name not in self.acts:
            self.fail(node, f"input {name!r} is not the output of the layer chain (only a chain "
                            f"of supported ops from the graph input is read)")
        value = self.acts[name]
        if value.pending is not None and node.op_type != "MatMul":
            self.fail(node, "an adaptive-pooling MatMul pair was broken")
        return value

    def const(self, node, name, what):
        if name not in self.consts:
            self.fail(node, f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return self.consts[name]

    def single_output(self, node):
        for extra in node.output[1:]:
            if extra and self.uses.get(extra):
                self.fail(node, f"its extra output {extra!r} is used; only the first is supported")
        return node.output[0]

    def push(self, node, source, spec, shape, fresh=True):
        spec["node"] = node.name
        self.acts[self.single_output(node)] = _Act(source.path + (spec,), shape,
                                                   spec if fresh else None)

    def replace_last(self, node, source, spec, shape):
        spec["node"] = source.fresh["node"]
        self.acts[self.single_output(node)] = _Act(source.path[:-1] + (spec,), shape, spec)

    # -- ops -----------------------------------------------------------------------------------
    def run(self):
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ValueError(f"swiftcnn.onnx.load: the graph must have one input, it has "
                             f"{[i.name for i in inputs]}")
        if len(self.graph.output) != 1:
            raise ValueError(f"swiftcnn.onnx.load: the graph must have one output, it has "
                             f"{[o.name for o in self.graph.output]}")
        dims = inputs[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.acts[inputs[0].name] = _Act((), shape)
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                self.fail(node, f"domain {node.domain!r} is not supported")
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                self.fail(node, f"op {node.op_type!r} is not supported (supported: "
                                f"{', '.join(SUPPORTED_OPS)})")
            handler(node, self.attrs(node))
        out = self.graph.output[0].name
        if out not in self.acts:
            raise ValueError(f"swiftcnn.onnx.load: the graph output {out!r} does not come from the "
                             f"graph input through a chain of supported ops")
        if self.acts[out].pending is not None:
            raise ValueError("swiftcnn.onnx.load: the graph ends inside an adaptive-pooling pair")
        return list(self.acts[out].path)

    def _op_Constant(self, node, attrs):
        numpy_helper = self.onnx.numpy_helper
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"])
        elif "value_float" in attrs or "value_int" in attrs:
            value = np.array(attrs.get("value_float", attrs.get("value_int")))
        elif "value_floats" in attrs or "value_ints" in attrs:
            value = np.array(attrs.get("value_floats", attrs.get("value_ints")))
        else:
            self.fail(node, f"constant of kind {sorted(attrs)} is not supported")
        self.consts[node.output[0]] = value

    def _op_Identity(self, node, attrs):
        name = node.input[0]
        if name in self.consts:
            self.consts[node.output[0]] = self.consts[name]
        else:
            self.acts[node.output[0]] = self.act(node, name)

    def _op_Dropout(self, node, attrs):
        source = self.act(node, node.input[0])
        if len(node.input) > 2 and node.input[2]:
            if not (node.input[2] in self.consts and not bool(self.consts[node.input[2]])):
                self.fail(node, "training_mode must be absent or a constant false")
        ratio = attrs.get("ratio", 0.5)
        if len(node.input) > 1 and node.input[1]:
            ratio = float(self.const(node, node.input[1], "the ratio"))
        if _layer_class("Dropout") is None:  # eval-mode Dropout is the identity
            self.acts[self.single_output(node)] = source
            return
        self.push(node, source, {"kind": "Dropout", "p": float(ratio)}, source.shape, fresh=False)

    def _unary(self, node, spec):
        source = self.act(node, node.input[0])
        self.push(node, source, spec, source.shape, fresh=False)

    def _op_Relu(self, node, attrs):
        self._unary(node, {"kind": "ReLU"})

    def _op_Sigmoid(self, node, attrs):
        self._unary(node, {"kind": "Sigmoid"})

    def _op_Tanh(self, node, attrs):
        self._unary(node, {"kind": "Tanh"})

    def _op_LeakyRelu(self, node, attrs):
        self._unary(node, {"kind": "LeakyReLU", "negative_slope": float(attrs.get("alpha", 0.01))})

    def _spatial(self, node, source, kernel, strides, dilations, attrs):
        """Explicit symmetric (ph, pw) or "same" for the node's pads/auto_pad, and the output H, W."""
        auto_pad = attrs.get("auto_pad", "NOTSET")
        shape = source.shape
        if shape is None or len(shape) != 4:
            self.fail(node, f"the input must be 4-D (N, C, H, W), got shape {shape}")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for a in range(2):
                size = shape[2 + a]
                if size is None:
                    self.fail(node, f"auto_pad={auto_pad} needs a known input size")
                span = dilations[a] * (kernel[a] - 1) + 1
                total = max((-(-size // strides[a]) - 1) * strides[a] + span - size, 0)
                small = total // 2
                pads.append((small, total - small) if auto_pad == "SAME_UPPER"
                            else (total - small, small))
            pads = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad == "NOTSET":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
        else:
            self.fail(node, f"auto_pad={auto_pad!r} is not supported")
        if len(pads) != 4:
            self.fail(node, f"pads must have 4 entries (2-D), got {pads}")
        out = [None if shape[2 + a] is None else
               _window_output(shape[2 + a], kernel[a], strides[a], pads[a], pads[2 + a],
                              dilations[a]) for a in range(2)]
        if pads[0] == pads[2] and pads[1] == pads[3]:
            return (pads[0], pads[1]), out
        return tuple(pads), out

    def _op_Conv(self, node, attrs):
        source = self.act(node, node.input[0])
        weight = self.const(node, node.input[1], "the weight")
        bias = (self.const(node, node.input[2], "the bias")
                if len(node.input) > 2 and node.input[2] else None)
        if weight.ndim != 4:
            self.fail(node, f"only 2-D convolutions are supported, the weight has shape {weight.shape}")
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        if kernel != tuple(weight.shape[2:]):
            self.fail(node, f"kernel_shape {kernel} does not match the weight {weight.shape}")
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        groups = int(attrs.get("group", 1))
        padding, out = self._spatial(node, source, kernel, strides, dilations, attrs)
        if len(padding) == 4:
            t, l, b, r = padding
            same = all(total == d * (k - 1) and lo == total // 2
                       for lo, total, k, d in ((t, t + b, kernel[0], dilations[0]),
                                               (l, l + r, kernel[1], dilations[1])))
            if not (same and strides == (1, 1)):
                self.fail(node, f"asymmetric pads {list(padding)} are not supported (only "
                                f"symmetric pads or PyTorch's 'same')")
            padding = "same"
        channels = source.shape[1]
        if channels is not None and channels != weight.shape[1] * groups:
            self.fail(node, f"the input has {channels} channels, the weight {weight.shape} with "
                            f"group={groups} expects {weight.shape[1] * groups}")
        spec = {"kind": "Conv2d", "in_channels": weight.shape[1] * groups,
                "out_channels": weight.shape[0], "kernel_size": kernel, "stride": strides,
                "padding": padding, "dilation": dilations, "groups": groups,
                "weight": weight, "bias": bias}
        self.push(node, source, spec, (source.shape[0], weight.shape[0], *out))

    def _pool(self, node, attrs, kind):
        source = self.act(node, node.input[0])
        if attrs.get("ceil_mode", 0):
            self.fail(node, "ceil_mode=1 is not supported")
        if any(d != 1 for d in attrs.get("dilations", (1, 1))):
            self.fail(node, f"dilations {attrs['dilations']} are not supported")
        if attrs.get("storage_order", 0):
            self.fail(node, "storage_order=1 is not supported")
        kernel = tuple(attrs["kernel_shape"])
        if len(kernel) != 2:
            self.fail(node, f"only 2-D pooling is supported, kernel_shape={list(kernel)}")
        strides = tuple(attrs.get("strides", (1, 1)))  # ONNX's default stride is 1, not the kernel
        padding, out = self._spatial(node, source, kernel, strides, (1, 1), attrs)
        if len(padding) == 4:
            self.fail(node, f"asymmetric pads {list(padding)} are not supported")
        if kind == "AvgPool2d" and any(padding) and not attrs.get("count_include_pad", 0):
            self.fail(node, "count_include_pad=0 with padding is not supported (swiftcnn's "
                            "AvgPool2d counts the padded zeros)")
        spec = {"kind": kind, "kernel_size": kernel, "stride": strides, "padding": padding}
        self.push(node, source, spec, (*source.shape[:2], *out), fresh=False)

    def _op_MaxPool(self, node, attrs):
        self._pool(node, attrs, "MaxPool2d")

    def _op_AveragePool(self, node, attrs):
        self._pool(node, attrs, "AvgPool2d")

    def _global_pool(self, node, source):
        if source.shape is None or len(source.shape) != 4:
            self.fail(node, f"the input must be 4-D (N, C, H, W), got shape {source.shape}")
        spec = {"kind": "AdaptiveAvgPool2d", "output_size": (1, 1), "input_hw": source.shape[2:]}
        self.push(node, source, spec, (*source.shape[:2], 1, 1), fresh=False)

    def _op_GlobalAveragePool(self, node, attrs):
        self._global_pool(node, self.act(node, node.input[0]))

    def _op_ReduceMean(self, node, attrs):
        # PyTorch's dynamo exporter writes AdaptiveAvgPool2d(1) as ReduceMean over (H, W).
        source = self.act(node, node.input[0])
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.const(node, node.input[1], "the axes").tolist()
        rank = len(source.shape or ())
        if axes is None or rank != 4 or sorted(a % 4 for a in axes) != [2, 3] \
                or not attrs.get("keepdims", 1):
            self.fail(node, f"only a mean over (H, W) of a 4-D input with keepdims=1 is supported "
                            f"(axes={axes}, rank {rank})")
        self._global_pool(node, source)

    def _op_BatchNormalization(self, node, attrs):
        source = self.act(node, node.input[0])
        if attrs.get("training_mode", 0):
            self.fail(node, "training_mode=1 is not supported (export the model in eval mode)")
        scale, shift, mean, var = (self.const(node, node.input[i], what) for i, what in
                                   ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")))
        rank = len(source.shape or ())
        if rank not in (2, 3, 4):
            self.fail(node, f"the input must be 2-, 3- or 4-D, got shape {source.shape}")
        spec = {"kind": "BatchNorm2d" if rank == 4 else "BatchNorm1d",
                "num_features": scale.shape[0], "eps": float(attrs.get("epsilon", 1e-5)),
                "momentum": 1.0 - float(attrs.get("momentum", 0.9)),
                "weight": scale, "bias": shift, "running_mean": mean, "running_var": var}
        if _layer_class(spec["kind"]) is None:
            # No BatchNorm layer in this build: fold the (inference-form) BN into the Conv or
            # Linear right before it, y = (conv(x) - mean) * scale / sqrt(var + eps) + B.
            previous = source.fresh
            if previous is None or self.uses.get(node.input[0], 0) != 1:
                self.fail(node, f"swiftcnn has no {spec['kind']} here and the node does not "
                                f"directly follow a Conv or Gemm/MatMul it could fold into")
            # In float64, so that a float32 model rounds the folded weights only once.
            factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + spec["eps"])
            folded = dict(previous)
            w = previous["weight"].astype(np.float64)
            folded["weight"] = w * factor.reshape((-1,) + (1,) * (w.ndim - 1))
            b = previous["bias"] if previous["bias"] is not None else np.zeros(w.shape[0])
            folded["bias"] = (b - mean) * factor + shift
            self.replace_last(node, source, folded, source.shape)
            return
        self.push(node, source, spec, source.shape, fresh=False)

    def _linear_spec(self, weight, bias):
        return {"kind": "Linear", "in_features": weight.shape[1], "out_features": weight.shape[0],
                "weight": weight, "bias": bias}

    def _op_Gemm(self, node, attrs):
        source = self.act(node, node.input[0])
        if attrs.get("transA", 0):
            self.fail(node, "transA=1 is not supported")
        if source.shape is not None and len(source.shape) != 2:
            self.fail(node, f"the input must be 2-D, got shape {source.shape}")
        b = self.const(node, node.input[1], "B")
        weight = (b if attrs.get("transB", 0) else b.T) * attrs.get("alpha", 1.0)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = np.asarray(self.const(node, node.input[2], "C")) * attrs.get("beta", 1.0)
            if c.size == 1:
                c = np.full(weight.shape[0], c.reshape(()))
            if c.size != weight.shape[0] or (c.ndim == 2 and c.shape[0] != 1):
                self.fail(node, f"C of shape {c.shape} is not a per-output bias")
            bias = c.reshape(-1)
        self.push(node, source, self._linear_spec(weight, bias), (source.shape[0], weight.shape[0]))

    def _op_MatMul(self, node, attrs):
        left, right = node.input[0], node.input[1]
        if right in self.consts and left in self.acts:
            source = self.act(node, left)
            matrix = self.consts[right]
            rank = len(source.shape or ())
            if matrix.ndim == 2 and rank == 2:
                self.push(node, source, self._linear_spec(matrix.T, None),
                          (source.shape[0], matrix.shape[1]))
                return
            if matrix.ndim == 2 and rank == 4 and source.pending is None:
                width = source.shape[3]
                out_w = matrix.shape[1]
                if width is not None and matrix.shape[0] == width and np.allclose(
                        matrix, _adaptive_matrix(width, out_w, np.float64).T, rtol=1e-6, atol=1e-7):
                    self.acts[node.output[0]] = _Act(source.path, source.shape[:3] + (out_w,),
                                                     pending=("cols", out_w))
                    return
        if left in self.consts and right in self.acts:
            source = self.acts[right]
            matrix = self.consts[left]
            if source.pending is not None and matrix.ndim == 2:
                height = source.shape[2]
                out_h = matrix.shape[0]
                if height is not None and matrix.shape[1] == height and np.allclose(
                        matrix, _adaptive_matrix(height, out_h, np.float64), rtol=1e-6, atol=1e-7):
                    out_w = source.pending[1]
                    spec = {"kind": "AdaptiveAvgPool2d", "output_size": (out_h, out_w),
                            "node": node.name}
                    self.acts[node.output[0]] = _Act(source.path + (spec,),
                                                     (*source.shape[:2], out_h, out_w))
                    return
        self.fail(node, "only x @ W with x 2-D and W a constant matrix (a Linear) or the "
                        "adaptive-average-pooling pair swiftcnn exports is supported")

    def _op_Add(self, node, attrs):
        a, b = node.input[0], node.input[1]
        if a in self.acts and b in self.acts:
            first, second = self.act(node, a), self.act(node, b)
            for base, branch in ((first, second), (second, first)):
                n = len(base.path)
                if len(branch.path) > n and all(x is y for x, y in zip(base.path, branch.path[:n])):
                    children = list(branch.path[n:])
                    spec = {"kind": "Residual", "children": children, "node": node.name}
                    self.acts[node.output[0]] = _Act(base.path + (spec,), base.shape)
                    return
            self.fail(node, "adds two tensors that are not x and f(x) of a residual block")
        if a in self.consts:
            a, b = b, a
        source = self.act(node, a)
        bias = np.asarray(self.const(node, b, "the addend"))
        previous = source.fresh
        if previous is None or previous.get("bias") is not None or self.uses.get(a, 0) != 1:
            self.fail(node, "adds a constant that is not the bias of the Conv/MatMul right before")
        channels = previous["weight"].shape[0]
        expected = ((channels,), (1, channels)) if previous["kind"] == "Linear" else \
            ((channels, 1, 1), (1, channels, 1, 1))
        if bias.shape not in expected:
            self.fail(node, f"a bias of shape {bias.shape} does not fit the layer before "
                            f"({previous['kind']} with {channels} outputs)")
        folded = dict(previous)
        folded["bias"] = bias.reshape(-1)
        self.replace_last(node, source, folded, source.shape)

    def _op_Flatten(self, node, attrs):
        source = self.act(node, node.input[0])
        if attrs.get("axis", 1) != 1:
            self.fail(node, f"only axis=1 is supported, got axis={attrs['axis']}")
        self._flatten(node, source)

    def _flatten(self, node, source):
        shape = source.shape
        if len(shape) < 2:
            self.fail(node, f"the input must have at least 2 dimensions, got {shape}")
        features = None if any(s is None for s in shape[1:]) else int(np.prod(shape[1:]))
        if len(shape) == 2:  # already (N, features): nothing to do
            self.acts[self.single_output(node)] = source
            return
        self.push(node, source, {"kind": "Flatten"}, (shape[0], features), fresh=False)

    def _op_Reshape(self, node, attrs):
        source = self.act(node, node.input[0])
        target = [int(v) for v in np.asarray(self.const(node, node.input[1], "the shape")).ravel()]
        shape = source.shape
        features = None if any(s is None for s in shape[1:]) else int(np.prod(shape[1:]))
        ok = len(target) == 2 and target[1] in (-1, features) and (
            target[0] in (-1, shape[0]) or (target[0] == 0 and not attrs.get("allowzero", 0)))
        if not ok or (target[0] == -1 and target[1] == -1):
            self.fail(node, f"only a reshape of (N, ...) to (N, features) is supported; "
                            f"target {target} for an input of shape {shape}")
        self._flatten(node, source)


def _layer_class(name):
    import swiftcnn
    return getattr(swiftcnn, name, None)


def _build(spec, dtype):
    """The swiftcnn layer for one spec (weights copied in, cast to ``dtype``)."""
    kind = spec["kind"]
    cls = _layer_class(kind)
    where = f" (from node {spec.get('node')!r})" if spec.get("node") else ""
    if kind == "AdaptiveAvgPool2d" and cls is None and spec.get("input_hw") and \
            None not in spec["input_hw"]:
        # A global average pool on a known input size is an AvgPool2d over the whole image.
        return _layer_class("AvgPool2d")(tuple(spec["input_hw"]))
    if cls is None:
        raise ValueError(f"swiftcnn.onnx.load: the graph needs a {kind} layer{where}, which this "
                         f"swiftcnn does not have")
    try:
        if kind == "Conv2d":
            kwargs = {"stride": spec["stride"], "padding": spec["padding"],
                      "dilation": spec["dilation"], "bias": spec["bias"] is not None,
                      "dtype": dtype, "seed": 0}
            if spec["groups"] != 1:
                kwargs["groups"] = spec["groups"]
            layer = cls(spec["in_channels"], spec["out_channels"], spec["kernel_size"], **kwargs)
        elif kind == "Linear":
            layer = cls(spec["in_features"], spec["out_features"], bias=spec["bias"] is not None,
                        dtype=dtype, seed=0)
        elif kind in ("MaxPool2d", "AvgPool2d"):
            layer = cls(spec["kernel_size"], stride=spec["stride"], padding=spec["padding"])
        elif kind in ("BatchNorm1d", "BatchNorm2d"):
            layer = cls(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"],
                        dtype=dtype)
            for name in ("running_mean", "running_var"):
                np.copyto(getattr(layer, name), np.asarray(spec[name]), casting="unsafe")
        elif kind == "LeakyReLU":
            layer = cls(spec["negative_slope"])
        elif kind == "Dropout":
            layer = cls(spec["p"])
        elif kind == "AdaptiveAvgPool2d":
            layer = cls(spec["output_size"])
        elif kind == "Residual":
            layer = cls(*[_build(child, dtype) for child in spec["children"]])
        else:
            layer = cls()
    except (TypeError, ValueError) as error:
        raise ValueError(f"swiftcnn.onnx.load: cannot build {kind}{where}: {error}") from None
    for name in ("weight", "bias"):
        value = spec.get(name)
        if value is not None and getattr(layer, name, None) is not None:
            target = _array(getattr(layer, name))
            if target.shape != np.shape(value):
                raise ValueError(f"swiftcnn.onnx.load: {kind}{where}: {name} of shape "
                                 f"{np.shape(value)} does not fit the layer's {target.shape}")
            np.copyto(target, np.asarray(value), casting="unsafe")
    return layer


def load(path, *, dtype="float32"):
    """Build a ``Sequential`` from the ONNX model at ``path``.

    The graph must be a chain of supported ops (``SUPPORTED_OPS``) from its one input to its one
    output, as ``torch.onnx.export`` writes for a ``torch.nn.Sequential`` of matching layers (either
    exporter, opsets 13-18): Conv (pads, strides, dilations, group, auto_pad), Relu, Sigmoid, Tanh,
    LeakyRelu, MaxPool, AveragePool, GlobalAveragePool or ReduceMean over (H, W),
    BatchNormalization (inference form), Gemm (any transB) or MatMul followed by Add (a Linear),
    Flatten or Reshape to (N, features), Dropout, Identity and Constant nodes, and Add closing a
    residual branch (``x + f(x)``, a ``Residual``). Weights may be initializers, Constant nodes or
    external data files beside the model. Any other op raises ``ValueError`` naming it and its node.

    Args:
        path: the ``.onnx`` file.
        dtype: "float32" (default) or "float64": the dtype of the model built.
    """
    owner = "swiftcnn.onnx.load"
    onnx_package = _import_onnx(owner)
    from ._convert import check_dtype
    from .layers import Sequential
    dtype = check_dtype(dtype, owner)
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{owner}: no such file: {path!r}")
    try:
        model = onnx_package.load(path, load_external_data=True)
    except Exception as error:
        raise ValueError(f"{owner}: {path!r} is not a readable ONNX model: {error}") from None
    specs = _Reader(onnx_package, model).run()
    return Sequential(*[_build(spec, dtype.name) for spec in specs])
