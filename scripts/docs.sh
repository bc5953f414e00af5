#!/usr/bin/env bash
# scripts/docs.sh [OUTPUT]: builds the DocC documentation of the SwiftCNN module offline, with the
# toolchain's own tools (no swift-docc-plugin package, no network):
#   1. `swift package dump-symbol-graph` compiles the package and writes each module's symbol graph
#      (the public API and its doc comments) under .build;
#   2. `docc convert`, the docc binary that ships next to `swift` (or $DOCC), turns SwiftCNN's
#      graphs into a documentation archive: OUTPUT, by default .build/docs/SwiftCNN.doccarchive.
# Fails if docc reports any warning (an undocumented or misnamed parameter, a broken symbol link),
# so the public API's doc comments stay complete. View the result with
# `$(dirname $(readlink -f $(which swift)))/docc preview`, or serve the archive statically.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build/docs/SwiftCNN.doccarchive}
swift_bin=$(dirname "$(readlink -f "$(command -v swift)")")
docc=${DOCC:-$swift_bin/docc}
if [ ! -x "$docc" ]; then
    echo "docs.sh: no docc next to swift ($swift_bin); set DOCC=/path/to/docc" >&2
    exit 1
fi

swift package dump-symbol-graph --minimum-access-level public --skip-synthesized-members >/dev/null
graphs=$(find .build -type d -name symbolgraph -newer Package.swift | head -n 1)
[ -n "$graphs" ] || graphs=$(find .build -type d -name symbolgraph | head -n 1)
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp "$graphs"/SwiftCNN.symbols.json "$staging"/
cp "$graphs"/SwiftCNN@*.symbols.json "$staging"/ 2>/dev/null || true   # extensions of Swift's types

mkdir -p "$(dirname "$out")"
log="$staging/docc.log"
"$docc" convert --additional-symbol-graph-dir "$staging" --output-path "$out" \
    --fallback-display-name SwiftCNN --fallback-bundle-identifier org.swiftcnn.SwiftCNN \
    --transform-for-static-hosting --diagnostic-level warning 2>&1 | tee "$log"
if grep -q "warning:" "$log"; then
    echo "docs.sh: docc reported $(grep -c 'warning:' "$log") warning(s); fix the doc comments above" >&2
    exit 1
fi
echo "docs.sh: wrote $out"
