#!/usr/bin/env python3
"""Per-layer times of the lecture's network, swiftcnn against PyTorch, to show where a training
step's time goes (the profile behind bench/RESULTS.md's figure 1).

    python bench/layers.py                 # sigmoid network, batch 256
    python bench/layers.py --act relu --batch 64
    python bench/layers.py --dtype float64  # both frameworks in float64 (run.py's figure 8)
    python bench/layers.py --net bnnet --batch 128   # run.py's figure 6, the Conv-BN-ReLU network

Each layer's forward and backward is timed alone on the activations the network produces
(swiftcnn: the layer objects' forward/backward; PyTorch: the same modules, backward through
torch.autograd.grad of the layer's output with respect to its input and parameters, the input
requiring grad except for the first layer, as in training). Medians of interleaved repeats, in
microseconds per batch. Run it with the malloc settings bench/run.py uses (it re-executes itself
with them, as run.py does).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the shared environment set-up)


def median_us(fn, repeats: int, min_time: float) -> float:
    fn()
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t >= min_time / 4:
            break
        n *= 2
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["lenet", "bnnet"], default="lenet",
                    help="lenet: the lecture's network (figure 1); bnnet: figure 6's Conv-BN-ReLU network")
    ap.add_argument("--act", choices=["sigmoid", "relu"], default="sigmoid")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    bench.ensure_environment(args.threads)

    import numpy as np
    import swiftcnn as sc
    sc.set_num_threads(args.threads)
    torch = None
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)

    if args.net == "bnnet":   # float32 only, as figure 6
        x = np.random.default_rng(0).random((args.batch, 3, 32, 32), dtype=np.float32)
        model = bench.swiftcnn_bn_net(sc)
        tmodel = bench.torch_bn_net(torch) if torch else None
        args.dtype, args.act = "float32", "bnnet"
    else:
        x, y = bench.synthetic_mnist(args.batch)
        x = x.astype(args.dtype)
        model = bench.swiftcnn_net(sc, args.act, args.dtype)
        tmodel = bench.torch_net(torch, args.act, args.dtype) if torch else None
    if tmodel is not None:
        tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()},
                               strict=args.net == "lenet")   # (bnnet: torch's num_batches_tracked)

    gc.disable()
    rows = []
    h = x
    th = torch.from_numpy(x) if torch else None
    for i, layer in enumerate(model.layers):
        out = layer.forward(h)
        g = np.random.default_rng(i).standard_normal(out.shape).astype(args.dtype)
        sf = median_us(lambda: layer.forward(h), args.repeats, 0.2)
        layer.forward(h)
        sb = median_us(lambda: layer.backward(g), args.repeats, 0.2)
        tf = tb = float("nan")
        if torch:
            tl = tmodel[i]
            tg = torch.from_numpy(g)
            with torch.inference_mode():
                tf = median_us(lambda: tl(th), args.repeats, 0.2)
            tin = th.detach().requires_grad_(i > 0)
            params = [p for p in tl.parameters()]

            def tback():
                o = tl(tin)
                wrt = ([tin] if i > 0 else []) + params
                if wrt:
                    torch.autograd.grad(o, wrt, tg)
            # forward is inside tback (autograd needs the graph); report backward = total - forward
            tb = median_us(tback, args.repeats, 0.2) - tf
            with torch.no_grad():
                th = tl(th)
        rows.append((f"{i} {type(layer).__name__}", sf, tf, sb, tb))
        h = out

    print(f"{'Conv-BN-ReLU network' if args.net == 'bnnet' else 'lecture network'} ({args.act}, {args.dtype}), batch {args.batch}, {args.threads} threads, "
          f"microseconds per batch (median of {args.repeats})")
    print(f"{'layer':<14}{'sc fwd':>10}{'torch fwd':>11}{'ratio':>7}{'sc bwd':>10}{'torch bwd':>11}{'ratio':>7}")
    tot = [0.0, 0.0, 0.0, 0.0]
    for name, sf, tf, sb, tb in rows:
        print(f"{name:<14}{sf:>10.1f}{tf:>11.1f}{tf / sf:>7.2f}{sb:>10.1f}{tb:>11.1f}{tb / sb:>7.2f}")
        for j, v in enumerate((sf, tf, sb, tb)):
            tot[j] += v
    print(f"{'total':<14}{tot[0]:>10.1f}{tot[1]:>11.1f}{tot[1] / tot[0]:>7.2f}"
          f"{tot[2]:>10.1f}{tot[3]:>11.1f}{tot[3] / tot[2]:>7.2f}")
    print("ratio = PyTorch time / swiftcnn time (above 1: swiftcnn faster). PyTorch backward is "
          "(forward+autograd.grad) - forward, first layer without its input gradient.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
