#!/bin/sh
# Builds bench/swift/main.swift against the SwiftCNN core with the release flags setup.py uses
# (-O, -target-cpu native, -DSWIFTCNN_FMA), outside SwiftPM (Package.swift has no bench target):
#   bench/swift/build.sh && .build-bench/bench [gemm|conv|all] [threads]
set -e
cd "$(dirname "$0")/../.."
OUT=.build-bench
mkdir -p $OUT
swiftc -O -wmo -parse-as-library -module-name SwiftCNN -target-cpu native -DSWIFTCNN_FMA \
    -emit-module -emit-module-path $OUT/SwiftCNN.swiftmodule -emit-library -o $OUT/libSwiftCNN.so \
    $(find Sources/SwiftCNN -name '*.swift' | sort)
swiftc -O -target-cpu native -I $OUT -L $OUT -lSwiftCNN -Xlinker -rpath -Xlinker "$PWD/$OUT" \
    bench/swift/main.swift -o $OUT/bench
echo "built $OUT/bench"
