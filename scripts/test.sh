#!/usr/bin/env bash
# Sets up and runs every test of swiftcnn on a fresh machine (Swift 6, Python 3.9+ with pip, gcc):
#   1. builds the sdist and the wheel once (scripts/build_wheel.sh: `python -m build`, the Swift core
#      for every x86-64 level, `auditwheel show`/`repair`, and a smoke test of the repaired wheel in
#      a fresh venv with no swift or compiler on PATH), then installs that wheel with its test extra,
#   2. runs the Swift core's XCTest suite twice: debug, and optimized with the flags the Python
#      package is built with (the SIMD kernels as shipped; an -O-only miscompile was caught this way);
#      SWIFTCNN_REQUIRE_PYTHON=1 makes the cross-language save/load tests (Tests/SwiftCNNIOTests)
#      fail instead of skip if python3 cannot import the package installed in step 1,
#   3. builds `swiftcnn-train` (release, reusing step 2's optimized objects) and runs the pytest
#      suite against the installed wheel (torch parity tests included; test_isa.py runs the numerics
#      under every x86-64 level this CPU executes; SWIFTCNN_REQUIRE_SWIFT_TRAIN=1 makes
#      python/tests/test_swift_interop.py fail instead of skip without that binary).
# Any failure, including pytest collecting no tests (exit 5), fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

rm -rf .build-wheel
bash scripts/build_wheel.sh --out .build-wheel
WHEEL="$(ls .build-wheel/manylinux/swiftcnn-*.whl)"
python3 -m pip install --quiet --disable-pip-version-check "$WHEEL[test]"
# pip skips a wheel whose version is already installed: install this very wheel over any such copy.
python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
(cd / && python3 -c "import swiftcnn; c = swiftcnn._loader.config(); assert c['carried'] == list(swiftcnn._loader.LEVELS), c")
swift build --product swiftcnn-example   # the README's Swift example keeps compiling
SWIFTCNN_REQUIRE_PYTHON=1 swift test
RELEASE_FLAGS=(-Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc native -Xswiftc -DSWIFTCNN_FMA)
SWIFTCNN_REQUIRE_PYTHON=1 swift test -c release "${RELEASE_FLAGS[@]}"
# The Swift-only trainer, with the flags of the run above so only its own two targets compile.
swift build -c release "${RELEASE_FLAGS[@]}" --product swiftcnn-train
# Run from the repo root: python/tests imports the installed `swiftcnn`, not the source tree.
# bench/test_run.py checks the benchmark harness itself (verdicts, --load cleanup), never timings.
SWIFTCNN_REQUIRE_TORCH=1 SWIFTCNN_REQUIRE_SWIFT_TRAIN=1 python3 -m pytest python/tests bench/test_run.py -q -p no:cacheprovider "$@"
