"""Run under ``mpiexec -n P`` by test_distributed.py: one distributed ``fit`` and its outcome.

    mpiexec -n 2 python mpi_fit_script.py MODE OUT.npz [--dtype float64] [--batch 16] ...

MODE:
  train      fit(distributed=True); rank 0 writes the final state dict, the history and every
             rank's parameters (gathered) to OUT.npz.
  fail       like train, but rank 1's optimizer raises at its 3rd step: the job must end (abort).
  interrupt  like train, but rank 1 gets SIGINT at its 3rd step: every rank must stop at the same
             batch with identical parameters; rank 0 writes OUT.npz.
  die        rank 1's process exits abruptly (os._exit) at its 3rd step: the job must end.
  mismatch   rank 1 passes fewer samples: every rank raises the same ValueError.
Ranks start from different initial weights on purpose (fit broadcasts rank 0's).
"""
import argparse
import os
import signal
import sys

import numpy as np

import swiftcnn as sc


class InverseDecay:
    """lr = 0.05 / (1 + epoch): a scheduler in fit's protocol (step() after every epoch)."""

    def __init__(self, optimizer):
        self.optimizer, self.epoch = optimizer, 0
        optimizer.lr = 0.05

    def step(self):
        self.epoch += 1
        self.optimizer.lr = 0.05 / (1 + self.epoch)


def shifter(shift):
    """fit's augment callable: random shifts of up to `shift` pixels (None for 0)."""
    if not shift:
        return None
    return lambda batch, rng: sc.training.random_shift(batch, rng, max_shift=shift)


def make_data(seed, count, dtype):
    """Four classes, each a fixed random 10x10 pattern plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((4, 1, 10, 10))
    y = rng.integers(0, 4, size=count).astype(np.int64)
    x = patterns[y] + 0.7 * rng.standard_normal((count, 1, 10, 10))
    return x.astype(dtype), y


def make_model(dtype, seed):
    sc.manual_seed(seed)
    return sc.Sequential(sc.Conv2d(1, 4, 3, padding=1, dtype=dtype), sc.ReLU(), sc.MaxPool2d(2),
                         sc.Conv2d(4, 6, 3, dtype=dtype), sc.Sigmoid(), sc.Flatten(),
                         sc.Linear(6 * 3 * 3, 16, dtype=dtype), sc.ReLU(),
                         sc.Linear(16, 4, dtype=dtype))


class Hooked:
    """Wraps an optimizer; calls ``hook(step)`` before each step (the test's fault injection)."""

    def __init__(self, inner, hook):
        self.inner, self.hook, self.steps = inner, hook, 0

    @property
    def lr(self):
        return self.inner.lr

    @lr.setter
    def lr(self, value):
        self.inner.lr = value

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.steps += 1
        self.hook(self.steps)
        self.inner.step()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("train", "fail", "interrupt", "die", "mismatch"))
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--count", type=int, default=203)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--shift", type=int, default=1)
    args = parser.parse_args()
    from mpi4py import MPI  # here, so that the tests can import this file's helpers without MPI
    sys.modules["tqdm"] = None  # progress as one printed line per epoch (fit's fallback)
    sc.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    x, y = make_data(0, args.count, args.dtype)
    if args.mode == "mismatch" and rank == 1:
        x, y = x[:-1], y[:-1]
    model = make_model(args.dtype, 100 + rank)  # differs per rank: fit must broadcast rank 0's
    optimizer = sc.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def hook(step):
        if rank == 1 and step == 3:
            if args.mode == "fail":
                raise RuntimeError("injected failure on rank 1")
            if args.mode == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
            if args.mode == "die":
                os._exit(3)

    if args.mode != "train":
        optimizer = Hooked(optimizer, hook)
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch, optimizer=optimizer,
                        seed=args.seed, augment=shifter(args.shift), progress=True,
                        validation_data=(x[:50], y[:50]), scheduler=InverseDecay(optimizer),
                        distributed=True)
    flat = np.concatenate([p.data.ravel() for p in model.parameters()])
    every = comm.gather(flat, root=0)
    if rank == 0:
        np.savez(args.out, every=np.stack(every), interrupted=history.interrupted,
                 **{"p:" + k: v for k, v in model.state_dict().items()},
                 **{"h:" + k: np.array(v) for k, v in history.history.items()},
                 allreduce_seconds=history.distributed["allreduce_seconds"],
                 steps=history.distributed["steps"])
        print(f"rank 0 done: {history}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
