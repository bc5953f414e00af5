#!/usr/bin/env bash
# Sets up and runs every test of swiftcnn on a fresh machine (Swift 6, Python 3.9+ with pip, gcc):
#   1. installs the package with its test extra (builds the Swift library and the C extension),
#   2. runs the Swift core's XCTest suite twice: debug, and optimized with the flags the Python
#      package is built with (the SIMD kernels as shipped; an -O-only miscompile was caught this way);
#      SWIFTCNN_REQUIRE_PYTHON=1 makes the cross-language save/load tests (Tests/SwiftCNNIOTests)
#      fail instead of skip if python3 cannot import the package installed in step 1,
#   3. builds `swiftcnn-train` (release, reusing step 2's optimized objects) and runs the pytest
#      suite against the installed package (torch parity tests included; SWIFTCNN_REQUIRE_SWIFT_TRAIN=1
#      makes python/tests/test_swift_interop.py fail instead of skip without that binary).
# Any failure, including pytest collecting no tests (exit 5), fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check ".[test]"
swift build --product swiftcnn-example   # the README's Swift example keeps compiling
SWIFTCNN_REQUIRE_PYTHON=1 swift test
RELEASE_FLAGS=(-Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc native -Xswiftc -DSWIFTCNN_FMA)
SWIFTCNN_REQUIRE_PYTHON=1 swift test -c release "${RELEASE_FLAGS[@]}"
# The Swift-only trainer, with the flags of the run above so only its own two targets compile.
swift build -c release "${RELEASE_FLAGS[@]}" --product swiftcnn-train
# Run from the repo root: python/tests imports the installed `swiftcnn`, not the source tree.
SWIFTCNN_REQUIRE_TORCH=1 SWIFTCNN_REQUIRE_SWIFT_TRAIN=1 python3 -m pytest python/tests -q -p no:cacheprovider "$@"
