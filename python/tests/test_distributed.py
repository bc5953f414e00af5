"""Data-parallel training over MPI: ``fit(..., distributed=True)`` under ``mpiexec -n 2``.

Skipped with a reason when mpi4py or mpiexec is missing (``pip install 'swiftcnn[mpi]'`` brings
both: the mpich wheel provides mpiexec). Every mpiexec run has a timeout, so a hang fails the test.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import swiftcnn as sc
from swiftcnn import distributed as dist

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(TESTS_DIR, "mpi_fit_script.py")
sys.path.insert(0, TESTS_DIR)
import mpi_fit_script as helper  # noqa: E402


def find_mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel's, in a venv
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="mpi4py or mpiexec is missing (pip install 'swiftcnn[mpi]': mpi4py and the mpich wheel)")


def mpirun(processes, *args, timeout=120):
    env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")
    return subprocess.run([MPIEXEC, "-n", str(processes), sys.executable, SCRIPT, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=TESTS_DIR)


def single_process_reference(dtype, batch, epochs=3, count=203, seed=5, shift=1):
    sc.set_num_threads(1)
    try:
        x, y = helper.make_data(0, count, dtype)
        model = helper.make_model(dtype, 100)  # rank 0's initial weights
        optimizer = sc.SGD(model.parameters(), lr=0.05, momentum=0.9)
        history = model.fit(x, y, epochs=epochs, batch_size=batch, optimizer=optimizer, seed=seed,
                            augment=helper.shifter(shift), progress=False, validation_data=(x[:50], y[:50]),
                            scheduler=helper.InverseDecay(optimizer))
    finally:
        sc.set_num_threads(os.cpu_count() or 1)
    return model, history


def test_local_slices_cover_the_global_batch():
    for count in (1, 2, 7, 32, 33):
        for size in (1, 2, 3, 4):
            slices = [dist._local_slice(count, size, r) for r in range(size)]
            assert slices[0][0] == 0 and slices[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            assert max(h - l for l, h in slices) - min(h - l for l, h in slices) <= 1


def test_detect_mpi_without_a_launcher(monkeypatch):
    for name in dist.LAUNCHER_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert dist.detect_mpi() is None and dist.is_root(None)
    assert dist.launched_by_mpi({"PMI_RANK": "1"}) and dist.launched_by_mpi(
        {"OMPI_COMM_WORLD_RANK": "0"}) and not dist.launched_by_mpi({})


def test_fit_distributed_rejects_a_non_communicator():
    model = helper.make_model("float64", 1)
    x, y = helper.make_data(0, 8, "float64")
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(TypeError, match="distributed"):
        model.fit(x, y, batch_size=4, progress=False, distributed="yes")
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


@needs_mpi
@pytest.mark.parametrize("dtype,rel", [("float64", 1e-9), ("float32", 2e-4)])
def test_two_processes_follow_one_process_with_double_batch(dtype, rel, tmp_path):
    out = tmp_path / "p2.npz"
    result = mpirun(2, "train", str(out), "--dtype", dtype, "--batch", "16")
    assert result.returncode == 0, result.stdout + result.stderr
    # every rank asked for progress (one printed line per epoch), only rank 0 printed
    assert result.stdout.count("Epoch 1/3 - ") == 1 and result.stdout.count("Epoch 3/3 - ") == 1
    assert "rank 0 done" in result.stdout
    got = np.load(out)
    assert np.array_equal(got["every"][0], got["every"][1]), "the replicas drifted apart"
    model, history = single_process_reference(dtype, 32)
    initial = helper.make_model(dtype, 100).state_dict()
    for key, value in model.state_dict().items():
        # relative to how far training moved the weights, not to the weights themselves
        moved = np.abs(value - initial[key]).max()
        assert moved > 1e-3
        err = np.abs(got["p:" + key] - value).max() / moved
        assert err <= rel, f"{key}: difference {err:.3g} of the update > {rel:g}"
    for key, values in history.history.items():
        np.testing.assert_allclose(got["h:" + key], values, rtol=rel * 10, atol=rel)
    assert int(got["steps"]) == 3 * 7  # ceil(203 / 32) global steps per epoch


@needs_mpi
def test_one_process_under_mpiexec_matches_plain_fit(tmp_path):
    out = tmp_path / "p1.npz"
    result = mpirun(1, "train", str(out), "--batch", "32")
    assert result.returncode == 0, result.stdout + result.stderr
    got = np.load(out)
    model, _ = single_process_reference("float64", 32)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(got["p:" + key], value, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                    reason="mpi4py is missing (pip install 'swiftcnn[mpi]')")
def test_distributed_fit_without_a_launcher_is_a_single_process_run(tmp_path):
    # MPI starts as a singleton (world size 1) in a plain `python` process.
    out = tmp_path / "single.npz"
    result = subprocess.run([sys.executable, SCRIPT, "train", str(out), "--batch", "32"],
                            capture_output=True, text=True, timeout=120, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    got = np.load(out)
    model, _ = single_process_reference("float64", 32)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(got["p:" + key], value, rtol=1e-12, atol=1e-14)


@needs_mpi
def test_a_failing_rank_ends_the_job(tmp_path):
    result = mpirun(2, "fail", str(tmp_path / "never.npz"), timeout=60)
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert "rank 1 of 2 failed" in result.stderr
    assert not (tmp_path / "never.npz").exists()


@needs_mpi
def test_an_interrupted_rank_stops_every_rank_at_the_same_batch(tmp_path):
    out = tmp_path / "int.npz"
    result = mpirun(2, "interrupt", str(out), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    got = np.load(out)
    assert bool(got["interrupted"])
    # SIGINT reached rank 1 during step 3; every rank stops before step 4 (none is half-applied)
    assert int(got["steps"]) == 3
    assert np.array_equal(got["every"][0], got["every"][1])


@needs_mpi
def test_a_rank_that_dies_ends_the_job(tmp_path):
    result = mpirun(2, "die", str(tmp_path / "never.npz"), timeout=60)
    assert result.returncode != 0
    assert not (tmp_path / "never.npz").exists()


@needs_mpi
def test_ranks_called_with_different_data_all_raise(tmp_path):
    result = mpirun(2, "mismatch", str(tmp_path / "never.npz"), timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("ranks [1] differ from rank 0") == 2, result.stderr


@needs_mpi
def test_cli_under_mpiexec_trains_data_parallel_and_only_rank_0_writes(tmp_path):
    """`mpiexec -n 2 python -m swiftcnn train`: one report on stdout, one model file, both ranks done."""
    out = tmp_path / "run"
    result = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-m", "swiftcnn", "train", "--dataset", "mnist-5k", "--epochs", "1",
         "--threads", "1", "--out", str(out), "--no-report", "--quiet"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("test accuracy") == 1, result.stdout
    assert (out / "model.npz").is_file()
    model = sc.load(str(out / "model.npz"))
    x, y = sc.datasets.load_mnist(split="test")
    assert model.evaluate(x, y)["accuracy"] > 0.3
