#!/usr/bin/env bash
# image_cli.sh CASE - the `snapfault image` subcommands on a real chain of
# images: imgchain (tests/cli/imgchain.c) snapshots its own memory three
# times (a full image and two incremental ones, the last two compressed)
# and records what the memory held at the last snapshot.
# Exit 0 pass, 1 fail, 77 skip.
set -uo pipefail

case_name=${1:?usage: image_cli.sh CASE}
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${IMGCHAIN:?path of the imgchain program}"

work=$(mktemp -d /tmp/snapfault-imgcli.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
skip() { echo "SKIP: $*"; exit 77; }
bad() { echo "FAIL: $*"; fail=1; }
note() { echo "--- $*"; }

mkdir chain
"$IMGCHAIN" chain >info.txt 2>err.txt
rc=$?
[ $rc -eq 77 ] && skip "$(cat err.txt)"
[ $rc -eq 0 ] || { echo "FAIL: imgchain exited $rc: $(cat err.txt)"; exit 1; }
read -r _ buf len < <(grep '^buf ' info.txt)
read -r _ var < <(grep '^var ' info.txt)
named=$(sed -n 's/^anon-name //p' info.txt)
last=chain/snap-3.sfimg
note "buffer $buf+$len, sf_page at $var, anon names: $named"

case "$case_name" in
cat-chain)
    # the whole buffer in one read: no image holds all its pages, so each
    # page must come from the nearest image holding it
    "$SNAPFAULT_TOOL" image cat --raw "$last" "$buf" "$len" >got.bin || bad "cat failed"
    cmp got.bin chain/expect.bin || bad "cat of the chain differs from the memory at the last snapshot"
    # a span starting and ending inside pages
    "$SNAPFAULT_TOOL" image cat --raw "$last" $((buf + 100)) $((len - 300)) >part.bin || bad "cat of a part failed"
    tail -c +101 chain/expect.bin | head -c $((len - 300)) | cmp - part.bin || bad "cat of an unaligned span differs"
    # each image of the chain has the memory of its own snapshot: page 1
    # was written between snapshots 2 and 3, page 0 between 1 and 2
    p1() { "$SNAPFAULT_TOOL" image cat --raw "chain/snap-$1.sfimg" $((buf + $2)) 1; }
    [ "$(p1 1 1)$(p1 2 1)$(p1 2 4097)$(p1 3 4097)" = ABAD ] ||
        bad "bytes 1 and 4097 through the chain: $(p1 1 1)$(p1 2 1)$(p1 2 4097)$(p1 3 4097), expected ABAD"
    # without the full image the chain cannot be read
    mv chain/snap-1.sfimg hidden.sfimg
    "$SNAPFAULT_TOOL" image cat --raw "$last" "$buf" "$len" >/dev/null 2>cat.err && bad "cat without the parent succeeded"
    grep -q . cat.err || bad "cat without the parent said nothing"
    mv hidden.sfimg chain/snap-1.sfimg
    ;;
names)
    "$SNAPFAULT_TOOL" image ls "$last" >ls.txt || bad "ls failed"
    cat ls.txt
    prog=$(readlink -f "$IMGCHAIN")
    varpage=$(printf '%#014x' $((var & ~4095)))
    grep -q "range $varpage-.* rw-p .* $prog\$" ls.txt || bad "the data page of sf_page is not named $prog"
    if [ "$named" = yes ]; then
        grep -q "range $(printf '%#014x' "$buf")-.* rw-p .*\[anon:sfbuf\]\$" ls.txt || bad "the buffer is not named [anon:sfbuf]"
    fi
    "$SNAPFAULT_TOOL" image info --ranges "$last" >info2.txt || bad "info failed"
    grep -q "format version 2" info2.txt || bad "info does not say version 2"
    grep -q "$prog" info2.txt || bad "info --ranges does not name the mappings"
    ;;
merge)
    mkdir out
    "$SNAPFAULT_TOOL" image merge --zstd "$last" out/merged.sfimg >merge.txt || bad "merge failed: $(cat merge.txt)"
    cat merge.txt
    grep -q "3 images merged.*verified" merge.txt || bad "merge did not report 3 images verified"
    "$SNAPFAULT_TOOL" image info out/merged.sfimg >mi.txt
    grep -q "parent  none (full image)" mi.txt || bad "merged image is not a full image"
    grep -q "0 in the parent chain" mi.txt || bad "merged image has absent pages"
    # alone in its directory: no parent to lean on
    "$SNAPFAULT_TOOL" image cat --raw out/merged.sfimg "$buf" "$len" >m.bin || bad "cat of the merged image failed"
    cmp m.bin chain/expect.bin || bad "merged image differs from the memory at the last snapshot"
    "$SNAPFAULT_TOOL" image verify out/merged.sfimg >/dev/null || bad "merged image does not verify"
    cp out/merged.sfimg chain/merged.sfimg
    "$SNAPFAULT_TOOL" image diff "$last" chain/merged.sfimg || bad "merged image differs from its chain (diff)"
    "$SNAPFAULT_TOOL" image ls out/merged.sfimg | grep -q "$(readlink -f "$IMGCHAIN")" || bad "merge lost the mapping names"
    # uncompressed, and a broken chain
    "$SNAPFAULT_TOOL" image merge "$last" out/plain.sfimg >/dev/null || bad "merge without compression failed"
    rm chain/snap-2.sfimg
    "$SNAPFAULT_TOOL" image merge "$last" out/broken.sfimg >/dev/null 2>&1 && bad "merge of a broken chain succeeded"
    [ -e out/broken.sfimg ] && bad "a failed merge left its output"
    ;;
export-raw)
    "$SNAPFAULT_TOOL" image export "$last" --raw raw >files.txt || bad "export --raw failed"
    cat files.txt
    f=$(grep "/$(printf '%016x' "$buf")-" files.txt)
    [ -n "$f" ] || bad "no file for the buffer's range"
    [ -n "$f" ] && { cmp "$f" chain/expect.bin || bad "$f differs from the memory at the last snapshot"; }
    [ "$named" = yes ] && { case "$f" in *_anon_sfbuf.bin) ;; *) bad "$f is not named after [anon:sfbuf]" ;; esac; }
    ;;
export-core)
    "$SNAPFAULT_TOOL" image export "$last" --core core >/dev/null || bad "export --core failed"
    head -c 4 core | od -An -c | grep -q 'E   L   F' || bad "core is not an ELF file"
    command -v gdb >/dev/null 2>&1 || skip "gdb is not installed"
    gdb -nx -batch -ex 'print sf_page.counter' -ex 'print/x *(unsigned char (*)[8])'"$buf" "$IMGCHAIN" core >gdb.txt 2>&1
    cat gdb.txt
    grep -q '^\$1 = 12345$' gdb.txt || bad "gdb does not print sf_page.counter = 12345 from the core"
    grep -q '^\$2 = {0x42, 0x42' gdb.txt || bad "gdb does not read the buffer from the core"
    ;;
*)
    echo "unknown case $case_name"
    exit 2
    ;;
esac
[ $fail -eq 0 ] && echo "PASS: $case_name"
exit $fail
