"""The per-ISA builds of the Swift core (a wheel, or a build with SWIFTCNN_ISAS=all): the choice at
import, SWIFTCNN_ISA, show_config(), and the numerics under every level this CPU runs.

Each level is checked in its own subprocess (one core per process: the loader installs exactly
one build as swiftcnn._core) running isa_check.py: conv2d and linear forward and backward against
float64 NumPy references, and bit-identical training runs per thread count. Levels this
installation does not carry are skipped with the reason (a development `pip install .` carries only
its native build). The whole suite under one level:

    SWIFTCNN_ISA=baseline python -m pytest python/tests -q -p no:cacheprovider

(test_suite_runs_under_the_forced_level below checks that such a run really uses that level).
"""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import swiftcnn
from swiftcnn import _loader

HERE = Path(__file__).resolve().parent
CHECK = HERE / "isa_check.py"
LEVELS = list(_loader.LEVELS)
X86 = platform.machine().lower() in ("x86_64", "amd64")


def run_python(code_or_script, isa=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != _loader.ISA_ENV}
    if isa is not None:
        env[_loader.ISA_ENV] = isa
    args = [str(code_or_script)] if isinstance(code_or_script, Path) else ["-c", code_or_script]
    # Run outside the source tree so `import swiftcnn` finds the installed package, as the suite does.
    return subprocess.run([sys.executable, *args], env=env, cwd=HERE.parent.parent, capture_output=True,
                          text=True, timeout=timeout)


def cpu_features():
    try:
        from swiftcnn import _cpu
    except ImportError:
        pytest.skip("swiftcnn._cpu is not built in this installation")
    return _cpu.features()


def carried():
    return swiftcnn._loader.config()["carried"]


def test_show_config_reports_the_running_core(capsys):
    cfg = swiftcnn.show_config()
    printed = capsys.readouterr().out
    assert cfg["isa"] in carried()
    assert swiftcnn._core.__file__ == cfg["extension"]
    assert os.path.isfile(cfg["swift_library"])
    assert cfg["version"] == swiftcnn.__version__
    assert cfg["num_threads"] == swiftcnn.get_num_threads()
    for text in (f"core:      {cfg['isa']}", cfg["reason"], cfg["extension"]):
        assert text in printed
    if cfg["isa"] in LEVELS:  # the level's own library, under its own name, next to its extension
        assert os.path.basename(cfg["swift_library"]) == f"libSwiftCNNCAPI_{_loader.tag(cfg['isa'])}.so"
        assert cfg["cpu"] is not None and cfg["isa"] in cfg["cpu"]["runs"]


def test_suite_runs_under_the_forced_level():
    """When the suite runs with SWIFTCNN_ISA set, every test in it used that level."""
    forced = os.environ.get(_loader.ISA_ENV, "").strip()
    cfg = swiftcnn._loader.config()
    if forced:
        assert cfg["isa"] == forced and cfg["reason"] == f"forced by {_loader.ISA_ENV}={forced}"
    else:
        assert cfg["forced"] is None


@pytest.mark.skipif(not X86 or not os.path.isfile("/proc/cpuinfo"), reason="needs Linux on x86-64")
def test_cpu_features_agree_with_the_kernel():
    """_cpu.c's CPUID/XGETBV reading against /proc/cpuinfo: the kernel lists a flag only if CPUID
    has it, and clears the AVX/AVX-512 flags when it does not enable their register state, so the
    levels runnable by either reading must be the same."""
    features = cpu_features()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    kernel_names = {"sse3": "pni"}  # /proc/cpuinfo's name for SSE3
    for name, on in features.items():
        if name in ("osxsave", "os_avx", "os_avx512"):
            continue
        if kernel_names.get(name, name) in flags:
            assert on, f"/proc/cpuinfo lists {name} but CPUID says no"
    kernel_view = {name: kernel_names.get(name, name) in flags for name in features}
    kernel_view["os_avx"] = "avx" in flags
    kernel_view["os_avx512"] = "avx512f" in flags
    ours = [l for l in LEVELS if not _loader.missing_features(l, features)]
    theirs = [l for l in LEVELS if not _loader.missing_features(l, kernel_view)]
    assert ours == theirs
    assert "baseline" in ours


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_numerics(level):
    """Under SWIFTCNN_ISA=<level>: show_config names it and why, and conv2d/linear forward and
    backward match float64 references (float64 <= 1e-12, float32 <= 1e-5 relative), with
    bit-identical repeated training runs at 1 and 2 threads."""
    if level not in carried():
        pytest.skip(f"this installation carries no {level} build (a development build; the wheel or "
                    f"SWIFTCNN_ISAS=all has every level)")
    missing = _loader.missing_features(level, cpu_features())
    if missing:
        pytest.skip(f"this CPU cannot run {level} (lacks {', '.join(missing)}); "
                    f"test_forced_level_refused_without_the_cpu covers it")
    proc = run_python(CHECK, isa=level)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("ISA_CHECK "))
    result = json.loads(line[len("ISA_CHECK "):])
    assert result["isa"] == level and result["reason"] == f"forced by SWIFTCNN_ISA={level}"
    assert f"core:      {level}" in proc.stdout
    for name, err in result["errors"].items():
        assert err <= result["bounds"][name], (level, name, err)
    assert result["exact"] and all(result["exact"].values()), result["exact"]
    assert result["ok"]


def test_default_is_the_best_level_the_cpu_runs():
    levels = [l for l in carried() if l in LEVELS]
    if not levels:
        pytest.skip("a development build: one native core, nothing to choose from")
    features = cpu_features()
    expected = max((l for l in levels if not _loader.missing_features(l, features)), key=LEVELS.index)
    proc = run_python("import swiftcnn, json; print('CFG', json.dumps(swiftcnn.show_config()))")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("CFG "))[4:])
    assert cfg["isa"] == expected and cfg["forced"] is None
    assert cfg["reason"].startswith("the best of the levels this installation carries")
    for better in LEVELS[LEVELS.index(expected) + 1:]:
        assert better in cfg["reason"]  # why not a better level: the CPU lacks it, or not carried


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_refused_without_the_cpu(level):
    features = cpu_features()
    missing = _loader.missing_features(level, features)
    if not missing:
        pytest.skip(f"this CPU runs {level}")
    if level not in carried():
        pytest.skip(f"this installation carries no {level} build")
    proc = run_python("import swiftcnn", isa=level)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and f"SWIFTCNN_ISA='{level}'" in proc.stderr
    assert "this CPU cannot run it" in proc.stderr and missing[0] in proc.stderr


def test_unknown_level_name_is_refused():
    proc = run_python("import swiftcnn", isa="x86-64-v3")
    assert proc.returncode != 0
    assert "SWIFTCNN_ISA='x86-64-v3' is not an instruction-set level" in proc.stderr
    for level in LEVELS:
        assert level in proc.stderr


# choose(): the decision itself, on made-up CPUs (so the refusals are checked on any machine).
V3 = dict.fromkeys(_loader.LEVELS["haswell"]["requires"] + ("sse2", "os_avx"), True)
V4 = dict(V3, **dict.fromkeys(_loader.LEVELS["skylake-avx512"]["requires"] + ("os_avx512",), True))
SSE2 = {"sse2": True}


@pytest.mark.parametrize("cpu, expected", [(SSE2, "baseline"), (V3, "haswell"), (V4, "skylake-avx512")])
def test_choose_picks_the_best_runnable_level(cpu, expected):
    level, reason = _loader.choose(None, LEVELS, cpu)
    assert level == expected
    assert reason.startswith("the best of the levels this installation carries")


def test_choose_needs_the_os_register_state():
    """AVX-512 in CPUID but the OS does not save zmm state (XCR0 bits 5-7 clear): haswell, not 512."""
    cpu = dict(V4, os_avx512=False)
    level, reason = _loader.choose(None, LEVELS, cpu)
    assert level == "haswell" and "os_avx512" in reason
    with pytest.raises(ImportError, match="this CPU cannot run it: it lacks os_avx512"):
        _loader.choose("skylake-avx512", LEVELS, cpu)
    assert _loader.choose(None, LEVELS, dict(V3, os_avx=False))[0] == "baseline"


def test_choose_refusals_name_the_problem():
    with pytest.raises(ImportError, match=r"lacks avx512f, avx512dq, avx512cd, avx512bw, avx512vl"):
        _loader.choose("skylake-avx512", LEVELS, V3)
    with pytest.raises(ImportError, match="carries no core built for haswell"):
        _loader.choose("haswell", ["baseline"], V4)
    with pytest.raises(ImportError, match="'znver3' is not an instruction-set level"):
        _loader.choose("znver3", LEVELS, V4)
    with pytest.raises(ImportError, match="none of this installation's builds of the core runs"):
        _loader.choose(None, ["haswell"], SSE2)
    level, reason = _loader.choose(None, ["baseline", "haswell"], V4)
    assert level == "haswell" and "does not carry it" in reason
