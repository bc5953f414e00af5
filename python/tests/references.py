"""Plain-NumPy reference implementations used as test oracles.

Written from API.md's formulas (and PyTorch's documented semantics), independently of swiftcnn.
Everything computes in float64 unless the caller passes something else; nothing here imports
swiftcnn. The references are themselves checked against scipy/torch in test_functional.py /
test_torch_parity.py when those are importable.
"""
from __future__ import annotations

import math

import numpy as np


def pair(v):
    """An int or an (h, w) pair -> (h, w)."""
    if isinstance(v, (tuple, list)):
        assert len(v) == 2
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """y[n,k,i,j] = b[k] + sum_{c,r,s} x[n,c,i*sh-ph+r*dh, j*sw-pw+s*dw] * w[k,c,r,s] (zero padding)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    n, c, h, wd = x.shape
    k, c2, kh, kw = w.shape
    assert c == c2
    ho = conv_out_size(h, kh, sh, ph, dh)
    wo = conv_out_size(wd, kw, sw, pw, dw)
    assert ho >= 1 and wo >= 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, k, ho, wo))
    for r in range(kh):
        for s in range(kw):
            patch = xp[:, :, r * dh: r * dh + sh * (ho - 1) + 1: sh, s * dw: s * dw + sw * (wo - 1) + 1: sw]
            y += np.einsum("nchw,kc->nkhw", patch, w[:, :, r, s])
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_loops(x, w, b=None, stride=1, padding=0, dilation=1):
    """The formula of API.md with explicit loops (slow; tiny shapes only). Oracle for conv2d()."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    ho = conv_out_size(h, kh, sh, ph, dh)
    wo = conv_out_size(wd, kw, sw, pw, dw)
    y = np.zeros((n, k, ho, wo))
    for nn in range(n):
        for kk in range(k):
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0 if b is None else float(b[kk])
                    for cc in range(c):
                        for r in range(kh):
                            for s in range(kw):
                                hi = i * sh - ph + r * dh
                                wi = j * sw - pw + s * dw
                                if 0 <= hi < h and 0 <= wi < wd:
                                    acc += x[nn, cc, hi, wi] * w[kk, cc, r, s]
                    y[nn, kk, i, j] = acc
    return y


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1):
    """(grad_x, grad_w, grad_b) of conv2d, by the transposed scatter of the forward formula."""
    g = np.asarray(grad_out, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    ho, wo = g.shape[2], g.shape[3]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for r in range(kh):
        for s in range(kw):
            sl = (slice(None), slice(None),
                  slice(r * dh, r * dh + sh * (ho - 1) + 1, sh),
                  slice(s * dw, s * dw + sw * (wo - 1) + 1, sw))
            gw[:, :, r, s] = np.einsum("nkhw,nchw->kc", g, xp[sl])
            gxp[sl] += np.einsum("nkhw,kc->nchw", g, w[:, :, r, s])
    gx = gxp[:, :, ph: ph + h, pw: pw + wd]
    gb = g.sum(axis=(0, 2, 3))
    return np.ascontiguousarray(gx), gw, gb


# ---------------------------------------------------------------------------------------------
# pooling (PyTorch semantics, ceil_mode=False)
# ---------------------------------------------------------------------------------------------
def _pool_geometry(x, kernel_size, stride, padding):
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    ph, pw = pair(padding)
    n, c, h, w = x.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    return kh, kw, sh, sw, ph, pw, ho, wo


def max_pool2d(x, kernel_size, stride=None, padding=0):
    x = np.asarray(x, dtype=np.float64)
    kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel_size, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    y = np.empty(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw]
            y[:, :, i, j] = win.max(axis=(2, 3))
    return y


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0):
    """Each window's gradient goes to its first maximum in row-major order; overlaps accumulate."""
    g = np.asarray(grad_out, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel_size, stride, padding)
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    gxp = np.zeros_like(xp)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw].reshape(n, c, kh * kw)
            am = np.argmax(win, axis=2)  # first maximum, row-major
            r, s = np.divmod(am, kw)
            np.add.at(gxp, (nn, cc, i * sh + r, j * sw + s), g[:, :, i, j])
    return np.ascontiguousarray(gxp[:, :, ph: ph + h, pw: pw + w])


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """count_include_pad=True: the divisor is always kH*kW."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel_size, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.empty(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = xp[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw].sum(axis=(2, 3)) / (kh * kw)
    return y


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0):
    g = np.asarray(grad_out, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel_size, stride, padding)
    n, c, h, w = x.shape
    gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(ho):
        for j in range(wo):
            gxp[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw] += g[:, :, i, j][:, :, None, None] / (kh * kw)
    return np.ascontiguousarray(gxp[:, :, ph: ph + h, pw: pw + w])


# ---------------------------------------------------------------------------------------------
# dense ops, activations, losses
# ---------------------------------------------------------------------------------------------
def linear(x, w, b=None):
    y = np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64)
    return y


def linear_backward(grad_out, x, w):
    g = np.asarray(grad_out, dtype=np.float64)
    return g @ np.asarray(w, np.float64), g.T @ np.asarray(x, np.float64), g.sum(axis=0)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def relu(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, 0.0)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def one_hot(labels, k):
    labels = np.asarray(labels)
    t = np.zeros((labels.shape[0], k))
    t[np.arange(labels.shape[0]), labels] = 1.0
    return t


def softmax_cross_entropy(z, target):
    """(loss, grad) as PyTorch's F.cross_entropy(reduction='mean') with index or probability targets."""
    z = np.asarray(z, dtype=np.float64)
    n, k = z.shape
    target = np.asarray(target)
    if target.ndim == 1:
        t = one_hot(target, k)
    else:
        t = target.astype(np.float64)
    loss = float(-(t * log_softmax(z)).sum() / n)
    grad = (softmax(z) * t.sum(axis=1, keepdims=True) - t) / n
    return loss, grad


def bce_with_logits(z, t):
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    per = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return float(per.mean()), (sigmoid(z) - t) / z.size


# ---------------------------------------------------------------------------------------------
# scipy.signal.correlate2d / convolve2d, zero fill
# ---------------------------------------------------------------------------------------------
def _full_correlate(image, kernel):
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    h, w = image.shape
    kh, kw = kernel.shape
    p = np.pad(image, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    out = np.zeros((h + kh - 1, w + kw - 1))
    for r in range(kh):
        for s in range(kw):
            out += kernel[r, s] * p[r: r + h + kh - 1, s: s + w + kw - 1]
    return out


def correlate2d(image, kernel, mode="valid"):
    """out[i, j] = sum_{r,s} image[i + r - off_h, j + s - off_w] * kernel[r, s] (zeros outside).

    full: off = k - 1; valid: off = 0 (output H-kH+1); same: the centred (H, W) part of full,
    scipy's convention: for correlation it starts at index kH // 2 of the full result.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    h, w = image.shape
    kh, kw = kernel.shape
    full = _full_correlate(image, kernel)
    if mode == "full":
        return full
    if mode == "valid":
        assert kh <= h and kw <= w
        return full[kh - 1: h, kw - 1: w].copy()
    if mode == "same":
        # scipy: correlate2d(a, k, 'same') == convolve2d(a, k[::-1, ::-1], 'same'); convolve's 'same'
        # takes full[(kh-1)//2 : ..]; for the flipped kernel the correlation offset is kh//2.
        oh, ow = kh // 2, kw // 2
        return full[oh: oh + h, ow: ow + w].copy()
    raise ValueError(mode)


def convolve2d(image, kernel, mode="valid"):
    """True convolution: correlation with the kernel rotated by 180 degrees; scipy's 'same' centring."""
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    h, w = image.shape
    kh, kw = kernel.shape
    full = _full_correlate(image, kernel[::-1, ::-1])
    if mode == "full":
        return full
    if mode == "valid":
        assert kh <= h and kw <= w
        return full[kh - 1: h, kw - 1: w].copy()
    if mode == "same":
        oh, ow = (kh - 1) // 2, (kw - 1) // 2
        return full[oh: oh + h, ow: ow + w].copy()
    raise ValueError(mode)


# ---------------------------------------------------------------------------------------------
# optimizers: PyTorch's documented update rules (torch.optim.SGD / Adam, foreach=False semantics)
# ---------------------------------------------------------------------------------------------
class RefSGD:
    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.buf = [None] * len(self.params)

    def step(self, grads):
        for i, (p, g) in enumerate(zip(self.params, grads)):
            d = np.array(g, dtype=np.float64)
            if self.weight_decay != 0:
                d = d + self.weight_decay * p
            if self.momentum != 0:
                if self.buf[i] is None:
                    self.buf[i] = d.copy()
                else:
                    self.buf[i] = self.momentum * self.buf[i] + (1 - self.dampening) * d
                d = d + self.momentum * self.buf[i] if self.nesterov else self.buf[i]
            p -= self.lr * d


class RefAdam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.lr, (self.b1, self.b2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        bc1 = 1 - self.b1 ** self.t
        bc2 = 1 - self.b2 ** self.t
        for i, (p, g) in enumerate(zip(self.params, grads)):
            d = np.array(g, dtype=np.float64)
            if self.weight_decay != 0:
                d = d + self.weight_decay * p
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * d
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * d * d
            denom = np.sqrt(self.v[i]) / math.sqrt(bc2) + self.eps
            p -= (self.lr / bc1) * self.m[i] / denom


# ---------------------------------------------------------------------------------------------
# finite differences and comparisons
# ---------------------------------------------------------------------------------------------
def numeric_grad(f, x, eps=1e-6, indices=None):
    """Central finite differences of the scalar f() w.r.t. the float64 array x (perturbed in place).

    With `indices` (flat indices) only those elements are computed; the result is then a 1-D array
    of their partial derivatives. x is restored exactly afterwards.
    """
    assert x.dtype == np.float64
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x)
    idx = range(flat.size) if indices is None else indices
    out = np.zeros(flat.size if indices is None else len(indices))
    for o, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[o] = (fp - fm) / (2 * eps)
    return out.reshape(x.shape) if indices is None else out


def grad_rel_error(analytic, numeric):
    """max|a - n| / max|n| (the per-tensor criterion of the test plan)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    denom = np.max(np.abs(n)) if n.size else 0.0
    if denom == 0.0:
        return float(np.max(np.abs(a))) if a.size else 0.0
    return float(np.max(np.abs(a - n)) / denom)


def max_rel_diff(a, b):
    """max|a - b| / max(max|b|, tiny): a scale-aware relative difference between two arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_close(actual, expected, dtype, what="", rel32=1e-5, rel64=1e-12):
    """actual (of `dtype`) vs a float64 reference, with a tolerance relative to the reference's scale."""
    dtype = np.dtype(dtype)
    tol = rel32 if dtype == np.float32 else rel64
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    err = max_rel_diff(actual, expected)
    assert err <= tol, f"{what}: max|a-e|/max|e| = {err:.3g} > {tol:g} ({dtype})"


def distinct_values(rng, shape, spacing=1e-2):
    """Values with all pairwise gaps >= spacing and |v| >= spacing/2 (no max-pool ties, no ReLU kink)."""
    n = int(np.prod(shape))
    v = (rng.permutation(n) - n // 2 + 0.5) * spacing  # never exactly 0 (no ReLU kink)
    return v.reshape(shape).astype(np.float64)


def away_from_zero(rng, shape, margin=1e-2):
    """Standard-normal values with |v| >= margin (no ReLU kinks)."""
    v = rng.standard_normal(shape)
    return np.where(np.abs(v) < margin, np.copysign(margin, v) + v, v)
