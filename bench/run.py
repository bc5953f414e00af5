#!/usr/bin/env python3
"""Side-by-side benchmark: swiftcnn against PyTorch (CPU), same process, 2 threads, float32 (figure 8: float64).

Usage (from the repository root):

    python bench/run.py                  # full run, writes bench/RESULTS.md
    python bench/run.py --quick          # smoke run (fewer, shorter repeats)
    python bench/run.py --only 2         # one figure (1..9 or lenet/conv3x3/conv5x5/percall/memory/bnnet/
                                         #   depthwise/lenet64/mnist; repeatable)
    python bench/run.py --load 1         # with one busy-loop process per figure (issue 15's loaded target)
    python bench/run.py --scaling        # figures 1-3 at 1 and 2 threads (fresh processes), speedups
    python bench/run.py --no-torch       # swiftcnn alone
    python bench/run.py --no-swiftcnn    # PyTorch alone (checks the harness before the library builds)

Figures (ratio = swiftcnn / PyTorch, measured in the same run):
  1. the lecture's network (sigmoid and ReLU), batches 64 and 256: training images/s (canonical
     step and fit), inference images/s;
  2. one conv layer 32x64x32x32 -> 64, 3x3, pad 1: forward / backward GFLOP/s;
  3. one conv layer 64x6x14x14 -> 16, 5x5: forward / backward GFLOP/s;
  4. per-call cost from Python of a tiny conv2d, with a ctypes call of libc's getpid for scale;
  5. peak resident memory of a 5-epoch training run, each framework in a fresh subprocess;
  6. a Conv-BN-ReLU network, training step and inference images/s;
  7. depthwise conv 32x128x32x32, 3x3, groups=128: forward / backward GFLOP/s;
  8. figure 1's network in float64 (both frameworks): training step and inference images/s;
  9. one epoch of MNIST's 60,000 training images, `model.fit` vs the PyTorch loop, images/s;
  S. (--scaling) figures 1-3 at 1 and 2 threads, 2-thread/1-thread speedup per framework.
Each row carries issue 15's target for it and whether it was met.

Method: every timed callable is warmed up, then calibrated so one repeat lasts at least
`min_time`; the repeats of the two frameworks are interleaved (A B, B A, A B, ...) so that a
change of machine load hits both alike. Figures are the median over repeats, with min-max as the spread.
The garbage collector is off while timing (as in `timeit`).

glibc's malloc returns freed memory to the OS after large frees, which makes PyTorch's timings
swing by up to 2x on this machine. To measure the peer at its best the script re-executes itself
with MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ set (unless they are
already set), and with OMP/OpenBLAS/MKL thread counts pinned; it says so in its output.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Environment the benchmark runs under; malloc settings must be present at process start.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "1000000000",
    "MALLOC_TOP_PAD_": "268435456",
}
REEXEC_MARKER = "SWIFTCNN_BENCH_REEXEC"


def thread_env(threads: int) -> dict:
    """Thread-count variables for the BLAS / OpenMP runtimes loaded by numpy and torch."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def ensure_environment(threads: int) -> None:
    """Re-exec this script with the malloc and thread variables set, if any is missing.

    Values the user set explicitly are kept (and reported). The re-exec happens before numpy or
    torch is imported, so glibc and the thread pools see the variables from the start.
    """
    wanted = {**MALLOC_ENV, **thread_env(threads)}
    missing = {k: v for k, v in wanted.items() if k not in os.environ}
    if not missing:
        return
    if os.environ.get(REEXEC_MARKER):  # should not happen; avoid an exec loop
        return
    env = dict(os.environ)
    env.update(missing)
    env[REEXEC_MARKER] = " ".join(sorted(missing))
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


# ----------------------------------------------------------------------------------------------
# Statistics and timing
# ----------------------------------------------------------------------------------------------

@dataclass
class Stats:
    """Repeated measurements of one quantity, already in the unit shown."""

    values: list

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def spread_pct(self) -> float:
        """(max - min) / median, in percent."""
        return 100.0 * (self.hi - self.lo) / self.median if self.median else float("nan")


@dataclass
class Settings:
    """How hard to measure: --quick lowers all of these."""

    repeats: int
    min_time: float   # seconds per repeat (lower bound; calibrated)
    warmup: float     # seconds of warm-up per callable
    fit_repeats: int  # epochs timed for the fit-style figure
    timeit_repeats: int
    timeit_number: int


FULL = Settings(repeats=15, min_time=0.2, warmup=0.5, fit_repeats=9, timeit_repeats=15, timeit_number=20000)
QUICK = Settings(repeats=5, min_time=0.05, warmup=0.1, fit_repeats=3, timeit_repeats=5, timeit_number=5000)


def _run_n(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def _calibrate(fn: Callable[[], object], min_time: float, warmup: float) -> int:
    """Warm fn up for `warmup` seconds, then return a call count whose run lasts >= min_time."""
    t_end = time.perf_counter() + warmup
    fn()
    while time.perf_counter() < t_end:
        fn()
    n = 1
    while True:
        dt = _run_n(fn, n)
        if dt >= min_time:
            return n
        n = max(n + 1, min(n * 10, int(n * 1.2 * min_time / max(dt, 1e-9)) + 1))


def time_interleaved(fns: dict, settings: Settings, repeats: Optional[int] = None,
                     fixed_number: Optional[int] = None, warm: bool = True) -> dict:
    """Time each callable of `fns` ({name: fn}); returns {name: [seconds per call, ...]}.

    `warm=False` (with `fixed_number`) skips the warm-up calls: for callables that take seconds,
    which the caller has warmed up more cheaply.

    Repeats of the different callables alternate (in an order that flips every repeat) so that
    load drifts and one framework's after-effects (PyTorch's OpenMP threads spin for a few ms after
    each parallel region) hit all of them alike.
    """
    repeats = repeats or settings.repeats
    numbers = {}
    for name, fn in fns.items():
        if fixed_number:
            if warm:
                _calibrate(fn, 0.0, settings.warmup)
            numbers[name] = fixed_number
        else:
            numbers[name] = _calibrate(fn, settings.min_time, settings.warmup)
    out = {name: [] for name in fns}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        names = list(fns)
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):  # A B, B A, ...: no fixed order
                out[name].append(_run_n(fns[name], numbers[name]) / numbers[name])
    finally:
        if was_enabled:
            gc.enable()
    return out


# ----------------------------------------------------------------------------------------------
# Machine load
# ----------------------------------------------------------------------------------------------

def _cpu_busy_seconds() -> tuple:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children, steal)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    busy = (user + nice + system + irq + softirq) / tick
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime
    return busy, own, steal / tick


def wait_for_idle(limit: float, threshold: float = 0.10, window: float = 10.0) -> float:
    """Sample other processes' CPU share over `window` seconds until it is below `threshold` (and the
    1-min load average below a quarter of the cores) or `limit` seconds have passed. Returns the
    seconds waited."""
    t0 = time.perf_counter()
    last_note = -60.0
    while True:
        mon = LoadMonitor()
        time.sleep(window)
        share = mon.others_share()
        waited = time.perf_counter() - t0
        if share < threshold and os.getloadavg()[0] < 0.25 * (os.cpu_count() or 1):
            print(f"  machine idle (others {100 * share:.0f}%) after {waited:.0f} s", flush=True)
            return waited
        if waited >= limit:
            print(f"  gave up waiting for an idle machine after {waited:.0f} s (others {100 * share:.0f}%)",
                  flush=True)
            return waited
        if waited - last_note >= 60:
            last_note = waited
            print(f"  waiting for an idle machine: others use {100 * share:.0f}% of the cores", flush=True)


SPEED_PROBE = """
import time, numpy as np
a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
for _ in range(3): a @ a
best = 0.0
for _ in range(5):
    t = time.perf_counter()
    for _ in range(5): a @ a
    best = max(best, 5 * 2 * 1024 ** 3 / (time.perf_counter() - t) / 1e9)
print(best)
"""


def host_speed_probe() -> Optional[float]:
    """Single-thread OpenBLAS sgemm 1024^3 GFLOP/s (best of 5), in a subprocess pinned to one
    thread: a framework-independent check that the host ran at full speed (the VM's neighbours and
    clock do not show in the load average)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        out = subprocess.run([sys.executable, "-c", SPEED_PROBE], capture_output=True, text=True,
                             env=env, timeout=120)
        return float(out.stdout.strip())
    except (subprocess.SubprocessError, ValueError):
        return None


class LoadMonitor:
    """Measures how much CPU *other* processes used between start() and stop()."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0, self.own0, self.steal0 = _cpu_busy_seconds()

    def steal_share(self) -> float:
        """Fraction of all cores' time the hypervisor gave to other guests since start()."""
        _, _, steal = _cpu_busy_seconds()
        return (steal - self.steal0) / ((time.perf_counter() - self.t0) * (os.cpu_count() or 1))

    def others_share(self) -> float:
        """Fraction of all cores' time used by other processes since start()."""
        busy, own, _ = _cpu_busy_seconds()
        elapsed = time.perf_counter() - self.t0
        ncpu = os.cpu_count() or 1
        return max(0.0, (busy - self.busy0) - (own - self.own0)) / (elapsed * ncpu)


# The body of one --load process: spin on one core until killed. PR_SET_PDEATHSIG makes the kernel
# kill it when the benchmark dies in any way (even SIGKILL, where no finally/atexit runs).
BUSY_LOOP = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the benchmark is already gone
while True:
    pass
"""


def _proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a live process from /proc/PID/stat, in seconds (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class BusyLoad:
    """`--load N`: N busy-loop processes (pure Python `while True: pass`, one core each) that run
    while each figure is measured, for issue 15's "another process busy on one core" target.

    They are killed at the end of every figure (stop()), and also on an exception or Ctrl-C (the
    caller's try/finally), at interpreter exit (atexit), on SIGTERM (turned into SystemExit by
    main) and, should the benchmark itself be killed, by the kernel (PR_SET_PDEATHSIG).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs = []
        self.t0 = 0.0
        atexit.register(self.stop)

    def start(self) -> None:
        if self.n <= 0 or self.procs:
            return
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-S", "-c", BUSY_LOOP, str(os.getpid())],
                                               stdin=subprocess.DEVNULL))
        time.sleep(0.2)  # let them start spinning before anything is timed
        self.t0 = time.perf_counter()

    def stop(self) -> Optional[float]:
        """Kill the processes and wait for them; returns the mean share of one core each used since
        start() (None without processes), which shows the load was really there."""
        if not self.procs:
            return None
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        cpu = [_proc_cpu_seconds(p.pid) for p in self.procs]
        for p in self.procs:
            try:
                p.kill()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
        self.procs = []
        known = [c for c in cpu if c is not None]
        return (sum(known) / len(known)) / elapsed if known else None

    def describe(self, share: Optional[float] = None) -> str:
        """'loaded run: N busy processes' plus, after a figure, how much CPU they got."""
        text = f"loaded run: {self.n} busy process{'es' if self.n != 1 else ''} (`--load {self.n}`)"
        if share is not None:
            text += f"; each got {100 * share:.0f}% of a core while this ran"
        return text


# ----------------------------------------------------------------------------------------------
# Result records
# ----------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of a figure: the same quantity for both frameworks."""

    label: str
    unit: str
    higher_is_better: bool
    sc: Optional[Stats] = None
    torch: Optional[Stats] = None
    target: Optional[float] = None     # on the ratio, unless target_abs
    target_abs: bool = False           # target is an absolute bound on swiftcnn's median
    note: str = ""
    no_ratio: bool = False             # the two columns are not comparable (e.g. speedups)

    def ratio(self) -> Optional[float]:
        if self.no_ratio or self.sc is None or self.torch is None or not self.torch.median:
            return None
        return self.sc.median / self.torch.median

    def verdict(self) -> str:
        """'yes'/'NO' against the target, '' without one or without data."""
        if self.target is None:
            return ""
        if self.target_abs:
            if self.sc is None:
                return ""
            ok = self.sc.median <= self.target if not self.higher_is_better else self.sc.median >= self.target
        else:
            r = self.ratio()
            if r is None:
                return ""
            ok = r >= self.target if self.higher_is_better else r <= self.target
        return "yes" if ok else "NO"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op = ">=" if self.higher_is_better else "<="
        if self.target_abs:
            return f"sc {op} {self.target:g} {self.unit}"
        return f"{op} {self.target:g}x"


@dataclass
class Figure:
    """A numbered figure: a table of rows plus notes."""

    number: object    # 1..9, or "S" for the thread-scaling table
    title: str
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    others_load: Optional[float] = None
    error: str = ""
    skipped: str = ""     # why the figure could not be measured (shown, never a silent pass)
    load: str = ""        # "loaded run: N busy processes ..." when --load was given
    extra_md: list = field(default_factory=list)  # markdown lines after the table (e.g. per-thread detail)


def fmt_value(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_stats(s: Optional[Stats]) -> str:
    if s is None:
        return "-"
    if len(s.values) == 1:  # a derived figure (e.g. a speedup of medians): no spread to show
        return fmt_value(s.median)
    return f"{fmt_value(s.median)} ({fmt_value(s.lo)}-{fmt_value(s.hi)})"


def print_row(row: Row) -> None:
    """Print one compact line as soon as a row is measured."""
    r = row.ratio()
    rtxt = f"{r:5.2f}x" if r is not None else "   -  "
    v = row.verdict()
    print(f"  {row.label:<40} {row.unit:<8} sc {fmt_stats(row.sc):<26} torch {fmt_stats(row.torch):<26}"
          f" ratio {rtxt} {row.target_text():>9} {v}", flush=True)


def add_images_row(fig, label: str, times: dict, images: int, target) -> "Row":
    """A throughput row (images/s, higher is better) from `time_interleaved`'s per-call seconds,
    `images` images per call; appended to the figure and printed."""
    row = Row(label, "images/s", True, target=target)
    if "sc" in times:
        row.sc = Stats([images / t for t in times["sc"]])
    if "torch" in times:
        row.torch = Stats([images / t for t in times["torch"]])
    fig.rows.append(row)
    print_row(row)
    return row


# ----------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------

def synthetic_mnist(n: int, seed: int = 0):
    """MNIST-shaped synthetic data: n float32 images (n,1,28,28) in [0,1) and int64 labels 0..9."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y


def swiftcnn_net(sc, act: str, dtype: str = "float32"):
    """The lecture's network (act='sigmoid') or its ReLU variant, in swiftcnn; float64 the way a
    user builds it: `dtype="float64"` on every layer with parameters (the others follow their input)."""
    A = sc.Sigmoid if act == "sigmoid" else sc.ReLU
    return sc.Sequential(sc.Conv2d(1, 6, 5, padding=2, dtype=dtype), A(), sc.MaxPool2d(2),
                         sc.Conv2d(6, 16, 5, dtype=dtype), A(), sc.MaxPool2d(2), sc.Flatten(),
                         sc.Linear(400, 120, dtype=dtype), A(), sc.Linear(120, 84, dtype=dtype), A(),
                         sc.Linear(84, 10, dtype=dtype))


def torch_net(torch, act: str, dtype: str = "float32"):
    """The same network in PyTorch (same layer indices, so state dicts match); float64 via `.double()`."""
    nn = torch.nn
    A = nn.Sigmoid if act == "sigmoid" else nn.ReLU
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), A(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 16, 5), A(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(400, 120), A(), nn.Linear(120, 84), A(), nn.Linear(84, 10))
    return model.double() if dtype == "float64" else model


LR = 0.05


def torch_fit_epoch(torch, model, opt, xt, yt, batch_size: int, generator) -> tuple:
    """One fit-style epoch in PyTorch: shuffle, canonical step per batch (last partial batch kept),
    and the running loss / accuracy a Keras-style fit reports. Returns (mean loss, accuracy)."""
    F = torch.nn.functional
    n = xt.shape[0]
    perm = torch.randperm(n, generator=generator)
    loss_sum = 0.0
    correct = 0
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        xb, yb = xt[idx], yt[idx]
        opt.zero_grad()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / n, correct / n


# ----------------------------------------------------------------------------------------------
# Figure 1: the lecture's network
# ----------------------------------------------------------------------------------------------

def sanity_check(sc, torch, x, y, dtype: str = "float32") -> list:
    """Load PyTorch's weights into swiftcnn, compare logits and the loss over a few SGD steps
    (x, y in `dtype`; both networks built in it)."""
    import numpy as np
    F = torch.nn.functional
    lines = []
    for act in ("sigmoid", "relu"):
        torch.manual_seed(0)
        tm = torch_net(torch, act, dtype)
        sm = swiftcnn_net(sc, act, dtype)
        sm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
        topt = torch.optim.SGD(tm.parameters(), lr=LR)
        sopt = sc.SGD(sm.parameters(), lr=LR)
        xb, yb = x[:64], y[:64]
        xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
        with torch.no_grad():
            dlog = float(np.max(np.abs(sm(xb) - tm(xt).numpy())))
        losses = []
        for _ in range(5):
            sopt.zero_grad()
            ls, g = sc.softmax_cross_entropy(sm(xb), yb)
            sm.backward(g)
            sopt.step()
            topt.zero_grad()
            lt = F.cross_entropy(tm(xt), yt)
            lt.backward()
            topt.step()
            losses.append((ls, lt.item()))
        dloss = max(abs(a - b) for a, b in losses)
        lines.append(f"{act}: same initial weights, max |logits diff| = {dlog:.2e}; loss over 5 SGD steps "
                     f"(lr {LR}) swiftcnn {losses[0][0]:.6f} -> {losses[-1][0]:.6f}, "
                     f"PyTorch {losses[0][1]:.6f} -> {losses[-1][1]:.6f}, max |diff| = {dloss:.2e}")
    return lines


def _swiftcnn_lenet_callables(sc, act: str, b: int, x, y, batches, dtype: str = "float32") -> tuple:
    """(train step, fit epoch, inference) callables for swiftcnn on a fresh network in `dtype`."""
    sc.manual_seed(0)
    model = swiftcnn_net(sc, act, dtype)
    opt = sc.SGD(model.parameters(), lr=LR)
    state = {"step": 0, "seed": 0}

    def train_step():
        xb, yb = batches[state["step"] % len(batches)]
        state["step"] += 1
        opt.zero_grad()
        loss, g = sc.softmax_cross_entropy(model(xb), yb)
        model.backward(g)
        opt.step()

    def fit_epoch():
        state["seed"] += 1
        model.fit(x, y, epochs=1, batch_size=b, optimizer=opt, shuffle=True, seed=state["seed"],
                  progress=False)

    xi = batches[0][0]

    def inference():
        model.predict(xi, batch_size=b)

    return train_step, fit_epoch, inference


def _torch_lenet_callables(torch, act: str, b: int, x, y, batches, dtype: str = "float32") -> tuple:
    """(train step, fit epoch, inference) callables for PyTorch on a fresh network in `dtype`."""
    F = torch.nn.functional
    torch.manual_seed(0)
    model = torch_net(torch, act, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tbatches = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    state = {"step": 0}

    def train_step():
        xb, yb = tbatches[state["step"] % len(tbatches)]
        state["step"] += 1
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()

    def fit_epoch():
        torch_fit_epoch(torch, model, opt, xt, yt, b, gen)

    xi = batches[0][0]

    def inference():
        with torch.inference_mode():
            model(torch.from_numpy(xi)).numpy()

    return train_step, fit_epoch, inference


def figure_lenet(ctx) -> Figure:
    """Figure 1: the lecture's network and its ReLU variant, batches 64 and 256.

    Three measurements per (activation, batch): the canonical training step on one batch, a
    fit-style epoch over a fixed 5,000-image dataset, and inference on one batch. All in images/s.
    """
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    fig = Figure(1, "The lecture's network, training and inference images/s (higher is better)")
    n_fit = 5000
    x, y = synthetic_mnist(n_fit)
    fig.notes.append(f"Synthetic MNIST-shaped data (uniform [0,1) pixels, random labels), {n_fit} images; "
                     f"SGD lr={LR}; softmax cross-entropy. PyTorch reference here: train ~23k/25k/24k/26k, "
                     "inference ~49k/57k/48k/61k (sigmoid b64 / ReLU b64 / sigmoid b256 / ReLU b256).")
    fig.notes.append("train step = `opt.zero_grad(); loss, g = softmax_cross_entropy(model(x), y); "
                     "model.backward(g); opt.step()` (PyTorch: zero_grad, cross_entropy, loss.backward(), step) "
                     "cycling over fixed batches; fit = one epoch of `model.fit(x, y, epochs=1, batch_size=b, "
                     "progress=False)` over 5,000 images (PyTorch: the same loop with randperm shuffling and "
                     "per-batch loss/accuracy bookkeeping); inference = `model.predict(xb, batch_size=b)` on one "
                     "batch (PyTorch: `model(torch.from_numpy(xb)).numpy()` under inference_mode).")
    # Issue 15 target 1: >= 2.5x on a quiet machine, >= 2x with another process busy on a core.
    lenet_target = 2.0 if ctx.load else 2.5
    fig.notes.append(f"Target (issue 15, 1): swiftcnn >= 2.5x PyTorch on a quiet machine, >= 2x with one "
                     f"busy process; this run: {'loaded, so' if ctx.load else 'not loaded, so'} "
                     f">= {lenet_target:g}x.")
    if sc is not None and torch is not None:
        fig.notes.extend("Sanity: " + l for l in sanity_check(sc, torch, x, y))
        for l in fig.notes[-2:]:
            print("  " + l, flush=True)
    for act in ("sigmoid", "relu"):
        for b in (64, 256):
            batches = [(x[i:i + b], y[i:i + b]) for i in range(0, n_fit - b + 1, b)]
            fns_train, fns_fit, fns_inf = {}, {}, {}
            if sc is not None:
                fns_train["sc"], fns_fit["sc"], fns_inf["sc"] = _swiftcnn_lenet_callables(sc, act, b, x, y, batches)
            if torch is not None:
                fns_train["torch"], fns_fit["torch"], fns_inf["torch"] = _torch_lenet_callables(
                    torch, act, b, x, y, batches)
            for kind, fns, per_call_images, reps, fixed in (
                    ("train step", fns_train, b, None, None),
                    ("fit epoch", fns_fit, n_fit, s.fit_repeats, 1),
                    ("inference", fns_inf, b, None, None)):
                times = time_interleaved(fns, s, repeats=reps, fixed_number=fixed)
                add_images_row(fig, f"{act} b{b} {kind}", times, per_call_images, lenet_target)
    return fig


# ----------------------------------------------------------------------------------------------
# Figure 8: the lecture's network in float64 (issue 15's 5c)
# ----------------------------------------------------------------------------------------------

def figure_lenet64(ctx) -> Figure:
    """Figure 8 (issue 15's 5c): the lecture's network and its ReLU variant in float64, both frameworks.

    The canonical training step at batches 64 and 256 and inference at the same batches, images/s.
    swiftcnn's model is built as a user would (`dtype="float64"` on every Conv2d and Linear; the
    parameterless layers follow their input), PyTorch's with `.double()` and float64 tensors.
    """
    import numpy as np
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    fig = Figure(8, "The lecture's network in float64, training step and inference images/s (higher is better)")
    n = 5000
    x32, y = synthetic_mnist(n)
    x = x32.astype(np.float64)
    fig.notes.append(f"float64 throughout: swiftcnn `Conv2d(..., dtype=\"float64\")` / `Linear(..., "
                     f"dtype=\"float64\")`, PyTorch `model.double()`; inputs float64. Synthetic MNIST-shaped data "
                     f"({n} images), SGD lr={LR}; the steps and inference calls are those of figure 1. "
                     "Target (issue 15, 5c): training >= 2x; inference is shown without a target.")
    if sc is not None and torch is not None:
        fig.notes.extend("Sanity (float64): " + l for l in sanity_check(sc, torch, x, y, "float64"))
        for l in fig.notes[-2:]:
            print("  " + l, flush=True)
    for act in ("sigmoid", "relu"):
        for b in (64, 256):
            batches = [(x[i:i + b], y[i:i + b]) for i in range(0, n - b + 1, b)]
            fns_train, fns_inf = {}, {}
            if sc is not None:
                fns_train["sc"], _, fns_inf["sc"] = _swiftcnn_lenet_callables(sc, act, b, x, y, batches, "float64")
            if torch is not None:
                fns_train["torch"], _, fns_inf["torch"] = _torch_lenet_callables(
                    torch, act, b, x, y, batches, "float64")
            for kind, fns, target in (("train step", fns_train, 2.0), ("inference", fns_inf, None)):
                add_images_row(fig, f"{act} b{b} {kind}", time_interleaved(fns, s), b, target)
    return fig


# ----------------------------------------------------------------------------------------------
# Figure 9: one epoch of the full MNIST (issue 15's 5d)
# ----------------------------------------------------------------------------------------------

MNIST_QUICK_SUBSET = 10000
WARMUP_IMAGES = 4096


def load_mnist_train(sc) -> tuple:
    """(images, labels, where) of MNIST's 60,000 training images through swiftcnn's loader, or
    (None, None, why) when it is neither cached nor fetchable (the figure then says so and skips)."""
    try:
        cache = sc.datasets.cache_dir()
    except Exception:  # noqa: BLE001 - only for the message
        cache = "$SWIFTCNN_DATA or ~/.cache/swiftcnn"
    try:
        x, y = sc.datasets.load_dataset("mnist", "train")
    except (OSError, ValueError) as e:  # DatasetFetchError is an OSError
        return None, None, (f"MNIST is not in swiftcnn's data cache ({cache}) and could not be fetched: "
                            f"{type(e).__name__}: {' '.join(str(e).split())[:600]}")
    return x, y, f"swiftcnn.datasets.load_dataset('mnist', 'train') (cache {cache})"


def figure_mnist_epoch(ctx) -> Figure:
    """Figure 9 (issue 15's 5d): one epoch of the full MNIST training set, `model.fit` vs the PyTorch loop.

    The lecture's network (sigmoid) and its ReLU variant, batch 64, SGD, float32: swiftcnn's
    `model.fit(x, y, epochs=1, batch_size=64, shuffle=True)` against figure 1's PyTorch loop
    (`torch_fit_epoch`: randperm, tensor indexing per batch, canonical step, running loss and
    accuracy). images/s = images in the epoch / wall time of the epoch.
    """
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    quick = s is QUICK
    fig = Figure(9, "One epoch of MNIST's training set, `model.fit` vs the PyTorch loop, batch 64: "
                    "images/s (higher is better)")
    b = 64
    if sc is not None:
        x, y, where = load_mnist_train(sc)
    else:  # --no-swiftcnn: the loader is swiftcnn's, so import it just for the data
        try:
            import swiftcnn as sc_data
            x, y, where = load_mnist_train(sc_data)
        except ImportError as e:
            x, y, where = None, None, f"swiftcnn (whose loader reads MNIST) is not importable: {e}"
    if x is None:
        fig.skipped = where + ". Populate the cache with `python -c \"import swiftcnn; " \
                              "swiftcnn.datasets.load_dataset('mnist')\"` (needs the package index once)."
        print("  SKIPPED: " + fig.skipped, flush=True)
        fig.rows.append(Row(f"sigmoid b{b} fit epoch (not measured: no data)", "images/s", True, target=2.0))
        return fig
    if quick:
        x, y = x[:MNIST_QUICK_SUBSET], y[:MNIST_QUICK_SUBSET]
    n = x.shape[0]
    fig.notes.append(f"Data: {where}; {n:,} images{' (--quick: the first 10,000)' if quick else ''}, "
                     f"float32 in [0, 1], batch {b}, SGD lr={LR}, last partial batch kept. swiftcnn: "
                     "`model.fit(x, y, epochs=1, batch_size=64, optimizer=opt, shuffle=True, seed=k, "
                     "progress=False)`; PyTorch: figure 1's loop (randperm, `xt[idx]`, zero_grad, forward, "
                     "cross_entropy, backward, step, running loss and accuracy). Each repeat is one more "
                     "epoch of the same model (it keeps learning), interleaved between the frameworks. "
                     "Target (issue 15, 5d): >= 2x.")
    reps = s.fit_repeats if quick else min(s.fit_repeats, 5)  # a repeat is a whole epoch here
    for act in ("sigmoid", "relu"):
        fns, last = {}, {}
        if sc is not None:
            sc.manual_seed(0)
            model = swiftcnn_net(sc, act)
            opt = sc.SGD(model.parameters(), lr=LR)
            state = {"seed": 0}

            def sc_epoch(model=model, opt=opt, state=state, x=x, y=y):
                state["seed"] += 1
                h = model.fit(x, y, epochs=1, batch_size=b, optimizer=opt, shuffle=True, seed=state["seed"],
                              progress=False)
                last["sc"] = (h.history["loss"][-1], h.history["accuracy"][-1])

            fns["sc"] = sc_epoch
        if torch is not None:
            torch.manual_seed(0)
            tmodel = torch_net(torch, act)
            topt = torch.optim.SGD(tmodel.parameters(), lr=LR)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            gen = torch.Generator().manual_seed(0)

            def torch_epoch(tmodel=tmodel, topt=topt, xt=xt, yt=yt, gen=gen):
                last["torch"] = torch_fit_epoch(torch, tmodel, topt, xt, yt, b, gen)

            fns["torch"] = torch_epoch
        # Warm-up: one epoch over the first WARMUP_IMAGES images per framework (same code paths and
        # batch shapes as the timed epochs, a fraction of their cost).
        if sc is not None:
            model.fit(x[:WARMUP_IMAGES], y[:WARMUP_IMAGES], epochs=1, batch_size=b, optimizer=opt,
                      shuffle=True, seed=0, progress=False)
        if torch is not None:
            torch_fit_epoch(torch, tmodel, topt, xt[:WARMUP_IMAGES], yt[:WARMUP_IMAGES], b, gen)
        times = time_interleaved(fns, s, repeats=reps, fixed_number=1, warm=False)
        add_images_row(fig, f"{act} b{b} fit epoch, {n:,} images", times, n, 2.0)
        fig.notes.append(f"{act}: loss / accuracy of the last timed epoch: " + ", ".join(
            f"{'swiftcnn' if k == 'sc' else 'PyTorch'} {v[0]:.4f} / {100 * v[1]:.1f}%" for k, v in last.items())
            + f" (epoch {reps} of the timed ones, after a {WARMUP_IMAGES:,}-image warm-up epoch).")
    return fig


# ----------------------------------------------------------------------------------------------
# Figures 2 and 3: one conv layer
# ----------------------------------------------------------------------------------------------

def _conv_figure(ctx, number: int, N: int, C: int, H: int, W: int, K: int, R: int, pad: int,
                 torch_ref: str, groups: int = 1, fwd_target: float = 1.0, bwd_target: float = 1.0) -> Figure:
    """One conv layer, stride 1: forward, backward (combined) and torch's per-part backward, GFLOP/s.

    FLOPs per pass = 2*N*K*C*R*S*Ho*Wo (forward, grad-input and grad-weight each); the combined
    backward (grad-input + grad-weight + grad-bias) counts twice that.
    """
    import numpy as np
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    Ho = H + 2 * pad - R + 1
    Wo = W + 2 * pad - R + 1
    flops = 2 * N * K * (C // groups) * R * R * Ho * Wo
    grouped = f", groups={groups}" if groups > 1 else ""
    fig = Figure(number, f"Conv layer N={N}, C={C}, {H}x{W}, K={K}, {R}x{R}, padding {pad}{grouped}: "
                         f"GFLOP/s (higher is better)")
    fig.notes.append(f"{flops / 1e9:.3f} GFLOP per pass (2*N*K*(C/groups)*R*S*Ho*Wo, Ho=Wo={Ho}); float32, with bias. "
                     f"PyTorch reference here: {torch_ref} (forward / grad-input / grad-weight).")
    fig.notes.append("swiftcnn's functional API offers only `conv2d_backward(grad_out, x, w)`, which returns "
                     "grad-input, grad-weight and grad-bias together, so swiftcnn is timed as a whole and "
                     "reported as combined backward GFLOP/s (2 x the pass FLOPs); PyTorch is timed the same way "
                     "(`torch.ops.aten.convolution_backward` with all three outputs) for the ratio, and also "
                     "per part (`torch.nn.grad.conv2d_input` / `conv2d_weight`) for reference.")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = (rng.standard_normal((K, C // groups, R, R), dtype=np.float32) / np.sqrt(C // groups * R * R)).astype(np.float32)
    bias = rng.standard_normal(K, dtype=np.float32)
    gy = rng.standard_normal((N, K, Ho, Wo), dtype=np.float32)

    fwd, bwd, dx, dw = {}, {}, {}, {}
    if sc is not None:
        fwd["sc"] = lambda: sc.conv2d(x, w, bias, padding=pad, groups=groups)
        bwd["sc"] = lambda: sc.conv2d_backward(gy, x, w, padding=pad, groups=groups)
    if torch is not None:
        F = torch.nn.functional
        xt, wt, bt, gyt = (torch.from_numpy(a) for a in (x, w, bias, gy))
        aten_bwd = torch.ops.aten.convolution_backward

        def t_fwd():
            with torch.no_grad():
                F.conv2d(xt, wt, bt, padding=pad, groups=groups)

        fwd["torch"] = t_fwd
        bwd["torch"] = lambda: aten_bwd(gyt, xt, wt, [K], [1, 1], [pad, pad], [1, 1], False, [0, 0], groups,
                                        [True, True, True])
        dx["torch"] = lambda: torch.nn.grad.conv2d_input(xt.shape, wt, gyt, padding=pad, groups=groups)
        dw["torch"] = lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, gyt, padding=pad, groups=groups)
        if sc is not None:  # check that both compute the same thing before timing
            y_sc = sc.conv2d(x, w, bias, padding=pad, groups=groups)
            with torch.no_grad():
                y_t = F.conv2d(xt, wt, bt, padding=pad, groups=groups).numpy()
            gx_sc, gw_sc, gb_sc = sc.conv2d_backward(gy, x, w, padding=pad, groups=groups)
            gx_t, gw_t, gb_t = aten_bwd(gyt, xt, wt, [K], [1, 1], [pad, pad], [1, 1], False, [0, 0], groups,
                                        [True, True, True])

            def rel(a, b):
                return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

            fig.notes.append(f"Agreement (max abs diff / max abs): y {rel(y_sc, y_t):.1e}, "
                             f"grad-input {rel(gx_sc, gx_t.numpy()):.1e}, grad-weight {rel(gw_sc, gw_t.numpy()):.1e}, "
                             f"grad-bias {rel(gb_sc, gb_t.numpy()):.1e}.")
            print("  " + fig.notes[-1], flush=True)

    for label, fns, mult, target in (("forward", fwd, 1, fwd_target),
                                     ("backward, combined (dX+dW+db)", bwd, 2, bwd_target),
                                     ("grad-input (torch only)", dx, 1, None),
                                     ("grad-weight (torch only)", dw, 1, None)):
        if not fns:
            continue
        times = time_interleaved(fns, s)
        row = Row(label, "GFLOP/s", True, target=target)
        if "sc" in times:
            row.sc = Stats([mult * flops / t / 1e9 for t in times["sc"]])
        if "torch" in times:
            row.torch = Stats([mult * flops / t / 1e9 for t in times["torch"]])
        fig.rows.append(row)
        print_row(row)
    return fig


def figure_conv3x3(ctx) -> Figure:
    """Figure 2: conv N=32, C=64, 32x32, K=64, 3x3, padding 1."""
    # Issue 15 target 2: forward and backward >= 1.2x.
    return _conv_figure(ctx, 2, 32, 64, 32, 32, 64, 3, 1, "~407 / 369 / 369", fwd_target=1.2, bwd_target=1.2)


def figure_conv5x5(ctx) -> Figure:
    """Figure 3: conv N=64, C=6, 14x14, K=16, 5x5, no padding (the lecture's second conv)."""
    # Issue 15 target 3: forward >= 1.0x, backward >= 2x (at 1 and 2 threads: see --scaling).
    return _conv_figure(ctx, 3, 64, 6, 14, 14, 16, 5, 0, "~281 / 117 / 110", fwd_target=1.0, bwd_target=2.0)


def figure_depthwise(ctx) -> Figure:
    """Figure 7 (issue 15's 5b): depthwise conv N=32, C=K=128, 32x32, 3x3, padding 1, groups=128."""
    # Issue 15 target 5b: forward and backward >= 1.0x.
    return _conv_figure(ctx, 7, 32, 128, 32, 32, 128, 3, 1, "not yet recorded", groups=128,
                        fwd_target=1.0, bwd_target=1.0)


# ----------------------------------------------------------------------------------------------
# Figure 4: per-call cost
# ----------------------------------------------------------------------------------------------

def figure_percall(ctx) -> Figure:
    """Figure 4: per-call cost of a tiny conv2d from Python, NumPy in and out, in microseconds.

    timeit with many loops, median over repeats. Scale: a ctypes call of libc's getpid, and
    np.empty of the output's size (the allocation every NumPy-returning call pays).
    """
    import numpy as np
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    fig = Figure(4, "Per-call cost from Python, conv2d (1,1,8,8) * (1,1,3,3), NumPy in and out: "
                    "microseconds (lower is better)")
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8), dtype=np.float32)
    w = np.random.default_rng(3).standard_normal((1, 1, 3, 3), dtype=np.float32)
    out = np.empty((1, 1, 6, 6), np.float32)
    number, repeats = s.timeit_number, s.timeit_repeats

    cases = {}
    if sc is not None:
        cases["sc"] = lambda: sc.conv2d(x, w)
        cases["sc_out"] = lambda: sc.conv2d(x, w, out=out)
    if torch is not None:
        F = torch.nn.functional
        cases["torch"] = lambda: F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    libc = ctypes.CDLL(None)
    getpid = libc.getpid
    getpid.restype = ctypes.c_int
    getpid.argtypes = ()
    cases["ctypes"] = getpid
    cases["np_empty"] = lambda: np.empty((1, 1, 6, 6), np.float32)
    cases["py_noop"] = lambda: None

    results = {k: [] for k in cases}
    for fn in cases.values():  # warm-up
        for _ in range(1000):
            fn()
    for _ in range(repeats):  # interleaved: one repeat of every case, then the next
        for k, fn in cases.items():
            if k == "torch":
                with torch.inference_mode():
                    v = timeit.Timer(fn).timeit(number=number)
            else:
                v = timeit.Timer(fn).timeit(number=number)
            results[k].append(v / number * 1e6)
    st = {k: Stats(v) for k, v in results.items()}

    row = Row("conv2d(x, w)", "us", False, target=0.6, target_abs=True)  # issue 15 target 6
    row.sc, row.torch = st.get("sc"), st.get("torch")
    fig.rows.append(row)
    print_row(row)
    if "sc_out" in st:
        row = Row("conv2d(x, w, out=out) (vs torch above)", "us", False)
        row.sc, row.torch = st["sc_out"], st.get("torch")
        fig.rows.append(row)
        print_row(row)
    for key, label in (("ctypes", "scale: ctypes libc getpid()"),
                       ("np_empty", "scale: np.empty((1,1,6,6), float32)"),
                       ("py_noop", "scale: Python call of `lambda: None`")):
        row = Row(label, "us", False, sc=st[key])
        fig.rows.append(row)
        print_row(row)
    fig.notes.append(f"timeit, {number} loops per repeat, median over {repeats} repeats (min-max); the "
                     "'scale' rows are in the swiftcnn column and are framework-independent. PyTorch: "
                     "`F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()` under inference_mode "
                     "(reference here ~4.1-4.9 us); ctypes getpid ~0.34 us here. Target (issue 15, 6): swiftcnn <= 0.6 us.")
    return fig


# ----------------------------------------------------------------------------------------------
# Figure 5: peak resident memory
# ----------------------------------------------------------------------------------------------

def _proc_status_kib(key: str) -> int:
    """A VmRSS / VmHWM figure of this process from /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_child(framework: str, threads: int, epochs: int = 5, n: int = 5000, batch: int = 64) -> None:
    """Body of figure 5's fresh subprocess: train the lecture's network for 5 epochs and print JSON
    with the current RSS (KiB) after the imports and before training, and the peak at the end."""
    import numpy as np  # noqa: F401
    rss = lambda: _proc_status_kib("VmRSS")  # noqa: E731
    rep = {"framework": framework, "after_numpy": rss()}
    if framework == "swiftcnn":
        import swiftcnn as sc
        sc.set_num_threads(threads)
        rep["after_import"] = rss()
        x, y = synthetic_mnist(n)
        sc.manual_seed(0)
        model = swiftcnn_net(sc, "sigmoid")
        opt = sc.SGD(model.parameters(), lr=LR)
        rep["before_train"] = rss()
        t0 = time.perf_counter()
        h = model.fit(x, y, epochs=epochs, batch_size=batch, optimizer=opt, shuffle=True, seed=0,
                      progress=False)
        rep["train_s"] = time.perf_counter() - t0
        rep["final_loss"] = float(h.history["loss"][-1])
    else:
        import torch
        torch.set_num_threads(threads)
        rep["after_import"] = rss()
        x, y = synthetic_mnist(n)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        torch.manual_seed(0)
        model = torch_net(torch, "sigmoid")
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        gen = torch.Generator().manual_seed(0)
        rep["before_train"] = rss()
        t0 = time.perf_counter()
        for _ in range(epochs):
            loss, _acc = torch_fit_epoch(torch, model, opt, xt, yt, batch, gen)
        rep["train_s"] = time.perf_counter() - t0
        rep["final_loss"] = loss
    rep["end"] = rss()
    rep["vmhwm"] = _proc_status_kib("VmHWM")  # this process's own peak, since exec
    print("RSS_JSON " + json.dumps(rep), flush=True)


def rss_launcher(framework: str, threads: int) -> None:
    """Figure 5's small middle process: run rss_child in a fresh interpreter and add its peak RSS
    from getrusage(RUSAGE_CHILDREN).

    Linux charges a child with the resident set of the process it was forked from (ru_maxrss
    survives exec), so a child forked straight from the benchmark (numpy + torch + swiftcnn loaded)
    would report the parent's RSS. This launcher has imported only the standard library.
    """
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_rss-child", framework,
                        "--threads", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RSS_JSON ")]
    if p.returncode != 0 or not lines:
        how = (f"killed by {signal.Signals(-p.returncode).name}" if p.returncode < 0
               else f"exit status {p.returncode}")
        print(f"{p.stdout}\nrss child ({framework}) failed: {how}", flush=True)
        sys.exit(1)
    rep = json.loads(lines[-1][len("RSS_JSON "):])
    rep["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rep["launcher_rss"] = _proc_status_kib("VmHWM")
    print("RSS_JSON " + json.dumps(rep), flush=True)


def _spawn_rss_child(framework: str, threads: int, env: dict, attempts: int = 3) -> dict:
    """Run rss_child in a fresh interpreter (through rss_launcher) and return its report.

    A child killed by a signal is retried (up to `attempts` runs in all): SIGBUS happens when the
    library's .so is replaced on disk by a rebuild while the child maps it.
    """
    for attempt in range(attempts):
        try:
            return _spawn_rss_child_once(framework, threads, env)
        except RuntimeError as e:
            if "killed by" not in str(e) or attempt == attempts - 1:
                raise
            print(f"  {framework} child: {str(e).splitlines()[-1]}; retrying", flush=True)
            time.sleep(5)
    raise AssertionError("unreachable")


def _spawn_rss_child_once(framework: str, threads: int, env: dict) -> dict:
    """One run of rss_child through rss_launcher."""
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_rss-launch", framework,
                        "--threads", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RSS_JSON ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} child failed ({p.returncode}): {p.stdout.strip()[-800:]}")
    return json.loads(lines[-1][len("RSS_JSON "):])


def figure_memory(ctx) -> Figure:
    """Figure 5: peak resident memory of a 5-epoch training run, each framework in a fresh subprocess.

    5,000 synthetic images, batch 64; once under the benchmark's malloc settings, once under glibc's
    defaults (memory is the one figure where the speed-oriented malloc settings could cost the peer).
    """
    fig = Figure(5, "Peak resident memory, 5-epoch training run of the lecture's network: MiB (lower is better)")
    fig.notes.append("Fresh subprocess per framework and setting; 5 epochs over 5,000 synthetic MNIST-shaped "
                     "images (uniform pixels, random labels), batch 64, SGD, 2 threads; swiftcnn via "
                     "`model.fit`, PyTorch via the fit-style loop of figure 1. Peak = ru_maxrss from "
                     "getrusage(RUSAGE_CHILDREN) in a small stdlib-only launcher process that runs the child "
                     "(a child forked straight from the benchmark would inherit the benchmark's RSS in its "
                     "ru_maxrss: Linux keeps it across exec), cross-checked with the child's own VmHWM read at the end of "
                     "training (ru_maxrss also covers interpreter start-up and shutdown, so it can be higher). "
                     "'import' = current RSS (VmRSS) right after `import numpy` + the framework "
                     "+ set_num_threads; 'training increment' = peak minus the current RSS just before training "
                     "(data and model already built). Median over the repeats (few: memory is "
                     "near-deterministic).")
    frameworks = []
    if ctx.sc is not None:
        frameworks.append("swiftcnn")
    if ctx.torch is not None:
        frameworks.append("torch")
    reps = 2 if ctx.settings is QUICK else 3
    base_env = dict(os.environ)
    default_env = {k: v for k, v in base_env.items() if k not in MALLOC_ENV}
    for setting, env in (("bench malloc", base_env), ("default malloc", default_env)):
        res = {f: [] for f in frameworks}
        for _ in range(reps):
            for f in frameworks:
                res[f].append(_spawn_rss_child(f, ctx.threads, env))
        mib = lambda v: v / 1024.0  # noqa: E731 (ru_maxrss is KiB on Linux)
        rows = (("peak RSS", lambda r: r["children_maxrss"], 0.2),  # issue 15 target 6: <= 0.2x PyTorch
                ("RSS after imports", lambda r: r["after_import"], None),
                ("training increment", lambda r: r["children_maxrss"] - r["before_train"], None))
        for label, get, target in rows:
            row = Row(f"{label}, {setting}", "MiB", False, target=target)
            if "swiftcnn" in res:
                row.sc = Stats([mib(get(r)) for r in res["swiftcnn"]])
            if "torch" in res:
                row.torch = Stats([mib(get(r)) for r in res["torch"]])
            fig.rows.append(row)
            print_row(row)
        for f in frameworks:
            r0 = res[f][0]
            if abs(r0["children_maxrss"] - r0["vmhwm"]) > 2048:
                fig.notes.append(f"{f} [{setting}]: RUSAGE_CHILDREN maxrss {r0['children_maxrss']} KiB vs the "
                                 f"child's VmHWM at the end of training {r0['vmhwm']} KiB.")
        times = ", ".join(f"{f} {statistics.median(r['train_s'] for r in res[f]):.2f} s "
                          f"(final loss {res[f][0]['final_loss']:.4f})" for f in frameworks)
        fig.notes.append(f"[{setting}] 5-epoch training wall time in the child: {times}.")
    return fig


# ----------------------------------------------------------------------------------------------
# Machine information and report
# ----------------------------------------------------------------------------------------------

def machine_info(ctx) -> list:
    """Lines describing the machine, the versions and the environment."""
    import numpy as np
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    lines = [f"CPU: {cpu}, {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable){mem}",
             f"OS: {platform.system()} {platform.release()}, {platform.machine()}, "
             f"glibc {platform.libc_ver()[1] or '?'}",
             f"Python {platform.python_version()} ({sys.executable}), NumPy {np.__version__}"]
    if ctx.sc is not None:
        lines.append(f"swiftcnn {getattr(ctx.sc, '__version__', '?')} from {Path(ctx.sc.__file__).parent}, "
                     f"repository HEAD {git_commit()}")
    if ctx.torch is not None:
        t = ctx.torch
        try:
            cap = t.backends.cpu.get_cpu_capability()
        except Exception:  # pragma: no cover
            cap = "?"
        build = f"CUDA {t.version.cuda} build, run on CPU" if getattr(t.version, "cuda", None) else "CPU build"
        lines.append(f"PyTorch {t.__version__} ({build}; CPU capability {cap}, oneDNN "
                     f"{'on' if t.backends.mkldnn.is_available() else 'off'}, {t.get_num_threads()} threads)")
    lines.append("Threads: " + ", ".join(
        [f"swiftcnn.get_num_threads()={ctx.sc.get_num_threads()}" if ctx.sc is not None else "",
         f"torch.get_num_threads()={ctx.torch.get_num_threads()}" if ctx.torch is not None else ""]).strip(", "))
    env_keys = list(MALLOC_ENV) + list(thread_env(ctx.threads))
    lines.append("Environment: " + " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in env_keys))
    return lines


def git_commit() -> str:
    """Short commit of the repository holding bench/, '+dirty' if files outside bench/ have
    uncommitted changes."""
    try:
        c = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10).stdout.strip()
        d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":!bench"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        return (c or "?") + ("+dirty" if d else "")
    except Exception:
        return "?"


def _fmt_probe(v: Optional[float]) -> str:
    return f"{v:.0f} GFLOP/s" if v else "n/a"


def render_markdown(ctx, figures: list) -> str:
    """RESULTS.md: header (status, command, date, machine, load) and one table per figure."""
    L = ["# swiftcnn vs PyTorch: benchmark results", ""]
    busy = ctx.busy()
    star = "*" if busy else ""
    if busy:
        L += [f"> **Machine was busy during this run: the figures are NOT representative.** {busy}. "
              "Contention hurts the two frameworks unequally (PyTorch's OpenMP threads wait at barriers "
              "for a preempted sibling, so its 2-thread timings collapse far more than swiftcnn's), so "
              "the ratios and the verdicts marked * below are not evidence either way.", ""]
    if ctx.settings is QUICK:
        L += ["> Quick (smoke) run: few, short repeats.", ""]
    if ctx.load:
        L += [f"> **{ctx.load_text[0].upper() + ctx.load_text[1:]}**: that many pure-Python busy loops ran "
              "while every figure was measured (issue 15's loaded target: figure 1 >= 2x with one core "
              "busy). Their CPU is not counted as other processes' below.", ""]
    L += ["Written by `bench/run.py`. Ratio = swiftcnn / PyTorch (medians, same process run, interleaved "
          "repeats). Cells: median (min-max over repeats).", ""]
    L += ["## Run", "",
          f"- Command: `{ctx.command}`",
          f"- Effective environment prefix: `{ctx.env_prefix}`",
          f"- {ctx.reexec_note}",
          f"- Date: {ctx.started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (took {ctx.elapsed:.0f} s)",
          f"- Load average (1/5/15 min) before: {ctx.load_before}; after: {ctx.load_after} "
          "(the figure after includes the benchmark's own threads)",
          f"- CPU used by other processes during the run: {100 * ctx.others:.0f}% of all cores "
          f"(from /proc/stat minus this process and its children); steal time (hypervisor): "
          f"{100 * ctx.steal:.0f}%",
          f"- Host speed probe (1-thread NumPy/OpenBLAS sgemm 1024^3, best of 5, in a subprocess): "
          f"{_fmt_probe(ctx.probe_before)} before, {_fmt_probe(ctx.probe_after)} after "
          "(about 125 GFLOP/s on a quiet host of this kind; lower means the VM itself ran slow)",
          f"- Settings: {ctx.settings_text}",
          f"- Load: {ctx.load_text or 'none (no --load)'}"]
    L += [f"- {l}" for l in machine_info(ctx)]
    L.append("")
    L += ["## Summary", "", "| figure | measurement | swiftcnn | PyTorch | ratio | target | met |",
          "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for fig in figures:
        for row in fig.rows:
            if row.target is None:
                continue
            if fig.skipped:
                L.append(f"| {fig.number} | {row.label} ({row.unit}) | - | - | - | {row.target_text()} | "
                         f"skipped (see figure {fig.number}) |")
                continue
            r = row.ratio()
            L.append(f"| {fig.number} | {row.label} ({row.unit}) | {fmt_value(row.sc.median) if row.sc else '-'} | "
                     f"{fmt_value(row.torch.median) if row.torch else '-'} | "
                     f"{f'{r:.2f}x' if r is not None else '-'} | {row.target_text()} | {row.verdict()}{star if row.verdict() else ''} |")
    L.append("")
    for fig in figures:
        L += [f"## {fig.number}. {fig.title}", ""]
        if fig.load:
            L += [f"**{fig.load[0].upper() + fig.load[1:]}.**", ""]
        if fig.others_load is not None:
            L += [f"Other processes used {100 * fig.others_load:.0f}% of the cores while this figure ran.", ""]
        if fig.error:
            L += ["**Failed:**", "", "```", fig.error, "```", ""]
        if fig.skipped:
            L += [f"**Skipped, not measured:** {fig.skipped}", ""]
        if fig.rows:
            L += ["| measurement | unit | swiftcnn | PyTorch | ratio | spread sc / torch | target | met |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
            for row in fig.rows:
                r = row.ratio()
                spread = " / ".join(f"{s.spread_pct():.0f}%" if s and len(s.values) > 1 else "-"
                                    for s in (row.sc, row.torch))
                L.append(f"| {row.label} | {row.unit} | {fmt_stats(row.sc)} | {fmt_stats(row.torch)} | "
                         f"{f'{r:.2f}x' if r is not None else '-'} | {spread} | {row.target_text()} | "
                         f"{row.verdict()}{star if row.verdict() else ''} |")
            L.append("")
        if fig.extra_md:
            L += fig.extra_md + [""]
        L += [f"- {n}" for n in fig.notes]
        L.append("")
    L += ["Spread = (max - min) / median over the repeats. For throughput rows, higher is better and a "
          "ratio above 1 favours swiftcnn; for time and memory rows, lower is better and a ratio below 1 "
          "favours swiftcnn.", ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# Figure 6: a Conv-BN-ReLU network (the layers issue's figure)
# ----------------------------------------------------------------------------------------------

def swiftcnn_bn_net(sc):
    """3x32x32 -> conv 32-32-pool-64-64-pool, each conv followed by BatchNorm and ReLU, then Linear."""
    layers = []
    for c_in, c_out, pool in ((3, 32, False), (32, 32, True), (32, 64, False), (64, 64, True)):
        layers += [sc.Conv2d(c_in, c_out, 3, padding=1, bias=False), sc.BatchNorm2d(c_out), sc.ReLU()]
        if pool:
            layers.append(sc.MaxPool2d(2))
    return sc.Sequential(*layers, sc.Flatten(), sc.Linear(64 * 8 * 8, 10))


def torch_bn_net(torch):
    nn = torch.nn
    layers = []
    for c_in, c_out, pool in ((3, 32, False), (32, 32, True), (32, 64, False), (64, 64, True)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 8 * 8, 10))


def figure_bn_net(ctx) -> Figure:
    """Figure 6: Conv-BN-ReLU network on 3x32x32, batch 128: training step and inference, images/s."""
    sc, torch, s = ctx.sc, ctx.torch, ctx.settings
    fig = Figure(6, "Conv-BN-ReLU network (3x32x32, conv 32-32-pool-64-64-pool, BN+ReLU each, Linear), "
                    "batch 128, images/s (higher is better)")
    import numpy as np
    b = 128
    rng = np.random.default_rng(0)
    x = rng.random((b, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, b).astype(np.int64)
    fig.notes.append("train step = zero_grad, forward (training mode: batch statistics), softmax "
                     "cross-entropy, backward, SGD step; inference = eval mode (running statistics).")
    fns_train, fns_inf = {}, {}
    if sc is not None:
        sc.manual_seed(0)
        model = swiftcnn_bn_net(sc)
        opt = sc.SGD(model.parameters(), lr=LR)

        def sc_train():
            model.train()
            opt.zero_grad()
            loss, g = sc.softmax_cross_entropy(model(x), y)
            model.backward(g)
            opt.step()

        def sc_infer():
            model.predict(x, batch_size=b)

        fns_train["sc"], fns_inf["sc"] = sc_train, sc_infer
    if torch is not None:
        torch.manual_seed(0)
        tmodel = torch_bn_net(torch)
        topt = torch.optim.SGD(tmodel.parameters(), lr=LR)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def torch_train():
            tmodel.train()
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tmodel(xt), yt).backward()
            topt.step()

        def torch_infer():
            tmodel.eval()
            with torch.inference_mode():
                tmodel(torch.from_numpy(x)).numpy()

        fns_train["torch"], fns_inf["torch"] = torch_train, torch_infer
    for kind, fns in (("train step", fns_train), ("inference", fns_inf)):
        add_images_row(fig, f"b{b} {kind}", time_interleaved(fns, s), b, 1.5)
    return fig


# ----------------------------------------------------------------------------------------------
# Thread scaling: figures 1-3 at 1 and 2 threads (issue 15's target 4)
# ----------------------------------------------------------------------------------------------

SCALING_FIGURES = ("1", "2", "3")
SCALING_THREADS = (1, 2)


def _run_scaling_child(ctx, threads: int) -> dict:
    """Run figures 1-3 in a fresh interpreter at `threads` threads and return its JSON record.

    A fresh process per thread count, as figure 5 does for memory: OpenBLAS/OpenMP read their
    thread variables at start-up, and PyTorch's intra-op pool does not reliably shrink in process.
    Its output is passed through, prefixed with the thread count.
    """
    import tempfile
    fd, path = tempfile.mkstemp(prefix="swiftcnn-bench-scaling-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads), "--no-write",
           "--_json-out", path]
    for f in SCALING_FIGURES:
        cmd += ["--only", f]
    if ctx.settings is QUICK:
        cmd.append("--quick")
    if ctx.sc is None:
        cmd.append("--no-swiftcnn")
    if ctx.torch is None:
        cmd.append("--no-torch")
    if ctx.load:
        cmd += ["--load", str(ctx.load)]
    env = {k: v for k, v in os.environ.items() if k != REEXEC_MARKER}
    env.update(MALLOC_ENV)
    env.update(thread_env(threads))
    try:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in p.stdout:
                print(f"  [{threads} thr] {line.rstrip()}", flush=True)
        except BaseException:  # Ctrl-C or an error here: the child must not outlive us
            p.kill()
            p.wait()
            raise
        p.wait()
        if p.returncode != 0:
            raise RuntimeError(f"the {threads}-thread child exited with status {p.returncode}")
        with open(path) as f:
            return json.load(f)
    finally:
        os.unlink(path)


def figure_scaling(ctx) -> Figure:
    """Figure S (issue 15's target 4): thread scaling, figures 1-3 at 1 and 2 threads, each in a fresh subprocess.

    Speedup = median at 2 threads / median at 1 thread (all rows are throughputs), per framework.
    Target: swiftcnn >= 1.8x.
    """
    fig = Figure("S", "Thread scaling: figures 1-3 at 1 and 2 threads, speedup 2 threads / 1 thread "
                      "(higher is better)")
    runs = {t: _run_scaling_child(ctx, t) for t in SCALING_THREADS}
    t1, t2 = SCALING_THREADS
    fig.notes.append(f"Each thread count runs figures 1-3 in its own fresh process (`run.py --only 1 --only 2 "
                     f"--only 3 --threads T`, OMP/OpenBLAS/MKL_NUM_THREADS=T), {t1} thread first, then {t2}; the "
                     "frameworks are interleaved within each process, the thread counts are not, so compare the "
                     "sgemm probes below. Speedup = median(2 threads) / median(1 thread) per framework; the ratio "
                     "column is left empty (the two speedups are not a swiftcnn/PyTorch ratio). Target "
                     "(issue 15, 4): swiftcnn >= 1.8x for every row. The table's last two columns are the "
                     "swiftcnn/PyTorch ratios at each thread count (issue 15's target 3 asks figure 3's at both).")
    for t in SCALING_THREADS:
        r = runs[t]
        fig.notes.append(f"{t}-thread process: sgemm probe {_fmt_probe(r.get('probe_before'))} before, "
                         f"{_fmt_probe(r.get('probe_after'))} after; other processes used "
                         f"{100 * r.get('others', 0.0):.0f}% of the cores"
                         + "".join(f"; figure {f['number']}: {f['load']}" for f in r["figures"] if f.get("load")))
    med = {t: {} for t in SCALING_THREADS}
    order = []
    for t in SCALING_THREADS:
        for f in runs[t]["figures"]:
            if f.get("error") or f.get("skipped"):
                fig.notes.append(f"{t} threads, figure {f['number']}: not measured "
                                 f"({f.get('error') or f.get('skipped')})")
            for row in f["rows"]:
                key = (f["number"], row["label"], row["unit"])
                if key not in order:
                    order.append(key)
                med[t][key] = {k: statistics.median(row[k]) if row.get(k) else None for k in ("sc", "torch")}
    fig.extra_md += [f"| figure | measurement | unit | swiftcnn {t1} thr | swiftcnn {t2} thr | speedup | "
                     f"PyTorch {t1} thr | PyTorch {t2} thr | speedup | ratio sc/torch {t1} thr | "
                     f"ratio sc/torch {t2} thr |",
                     "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def speedup(key, k):
        a, b = med[t1].get(key, {}).get(k), med[t2].get(key, {}).get(k)
        return (b / a if a and b else None), a, b

    for key in order:
        num, label, unit = key
        s_sc, sc1, sc2 = speedup(key, "sc")
        s_t, to1, to2 = speedup(key, "torch")
        cell = lambda v: fmt_value(v) if v is not None else "-"  # noqa: E731
        sp = lambda v: f"{v:.2f}x" if v is not None else "-"  # noqa: E731
        ratio = lambda a, b: sp(a / b) if a and b else "-"  # noqa: E731
        fig.extra_md.append(f"| {num} | {label} | {unit} | {cell(sc1)} | {cell(sc2)} | {sp(s_sc)} | "
                            f"{cell(to1)} | {cell(to2)} | {sp(s_t)} | {ratio(sc1, to1)} | {ratio(sc2, to2)} |")
        row = Row(f"fig {num}: {label}", "x", True, no_ratio=True,
                  target=1.8 if s_sc is not None else None, target_abs=True)
        row.sc = Stats([s_sc]) if s_sc is not None else None
        row.torch = Stats([s_t]) if s_t is not None else None
        fig.rows.append(row)
        print_row(row)
    return fig


def figures_to_json(ctx, figures: list) -> dict:
    """The measured figures as JSON (for --scaling's parent): raw values per row, plus the probes."""
    return {"threads": ctx.threads, "probe_before": ctx.probe_before, "probe_after": ctx.probe_after,
            "others": ctx.others, "load": ctx.load_text,
            "figures": [{"number": f.number, "title": f.title, "error": f.error, "skipped": f.skipped,
                         "load": f.load,
                         "rows": [{"label": r.label, "unit": r.unit,
                                   "sc": r.sc.values if r.sc else None,
                                   "torch": r.torch.values if r.torch else None} for r in f.rows]}
                        for f in figures]}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

FIGURES = {
    "1": figure_lenet, "lenet": figure_lenet,
    "2": figure_conv3x3, "conv3x3": figure_conv3x3,
    "3": figure_conv5x5, "conv5x5": figure_conv5x5,
    "4": figure_percall, "percall": figure_percall,
    "5": figure_memory, "memory": figure_memory,
    "6": figure_bn_net, "bnnet": figure_bn_net,
    "7": figure_depthwise, "depthwise": figure_depthwise,
    "8": figure_lenet64, "lenet64": figure_lenet64,
    "9": figure_mnist_epoch, "mnist": figure_mnist_epoch,
}
ORDER = [figure_lenet, figure_conv3x3, figure_conv5x5, figure_percall, figure_memory, figure_bn_net, figure_depthwise,
         figure_lenet64, figure_mnist_epoch]


class Context:
    """What every figure needs: the imported frameworks, the settings, and run metadata."""

    sc = None
    torch = None

    def busy(self) -> str:
        """A reason to distrust the run, or '' if the machine looked idle.

        The load average after the run includes the benchmark's own threads, so only the one before
        counts; during the run, other processes' share of the CPU (from /proc/stat) is the measure.
        """
        ncpu = os.cpu_count() or 1
        reasons = []
        if self.load_before_raw[0] > 0.25 * ncpu:
            reasons.append(f"1-min load average {self.load_before_raw[0]:.2f} on {ncpu} cores at the start")
        if self.others > 0.05:
            reasons.append(f"other processes used {100 * self.others:.0f}% of the cores during the run")
        return "; ".join(reasons)


def parse_args(argv):
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer and shorter repeats (smoke run)")
    p.add_argument("--only", action="append", metavar="FIGURE", choices=sorted(FIGURES) + ["all"],
                   help="run only this figure (repeatable): 1..9 or lenet, conv3x3, conv5x5, percall, memory, "
                        "bnnet, depthwise, lenet64, mnist; 'all' = every figure (with --scaling)")
    p.add_argument("--scaling", action="store_true",
                   help="thread-scaling table: figures 1-3 at 1 and 2 threads, each in a fresh subprocess; "
                        "alone it runs only that table, with --only it runs those figures too")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="run N busy-loop processes (one core each) while every figure is measured")
    p.add_argument("--no-torch", action="store_true", help="do not import or measure PyTorch")
    p.add_argument("--no-swiftcnn", action="store_true", help="do not import or measure swiftcnn")
    p.add_argument("--threads", type=int, default=2, help="threads for both frameworks (default 2)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for the machine to go idle (other processes < 10%% of the "
                        "cores over 10 s) before measuring; runs anyway after that, marked as busy")
    p.add_argument("--output", default=str(HERE / "RESULTS.md"), help="where to write the report")
    p.add_argument("--no-write", action="store_true", help="print only; do not write the report")
    p.add_argument("--_rss-child", dest="rss_child", help=argparse.SUPPRESS)
    p.add_argument("--_rss-launch", dest="rss_launch", help=argparse.SUPPRESS)
    p.add_argument("--_json-out", dest="json_out", help=argparse.SUPPRESS)  # --scaling's children
    args = p.parse_args(argv)
    if args.load < 0:
        p.error(f"--load must be >= 0, got {args.load}")
    return args


def main(argv=None) -> int:
    """Run the selected figures, print them as they go and write the report."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rss_child:  # figure 5's fresh subprocess: keep the environment it was given
        rss_child(args.rss_child, args.threads)
        return 0
    if args.rss_launch:
        rss_launcher(args.rss_launch, args.threads)
        return 0
    ensure_environment(args.threads)

    ctx = Context()
    ctx.threads = args.threads
    ctx.load = args.load
    busy_load = BusyLoad(args.load)
    ctx.load_text = busy_load.describe() if args.load else ""
    if args.load:
        # SIGTERM would end the process without finally/atexit; make it an exception instead.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ctx.settings = QUICK if args.quick else FULL
    s = ctx.settings
    ctx.settings_text = (f"{'--quick' if args.quick else 'full'}: {s.repeats} repeats of >= {s.min_time} s "
                         f"after {s.warmup} s warm-up; fit {s.fit_repeats} epochs; timeit "
                         f"{s.timeit_repeats} x {s.timeit_number} loops")
    ctx.command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    ctx.env_prefix = " ".join(f"{k}={os.environ[k]}" for k in [*MALLOC_ENV, *thread_env(args.threads)]
                              if k in os.environ)
    marker = os.environ.get(REEXEC_MARKER)
    ctx.reexec_note = (f"run.py re-executed itself to set {marker.replace(' ', ', ')} (they were missing)"
                       if marker else "malloc and thread variables were already set; no re-exec")
    print(f"swiftcnn benchmark ({'quick' if args.quick else 'full'}); {ctx.reexec_note}")
    print(f"  environment: {ctx.env_prefix}")
    if args.load:
        print(f"  {ctx.load_text}: started before and killed after every figure")

    if not args.no_swiftcnn:
        try:
            import swiftcnn
        except Exception as e:  # noqa: BLE001
            print(f"error: cannot import swiftcnn ({e!r}). Install it with `pip install -e .` from the "
                  "repository root, or pass --no-swiftcnn to measure PyTorch alone.", file=sys.stderr)
            return 2
        swiftcnn.set_num_threads(args.threads)
        ctx.sc = swiftcnn
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
            ctx.torch = torch
        except ImportError:
            print("note: PyTorch is not importable; measuring swiftcnn alone (see bench/README.md).")
    if ctx.sc is None and ctx.torch is None:
        print("error: nothing to measure", file=sys.stderr)
        return 2

    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    ctx.probe_before = host_speed_probe()
    print(f"  host speed probe (1-thread sgemm): {_fmt_probe(ctx.probe_before)}")
    ctx.load_before_raw = os.getloadavg()
    ctx.load_before = " / ".join(f"{v:.2f}" for v in ctx.load_before_raw)
    print(f"  load average before: {ctx.load_before}")
    if ctx.load_before_raw[0] > 0.25 * (os.cpu_count() or 1):
        print("  WARNING: the machine is not idle; timings will not be representative.")
    ctx.started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    whole = LoadMonitor()

    if args.only and "all" in args.only:
        selected = list(ORDER)
    elif args.only:
        selected = [f for f in ORDER if f in {FIGURES[k] for k in args.only}]
    else:
        selected = [] if args.scaling else list(ORDER)  # --scaling alone: only its table
    if args.scaling:
        selected.append(figure_scaling)
    figures = []
    for fn in selected:
        print(f"\n[{fn.__doc__.split(':')[0].strip()}] {fn.__doc__.split(':', 1)[1].strip().splitlines()[0]}",
              flush=True)
        mon = LoadMonitor()
        share = None
        try:
            if fn is not figure_scaling:  # the scaling children run their own load
                busy_load.start()
            fig = fn(ctx)
        except Exception as e:  # noqa: BLE001 - one failing figure must not lose the others
            import traceback
            num = ORDER.index(fn) + 1 if fn in ORDER else "S"
            fig = Figure(num, fn.__doc__.split(":", 1)[1].strip().splitlines()[0])
            fig.error = "".join(traceback.format_exception_only(type(e), e)).strip()
            print("  FAILED: " + traceback.format_exc(), flush=True)
        finally:  # also on Ctrl-C: the busy processes never outlive the figure
            share = busy_load.stop()
        if args.load:
            fig.load = busy_load.describe(share) if fn is not figure_scaling else \
                f"{ctx.load_text}, started by each thread count's process"
            print(f"  ({fig.load})", flush=True)
        # After stop(): the busy processes have been waited for, so their CPU counts as ours.
        fig.others_load = mon.others_share()
        print(f"  (other processes used {100 * fig.others_load:.0f}% of the cores meanwhile)", flush=True)
        figures.append(fig)

    ctx.elapsed = time.perf_counter() - t0
    ctx.others = whole.others_share()
    ctx.steal = whole.steal_share()
    ctx.load_after_raw = os.getloadavg()
    ctx.probe_after = host_speed_probe()
    print(f"host speed probe (1-thread sgemm): {_fmt_probe(ctx.probe_before)} before, "
          f"{_fmt_probe(ctx.probe_after)} after")
    ctx.load_after = " / ".join(f"{v:.2f}" for v in ctx.load_after_raw)
    print(f"\nload average after: {ctx.load_after}; other processes used {100 * ctx.others:.0f}% of the cores; "
          f"steal {100 * ctx.steal:.0f}%")
    if ctx.busy():
        print(f"WARNING: machine busy ({ctx.busy()}): figures NOT representative.")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures_to_json(ctx, figures)))
    if not args.no_write:
        text = render_markdown(ctx, figures)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
