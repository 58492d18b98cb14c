#!/bin/sh
# make fuzz: builds the checkpoint-parser fuzz targets with clang's libFuzzer under
# AddressSanitizer + UndefinedBehaviorSanitizer and runs each for a bounded time from the
# seed corpus in fuzz/corpus/<target>. Any crash, sanitizer report, leak or timeout fails
# the run and leaves the input in $FUZZ_BUILD/crash-<target>-*.
#
#   FUZZ_SECONDS=N   seconds per target (default 20)
#   FUZZ_BUILD=DIR   build and working corpus directory (default build/fuzz)
#   FUZZ_CC=CC       the compiler (default clang)
#   sh fuzz/run.sh --seeds   rewrites fuzz/corpus/ from fuzz/seeds.c and exits
#
# clang and the libFuzzer runtime are installed here (Debian: clang libclang-rt-dev),
# only when missing: no other make target needs them.
set -eu
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
out=${FUZZ_BUILD:-build/fuzz}
cc=${FUZZ_CC:-clang}
targets="safetensors torchzip pickle"
mkdir -p "$out/obj"

pkgflags=$(pkg-config --cflags --libs libcjson libzip 2>/dev/null) || {
    sh scripts/setup.sh
    pkgflags=$(pkg-config --cflags --libs libcjson libzip)
}
cflags="-std=c11 -I. -D_POSIX_C_SOURCE=200809L -O1 -g -fno-omit-frame-pointer -Wall -Wextra -Wshadow
        -Wstrict-prototypes -Wmissing-prototypes -Wpedantic -Wvla -Wcast-align -Wwrite-strings -Wundef -Werror"

if [ "${1:-}" = --seeds ]; then
    for t in $targets; do rm -rf "fuzz/corpus/$t"; mkdir -p "fuzz/corpus/$t"; done
    # shellcheck disable=SC2086
    ${CC:-cc} $cflags fuzz/seeds.c -o "$out/seeds" $pkgflags
    "$out/seeds" fuzz/corpus
    echo "fuzz: seed corpus written to fuzz/corpus/"
    exit 0
fi

# The toolchain: probe for a working libFuzzer link; install only if it fails.
probe="$out/probe.c"
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe"
if ! $cc -fsanitize=fuzzer,address "$probe" -o "$out/probe" >/dev/null 2>&1; then
    echo "fuzz: $cc cannot link libFuzzer; installing clang and its runtime"
    sh scripts/setup.sh clang libclang-rt-dev
    $cc -fsanitize=fuzzer,address "$probe" -o "$out/probe"
fi

san="-fsanitize=address,undefined -fno-sanitize-recover=all"
lib="core/status.c core/alloc.c core/dtype.c core/tensor.c core/arena.c
     models/checkpoint.c models/safetensors.c models/pickle.c models/torchzip.c"
objs=""
for f in $lib; do
    o="$out/obj/$(echo "$f" | tr / _).o"
    # shellcheck disable=SC2086
    $cc $cflags $san -fsanitize=fuzzer-no-link -c "$f" -o "$o" $(pkg-config --cflags libcjson libzip)
    objs="$objs $o"
done
for t in $targets; do
    # shellcheck disable=SC2086
    $cc $cflags $san -fsanitize=fuzzer "fuzz/fuzz_$t.c" $objs -o "$out/fuzz_$t" $pkgflags -lm
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:protect_shadow_gap=0:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fails=0
for t in $targets; do
    corpus="$out/corpus/$t"
    mkdir -p "$corpus"
    cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    dict=fuzz/pickle.dict
    [ "$t" = safetensors ] && dict=fuzz/safetensors.dict
    log="$out/fuzz_$t.log"
    if "$out/fuzz_$t" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
        -dict="$dict" -artifact_prefix="$out/crash-$t-" -print_final_stats=1 "$corpus" >"$log" 2>&1; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        echo "fuzz_$t: ok, ${runs:-?}, $cov, corpus $(ls "$corpus" | wc -l) inputs"
    else
        fails=$((fails + 1))
        echo "fuzz_$t: FAILED (see $log; inputs in $out/crash-$t-*)"
        grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 5
    fi
done
[ "$fails" -eq 0 ]
