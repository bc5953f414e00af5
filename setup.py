"""Build of swiftcnn: the Swift core as a shared library, then the CPython extensions over it.

`pip install .` / `pip install -e .` / `python setup.py build_ext --inplace` / `python -m build` all
run BuildSwiftExt. What it builds is set by SWIFTCNN_ISAS (see requested_builds()):

- `native` (the default in a source checkout: fast development builds): one core for this machine,
  as before. `swift build -c release --product SwiftCNNCAPI --scratch-path .build-py` with the Swift
  runtime linked statically (`-static-stdlib`: the .so needs no Swift toolchain at run time), an
  SONAME (SwiftPM sets none, so the extension would record an absolute path), dead code stripped,
  and the host CPU's instructions (`-target-cpu native` plus `-DSWIFTCNN_FMA`, which makes the
  core's multiply-adds fused) unless SWIFTCNN_PORTABLE=1 is set (symbols are stripped unless
  SWIFTCNN_KEEP_SYMBOLS=1, which profiling with `perf report` wants). The extension swiftcnn._core
  from python/swiftcnn/_core*.c is linked against it with an rpath of $ORIGIN, and
  libSwiftCNNCAPI.so is copied next to it (into the build tree, so wheels carry it, and into
  python/swiftcnn/ for in-place and editable installs).
- `all` (the default when building from an sdist, which is what `python -m build` does for its
  wheel) or a comma-separated list of levels (`baseline,haswell,skylake-avx512`, defined in
  python/swiftcnn/_loader.py's LEVELS): the same core once per x86-64 level, built concurrently
  (each in .build-py-<level>, SONAME libSwiftCNNCAPI_<level>.so, `-target-cpu <level>`), and the
  unchanged _core*.c linked against each as the extension file _core_<level><EXT_SUFFIX>. At import
  _loader.py picks the best level the CPU runs (or SWIFTCNN_ISA's) and installs it as
  swiftcnn._core.

Either way the small extension swiftcnn._cpu (python/swiftcnn/_cpu.c: CPUID and XGETBV) is built,
and files of the other kind left in the output folders by an earlier build are removed (the loader
prefers per-level builds when it finds any).

Metadata is in pyproject.toml, except the version: it is written down once, in the Swift core
(`swiftCNNVersion` in Sources/SwiftCNNCAPI), and read from there by `swift_version()` below
(pyproject.toml declares it `dynamic`); `swiftcnn.__version__` asks the compiled core for it and
checks it against the installed metadata at import. See docs/ARCHITECTURE.md for the layers.
"""
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
PACKAGE_SRC = ROOT / "python" / "swiftcnn"
HEADER_DIR = ROOT / "Sources" / "SwiftCNNCAPI" / "include"
SWIFT_PRODUCT = "SwiftCNNCAPI"
SWIFT_LIB = "libSwiftCNNCAPI.so"  # what `swift build` writes; copied under each build's own name
SCRATCH = ".build-py"
# The extension's C files (compiled once per build of the Swift core, unchanged) and the headers they read.
CORE_SOURCES = ["python/swiftcnn/_core.c", "python/swiftcnn/_core_args.c", "python/swiftcnn/_core_arrays.c",
                "python/swiftcnn/_core_handles.c"]
CORE_HEADERS = ["python/swiftcnn/_core.h", "Sources/SwiftCNNCAPI/include/swiftcnn.h"]
ISAS_ENV = "SWIFTCNN_ISAS"
VERSION_SOURCES = ROOT / "Sources" / "SwiftCNNCAPI"
VERSION_PATTERN = re.compile(r'^\s*public\s+let\s+swiftCNNVersion\s*:\s*StaticString\s*=\s*"([^"]+)"',
                             re.MULTILINE)


def _load_loader():
    """python/swiftcnn/_loader.py as a standalone module (it imports nothing from the package): the
    one place the levels, their flags and the file names are written down."""
    spec = importlib.util.spec_from_file_location("_swiftcnn_setup_loader", PACKAGE_SRC / "_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOADER = _load_loader()
NATIVE = LOADER.NATIVE


def swift_version():
    """The version string from the Swift core's one `public let swiftCNNVersion: StaticString = "..."`
    (searched in every .swift file of Sources/SwiftCNNCAPI, so moving it to another file is fine)."""
    found = []
    for path in sorted(VERSION_SOURCES.rglob("*.swift")):
        found += [(path, m.group(1)) for m in VERSION_PATTERN.finditer(path.read_text(encoding="utf-8"))]
    if len(found) != 1:
        where = ", ".join(f"{p.relative_to(ROOT)}: {v!r}" for p, v in found) or "none"
        raise SetupError(f"expected exactly one `public let swiftCNNVersion: StaticString = \"...\"` "
                         f"in {VERSION_SOURCES.relative_to(ROOT)}, found {len(found)} ({where})")
    return found[0][1]


def requested_builds():
    """The builds of the core to make, from SWIFTCNN_ISAS: `native` (one core for this machine),
    `all` (every level in _loader.LEVELS) or a comma-separated list of levels. Unset: `all` when
    building from an sdist on x86-64 (PKG-INFO at the top: `python -m build` builds its wheel that
    way, and so does `pip install swiftcnn-X.tar.gz`), else `native` (a source checkout: `pip install
    .` and `pip install -e .` stay one build)."""
    x86_64 = platform.machine().lower() in ("x86_64", "amd64")
    raw = os.environ.get(ISAS_ENV, "").strip()
    if not raw:
        raw = "all" if (ROOT / "PKG-INFO").is_file() and x86_64 else NATIVE
    builds = []
    for item in (part.strip() for part in raw.split(",")):
        names = list(LOADER.LEVELS) if item == "all" else [item]
        for name in names:
            if name != NATIVE and name not in LOADER.LEVELS:
                raise SetupError(f"{ISAS_ENV}={raw!r}: {item!r} is not a build swiftcnn knows; use "
                                 f"{NATIVE}, all, or a comma-separated list of {', '.join(LOADER.LEVELS)}")
            if name not in builds:
                builds.append(name)
    if NATIVE in builds and len(builds) > 1:
        raise SetupError(f"{ISAS_ENV}={raw!r}: {NATIVE} (one plain core) cannot be combined with "
                         f"per-level builds")
    if builds != [NATIVE] and not x86_64:
        raise SetupError(f"{ISAS_ENV}={raw!r}: the per-level builds are x86-64 levels, but this "
                         f"machine is {platform.machine()}; use {ISAS_ENV}={NATIVE}")
    return builds


def extension_name(build):
    """The extension module's name (its file's stem) for a build: every one defines PyInit__core."""
    return "_core" if build == NATIVE else f"_core_{LOADER.tag(build)}"


def swift_build_command(build):
    """The `swift build` command line for a build; `--show-bin-path` is appended to find its output."""
    scratch = SCRATCH if build == NATIVE else f"{SCRATCH}-{LOADER.tag(build)}"
    cmd = [
        "swift", "build", "-c", "release", "--product", SWIFT_PRODUCT, "--scratch-path", scratch,
        "-Xswiftc", "-static-stdlib",
        "-Xlinker", f"-soname={LOADER.swift_library(build)}",
        "-Xlinker", "--gc-sections",
    ]
    if os.environ.get("SWIFTCNN_KEEP_SYMBOLS", "") != "1":   # keep them for `perf report`
        cmd += ["-Xlinker", "-s"]
    if build != NATIVE:
        cmd += LOADER.swift_flags(build)
    elif os.environ.get("SWIFTCNN_PORTABLE", "") != "1":
        cmd += ["-Xswiftc", "-target-cpu", "-Xswiftc", "native", "-Xswiftc", "-DSWIFTCNN_FMA"]
    return cmd


BUILDS = requested_builds()


# The extensions' symbols are stripped like the Swift core's (Python's CFLAGS have -g).
STRIP = [] if os.environ.get("SWIFTCNN_KEEP_SYMBOLS", "") == "1" else ["-s"]


def core_extension(build):
    return Extension(
        f"swiftcnn.{extension_name(build)}",
        sources=list(CORE_SOURCES),
        depends=list(CORE_HEADERS),
        extra_compile_args=["-O2"],
        libraries=[LOADER.swift_library(build)[len("lib"):-len(".so")]],
        extra_link_args=["-Wl,-rpath,$ORIGIN", *STRIP],
    )


class BuildSwiftExt(build_ext):
    """build_ext that first builds the Swift libraries the extensions link against."""

    def run(self):
        libs = self.build_swift()  # {build: the library, under its own file name}
        import numpy  # a build requirement (pyproject.toml)

        for ext in self.extensions:
            ext.include_dirs += [str(HEADER_DIR), numpy.get_include()]
            for build, lib in libs.items():
                if ext.name == f"swiftcnn.{extension_name(build)}":
                    ext.library_dirs += [str(lib.parent)]
        for dest_dir in self.dest_dirs():
            self.remove_stale(dest_dir)
        super().run()  # builds into build_lib, then copies the extensions into the source if inplace
        for dest_dir in self.dest_dirs():
            dest_dir.mkdir(parents=True, exist_ok=True)
            for lib in libs.values():
                # Copy to a temporary name and rename over the old library: overwriting it in place
                # would change the pages of a library that running processes have mapped (a crash).
                tmp = dest_dir / (lib.name + ".tmp")
                shutil.copyfile(lib, tmp)
                os.replace(tmp, dest_dir / lib.name)

    def build_extensions(self):
        # Python's own link line may carry an rpath to its build prefix (pyenv's does:
        # -Wl,-rpath,/root/.pyenv/.../lib); in a wheel that is a path of the build machine, searched
        # for libSwiftCNNCAPI_*.so before $ORIGIN. Keep only the $ORIGIN rpath the extensions add.
        self.compiler.linker_so = [a for a in self.compiler.linker_so
                                   if not (a.startswith("-Wl,-rpath,") and "$ORIGIN" not in a)]
        super().build_extensions()

    def dest_dirs(self):
        dirs = [Path(self.build_lib) / "swiftcnn"]
        return dirs + [PACKAGE_SRC] if self.inplace else dirs

    def remove_stale(self, dest_dir):
        """Delete cores and libraries of builds other than this one's from an output folder (an
        earlier build's: the loader would find them, and a wheel built from build_lib would carry
        them)."""
        if not dest_dir.is_dir():
            return
        keep = {LOADER.swift_library(b) for b in BUILDS}
        for build in [NATIVE, *LOADER.LEVELS]:
            if build in BUILDS:
                continue
            stem = extension_name(build)
            for path in dest_dir.iterdir():
                is_ext = path.name.startswith(stem + ".") and path.name.endswith(".so")
                if is_ext or (path.name == LOADER.swift_library(build) and path.name not in keep):
                    print(f"removing {path} (an earlier build's; this one builds {', '.join(BUILDS)})")
                    path.unlink()

    def build_swift(self):
        """Run `swift build` for every requested build, concurrently (SWIFTCNN_BUILD_JOBS at a time,
        default all: a release build of the core keeps about one core busy), and copy each library to
        build_temp under its own file name (the name its SONAME says) for linking."""
        if shutil.which("swift") is None:
            raise SetupError(
                "swiftcnn needs the Swift toolchain (6.0 or later) to build its core, but `swift` "
                "is not on PATH. Install Swift from swift.org and make sure `swift --version` works. "
                "(A wheel of swiftcnn needs no Swift toolchain: see the README.)"
            )
        jobs = max(1, int(os.environ.get("SWIFTCNN_BUILD_JOBS", "") or len(BUILDS)))
        temp = Path(self.build_temp).resolve()
        temp.mkdir(parents=True, exist_ok=True)
        pending, running, failed, libs = list(BUILDS), {}, [], {}
        while pending or running:
            while pending and len(running) < jobs:
                build = pending.pop(0)
                cmd = swift_build_command(build)
                print(f"building the Swift core ({build}):", " ".join(cmd), flush=True)
                if jobs == 1:
                    running[build] = (subprocess.Popen(cmd, cwd=ROOT), None)
                else:  # concurrent builds: each into its own log, printed when it ends
                    log = open(temp / f"swift-build-{LOADER.tag(build)}.log", "w+")
                    running[build] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
            done = [b for b, (proc, _) in running.items() if proc.poll() is not None]
            if not done:
                time.sleep(0.2)
            for build in done:
                proc, log = running.pop(build)
                if log is not None:
                    log.seek(0)
                    sys.stdout.write(f"--- swift build ({build}) ---\n{log.read()}")
                    sys.stdout.flush()
                    log.close()
                if proc.returncode != 0:
                    failed.append(f"{build} (exit status {proc.returncode})")
        if failed:
            raise SetupError(f"`swift build` failed for {', '.join(failed)}; see its output above")
        for build in BUILDS:
            cmd = swift_build_command(build)
            try:
                out = subprocess.run(cmd + ["--show-bin-path"], cwd=ROOT, check=True,
                                     stdout=subprocess.PIPE, text=True).stdout
            except subprocess.CalledProcessError as e:
                raise SetupError(f"`swift build --show-bin-path` failed (exit status {e.returncode})") from e
            built = Path(out.strip().splitlines()[-1]) / SWIFT_LIB
            if not built.is_file():
                raise SetupError(f"`swift build` succeeded but {built} does not exist")
            link_dir = temp / f"swift-{LOADER.tag(build)}"
            link_dir.mkdir(exist_ok=True)
            libs[build] = link_dir / LOADER.swift_library(build)
            shutil.copyfile(built, libs[build])
        return libs

    def swift_libraries(self, root):
        return [str(Path(root) / LOADER.swift_library(b)) for b in BUILDS]

    def get_outputs(self):
        root = PACKAGE_SRC if self.inplace else os.path.join(self.build_lib, "swiftcnn")
        return super().get_outputs() + self.swift_libraries(root)

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self.inplace:
            built = self.swift_libraries(os.path.join(self.build_lib, "swiftcnn"))
            mapping.update(zip(self.swift_libraries(PACKAGE_SRC), built))
        return mapping


setup(
    version=swift_version(),
    package_dir={"": "python"},
    packages=find_packages("python", include=["swiftcnn", "swiftcnn.*"]),
    package_data={"swiftcnn": ["*.pyi", "py.typed"]},  # the _core stubs, and PEP 561's marker
    include_package_data=False,  # MANIFEST.in lists the C sources for the sdist, not for the wheel
    ext_modules=[
        *(core_extension(build) for build in BUILDS),
        Extension("swiftcnn._cpu", sources=["python/swiftcnn/_cpu.c"], extra_compile_args=["-O2"],
                  extra_link_args=STRIP),
    ],
    cmdclass={"build_ext": BuildSwiftExt},
    zip_safe=False,
)
