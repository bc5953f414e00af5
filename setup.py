"""Build of swiftcnn: the Swift core as libSwiftCNNCAPI.so, then the CPython extension over it.

`pip install .` / `pip install -e .` / `python setup.py build_ext --inplace` all run BuildSwiftExt:

1. `swift build -c release --product SwiftCNNCAPI --scratch-path .build-py` with the Swift runtime
   linked statically (`-static-stdlib`: the .so needs no Swift toolchain at run time), an SONAME
   (SwiftPM sets none, so the extension would record an absolute path), dead code stripped, and
   the host CPU's instructions (`-target-cpu native` plus `-DSWIFTCNN_FMA`, which makes the core's
   multiply-adds fused) unless SWIFTCNN_PORTABLE=1 is set in the environment (symbols are stripped
   unless SWIFTCNN_KEEP_SYMBOLS=1, which profiling with `perf report` wants);
2. the extension swiftcnn._core from python/swiftcnn/_core.c, linked against that library with an
   rpath of $ORIGIN;
3. libSwiftCNNCAPI.so copied next to the extension: into the build tree (so wheels carry it) and
   into python/swiftcnn/ (for in-place and editable installs).

Metadata is in pyproject.toml, except the version: it is written down once, in the Swift core
(`swiftCNNVersion` in Sources/SwiftCNNCAPI), and read from there by `swift_version()` below
(pyproject.toml declares it `dynamic`); `swiftcnn.__version__` asks the compiled core for it and
checks it against the installed metadata at import. See docs/ARCHITECTURE.md for the layers.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
PACKAGE_SRC = ROOT / "python" / "swiftcnn"
HEADER_DIR = ROOT / "Sources" / "SwiftCNNCAPI" / "include"
SWIFT_PRODUCT = "SwiftCNNCAPI"
SWIFT_LIB = "libSwiftCNNCAPI.so"
SCRATCH = ".build-py"
VERSION_SOURCES = ROOT / "Sources" / "SwiftCNNCAPI"
VERSION_PATTERN = re.compile(r'^\s*public\s+let\s+swiftCNNVersion\s*:\s*StaticString\s*=\s*"([^"]+)"',
                             re.MULTILINE)


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


def swift_build_command():
    """The `swift build` command line; `--show-bin-path` is appended to find its output."""
    cmd = [
        "swift", "build", "-c", "release", "--product", SWIFT_PRODUCT, "--scratch-path", SCRATCH,
        "-Xswiftc", "-static-stdlib",
        "-Xlinker", f"-soname={SWIFT_LIB}",
        "-Xlinker", "--gc-sections",
    ]
    if os.environ.get("SWIFTCNN_KEEP_SYMBOLS", "") != "1":   # keep them for `perf report`
        cmd += ["-Xlinker", "-s"]
    if os.environ.get("SWIFTCNN_PORTABLE", "") != "1":
        cmd += ["-Xswiftc", "-target-cpu", "-Xswiftc", "native", "-Xswiftc", "-DSWIFTCNN_FMA"]
    return cmd


class BuildSwiftExt(build_ext):
    """build_ext that first builds the Swift library the extension links against."""

    def run(self):
        bin_path = self.build_swift()
        import numpy  # a build requirement (pyproject.toml)

        for ext in self.extensions:
            ext.include_dirs += [str(HEADER_DIR), numpy.get_include()]
            ext.library_dirs += [str(bin_path)]
        super().run()  # builds into build_lib, then copies the extension into the source if inplace
        for dest_dir in {Path(self.build_lib) / "swiftcnn", PACKAGE_SRC}:
            dest_dir.mkdir(parents=True, exist_ok=True)
            # Copy to a temporary name and rename over the old library: overwriting it in place
            # would change the pages of a library that running processes have mapped (a crash).
            tmp = dest_dir / (SWIFT_LIB + ".tmp")
            shutil.copyfile(bin_path / SWIFT_LIB, tmp)
            os.replace(tmp, dest_dir / SWIFT_LIB)

    def build_swift(self):
        if shutil.which("swift") is None:
            raise SetupError(
                "swiftcnn needs the Swift toolchain (6.0 or later) to build its core, but `swift` "
                "is not on PATH. Install Swift from swift.org and make sure `swift --version` works."
            )
        cmd = swift_build_command()
        print("building the Swift core:", " ".join(cmd), flush=True)
        try:
            subprocess.run(cmd, cwd=ROOT, check=True)
            out = subprocess.run(cmd + ["--show-bin-path"], cwd=ROOT, check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
        except subprocess.CalledProcessError as e:
            raise SetupError(f"`swift build` failed (exit status {e.returncode}); see its output above") from e
        bin_path = Path(out.strip().splitlines()[-1])
        if not (bin_path / SWIFT_LIB).is_file():
            raise SetupError(f"`swift build` succeeded but {bin_path / SWIFT_LIB} does not exist")
        return bin_path

    def get_outputs(self):
        outputs = super().get_outputs()
        lib = str(PACKAGE_SRC / SWIFT_LIB) if self.inplace else os.path.join(self.build_lib, "swiftcnn", SWIFT_LIB)
        return outputs + [lib]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self.inplace:
            mapping[str(PACKAGE_SRC / SWIFT_LIB)] = os.path.join(self.build_lib, "swiftcnn", SWIFT_LIB)
        return mapping


setup(
    version=swift_version(),
    package_dir={"": "python"},
    packages=find_packages("python", include=["swiftcnn", "swiftcnn.*"]),
    package_data={"swiftcnn": ["*.pyi", "py.typed"]},  # the _core stubs, and PEP 561's marker
    include_package_data=False,  # MANIFEST.in lists _core.c for the sdist, not for the wheel
    ext_modules=[
        Extension(
            "swiftcnn._core",
            sources=["python/swiftcnn/_core.c", "python/swiftcnn/_core_args.c", "python/swiftcnn/_core_arrays.c",
                     "python/swiftcnn/_core_handles.c"],
            depends=["python/swiftcnn/_core.h", "Sources/SwiftCNNCAPI/include/swiftcnn.h"],
            extra_compile_args=["-O2"],
            libraries=["SwiftCNNCAPI"],
            extra_link_args=["-Wl,-rpath,$ORIGIN"],
        )
    ],
    cmdclass={"build_ext": BuildSwiftExt},
    zip_safe=False,
)
