"""Data-parallel speed: P processes x T threads training the lecture's network (ReLU) on MNIST.

Not a test (no assertions); the figures quoted in the README come from it:

    mpiexec -n 2 python python/tests/mpi_bench.py --threads 1   # 2 processes x 1 thread
    python python/tests/mpi_bench.py --threads 2                # 1 process x 2 threads
    python python/tests/mpi_bench.py --threads 1                # 1 process x 1 thread

The global batch is the same in every configuration (``--global-batch``, default 64): each of
the P ranks takes ``global_batch / P`` samples per step. Rank 0 prints the images/s of the timed
epochs (after one warm-up epoch), and the share of the step spent in the gradient allreduce.
"""
import argparse
import time

import numpy as np

import swiftcnn as sc
from swiftcnn import distributed as dist


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--data", default=None, help="folder of MNIST IDX files (default: 5k subset)")
    args = parser.parse_args()
    sc.set_num_threads(args.threads)
    comm = dist.detect_mpi()
    size = 1 if comm is None else comm.Get_size()
    if args.global_batch % size:
        raise SystemExit(f"--global-batch {args.global_batch} is not divisible by {size} ranks")
    x, y = sc.datasets.load_mnist(args.data)
    sc.manual_seed(0)
    model = sc.Sequential(sc.Conv2d(1, 6, 5, padding=2), sc.ReLU(), sc.MaxPool2d(2),
                          sc.Conv2d(6, 16, 5), sc.ReLU(), sc.MaxPool2d(2), sc.Flatten(),
                          sc.Linear(400, 120), sc.ReLU(), sc.Linear(120, 84), sc.ReLU(),
                          sc.Linear(84, 10))
    optimizer = sc.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit = dict(batch_size=args.global_batch // size, optimizer=optimizer, progress=False, seed=1,
               distributed=comm if comm is not None else False)
    model.fit(x, y, epochs=1, **fit)  # warm-up
    started = time.perf_counter()
    history = model.fit(x, y, epochs=args.epochs, **fit)
    seconds = time.perf_counter() - started
    pure = None
    if comm is not None:  # the allreduce alone, ranks lined up by a barrier first
        parameters = model.parameters()
        times = []
        for _ in range(100):
            comm.Barrier()
            began = time.perf_counter()
            dist.allreduce_gradients(parameters, comm)
            times.append(time.perf_counter() - began)
        pure = (float(np.median(times)), float(np.mean(times)))
    if dist.is_root(comm):
        line = (f"{size} process(es) x {args.threads} thread(s), global batch {args.global_batch}: "
                f"{args.epochs * x.shape[0] / seconds:,.0f} images/s ({seconds:.2f} s for "
                f"{args.epochs} epochs of {x.shape[0]}), final loss {history['loss'][-1]:.4f}")
        stats = getattr(history, "distributed", None)
        if stats:
            share = stats["allreduce_seconds"] / stats["step_seconds"]
            line += (f"; allreduce {1e3 * stats['allreduce_seconds'] / stats['steps']:.3f} ms of "
                     f"{1e3 * stats['step_seconds'] / stats['steps']:.3f} ms per step "
                     f"({100 * share:.1f}%), {stats['gradient_bytes_per_step']:,} bytes reduced "
                     f"per step (waiting for the slower rank included); the allreduce alone "
                     f"after a barrier: median {1e3 * pure[0]:.3f} ms, mean {1e3 * pure[1]:.3f} ms")
        print(line, flush=True)


if __name__ == "__main__":
    main()
