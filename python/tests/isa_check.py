"""Numerics of whichever build of the Swift core this process runs, against float64 NumPy references.

Run as a script (it needs only NumPy and an installed swiftcnn, no pytest, so it also runs in a bare
venv next to a wheel):

    SWIFTCNN_ISA=haswell python python/tests/isa_check.py

It prints show_config() and one JSON line prefixed ``ISA_CHECK `` with the level that ran, the
worst relative error of every check, and whether all passed; the exit status is 0 only if all
passed. test_isa.py runs it once per level this CPU executes; scripts/build_wheel.sh runs it in a
fresh venv where `swift` is not on PATH.

The checks (errors are max|a - r| / max|r| against the float64 reference r):
- conv2d forward and conv2d_backward (grad_x, grad_weight, grad_bias), stride 1 with padding 1 and
  stride 2 without, shapes big enough for the packed SIMD kernels, in float64 (<= 1e-12) and float32
  (<= 1e-5); the references are written out as sums over sliding windows;
- linear forward and linear_backward, the same bounds;
- determinism: a small conv net trained twice for two epochs from the same seed gives bit-identical
  parameters, with one thread and with two, and a float32 conv2d repeated gives identical bits.
"""
import json
import sys

import numpy as np

F64_BOUND = 1e-12
F32_BOUND = 1e-5


def rel_err(actual, reference):
    actual = np.asarray(actual, dtype=np.float64)
    scale = float(np.max(np.abs(reference)))
    return float(np.max(np.abs(actual - reference))) / (scale if scale > 0 else 1.0)


def conv2d_reference(x, w, b, stride, padding):
    """y[n,k,h,v] = b[k] + sum_{c,i,j} x_pad[n, c, h*s + i, v*s + j] * w[k, c, i, j]."""
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,kcij->nkhw", win, w) + b[None, :, None, None]


def conv2d_backward_reference(g, x, w, stride, padding):
    """grad_w[k,c,i,j] = sum_{n,h,v} g[n,k,h,v] x_pad[n,c,h*s+i,v*s+j]; grad_b[k] = sum_{n,h,v} g;
    grad_x_pad[n,c,h*s+i,v*s+j] += sum_k g[n,k,h,v] w[k,c,i,j], then the padding cropped."""
    kh, kw = w.shape[2:]
    ho, wo = g.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    gw = np.einsum("nchwij,nkhw->kcij", win, g)
    gb = g.sum(axis=(0, 2, 3))
    gxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += np.einsum("nkhw,kc->nchw", g, w[:, :, i, j])
    gx = gxp[:, :, padding:padding + x.shape[2], padding:padding + x.shape[3]]
    return gx, gw, gb


def check_numerics(sc, errors):
    rng = np.random.default_rng(20261204)
    for name, (n, c, h, w_, k, ks, stride, padding) in {
        "conv_s1p1": (4, 8, 20, 20, 16, 3, 1, 1),
        "conv_lenet": (8, 6, 14, 14, 16, 5, 1, 0),
        "conv_s2": (3, 5, 17, 17, 12, 3, 2, 0),
    }.items():
        x = rng.standard_normal((n, c, h, w_))
        wt = rng.standard_normal((k, c, ks, ks))
        b = rng.standard_normal(k)
        y_ref = conv2d_reference(x, wt, b, stride, padding)
        g = rng.standard_normal(y_ref.shape)
        refs = conv2d_backward_reference(g, x, wt, stride, padding)
        for dtype, bound in ((np.float64, F64_BOUND), (np.float32, F32_BOUND)):
            cast = [a.astype(dtype) for a in (x, wt, b, g)]
            y = sc.conv2d(cast[0], cast[1], cast[2], stride=stride, padding=padding)
            grads = sc.conv2d_backward(cast[3], cast[0], cast[1], stride=stride, padding=padding)
            tag = np.dtype(dtype).name
            errors[f"{name}_forward_{tag}"] = (rel_err(y, y_ref), bound)
            for part, got, ref in zip(("grad_x", "grad_weight", "grad_bias"), grads, refs):
                errors[f"{name}_{part}_{tag}"] = (rel_err(got, ref), bound)
    x = rng.standard_normal((32, 400))
    wt = rng.standard_normal((120, 400))
    b = rng.standard_normal(120)
    g = rng.standard_normal((32, 120))
    refs = (g @ wt, g.T @ x, g.sum(axis=0))  # grad_x, grad_weight, grad_bias of y = x w^T + b
    for dtype, bound in ((np.float64, F64_BOUND), (np.float32, F32_BOUND)):
        cast = [a.astype(dtype) for a in (x, wt, b, g)]
        tag = np.dtype(dtype).name
        errors[f"linear_forward_{tag}"] = (rel_err(sc.linear(cast[0], cast[1], cast[2]), x @ wt.T + b), bound)
        for part, got, ref in zip(("grad_x", "grad_weight", "grad_bias"),
                                  sc.linear_backward(cast[3], cast[0], cast[1]), refs):
            errors[f"linear_{part}_{tag}"] = (rel_err(got, ref), bound)


def train_once(sc, threads):
    sc.set_num_threads(threads)
    sc.manual_seed(7)
    model = sc.Sequential(sc.Conv2d(1, 6, 5, padding=2), sc.ReLU(), sc.MaxPool2d(2),
                          sc.Conv2d(6, 16, 5), sc.ReLU(), sc.MaxPool2d(2), sc.Flatten(),
                          sc.Linear(400, 84), sc.ReLU(), sc.Linear(84, 10))
    rng = np.random.default_rng(3)
    x = rng.random((96, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=96)
    model.fit(x, y, epochs=2, batch_size=32, seed=11, progress=False,
              optimizer=sc.Adam(model.parameters(), lr=1e-3))
    return [np.array(v, copy=True) for v in model.state_dict().values()]


def check_determinism(sc, results):
    before = sc.get_num_threads()
    try:
        for threads in (1, 2):
            a, b = train_once(sc, threads), train_once(sc, threads)
            results[f"train_bitwise_{threads}_threads"] = all(
                x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b)) and len(a) == len(b) > 0
    finally:
        sc.set_num_threads(before)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    first = sc.conv2d(x, w, padding=1).tobytes()
    results["conv2d_repeat_bitwise"] = all(sc.conv2d(x, w, padding=1).tobytes() == first for _ in range(3))


def main():
    import swiftcnn as sc

    cfg = sc.show_config()
    errors, exact = {}, {}
    check_numerics(sc, errors)
    check_determinism(sc, exact)
    ok = all(err <= bound for err, bound in errors.values()) and all(exact.values())
    for name, (err, bound) in errors.items():
        if not err <= bound:
            print(f"FAILED {name}: relative error {err:.3g} > {bound:g}")
    for name, same in exact.items():
        if not same:
            print(f"FAILED {name}: results differ between identical runs")
    print("ISA_CHECK " + json.dumps({
        "isa": cfg["isa"], "reason": cfg["reason"], "carried": cfg["carried"],
        "errors": {name: err for name, (err, _) in errors.items()},
        "bounds": {name: bound for name, (_, bound) in errors.items()},
        "exact": exact, "ok": ok,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
