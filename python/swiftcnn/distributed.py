"""Data-parallel training over MPI (``mpi4py``): ``fit(..., distributed=True)``.

Launch P processes with ``mpiexec -n P python script.py`` (or ``python -m swiftcnn train``); every
process holds the same data and calls ``fit`` with the same arguments. Then, as API.md fixes it:

* every process starts from rank 0's parameters (and BatchNorm buffers): they are broadcast first;
* every process draws the same shuffled order (the seed is rank 0's) and takes its contiguous slice
  of each global batch of ``P * batch_size`` samples of that order (the last, partial global batch
  is split as evenly as possible);
* after the local backward, the gradients are summed with an in-place ``Allreduce`` on the
  parameters' ``.grad`` arrays themselves (zero-copy views of the Swift core's memory, so nothing is
  staged), each rank having scaled its loss gradient by ``n_local / n_global`` first: the sum is the
  gradient of the mean loss over the global batch, exactly what one process computes on it;
* then every rank applies the same optimizer step, so the replicas stay identical;
* BatchNorm running statistics are broadcast from rank 0 before every forward (the default of
  PyTorch's DistributedDataParallel);
* only rank 0 prints and evaluates the validation data (its figures are broadcast, so every rank
  returns the same History); files are for the caller to write on rank 0 only (``is_root``);
* a rank that raises (anything but the errors every rank raises together, such as
  ``FloatingPointError`` for a non-finite global loss) prints its error and calls ``comm.Abort``,
  which ends the whole job instead of leaving the others waiting in a collective forever;
* Ctrl-C (SIGINT) on any rank stops every rank between the same two batches (a flag travels with
  each batch's loss figures), leaving identical, consistent models.

For the same seed, P processes with ``batch_size=b`` follow one process with ``batch_size=P*b`` to
float rounding (the gradient sums are only grouped differently).

Per step each rank sends and receives the gradients once: ``parameters x itemsize`` bytes (the
lecture's network: 61,706 float32 values, 247 kB), plus 32 bytes of loss figures.
"""
import contextlib
import math
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np

__all__ = ["detect_mpi", "get_comm", "is_root", "broadcast_parameters", "allreduce_gradients",
           "fit_distributed", "abort_on_error", "LAUNCHER_ENV_VARS"]

#: Environment variables that MPI launchers set in the processes they start: MPICH/Hydra and Intel
#: MPI (PMI_RANK, PMI_SIZE), Open MPI (OMPI_COMM_WORLD_*), Slurm's srun with PMIx (PMIX_RANK),
#: MVAPICH (MV2_COMM_WORLD_*).
LAUNCHER_ENV_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                     "PMIX_RANK", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE")


def _mpi(owner):
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"{owner} needs mpi4py and an MPI library: pip install 'swiftcnn[mpi]' "
                          f"(mpi4py and the mpich wheel, which also provides mpiexec); "
                          f"{error}") from None
    return MPI


def launched_by_mpi(environ=None):
    """True if an MPI launcher (mpiexec, mpirun, srun) started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_ENV_VARS)


def detect_mpi():
    """The world communicator if an MPI launcher started this process with P > 1 processes, else None.

    Looks at the launchers' environment variables first (``LAUNCHER_ENV_VARS``), so a plain
    ``python`` run neither imports mpi4py nor initialises MPI. Under ``mpiexec -n 1`` it returns
    None too (nothing to distribute). Raises ``ImportError`` (with how to install it) when the
    process was launched by MPI but mpi4py is missing.
    """
    if not launched_by_mpi():
        return None
    comm = _mpi("swiftcnn.distributed.detect_mpi").COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def get_comm(distributed=True, owner="Sequential.fit"):
    """The communicator for ``fit(distributed=...)``: True means ``MPI.COMM_WORLD``; a communicator
    (anything with Get_rank/Get_size/Allreduce/Bcast) is used as given."""
    if distributed is True:
        return _mpi(owner).COMM_WORLD
    if all(callable(getattr(distributed, name, None))
           for name in ("Get_rank", "Get_size", "Allreduce", "Bcast")):
        return distributed
    raise TypeError(f"{owner}: distributed must be True, False or an mpi4py communicator, got "
                    f"{type(distributed).__name__}")


def is_root(comm):
    """True on rank 0 (and without a communicator): the process that prints and writes files."""
    return comm is None or comm.Get_rank() == 0


def _modules(module):
    yield module
    children = getattr(module, "layers", None)
    if children is None and type(module).__name__ in ("Sequential", "Residual"):
        children = list(module)
    for child in children or ():
        yield from _modules(child)


def _buffers(model):
    """The BatchNorm buffers (running_mean, running_var, num_batches_tracked) of every layer."""
    found = []
    for module in _modules(model):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            value = getattr(module, name, None)
            if isinstance(value, np.ndarray):
                found.append(value)
    return found


def broadcast_parameters(model, comm, root=0):
    """Overwrite every rank's parameters and BatchNorm buffers, in place, with rank ``root``'s."""
    for parameter in model.parameters():
        comm.Bcast(parameter.data, root=root)
    for buffer in _buffers(model):
        comm.Bcast(buffer, root=root)


def allreduce_gradients(parameters, comm, op=None):
    """Sum every parameter's ``.grad`` over the ranks, in place (``MPI.IN_PLACE``: no copies).

    The ``.grad`` arrays are the Swift core's own gradient memory, so the optimizer's next step
    reads the reduced values directly.
    """
    MPI = _mpi("allreduce_gradients")
    op = MPI.SUM if op is None else op
    for parameter in parameters:
        comm.Allreduce(MPI.IN_PLACE, parameter.grad, op=op)


class _AgreedError(Exception):
    """Marker base: errors every rank raises at the same point (no abort needed)."""


@contextlib.contextmanager
def abort_on_error(comm, consistent=(FloatingPointError,)):
    """Turn an exception on one rank into ``comm.Abort(1)`` (ending every rank), never a hang.

    Exceptions of the ``consistent`` types are raised by every rank together and pass through.
    With a single process the exception simply propagates.
    """
    try:
        yield
    except consistent:
        raise
    except BaseException as error:
        if comm.Get_size() == 1 or isinstance(error, _AgreedError):
            raise
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        sys.stderr.write(f"swiftcnn: rank {comm.Get_rank()} of {comm.Get_size()} failed; aborting "
                         f"the MPI job.\n{text}")
        sys.stderr.flush()
        # mpiexec forwards each rank's stderr through a pipe, and an abort kills the job before
        # that forwarding has drained it: without this pause the user sometimes sees no message at
        # all (a CI run lost it once). Half a second is nothing next to a job that is ending.
        time.sleep(0.5)
        comm.Abort(1)
        raise  # pragma: no cover - Abort does not return


class _InterruptFlag:
    """Catches SIGINT during a distributed fit so that every rank can stop at the same batch."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _local_slice(count, size, rank):
    """[lo, hi) of rank's share of a global batch of ``count`` samples (as even as possible)."""
    base, extra = divmod(count, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def fit_distributed(model, x, labels, *, distributed=True, epochs, batch_size, optimizer,
                    validation, shuffle, seed, progress, scheduler=None, augment=None,
                    owner="Sequential.fit"):
    """The body of ``Sequential.fit(..., distributed=...)`` once its arguments are checked.

    ``batch_size`` is the per-rank batch b; the global batch is P*b. Returns a ``History`` (the
    same on every rank) with an extra ``distributed`` dict: world size, steps, seconds spent in the
    gradient allreduce and in the whole steps, and bytes reduced per step.
    """
    from . import _core
    from .training import History, _applied_augment, _Progress

    comm = get_comm(distributed, owner)
    rank, size = comm.Get_rank(), comm.Get_size()
    parameters = model.parameters()
    # Every rank must call fit alike; a mismatch raises the same ValueError on every rank.
    signature = (tuple(x.shape), x.dtype.str, int(labels.shape[0]),
                 [(tuple(p.shape), p.dtype.str) for p in parameters], batch_size, epochs, shuffle,
                 augment is not None, validation is not None, scheduler is not None)
    everyone = comm.allgather(signature)
    if any(other != signature for other in everyone):
        differing = [r for r, other in enumerate(everyone) if other != everyone[0]]
        raise ValueError(f"{owner}: distributed=True needs every rank to call fit with the same "
                         f"data shape, model, and settings; ranks {differing} differ from rank 0")
    seed = comm.bcast(seed, root=0)
    buffers = _buffers(model)
    gradient_bytes = sum(p.grad.nbytes for p in parameters)

    count = x.shape[0]
    global_batch = batch_size * size
    batches = -(-count // global_batch)
    keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if validation else [])
    history = History(keys)
    reporter = _Progress(progress and rank == 0, epochs, batches)
    rng = np.random.default_rng(seed)
    figures_buffer = np.zeros(4, dtype=np.float64)  # loss * n, correct, n, interrupted
    allreduce_seconds = step_seconds = 0.0
    steps = 0
    epoch = 0
    stop = False
    with abort_on_error(comm), _InterruptFlag() as interrupt:
        broadcast_parameters(model, comm)
        try:
            for epoch in range(epochs):
                epoch_began = time.perf_counter()
                order = rng.permutation(count) if shuffle else np.arange(count)
                reporter.start_epoch(epoch)
                loss_sum, correct_sum, seen = 0.0, 0, 0
                for batch, start in enumerate(range(0, count, global_batch)):
                    began = time.perf_counter()
                    chosen = order[start:start + global_batch]
                    lo, hi = _local_slice(chosen.shape[0], size, rank)
                    if augment is not None:  # drawn for the global batch: the same draws as P=1
                        x_batch = _applied_augment(augment, x[chosen], rng, owner, epoch, batch)[lo:hi]
                    else:
                        x_batch = x[chosen[lo:hi]]
                    y_batch = labels[chosen[lo:hi]]
                    local = y_batch.shape[0]
                    optimizer.zero_grad()
                    for buffer in buffers:  # BN statistics follow rank 0 (DDP's default)
                        comm.Bcast(buffer, root=0)
                    grad = None
                    figures_buffer[:] = 0.0
                    if local:
                        logits = model.forward(x_batch)
                        loss, grad = _core.softmax_cross_entropy(logits, y_batch)
                        figures_buffer[0] = loss * local
                        figures_buffer[1] = np.count_nonzero(np.argmax(logits, axis=1) == y_batch)
                        figures_buffer[2] = local
                    figures_buffer[3] = 1.0 if interrupt.raised else 0.0
                    comm.Allreduce(_mpi(owner).IN_PLACE, figures_buffer)
                    if figures_buffer[3]:
                        stop = True
                        break
                    total = int(figures_buffer[2])
                    batch_loss = figures_buffer[0] / total
                    if not math.isfinite(batch_loss):
                        raise FloatingPointError(
                            f"{owner}: epoch {epoch + 1}, batch {batch + 1}: loss is {batch_loss}; "
                            f"that step was not applied (try a smaller learning rate)")
                    if local:
                        # Scale so that the sum over ranks is the gradient of the global mean.
                        grad *= local / total
                        model.backward(grad)
                    reduce_began = time.perf_counter()
                    allreduce_gradients(parameters, comm)
                    allreduce_seconds += time.perf_counter() - reduce_began
                    optimizer.step()
                    step_seconds += time.perf_counter() - began
                    steps += 1
                    loss_sum += figures_buffer[0]
                    correct_sum += int(figures_buffer[1])
                    seen += total
                    reporter.batch_done(loss_sum / seen, correct_sum / seen)
                if stop:
                    break
                figures = {"loss": loss_sum / seen, "accuracy": correct_sum / seen}
                seconds = time.perf_counter() - epoch_began  # training only, as fit's History.seconds
                if validation is not None:
                    measured = None
                    if rank == 0:
                        measured = model._evaluate_arrays(*validation, 256)
                    measured = comm.bcast(measured, root=0)
                    figures["val_loss"] = measured["loss"]
                    figures["val_accuracy"] = measured["accuracy"]
                history._record(epoch, figures, seconds)
                reporter.end_epoch(epoch, figures, seconds, seen)
                if scheduler is not None:  # every rank steps its own (identical) schedule
                    scheduler.step()
        finally:
            reporter.close()
    if stop:
        history.interrupted = True
        reporter.interrupted(epoch, len(history.epoch))
    history.distributed = {"world_size": size, "rank": rank, "steps": steps,
                           "allreduce_seconds": allreduce_seconds, "step_seconds": step_seconds,
                           "gradient_bytes_per_step": gradient_bytes}
    return history
