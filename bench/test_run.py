"""Tests of the benchmark harness itself (bench/run.py), not of swiftcnn: the busy-load processes
die, verdicts follow the targets, a skipped figure is reported as skipped, and the scaling table
computes its speedups from the children's records. Cheap: no PyTorch, no timing.

    python -m pytest bench/test_run.py -q -p no:cacheprovider
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_busy_load_spins_and_is_killed():
    load = bench.BusyLoad(2)
    load.start()
    pids = [p.pid for p in load.procs]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    time.sleep(0.5)
    share = load.stop()
    assert share is not None and share > 0.2, share  # they really used CPU
    assert load.procs == []
    assert not any(_alive(p) for p in pids)
    assert load.stop() is None  # idempotent (atexit calls it again)


def test_busy_load_zero_starts_nothing():
    load = bench.BusyLoad(0)
    load.start()
    assert load.procs == [] and load.stop() is None


def test_busy_load_dies_with_its_parent():
    """PR_SET_PDEATHSIG: a busy process whose parent is SIGKILLed (no finally, no atexit) dies too."""
    import subprocess
    code = ("import sys, time; sys.path.insert(0, %r); import run; l = run.BusyLoad(1); l.start(); "
            "print(l.procs[0].pid, flush=True); time.sleep(60)") % str(Path(bench.__file__).parent)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 5
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


@pytest.mark.parametrize("sc, torch, higher, target, want", [
    (250, 100, True, 2.5, "yes"), (249, 100, True, 2.5, "NO"),
    (20, 100, False, 0.2, "yes"), (21, 100, False, 0.2, "NO"),
])
def test_ratio_verdicts(sc, torch, higher, target, want):
    row = bench.Row("r", "u", higher, sc=bench.Stats([sc]), torch=bench.Stats([torch]), target=target)
    assert row.verdict() == want


def test_absolute_target_and_no_ratio():
    row = bench.Row("tiny conv", "us", False, sc=bench.Stats([0.61]), torch=bench.Stats([5.0]),
                    target=0.6, target_abs=True)
    assert row.verdict() == "NO" and row.target_text() == "sc <= 0.6 us"
    row = bench.Row("speedup", "x", True, sc=bench.Stats([1.85]), torch=bench.Stats([1.9]),
                    target=1.8, target_abs=True, no_ratio=True)
    assert row.ratio() is None and row.verdict() == "yes"


def _ctx():
    ctx = bench.Context()
    ctx.settings = bench.QUICK
    ctx.settings_text = "quick"
    ctx.command = "python bench/run.py"
    ctx.env_prefix = ""
    ctx.reexec_note = ""
    import datetime
    ctx.started = datetime.datetime.now().astimezone()
    ctx.elapsed = 1.0
    ctx.load_before_raw = (0.0, 0.0, 0.0)
    ctx.load_before = ctx.load_after = "0 / 0 / 0"
    ctx.others = ctx.steal = 0.0
    ctx.probe_before = ctx.probe_after = 100.0
    ctx.threads = 2
    ctx.load = 1
    ctx.load_text = bench.BusyLoad(1).describe()
    return ctx


def test_report_marks_skipped_figure_and_load():
    fig = bench.Figure(9, "MNIST epoch", skipped="MNIST is not cached", load="loaded run: 1 busy process")
    fig.rows.append(bench.Row("sigmoid b64 fit epoch (not measured: no data)", "images/s", True, target=2.0))
    text = bench.render_markdown(_ctx(), [fig])
    assert "skipped (see figure 9)" in text
    assert "**Skipped, not measured:** MNIST is not cached" in text
    assert "Loaded run: 1 busy process" in text
    assert "| yes" not in text


def test_scaling_speedups_from_child_records(monkeypatch):
    def fake_child(ctx, threads):
        v = {1: 100.0, 2: 190.0}[threads]  # swiftcnn scales 1.9x, PyTorch 1.5x
        t = {1: 100.0, 2: 150.0}[threads]
        return {"probe_before": 100.0, "probe_after": 100.0, "others": 0.0, "load": "",
                "figures": [{"number": 3, "title": "", "error": "", "skipped": "", "load": "",
                             "rows": [{"label": "forward", "unit": "GFLOP/s", "sc": [v, v * 1.01, v * 0.99],
                                       "torch": [t]}]}]}
    monkeypatch.setattr(bench, "_run_scaling_child", fake_child)
    ctx = _ctx()
    fig = bench.figure_scaling(ctx)
    (row,) = fig.rows
    assert row.sc.median == pytest.approx(1.9) and row.torch.median == pytest.approx(1.5)
    assert row.verdict() == "yes" and row.ratio() is None
    assert any("| 3 | forward | GFLOP/s | 100 | 190 | 1.90x |" in l for l in fig.extra_md)


def test_parse_args_new_options():
    a = bench.parse_args(["--load", "1", "--scaling", "--only", "8", "--only", "mnist"])
    assert a.load == 1 and a.scaling and a.only == ["8", "mnist"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--load", "-1"])
