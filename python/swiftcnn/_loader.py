"""Which compiled Swift core this process runs: picks one and installs it as ``swiftcnn._core``.

A wheel carries the Swift core built for several x86-64 instruction-set levels (``LEVELS``), each
as its own pair of files in the package folder:

    _core_<tag><EXT_SUFFIX>        python/swiftcnn/_core.c, unchanged, linked against ...
    libSwiftCNNCAPI_<tag>.so       ... the Swift core built with ``-target-cpu <level>`` (its own
                                   file name and SONAME, found through the extension's $ORIGIN rpath)

(``<tag>`` is the level's name with ``-`` as ``_``). Every extension defines ``PyInit__core`` and
is loaded under the name ``swiftcnn._core``, so the rest of the package (``from . import _core``,
``from ._core import ...``) and pickles see one module whatever level runs. ``load()`` runs first
thing in ``swiftcnn/__init__.py``:

- ``SWIFTCNN_ISA=<level>`` in the environment forces a level: an unknown name, a level this CPU
  cannot run, or one this installation does not carry is an ImportError saying so;
- otherwise the best level this installation carries that the CPU runs (``_cpu.c``: CPUID feature
  bits and the OS-enabled register state from XGETBV).

A development build (``pip install .`` / ``pip install -e .`` from a source checkout without
``SWIFTCNN_ISAS``) has instead one plain ``_core<EXT_SUFFIX>`` with ``libSwiftCNNCAPI.so``, built for
the build machine (``-target-cpu native`` unless it was built with SWIFTCNN_PORTABLE=1); ``load()``
then imports that one (``SWIFTCNN_ISA`` may only say ``native``). ``show_config()`` reports the
choice and why.

setup.py reads ``LEVELS`` from this file (loaded by path, outside the package), so this module
imports nothing from swiftcnn at module level.
"""
import importlib.machinery
import importlib.util
import json
import os
import sys

ISA_ENV = "SWIFTCNN_ISA"
NATIVE = "native"
CORE = "_core"

# The instruction-set levels, worst to best. `target_cpu` is what `swiftc -target-cpu` is given
# (None: the toolchain's default, plain x86-64 with SSE2); `fma` adds -DSWIFTCNN_FMA (fused
# multiply-adds in the core: only where the level has FMA, else they become calls to fmaf);
# `requires` are the CPUID features (as _cpu.features() names them) the compiler may use at that
# level, and `os_state` the XCR0 register state the OS must enable for its registers. haswell's
# list is the x86-64-v3 level and skylake-avx512's x86-64-v4 (psABI), the sets LLVM emits for
# ordinary code at those -target-cpu settings (this toolchain does not accept the names
# x86-64-v3/-v4 themselves).
_V3 = ("sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "avx", "avx2", "fma", "f16c",
       "bmi1", "bmi2", "abm", "movbe")
LEVELS = {
    "baseline": {"target_cpu": None, "fma": False, "requires": ("sse2",), "os_state": None},
    "haswell": {"target_cpu": "haswell", "fma": True, "requires": _V3, "os_state": "os_avx"},
    "skylake-avx512": {"target_cpu": "skylake-avx512", "fma": True,
                       "requires": _V3 + ("avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"),
                       "os_state": "os_avx512"},
}

_config = None  # what load() chose and why; show_config() reports it


def tag(level):
    """The file-name form of a level: `skylake-avx512` -> `skylake_avx512`."""
    return level.replace("-", "_")


def swift_library(level):
    """The Swift core's file name (and SONAME) for a level, or for the native build."""
    return "libSwiftCNNCAPI.so" if level == NATIVE else f"libSwiftCNNCAPI_{tag(level)}.so"


def swift_flags(level):
    """The `swift build` flags that select a level's instructions (setup.py's and show_config's)."""
    spec = LEVELS[level]
    flags = []
    if spec["target_cpu"] is not None:
        flags += ["-Xswiftc", "-target-cpu", "-Xswiftc", spec["target_cpu"]]
    if spec["fma"]:
        flags += ["-Xswiftc", "-DSWIFTCNN_FMA"]
    return flags


def missing_features(level, features):
    """The CPU features (and OS register states) `level` needs that `features` (a dict from
    _cpu.features()) lacks; empty if the level runs here."""
    spec = LEVELS[level]
    missing = [name for name in spec["requires"] if not features.get(name, False)]
    if spec["os_state"] is not None and not features.get(spec["os_state"], False):
        missing.append(spec["os_state"] + " (register state enabled by the OS, XCR0)")
    return missing


def _find_extension(directories, stem):
    """The path of the extension module `stem` (any of this interpreter's suffixes) in the
    package's directories, or None."""
    for directory in directories:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(directory, stem + suffix)
            if os.path.isfile(path):
                return path
    return None


def _cpu_info(package):
    """(features, vendor, brand) from the _cpu extension, or None if it is not built (a plain
    development or sanitizer build does without it)."""
    try:
        cpu = importlib.import_module(package + "._cpu")
    except ImportError:
        return None
    return cpu.features(), cpu.vendor().strip(), cpu.brand().strip()


def _import_as_core(package, path):
    """Load the extension at `path` as `<package>._core` (its init function is PyInit__core
    whatever the file is called) and install it in sys.modules and on the package."""
    name = f"{package}.{CORE}"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    setattr(sys.modules[package], CORE, module)
    return module


def choose(forced, built, features):
    """(level, reason) for `forced` (SWIFTCNN_ISA's value or None), the levels this installation
    carries (`built`, a list of LEVELS keys), and the CPU `features` (None if unknown).
    ImportError when the forced level is unknown, not carried, or not runnable, or when no
    carried level runs on this CPU."""
    known = ", ".join(LEVELS)
    if forced is not None:
        if forced not in LEVELS:
            raise ImportError(f"swiftcnn: {ISA_ENV}={forced!r} is not an instruction-set level swiftcnn "
                              f"knows; use one of {known} (or unset {ISA_ENV} to pick the best one "
                              f"this CPU runs)")
        if forced not in built:
            raise ImportError(f"swiftcnn: {ISA_ENV}={forced!r}, but this installation carries no core "
                              f"built for {forced} (it has: {', '.join(built)}); build one with "
                              f"SWIFTCNN_ISAS=all when installing, or use a wheel")
        missing = missing_features(forced, features) if features is not None else []
        if missing:
            raise ImportError(f"swiftcnn: {ISA_ENV}={forced!r}, but this CPU cannot run it: it lacks "
                              f"{', '.join(missing)}; levels it runs: "
                              f"{', '.join(l for l in LEVELS if not missing_features(l, features)) or 'none'}")
        return forced, f"forced by {ISA_ENV}={forced}"
    if features is None:
        raise ImportError("swiftcnn: this installation carries per-ISA builds of its core but not the "
                          "swiftcnn._cpu extension that picks one; reinstall swiftcnn")
    runnable = [l for l in built if not missing_features(l, features)]
    if not runnable:
        raise ImportError(f"swiftcnn: none of this installation's builds of the core runs on this CPU "
                          f"(it has {', '.join(built)}; " +
                          "; ".join(f"{l} needs {', '.join(missing_features(l, features))}" for l in built) +
                          ")")
    best = max(runnable, key=list(LEVELS).index)
    better = [l for l in LEVELS if list(LEVELS).index(l) > list(LEVELS).index(best)]
    why = [f"the best of the levels this installation carries ({', '.join(built)}) that this CPU runs"]
    for level in better:
        missing = missing_features(level, features)
        if missing:
            why.append(f"{level} needs {', '.join(missing)}, which this CPU lacks")
        elif level not in built:
            why.append(f"this CPU would run {level} but this installation does not carry it")
    return best, "; ".join(why)


def load(package):
    """Import the chosen core as `<package>._core` (see the module docstring); returns it."""
    global _config
    pkg = sys.modules[package]
    directories = list(getattr(pkg, "__path__", [os.path.dirname(__file__)]))
    forced = os.environ.get(ISA_ENV, "").strip() or None
    built = [l for l in LEVELS if _find_extension(directories, f"{CORE}_{tag(l)}") is not None]
    plain = _find_extension(directories, CORE)
    cpu = _cpu_info(package) if built or forced not in (None, NATIVE) else None
    if not built:
        if plain is None:
            raise ImportError(f"swiftcnn: no compiled core in {', '.join(directories)} (neither {CORE} "
                              f"nor any {CORE}_<level>); build it: pip install . (see the README)")
        if forced not in (None, NATIVE):
            choose(forced, [NATIVE], cpu[0] if cpu else None)  # an unknown name is reported as such
        level, path = NATIVE, plain
        reason = (f"forced by {ISA_ENV}={NATIVE}" if forced == NATIVE else
                  "the only core of this installation: a build for one machine, without per-ISA builds")
    else:
        if forced == NATIVE:
            raise ImportError(f"swiftcnn: {ISA_ENV}={NATIVE}, but this installation carries per-ISA "
                              f"builds ({', '.join(built)}) and no native one")
        level, reason = choose(forced, built, cpu[0] if cpu else None)
        path = _find_extension(directories, f"{CORE}_{tag(level)}")
    module = _import_as_core(package, path)
    _config = {
        "isa": level,
        "reason": reason,
        "forced": forced,
        "carried": built or [NATIVE],
        "extension": path,
        "swift_library": os.path.join(os.path.dirname(path), swift_library(level)),
        "swift_flags": swift_flags(level) if level in LEVELS else None,
        "cpu": None if cpu is None else {
            "vendor": cpu[1], "brand": cpu[2],
            "runs": [l for l in LEVELS if not missing_features(l, cpu[0])],
            "features": cpu[0],
        },
    }
    return module


def config(package="swiftcnn"):
    """A copy of what load() chose: isa, reason, forced, carried, extension, swift_library,
    swift_flags, cpu (vendor, brand, the levels it runs, its features), plus the core's version
    and thread count. The CPU is described even for a native build when _cpu is present."""
    if _config is None:
        raise RuntimeError("swiftcnn's core is not loaded yet")
    out = dict(_config)
    core = sys.modules[f"{package}.{CORE}"]
    out["version"] = core.version()
    out["num_threads"] = core.get_num_threads()
    if out["cpu"] is None:
        cpu = _cpu_info(package)
        if cpu is not None:
            out["cpu"] = {"vendor": cpu[1], "brand": cpu[2],
                          "runs": [l for l in LEVELS if not missing_features(l, cpu[0])],
                          "features": cpu[0]}
    out["carried"] = list(out["carried"])
    return out


def show_config():
    """Print which build of the Swift core runs in this process and why, and return the same as a
    dict (see ``config``). ``SWIFTCNN_ISA=baseline|haswell|skylake-avx512`` forces a level."""
    cfg = config()
    cpu = cfg["cpu"]
    flags = cfg["swift_flags"]
    lines = [
        f"swiftcnn {cfg['version']}",
        f"  core:      {cfg['isa']}",
        f"  why:       {cfg['reason']}",
        f"  carried:   {', '.join(cfg['carried'])}",
        "  built:     " + (
            "for the machine that built it (setup.py: -target-cpu native -DSWIFTCNN_FMA, or no "
            "-target-cpu with SWIFTCNN_PORTABLE=1)" if flags is None else
            " ".join(f for f in flags if f != "-Xswiftc") or "no -target-cpu (plain x86-64: SSE2)"),
        f"  extension: {cfg['extension']}",
        f"  library:   {cfg['swift_library']}",
    ]
    if cpu is not None:
        have = [f for f, on in sorted(cpu["features"].items()) if on and f.startswith(("avx", "fma"))]
        lines.append(f"  cpu:       {cpu['brand'] or 'unknown'} ({cpu['vendor'] or 'unknown vendor'}); "
                     f"{' '.join(have) or 'no AVX'}; runs {', '.join(cpu['runs']) or 'none'}")
    else:
        lines.append("  cpu:       not inspected (swiftcnn._cpu is not built in this installation)")
    lines.append(f"  threads:   {cfg['num_threads']}")
    lines.append(f"  override:  {ISA_ENV}={'|'.join(LEVELS)}"
                 + (f" (set: {cfg['forced']})" if cfg["forced"] else " (not set)"))
    print("\n".join(lines))
    return cfg
