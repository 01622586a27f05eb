#!/usr/bin/env bash
# run_fuzz.sh - builds the libFuzzer image-reader target with clang and fuzzes
# it for a bounded time.  Exit 0: no finding; 77: clang/libFuzzer missing.
#
# usage: run_fuzz.sh [SOURCE_ROOT]
#   SNAPFAULT_FUZZ_SECONDS  time for the main run (default 20; a run with
#                           real checksums gets a quarter of it, at least 5)
#   SNAPFAULT_FUZZ_ARTIFACTS where crashing inputs are kept (default
#                           ./fuzz-artifacts)
#   CLANG                   compiler (default clang)
set -u
src=$(cd "${1:-$(dirname "$0")/..}" && pwd) || exit 1
secs=${SNAPFAULT_FUZZ_SECONDS:-20}
clang=${CLANG:-clang}
keep=${SNAPFAULT_FUZZ_ARTIFACTS:-$PWD/fuzz-artifacts}

if ! command -v "$clang" >/dev/null 2>&1; then
    echo "fuzz: $clang not found, skipped"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapfault-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# A compiler without the libFuzzer runtime is a missing tool, not a failure.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\n%s\n' \
    'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
    >"$tmp/probe.c"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" 2>"$tmp/probe.log"; then
    echo "fuzz: $clang cannot link libFuzzer targets (libclang-rt-dev missing?), skipped"
    cat "$tmp/probe.log"
    exit 77
fi

xxhash=$(pkg-config --cflags --libs libxxhash 2>/dev/null || echo -lxxhash)
xxhash="$xxhash $(pkg-config --cflags --libs libzstd 2>/dev/null || echo -lzstd)"

# $2: the build tree's include directory (the generated snapfault-version.h)
cflags=(-std=gnu11 -g -O1 -D_GNU_SOURCE -I "$src/include" -I "${2:?build include dir}" -I "$src/src")
# the image code: writer, reader, chain flattening
img=("$src/src/image_write.c" "$src/src/image_read.c" "$src/src/image_merge.c" "$src/src/os_libc.c")
# shellcheck disable=SC2054 # commas belong to the flag
san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
# shellcheck disable=SC2086 # $xxhash is a list of flags
{
    # checksums computed but not enforced: the fuzzer reaches the parsing
    # behind them (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, see image_impl.h)
    "$clang" "${cflags[@]}" "${san[@]}" -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
        "${img[@]}" "$src/fuzz/fuzz_image.c" $xxhash -o "$tmp/fuzz_image" &&
    # the production reader, exactly as shipped
    "$clang" "${cflags[@]}" "${san[@]}" \
        "${img[@]}" "$src/fuzz/fuzz_image.c" $xxhash -o "$tmp/fuzz_image_strict" &&
    "$clang" "${cflags[@]}" "${img[@]}" "$src/fuzz/gen_seed.c" $xxhash -o "$tmp/gen_seed"
} || { echo "fuzz: build failed"; exit 1; }

mkdir -p "$tmp/seeds" "$tmp/artifacts" "$tmp/corpus" "$tmp/corpus_strict"
"$tmp/gen_seed" "$tmp/seeds" || { echo "fuzz: seed generation failed"; exit 1; }
cat >"$tmp/image.dict" <<'DICT'
"SNAPFIMG"
"SFBK"
"SFIMGEND"
"\x01\x00\x00\x00"
"\x00\x02\x00\x00"
"\x00\x10\x00\x00"
"\x01\x02\x03"
"\x02\x00\x00\x00"
"\x28\xb5\x2f\xfd"
"[heap]"
"[anon:"
DICT

run() { # binary seconds corpus
    echo "fuzz: $1 for $2 s"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$tmp/$1" -max_total_time="$2" -max_len=65536 -malloc_limit_mb=8 -rss_limit_mb=1024 \
        -timeout=10 -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
        -dict="$tmp/image.dict" -artifact_prefix="$tmp/artifacts/" \
        "$tmp/$3" "$tmp/seeds"
}

rc=0
run fuzz_image "$secs" corpus || rc=1
strict=$((secs / 4 < 5 ? 5 : secs / 4))
[ $rc -ne 0 ] || run fuzz_image_strict "$strict" corpus_strict || rc=1

if [ $rc -ne 0 ]; then
    mkdir -p "$keep" && cp "$tmp"/artifacts/* "$keep"/ 2>/dev/null
    echo "fuzz: FAILED; inputs kept in $keep (reproduce: build as above, run the binary on the file)"
    exit 1
fi
echo "fuzz: no findings"
exit 0
