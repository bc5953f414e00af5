"""Replays the fuzz corpus (python/tests/fuzz_corpus/, written by scripts/fuzz.sh) on every run.

Every file goes through ``fuzz/harness.py``'s ``decode_and_call`` in a child interpreter (atheris is
not needed): the documented refusals (ValueError, TypeError, OverflowError, MemoryError,
RuntimeError) are fine; any other exception, or the child dying (a signal), fails the file. The
corpus files run in one child (restarted after a crash, which is attributed to its file); each
known crash reproducer runs in its own child and is an xfail(strict=True) listed in KNOWN_CRASHES
with its reason: once the bug is fixed the test XPASSes, which fails the run until the entry is
removed from the list.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(TESTS_DIR, "fuzz_corpus")
TIMEOUT = float(os.environ.get("SWIFTCNN_FUZZ_REPLAY_TIMEOUT", "600" if os.environ.get("SWIFTCNN_SANITIZED") else "180"))
SANITIZED = os.environ.get("SWIFTCNN_SANITIZED") == "1"

# corpus file name -> (the bug it reproduces, whether only AddressSanitizer shows it). Remove an
# entry once fixed. An ASan-only entry (an out-of-bounds read that does not crash a normal build)
# is replayed against scripts/sanitize.sh's build (.build-asan/py) when that build exists.
KNOWN_CRASHES: dict[str, tuple[str, bool]] = {
    # Empty: the three reproducers of the float32 conv2d backward heap overflow the fuzzer found
    # (crash-a0b7d5cd41f81b08, crash-b1be183bdbc2e40d, crash-b30d8f3e5a792da5: a stride with one
    # output position stored as 1, which sent the call through the stride-1 direct kernels) replay
    # as ordinary corpus entries since Geometry.swift's effectiveStride keeps min(stride, span).
}
ROOT = os.path.dirname(os.path.dirname(TESTS_DIR))
ASAN_PKG = os.path.join(ROOT, ".build-asan", "py")


def _asan_env():
    """The environment of scripts/sanitize.sh's build, or None when it is not there."""
    if not os.path.isfile(os.path.join(ASAN_PKG, "swiftcnn", "libSwiftCNNCAPI.so")):
        return None
    try:
        import shutil

        swift = shutil.which("swift")
        clang = os.path.join(os.path.dirname(os.path.realpath(swift)), "clang")
        rt = os.path.join(subprocess.run([clang, "-print-resource-dir"], capture_output=True, text=True,
                                         check=True).stdout.strip(), "lib", "linux", "libclang_rt.asan-x86_64.so")
    except (TypeError, OSError, subprocess.CalledProcessError):
        return None
    if not os.path.isfile(rt):
        return None
    return {"LD_PRELOAD": rt, "PYTHONMALLOC": "malloc", "PYTHONPATH": ASAN_PKG,
            "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:allocator_may_return_null=1",
            "UBSAN_OPTIONS": "halt_on_error=1", "SWIFTCNN_SANITIZED": "1"}

REPLAY = r"""
import json, os, sys, traceback
sys.path.insert(0, os.path.join(os.getcwd(), "fuzz"))
import faulthandler; faulthandler.enable()
import warnings; warnings.simplefilter("ignore")
import harness
harness._limit_memory()
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    with open(path, "rb") as f:
        data = f.read()
    try:
        harness.decode_and_call(data)
        r = {"file": path, "ok": True}
    except BaseException as e:
        r = {"file": path, "ok": False, "error": "".join(traceback.format_exception(e))[-1500:]}
    print(json.dumps(r), flush=True)
print(json.dumps({"end": True}), flush=True)
"""


def _files():
    if not os.path.isdir(CORPUS):
        return []
    return sorted(f for f in os.listdir(CORPUS) if not f.startswith("."))


def replay(paths, env_extra=None):
    """{path: None (fine) or the failure}; a child is restarted after a crash."""
    results, todo = {}, list(paths)
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **(env_extra or {}))
    while todo:
        proc = subprocess.Popen([sys.executable, "-c", REPLAY, *todo], cwd=TESTS_DIR, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            how = f"hung (killed after {TIMEOUT:.0f} s)"
        current, ended = None, False
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                current = msg["start"]
            elif "file" in msg:
                results[msg["file"]] = None if msg["ok"] else msg["error"]
                current = None
            elif "end" in msg:
                ended = True
        if ended and proc.returncode == 0:
            break
        if current is None:
            pytest.fail(f"the replay child failed outside any corpus file ({how}):\n{err[-3000:]}")
        lines = err.strip().splitlines()
        key = [l for l in lines if "ERROR: " in l or "SUMMARY: " in l or "Fatal Python error" in l]
        tail = "\n".join(key[:4] + lines[-10:])
        results[current] = f"the child was {how}; stderr tail:\n{tail}"
        todo = todo[todo.index(current) + 1:]
    return results


def test_corpus_is_there():
    files = [f for f in _files() if not f.startswith("crash-")]
    # The corpus is what scripts/fuzz.sh kept: a replay of nothing would check nothing.
    assert len(files) >= 20, f"only {len(files)} corpus files in {CORPUS}; run scripts/fuzz.sh"
    total = sum(os.path.getsize(os.path.join(CORPUS, f)) for f in _files())
    assert len(_files()) <= 260 and total <= 1_100_000, (len(_files()), total)


def test_known_crashes_are_in_the_corpus():
    missing = [f for f in KNOWN_CRASHES if f not in _files()]
    assert not missing, f"KNOWN_CRASHES lists files that are not in the corpus: {missing}"


def test_replay_corpus():
    files = [f for f in _files() if f not in KNOWN_CRASHES]
    results = replay([os.path.join(CORPUS, f) for f in files])
    bad = {os.path.basename(p): e for p, e in results.items() if e is not None}
    print(f"\nfuzz corpus replay: {len(results)} files, {len(bad)} failing")
    assert len(results) == len(files)
    assert not bad, "\n\n".join(f"{f}:\n{e}" for f, e in sorted(bad.items()))


@pytest.mark.parametrize("name", sorted(KNOWN_CRASHES) or [pytest.param(None, marks=pytest.mark.skip("none known"))])
def test_known_crash(name, request):
    if SANITIZED:
        pytest.skip("known crash: not run under AddressSanitizer (its report would fail the run; "
                    "the normal run keeps it strictly xfail)")
    reason, asan_only = KNOWN_CRASHES[name]
    env_extra = None
    if asan_only:
        env_extra = _asan_env()
        if env_extra is None:
            pytest.skip("an out-of-bounds access only AddressSanitizer shows: run scripts/sanitize.sh once "
                        "to build .build-asan/, then this replays against it")
    request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    path = os.path.join(CORPUS, name)
    results = replay([path], env_extra)
    assert results[path] is None, results[path]
