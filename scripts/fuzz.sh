#!/usr/bin/env bash
# scripts/fuzz.sh SECONDS: coverage-guided fuzzing of swiftcnn with atheris (issue 11).
#
#   scripts/fuzz.sh 600                 # fuzz for 10 minutes
#   PYTHON=/path/to/venv/bin/python scripts/fuzz.sh 600
#
# The harness is python/tests/fuzz/harness.py (it decodes bytes into functional calls taken from
# swiftcnn._core.op_table(), layer objects and Sequential forward/backward). It needs `atheris`
# (pip install atheris) in $PYTHON.
#
# Target: the AddressSanitizer build of scripts/sanitize.sh (.build-asan/py/swiftcnn) when it
# exists (see below how it is used), so an out-of-bounds access in the Swift core or the C
# extension is a finding. Otherwise the normal build (the installed swiftcnn): traps and segfaults
# are still findings. The first line of output says which.
# Coverage: atheris instruments the Python code (the harness and the swiftcnn package) and, on
# the ASan target, the C extension (-fsanitize=fuzzer-no-link); the Swift core is checked (ASan,
# Swift's traps) but not coverage-instrumented.
#
# Corpus: python/tests/fuzz_corpus/ seeds the run and receives the result, capped at 200 files and
# 1 MB (the newest are kept). Every crashing input is copied there as crash-<sha1> (replayed by
# python/tests/test_fuzz_corpus.py, which lists known crashes in KNOWN_CRASHES); fuzzing continues
# after a crash until SECONDS have passed. Scratch files go to .build-fuzz/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOTAL="${1:?usage: scripts/fuzz.sh SECONDS}"
PYTHON="${PYTHON:-python3}"
CORPUS="$ROOT/python/tests/fuzz_corpus"
HARNESS="$ROOT/python/tests/fuzz/harness.py"
SCRATCH="$ROOT/.build-fuzz"
WORK="$SCRATCH/corpus"
ART="$SCRATCH/artifacts"
LOG="$SCRATCH/fuzz.log"
ASAN_PKG="$ROOT/.build-asan/py"
MAX_FILES=200
MAX_BYTES=$((1024 * 1024))

"$PYTHON" -c "import atheris" 2>/dev/null || { echo "fuzz.sh: atheris is not importable by $PYTHON (pip install atheris)" >&2; exit 2; }
mkdir -p "$CORPUS" "$WORK" "$ART"
cp -n "$CORPUS"/* "$WORK"/ 2>/dev/null || true

ENV=(env PYTHONFAULTHANDLER=1)
if [ -f "$ASAN_PKG/swiftcnn/libSwiftCNNCAPI.so" ]; then
    # The sanitized package, with the extension recompiled for fuzzing: atheris's libFuzzer must own
    # the coverage callbacks, so the ASan runtime is atheris's asan_with_fuzzer.so (ASan + libFuzzer
    # in one library; the toolchain's runtime would take the callbacks and break coverage). _core.c
    # is compiled with -fsanitize=fuzzer-no-link, so the extension's own branches guide the fuzzer
    # too, and without UBSan's -fsanitize=function (a handler that runtime lacks). The Swift core is
    # sanitize.sh's ASan build as it is (checked, not coverage-instrumented).
    SWIFT="$(command -v swift)" || { echo "fuzz.sh: swift is not on PATH (its clang compiles the extension)" >&2; exit 2; }
    CLANG="$(dirname "$(readlink -f "$SWIFT")")/clang"
    ATHERIS_RT="$("$PYTHON" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')"
    [ -f "$ATHERIS_RT" ] || { echo "fuzz.sh: atheris has no asan_with_fuzzer.so ($ATHERIS_RT)" >&2; exit 2; }
    FUZZ_PKG="$SCRATCH/py"
    rm -rf "$FUZZ_PKG/swiftcnn"
    mkdir -p "$FUZZ_PKG"
    cp -r "$ASAN_PKG/swiftcnn" "$FUZZ_PKG/"
    rm -f "$FUZZ_PKG"/swiftcnn/_core*.so
    (cd python/swiftcnn && tar --exclude='*.so' --exclude='__pycache__' -cf - .) | (cd "$FUZZ_PKG/swiftcnn" && tar -xf -)
    PY_INC="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    NP_INC="$("$PYTHON" -c 'import numpy; print(numpy.get_include())')"
    EXT_SUFFIX="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    "$CLANG" -shared -fPIC -O1 -g -fno-omit-frame-pointer \
        -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize=function -fno-sanitize-recover=all \
        -Wall -Wno-unused-function -I"$PY_INC" -I"$NP_INC" -I"$ROOT/Sources/SwiftCNNCAPI/include" \
        python/swiftcnn/_core*.c -o "$FUZZ_PKG/swiftcnn/_core$EXT_SUFFIX" \
        -L"$FUZZ_PKG/swiftcnn" -lSwiftCNNCAPI -Wl,-rpath,'$ORIGIN'
    echo "fuzz.sh: target: the AddressSanitizer build of scripts/sanitize.sh (Swift core from $ASAN_PKG/swiftcnn;"
    echo "         the extension recompiled with coverage into $FUZZ_PKG/swiftcnn; runtime $ATHERIS_RT)"
    ENV+=(LD_PRELOAD="$ATHERIS_RT" PYTHONMALLOC=malloc PYTHONPATH="$FUZZ_PKG${PYTHONPATH:+:$PYTHONPATH}"
          ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=4096:symbolize=1"
          UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" SWIFTCNN_SANITIZED=1)
    RSS=0
else
    echo "fuzz.sh: target: the NORMAL build ($("$PYTHON" -c 'import swiftcnn, os; print(os.path.dirname(swiftcnn.__file__))')); no AddressSanitizer build in $ASAN_PKG (run scripts/sanitize.sh once to make one)"
    RSS=8192
fi

start=$(date +%s)
crashes=0
: > "$LOG"
while :; do
    left=$((TOTAL - ($(date +%s) - start)))
    [ "$left" -gt 0 ] || break
    before="$(ls "$ART" 2>/dev/null | sort)"
    set +e
    "${ENV[@]}" nice -n 10 "$PYTHON" "$HARNESS" -max_total_time="$left" -max_len=512 -timeout=30 \
        -rss_limit_mb="$RSS" -artifact_prefix="$ART/" -print_final_stats=1 "$WORK" >>"$LOG" 2>&1
    status=$?
    set -e
    after="$(ls "$ART" 2>/dev/null | sort)"
    new="$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')"
    if [ -n "$new" ]; then
        for f in $new; do
            crashes=$((crashes + 1))
            sha="$(sha1sum "$ART/$f" | cut -c1-16)"
            cp "$ART/$f" "$CORPUS/crash-$sha"
            echo "fuzz.sh: FINDING ($f) saved as python/tests/fuzz_corpus/crash-$sha; log tail:"
            grep -v '^#' "$LOG" | tail -n 25 | sed 's/^/    /'
        done
    elif [ "$status" -ne 0 ]; then
        echo "fuzz.sh: the fuzzer exited with status $status and no artifact; log tail:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
done

# The corpus: the newest inputs, at most MAX_FILES files and MAX_BYTES bytes; crash reproducers
# are always kept (and do not count against the cap).
"$PYTHON" - "$WORK" "$CORPUS" "$MAX_FILES" "$MAX_BYTES" <<'EOF'
import os, shutil, sys
work, corpus, max_files, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
files = sorted((os.path.join(work, f) for f in os.listdir(work)), key=os.path.getmtime, reverse=True)
keep, total = [], 0
for f in files:
    size = os.path.getsize(f)
    if len(keep) >= max_files or total + size > max_bytes:
        break
    keep.append(f)
    total += size
for f in os.listdir(corpus):
    if not f.startswith("crash-"):
        os.remove(os.path.join(corpus, f))
for f in keep:
    shutil.copy2(f, os.path.join(corpus, os.path.basename(f)))
print(f"fuzz.sh: corpus: {len(keep)} files, {total} bytes in {corpus} (of {len(files)} found)")
EOF

runs="$(grep -E '^stat::number_of_executed_units:' "$LOG" | awk '{s += $2} END {print s + 0}')"
last="$(grep -E '#[0-9]+.*cov: ' "$LOG" | tail -n 1)"
echo "fuzz.sh: ${TOTAL} s, executions: $runs, crashes found: $crashes"
echo "fuzz.sh: last status line: $last"
