#!/usr/bin/env bash
# Sets up and runs every test of swiftcnn on a fresh machine (Swift 6, Python 3.9+ with pip, gcc):
#   1. installs the package with its test extra (builds the Swift library and the C extension),
#   2. runs the Swift core's XCTest suite twice: debug, and optimized with the flags the Python
#      package is built with (the SIMD kernels as shipped; an -O-only miscompile was caught this way),
#   3. runs the pytest suite against the installed package (torch parity tests included).
# Any failure, including pytest collecting no tests (exit 5), fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check ".[test]"
swift build --product swiftcnn-example   # the README's Swift example keeps compiling
swift test
swift test -c release -Xswiftc -enable-testing -Xswiftc -target-cpu -Xswiftc native -Xswiftc -DSWIFTCNN_FMA
# Run from the repo root: python/tests imports the installed `swiftcnn`, not the source tree.
SWIFTCNN_REQUIRE_TORCH=1 python3 -m pytest python/tests -q -p no:cacheprovider "$@"
