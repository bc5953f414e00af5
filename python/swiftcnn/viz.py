"""Pictures of a CNN, drawn as the lecture draws them (needs matplotlib: ``pip install swiftcnn[demo]``).

Every function returns a matplotlib ``Figure``. matplotlib is imported inside the functions, so
``import swiftcnn.viz`` works without it; calling a function without it raises an ``ImportError`` that
says what to install. With no display (and no backend chosen by the user or by Jupyter) the Agg
backend is selected, so the functions work on servers and in CI.

- ``plot_filters(layer)``: the learned filters of a ``Conv2d`` (or of the first ``Conv2d`` of a model).
- ``plot_feature_maps(model, x)``: what each layer outputs for one image.
- ``plot_history(history)``: loss and accuracy curves from ``fit``.
- ``plot_gradients(model, x, y)``: heat maps of dL/dz for the output of every layer (and dL/dx),
  computed layer by layer backward from ``softmax_cross_entropy``'s gradient.
- ``plot_kernels_demo(image)``: a digit convolved with the lecture's identity, blur and vertical-edge
  (Sobel) kernels.
- ``plot_misclassified(x, y_true, y_pred)``: a grid of misclassified digits.
- ``plot_confusion_matrix(y_true, y_pred)``: how often each true class was predicted as each class
  (``confusion_matrix`` computes it with NumPy alone).
- ``plot_per_class_accuracy(y_true, y_pred)``: each class's accuracy with its 95% Wilson interval.
- ``plot_batchnorm_statistics(model)``: per channel, every BatchNorm layer's running mean and
  standard deviation (what evaluation mode normalizes with) and its learned scale and shift.

Each takes an optional keyword ``fig=`` (a ``Figure`` or ``SubFigure``) to draw into; otherwise a new
pyplot figure is made (so notebooks show it). Close figures you no longer need
(``matplotlib.pyplot.close(fig)``).
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

__all__ = [
    "plot_filters",
    "plot_feature_maps",
    "plot_history",
    "plot_gradients",
    "plot_kernels_demo",
    "plot_misclassified",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "confusion_matrix",
    "wilson_interval",
    "LECTURE_KERNELS",
]

_INSTALL = "swiftcnn.viz needs matplotlib: pip install matplotlib (or pip install swiftcnn[demo])"

#: The lecture's 3x3 kernels (Jianbo Shi, "Convolutional Neural Networks", video 12.1).
LECTURE_KERNELS = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64),
    "blur": np.array([[0.107, 0.113, 0.107], [0.113, 0.119, 0.113], [0.107, 0.113, 0.107]], dtype=np.float64),
    "vertical edges (Sobel)": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
}


# ---------------------------------------------------------------------------------------------
# matplotlib plumbing
# ---------------------------------------------------------------------------------------------
def _headless() -> bool:
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(_INSTALL) from exc
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") and _headless():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(fig, figsize):
    """Return (root_figure_or_subfigure, created)."""
    plt = _pyplot()
    if fig is not None:
        return fig, False
    return plt.figure(figsize=figsize), True


def _root(fig):
    # a SubFigure's .figure is the root Figure; a Figure's .figure is itself (matplotlib >= 3.4)
    root = getattr(fig, "figure", None)
    return root if root is not None else fig


# ---------------------------------------------------------------------------------------------
# array helpers
# ---------------------------------------------------------------------------------------------
def _mosaic(maps: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile (C, H, W) maps into one 2-D image, NaN between tiles (drawn as background)."""
    c, h, w = maps.shape
    ncols = max(1, min(ncols, c))
    nrows = -(-c // ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan, dtype=np.float64)
    for k in range(c):
        r, q = divmod(k, ncols)
        out[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = maps[k]
    return out


def _model_dtype(model):
    try:
        params = model.parameters()
    except Exception:
        params = []
    for p in params:
        return np.dtype(p.data.dtype)
    return np.dtype(np.float32)


def _as_batch(x, dtype) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(f"x must be an image (H, W), (C, H, W) or a batch (N, C, H, W); got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image; got a batch of 0")
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise TypeError(f"x must hold numbers, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


def _layers(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"model must be a swiftcnn Sequential (with .layers), got {type(model).__name__}")
    return list(layers)


def _pair_str(v) -> str:
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"{v[0]}x{v[1]}" if v[0] != v[1] else f"{v[0]}"
    return str(v)


def _short(layer) -> str:
    name = type(layer).__name__
    if hasattr(layer, "in_channels") and hasattr(layer, "out_channels"):
        ks = getattr(layer, "kernel_size", "?")
        ks = f"{ks[0]}x{ks[1]}" if isinstance(ks, (tuple, list)) else f"{ks}x{ks}"
        extra = ""
        for attr, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
            v = getattr(layer, attr, default)
            if _pair_str(v) != str(default):
                extra += f", {attr} {_pair_str(v)}"
        return f"{name} {layer.in_channels}->{layer.out_channels}, {ks}{extra}"
    if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
        return f"{name} {layer.in_features}->{layer.out_features}"
    if hasattr(layer, "kernel_size"):
        return f"{name} {_pair_str(layer.kernel_size)}"
    return name


def _layer_label(i, layer) -> str:
    return f"[{i}] {_short(layer)}"


def _forward_layers(model, x):
    """Run x through model.layers one by one; return the list of every layer's output."""
    outs = []
    h = x
    for layer in _layers(model):
        h = layer.forward(h)
        outs.append(h)
    return outs


_VEC_CELL = 4      # a vector element is drawn as a 4x4 block...
_VEC_WRAP = 40     # ...40 to a row, so vectors sit at the same scale as the feature maps


def _row_image(a: np.ndarray, ncols: int = 16) -> np.ndarray:
    """One sample's layer output or gradient as a 2-D image (NaN = background):
    (C, H, W) -> the channels side by side (16 to a row); (F,) -> wrapped rows of blocks."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        return _mosaic(a, ncols=ncols)
    v = a.reshape(-1)
    n = v.size
    cols = min(n, _VEC_WRAP)
    rows = -(-n // cols)
    grid = np.full(rows * cols, np.nan)
    grid[:n] = v
    return np.kron(grid.reshape(rows, cols), np.ones((_VEC_CELL, _VEC_CELL)))


def _value_range(img: np.ndarray, symmetric: bool):
    finite = img[np.isfinite(img)]
    if symmetric:
        m = float(np.max(np.abs(finite))) if finite.size else 1.0
        m = m if m > 0 else 1.0
        return -m, m
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _rows_figure(fig, rows, *, extra_height=0.0, title=""):
    """Draw rows of (label, 2-D image, cmap, symmetric): a text column on the left and every image at
    one common scale (left-aligned), so sizes compare across layers. Returns (fig, axes, extra_axes)."""
    import matplotlib

    wmax = max(img.shape[1] for _, img, _, _ in rows)
    padded = []
    for label, img, cmap, symmetric in rows:
        # pad every image with background to the full width and at least 16 px height, so that all
        # rows are drawn at exactly the same scale
        h, w = img.shape
        hh = max(h, 16)
        top = (hh - h) // 2
        full = np.full((hh, wmax), np.nan)
        full[top: top + h, :w] = img
        padded.append((label, full, cmap, symmetric, img))
    heights = [full.shape[0] for _, full, _, _, _ in padded]
    unit = 6.8 / wmax  # inches per pixel of the images
    height_in = unit * sum(heights) + extra_height + 1.0
    fig, _ = _figure(fig, figsize=(9.5, min(height_in, 40)))
    ratios = heights + ([extra_height / unit] if extra_height else [])
    gs = fig.add_gridspec(len(ratios), 2, width_ratios=[2.3, 6.8], height_ratios=ratios,
                          hspace=0.25, wspace=0.02, left=0.01, right=0.99, top=1 - 0.8 / height_in,
                          bottom=0.3 / height_in)
    axes = []
    for r, (label, full, cmap, symmetric, img) in enumerate(padded):
        tax = fig.add_subplot(gs[r, 0])
        tax.axis("off")
        tax.text(0.98, 0.5, label, ha="right", va="center", fontsize=7.5, transform=tax.transAxes)
        ax = fig.add_subplot(gs[r, 1])
        cm = matplotlib.colormaps[cmap]
        cm = cm.with_extremes(bad="white") if hasattr(cm, "with_extremes") else cm
        vmin, vmax = _value_range(img, symmetric)
        ax.imshow(np.ma.masked_invalid(full), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest",
                  aspect="equal")
        ax.set_anchor("W")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        axes.append(ax)
    extra = fig.add_subplot(gs[len(rows), 1]) if extra_height else None
    if title:
        fig.suptitle(title, fontsize=9.5)
    return fig, axes, extra


def _shape_str(a) -> str:
    return "x".join(str(s) for s in np.shape(a))


# ---------------------------------------------------------------------------------------------
# public plots
# ---------------------------------------------------------------------------------------------
def plot_filters(layer, *, fig=None, cmap="RdBu_r", title=None):
    """Show the filters of a ``Conv2d`` (OIHW weight): red positive, blue negative, one shared scale.

    ``layer`` may be a ``Conv2d``, a model (its first ``Conv2d`` is shown), a ``Parameter`` or a 4-D
    array. A first layer (one input channel) is drawn one panel per filter; deeper layers as a grid
    with a row per output channel and a column per input channel.
    """
    w = _filter_weights(layer)
    o, i, kh, kw = w.shape
    ncols = max(1, min(o, 8, int(math.ceil(math.sqrt(1.5 * o)))))
    nrows = -(-o // ncols)
    fig, _ = _figure(fig, figsize=(1.6 * ncols + 1.2, 1.7 * nrows + 0.8) if i == 1
                     else (min(12, 0.5 * i + 2), min(12, 0.45 * o + 1.2)))
    m = float(np.max(np.abs(w))) or 1.0
    if i == 1:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        im = None
        for k in range(nrows * ncols):
            ax = axes[k // ncols][k % ncols]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < o:
                im = ax.imshow(w[k, 0], cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
                ax.set_title(f"filter {k}", fontsize=9)
            else:
                ax.axis("off")
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    else:
        ax = fig.subplots()
        img = _mosaic(w.reshape(o * i, kh, kw), ncols=i)
        im = ax.imshow(img, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
        ax.set_xticks([(kw + 1) * c + (kw - 1) / 2 for c in range(i)])
        ax.set_xticklabels([str(c) for c in range(i)], fontsize=8)
        ax.set_yticks([(kh + 1) * r + (kh - 1) / 2 for r in range(o)])
        ax.set_yticklabels([str(r) for r in range(o)], fontsize=8)
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel (filter)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title or f"Conv2d filters {o}x{i}x{kh}x{kw} (max |w| = {m:.3g})")
    return _root(fig)


def _filter_weights(layer) -> np.ndarray:
    if isinstance(layer, np.ndarray):
        w = layer
    else:
        w = None
        if hasattr(layer, "layers"):
            for sub in layer.layers:
                cand = getattr(getattr(sub, "weight", None), "data", None)
                if cand is not None and np.ndim(cand) == 4:
                    w = cand
                    break
            if w is None:
                raise ValueError("plot_filters: the model has no Conv2d layer")
        elif hasattr(layer, "weight") and layer.weight is not None:
            w = layer.weight.data
        elif hasattr(layer, "data"):
            w = layer.data
        else:
            raise TypeError(f"plot_filters: expected a Conv2d, a model, a Parameter or an array; "
                            f"got {type(layer).__name__}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot_filters: conv weights must be 4-D (out, in, kH, kW); got shape {w.shape}")
    return w


def _in_eval_mode(plot):
    """Run a plot of a model's forward (and backward) in evaluation mode, restoring every layer's
    mode after: a picture of one image must not update BatchNorm's running statistics or draw
    Dropout masks (and BatchNorm cannot normalize one sample with batch statistics)."""
    import functools

    @functools.wraps(plot)
    def wrapper(model, *args, **kwargs):
        from .layers import Module, _modes
        if not isinstance(model, Module):
            return plot(model, *args, **kwargs)
        with _modes(model, False):
            return plot(model, *args, **kwargs)
    return wrapper


@_in_eval_mode
def plot_feature_maps(model, x, *, index=0, fig=None, cmap="viridis"):
    """Run one image through ``model.layers`` one layer at a time and show every layer's output.

    ``x`` is an image (H, W), (C, H, W) or a batch (``index`` picks the image). Convolution, activation
    and pooling outputs are drawn as one tile per channel; flattened and fully-connected outputs as a
    strip; the last row shows the softmax probabilities of the logits.

    This runs its own forward pass through the layers: a ``backward`` called afterwards refers to it.
    """
    from . import functional as F

    xb = _as_batch(x, _model_dtype(model))
    if not 0 <= index < xb.shape[0]:
        raise ValueError(f"plot_feature_maps: index must be in [0, {xb.shape[0]}), got {index}")
    xb = xb[index: index + 1]
    outs = _forward_layers(model, xb)
    layers = _layers(model)
    probs = F.softmax(np.ascontiguousarray(outs[-1].reshape(1, -1))) if outs and outs[-1].ndim == 2 else None

    rows = [(f"input x\n{_shape_str(xb[0])}", _row_image(xb[0]), "gray", False)]
    for i, (layer, o) in enumerate(zip(layers, outs)):
        a = o[0]
        rows.append((f"{_layer_label(i, layer)}\n{_shape_str(a)}  [{float(a.min()):.2g}, {float(a.max()):.2g}]",
                     _row_image(a), cmap, False))
    fig, _, bar_ax = _rows_figure(fig, rows, extra_height=1.6 if probs is not None else 0.0,
                                  title="Feature maps, layer by layer (forward pass); each row on its own colour scale")
    if probs is not None:
        p = probs[0]
        k = int(np.argmax(p))
        bar_ax.bar(np.arange(p.size), p, color=["C3" if j == k else "C0" for j in range(p.size)])
        bar_ax.set_xticks(np.arange(p.size))
        bar_ax.set_ylim(0, 1)
        bar_ax.set_title(f"softmax(logits): predicted class {k} (p = {float(p[k]):.3f})", fontsize=8)
    return _root(fig)


def _batchnorm_layers(model):
    """(state-dict prefix, layer) of every BatchNorm1d/BatchNorm2d in ``model``, depth first."""
    found = []

    def visit(module, prefix):
        if type(module).__name__ in ("BatchNorm1d", "BatchNorm2d"):
            found.append((prefix.rstrip("."), module))
        for index, child in enumerate(module._children()):
            visit(child, f"{prefix}{index}.")

    visit(model, "")
    return found


def plot_batchnorm_statistics(model, *, fig=None):
    """Per channel, for every BatchNorm layer of ``model`` (one row each): the running mean with the
    running standard deviation sqrt(running_var + eps) as error bars (what evaluation mode
    normalizes with), and the learned scale (weight) and shift (bias) when the layer is affine.

    A channel whose running std is near 0 amplifies noise; one whose scale went to ~0 is switched off.
    """
    layers = _batchnorm_layers(model)
    if not layers:
        raise ValueError("plot_batchnorm_statistics: the model has no BatchNorm1d/BatchNorm2d layer")
    fig, _ = _figure(fig, figsize=(10, 2.6 * len(layers) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(layers), 2, squeeze=False))
    for row, (name, bn) in enumerate(layers):
        ax_stats, ax_affine = axes[row]
        channels = np.arange(bn.num_features)
        if bn.running_mean is not None:
            std = np.sqrt(np.asarray(bn.running_var, dtype=np.float64) + bn.eps)
            ax_stats.errorbar(channels, np.asarray(bn.running_mean, dtype=np.float64), yerr=std, fmt="o", ms=3,
                              capsize=2, label="running mean ± std")
            ax_stats.set_title(f"{name or type(bn).__name__}: running statistics "
                               f"({int(bn.num_batches_tracked)} batches)", fontsize=9)
            ax_stats.legend(fontsize=8)
        else:
            ax_stats.text(0.5, 0.5, "track_running_stats=False: batch statistics in both modes",
                          ha="center", va="center", transform=ax_stats.transAxes, fontsize=8)
        if bn.affine:
            width = 0.4
            ax_affine.bar(channels - width / 2, np.asarray(bn.weight.data, dtype=np.float64), width, label="weight (scale)")
            ax_affine.bar(channels + width / 2, np.asarray(bn.bias.data, dtype=np.float64), width, label="bias (shift)")
            ax_affine.legend(fontsize=8)
            ax_affine.set_title("learned affine transform", fontsize=9)
        else:
            ax_affine.text(0.5, 0.5, "affine=False", ha="center", va="center", transform=ax_affine.transAxes)
        for ax in (ax_stats, ax_affine):
            ax.set_xlabel("channel")
            ax.grid(True, alpha=0.3)
    fig.suptitle("BatchNorm statistics per channel")
    return _root(fig)


def plot_history(history, *, fig=None):
    """Loss and accuracy per epoch from ``fit`` (a ``History`` or its ``.history`` dict)."""
    h = getattr(history, "history", history)
    if not isinstance(h, dict):
        raise TypeError(f"plot_history: expected a History or a dict of lists, got {type(history).__name__}")
    fig, _ = _figure(fig, figsize=(10, 3.8))
    from matplotlib.ticker import MaxNLocator

    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, keys, ylabel in ((ax_loss, ("loss", "val_loss"), "loss (cross-entropy)"),
                             (ax_acc, ("accuracy", "val_accuracy"), "accuracy")):
        drawn = False
        for key, style in zip(keys, ("o-", "s--")):
            vals = h.get(key)
            if vals is None or len(vals) == 0:
                continue
            vals = np.asarray(vals, dtype=np.float64)
            ax.plot(np.arange(1, vals.size + 1), vals, style, ms=3,
                    label=("train" if not key.startswith("val_") else "held-out") + f" {keys[0]}")
            drawn = True
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {keys[0]} recorded", ha="center", va="center", transform=ax.transAxes)
    accs = h.get("val_accuracy") or h.get("accuracy")
    if accs:
        ax_acc.set_title(f"final: {100 * float(accs[-1]):.2f}%", fontsize=9)
    fig.suptitle("Training history")
    return _root(fig)


@_in_eval_mode
def plot_gradients(model, x, y, *, index=0, fig=None, cmap="RdBu_r"):
    """Heat maps of dL/dz for every layer's output z (and dL/dx), as the lecture draws them.

    The forward pass runs through ``model.layers`` one layer at a time; the loss is
    ``softmax_cross_entropy(logits, y)`` (mean over the batch ``x``); its gradient with respect to the
    logits is passed back through the layers one at a time with ``layer.backward``. Image ``index`` of
    the batch is drawn (red positive, blue negative, each row on its own symmetric scale). The model's
    parameter gradients (``.grad``) are restored afterwards, so a training loop is not disturbed (the
    layers do keep this call's inputs as their last forward).
    """
    from . import functional as F

    xb = _as_batch(x, _model_dtype(model))
    yb = np.asarray(y)
    if yb.ndim == 0:
        yb = yb.reshape(1)
    if yb.dtype.kind not in "iu":
        raise TypeError(f"plot_gradients: y must hold integer class labels, got dtype {yb.dtype}")
    if yb.shape != (xb.shape[0],):
        raise ValueError(f"plot_gradients: y must have shape ({xb.shape[0]},) to match x, got {yb.shape}")
    if not 0 <= index < xb.shape[0]:
        raise ValueError(f"plot_gradients: index must be in [0, {xb.shape[0]}), got {index}")
    layers = _layers(model)
    params = model.parameters()
    saved = [p.grad.copy() for p in params]
    try:
        outs = _forward_layers(model, xb)
        loss, g = F.softmax_cross_entropy(outs[-1], yb.astype(np.int64))
        grads = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            grads[i] = g
            g = layers[i].backward(g)
        grad_x = g
    finally:
        for p, s in zip(params, saved):
            p.grad[...] = s
    probs = F.softmax(np.ascontiguousarray(outs[-1]))[index]

    rows = [(f"input x  {_shape_str(xb[index])}", _row_image(xb[index]), "gray", False)]
    for i, (layer, gi) in enumerate(zip(layers, grads)):
        a = gi[index]
        rows.append((f"dL/dz, z = output of\n{_layer_label(i, layer)}\n{_shape_str(a)}  max|g| {float(np.max(np.abs(a))):.1e}",
                     _row_image(a), cmap, True))
    gx = grad_x[index]
    rows.append((f"dL/dx (input image)\n{_shape_str(gx)}  max|g| {float(np.max(np.abs(gx))):.1e}",
                 _row_image(gx), cmap, True))
    fig, _, _ = _rows_figure(
        fig, rows,
        title=(f"Backward pass, layer by layer (read bottom-up): label {int(yb[index])}, predicted "
               f"{int(np.argmax(probs))} (p = {float(probs.max()):.3f}), batch loss {loss:.4f}\n"
               f"last layer: dL/dz = (softmax(z) - onehot(y)) / {xb.shape[0]} (batch size); "
               "red > 0, blue < 0, each row on its own scale"))
    return _root(fig)


def plot_kernels_demo(image, *, fig=None):
    """A digit convolved with the lecture's identity, blur and vertical-edge (Sobel) kernels.

    Top row: the image and ``convolve2d(image, g, "same")`` for each kernel g (true convolution, the
    lecture's h = f (x) g); bottom row: the kernels with their values.
    """
    from . import functional as F

    img = np.asarray(image)
    while img.ndim > 2 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"plot_kernels_demo: image must be one 2-D image (H, W) (or (1, H, W), "
                         f"(1, 1, H, W)); got shape {np.shape(image)}")
    img = np.ascontiguousarray(img, dtype=np.float64)
    fig, _ = _figure(fig, figsize=(11, 5.6))
    axes = fig.subplots(2, 1 + len(LECTURE_KERNELS), squeeze=False,
                        gridspec_kw={"height_ratios": [1.0, 0.75]})
    axes[0][0].imshow(img, cmap="gray", interpolation="nearest")
    axes[0][0].set_title("f: the digit", fontsize=9)
    axes[1][0].axis("off")
    axes[1][0].text(0.5, 0.5, "kernels g\nh = f (x) g\n(convolve2d, 'same')", ha="center", va="center",
                    fontsize=9, transform=axes[1][0].transAxes)
    for j, (name, k) in enumerate(LECTURE_KERNELS.items(), start=1):
        out = F.convolve2d(img, k, mode="same")
        symmetric = bool(np.any(k < 0))
        m = float(np.max(np.abs(out))) or 1.0
        axes[0][j].imshow(out, cmap="RdBu_r" if symmetric else "gray",
                          vmin=-m if symmetric else None, vmax=m if symmetric else None, interpolation="nearest")
        axes[0][j].set_title(f"f (x) g: {name}", fontsize=9)
        kax = axes[1][j]
        km = float(np.max(np.abs(k))) or 1.0
        kax.imshow(k, cmap="RdBu_r", vmin=-km, vmax=km, interpolation="nearest")
        for (r, c), v in np.ndenumerate(k):
            kax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=8,
                     color="white" if abs(v) > 0.6 * km else "black")
        kax.set_title(f"g: {name}", fontsize=9)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Convolution with hand-made kernels (the lecture's identity, blur and Sobel)")
    return _root(fig)


def plot_misclassified(x, y_true, y_pred, *, max_images=40, ncols=10, fig=None):
    """A grid of the digits whose prediction is wrong, titled "true -> predicted"."""
    x = np.asarray(x)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape or x.shape[0] != y_true.shape[0]:
        raise ValueError(f"plot_misclassified: x {x.shape}, y_true {y_true.shape} and y_pred {y_pred.shape} "
                         "must have the same length")
    wrong = np.flatnonzero(y_true != y_pred)
    # spread the examples over all the mistakes (test sets are often sorted by label)
    shown = wrong[np.unique(np.linspace(0, wrong.size - 1, max_images).astype(int))] if wrong.size > max_images else wrong
    n = max(1, shown.size)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, _ = _figure(fig, figsize=(1.1 * ncols + 0.5, 1.25 * nrows + 0.8))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < shown.size:
            i = shown[k]
            img = x[i].reshape(x.shape[-2], x.shape[-1]) if x.ndim >= 3 else x[i]
            ax.imshow(img, cmap="gray", interpolation="nearest")
            ax.set_title(f"{int(y_true[i])} -> {int(y_pred[i])}", fontsize=8, color="C3")
        else:
            ax.axis("off")
    if wrong.size == 0:
        axes[0][0].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0][0].transAxes)
    more = f", {shown.size} shown" if wrong.size > shown.size else ""
    fig.suptitle(f"Misclassified: {wrong.size} of {y_true.size} (true -> predicted{more})")
    return _root(fig)


def wilson_interval(correct, total, *, z=1.959963984540054):
    """The Wilson score interval ``(low, high)`` for a success fraction ``correct / total``
    (default: 95%, z = the normal distribution's 97.5% quantile). Unlike the normal approximation
    ``p +- z sqrt(p (1 - p) / n)`` it stays inside [0, 1] and is not empty at p = 0 or 1:

        centre = (p + z^2 / 2n) / (1 + z^2 / n),
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).

    ``total`` = 0 gives ``(nan, nan)``.
    """
    n = float(total)
    if n <= 0:
        return (math.nan, math.nan)
    p = float(correct) / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1.0 - p) / n + z2 / (4.0 * n * n), 0.0))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _labels_pair(owner, y_true, y_pred, num_classes):
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{owner}: y_true {y_true.shape} and y_pred {y_pred.shape} must have the same length")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.dtype.kind not in "iu":
            raise TypeError(f"{owner}: {name} must hold integer class labels, got dtype {y.dtype}")
        if y.size and y.min() < 0:
            raise ValueError(f"{owner}: {name} holds the negative label {int(y.min())}")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    elif y_true.size and max(int(y_true.max()), int(y_pred.max())) >= num_classes:
        raise ValueError(f"{owner}: labels must be < num_classes={num_classes}, got "
                         f"{max(int(y_true.max()), int(y_pred.max()))}")
    return y_true.astype(np.int64), y_pred.astype(np.int64), int(num_classes)


def confusion_matrix(y_true, y_pred, num_classes=None):
    """``m[i, j]`` = how many samples of true class i were predicted as j (int64 (K, K));
    K = ``num_classes`` or 1 + the largest label seen."""
    y_true, y_pred, k = _labels_pair("confusion_matrix", y_true, y_pred, num_classes)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _class_names(class_names, k, owner):
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"{owner}: class_names has {len(names)} names for {k} classes")
    return names


def plot_confusion_matrix(y_true, y_pred, *, num_classes=None, class_names=None, fig=None):
    """The confusion matrix as a heat map: row = true class, column = predicted class, each cell's
    count written in it; colours are the row's fraction on a log scale so that rare confusions show."""
    y_true, y_pred, k = _labels_pair("plot_confusion_matrix", y_true, y_pred, num_classes)
    names = _class_names(class_names, k, "plot_confusion_matrix")
    m = confusion_matrix(y_true, y_pred, k)
    fig, _ = _figure(fig, figsize=(0.5 * k + 2.5, 0.5 * k + 2.0))
    from matplotlib.colors import LogNorm

    ax = fig.subplots(1, 1)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.where(rows > 0, m / np.maximum(rows, 1), 0.0)
    shown = np.where(m > 0, frac, np.nan)  # empty cells stay blank
    floor = 1.0 / max(2, int(rows.max(initial=1)))
    ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=floor, vmax=1.0), interpolation="nearest")
    small = 7 if k <= 12 else 5
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=small,
                    color="white" if frac[i, j] > 0.5 else ("black" if i == j else "C3"))
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if
                       max(map(len, names)) > 2 else "center", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(m.sum())
    right = int(np.trace(m))
    fig.suptitle(f"Confusion matrix: {right} of {total} right, {total - right} wrong")
    return _root(fig)


def plot_per_class_accuracy(y_true, y_pred, *, num_classes=None, class_names=None, fig=None):
    """Each class's accuracy (recall) as a bar with its 95% Wilson interval, and the overall
    accuracy as a line."""
    y_true, y_pred, k = _labels_pair("plot_per_class_accuracy", y_true, y_pred, num_classes)
    names = _class_names(class_names, k, "plot_per_class_accuracy")
    m = confusion_matrix(y_true, y_pred, k)
    support = m.sum(axis=1)
    right = np.diag(m)
    acc = np.where(support > 0, right / np.maximum(support, 1), np.nan)
    bounds = np.array([wilson_interval(r, n) for r, n in zip(right, support)]).reshape(k, 2)
    fig, _ = _figure(fig, figsize=(0.55 * k + 2.5, 3.5))
    ax = fig.subplots(1, 1)
    xs = np.arange(k)
    lower = np.nan_to_num(acc - bounds[:, 0])
    upper = np.nan_to_num(bounds[:, 1] - acc)
    ax.bar(xs, 100 * np.nan_to_num(acc), color="C0", yerr=100 * np.vstack([lower, upper]),
           capsize=3, ecolor="0.3")
    overall = float(right.sum()) / max(1, int(support.sum()))
    ax.axhline(100 * overall, color="C3", lw=1, ls="--", label=f"overall {100 * overall:.2f}%")
    for x_, a_ in zip(xs, acc):
        if np.isfinite(a_):
            ax.text(x_, 100 * a_, f"{100 * a_:.1f}", ha="center", va="bottom", fontsize=7)
    finite = acc[np.isfinite(acc)]
    low = 100 * float(min(finite.min(), bounds[:, 0][np.isfinite(acc)].min())) if finite.size else 0.0
    ax.set_ylim(max(0.0, min(low - 1.0, 100 * overall - 1.0)), 100.5)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 2 else 0,
                       ha="right" if max(map(len, names)) > 2 else "center", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Per-class accuracy (bars: 95% Wilson intervals)")
    return _root(fig)
