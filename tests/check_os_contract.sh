#!/bin/sh
# The OS contract's build check (scripts/check_os_calls.py) on two archives:
# one keeping the contract passes; one with a raw mprotect and an ioctl
# outside uffd.c fails under the core's rule and under the preload's.
# Usage: check_os_contract.sh CHECK NM ALLOWED PRELOAD_MAP CLEAN.a STRAY.a
set -u
check=$1 nm=$2 allowed=$3 map=$4 clean=$5 stray=$6
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$tmp/err" 2>/dev/null; exit 1; }

"$check" --nm "$nm" --allowed "$allowed" --only sf__os_ioctl=uffd.c --stamp "$tmp/ok" "$clean" \
    2>"$tmp/err" || fail "the clean archive was rejected"
[ -s "$tmp/ok" ] || fail "no stamp written for the clean archive"

if "$check" --nm "$nm" --allowed "$allowed" --only sf__os_ioctl=uffd.c --stamp "$tmp/bad" "$stray" \
    2>"$tmp/err"; then
    fail "the stray archive was accepted"
fi
[ -e "$tmp/bad" ] && fail "a stamp was written for the stray archive"
grep -q 'os_stray.c: calls mprotect outside the OS contract' "$tmp/err" || fail "raw mprotect not named"
grep -q 'os_stray.c: calls sf__os_ioctl, which only uffd.c may call' "$tmp/err" || fail "ioctl not named"

if "$check" --nm "$nm" --forbid-map "$map" --stamp "$tmp/bad" "$stray" 2>"$tmp/err"; then
    fail "the preload's rule accepted a call to an interposer"
fi
grep -q "os_stray.c: calls mprotect, which is one of the preload's interposers" "$tmp/err" ||
    fail "interposer call not named"
echo "ok: clean archive accepted, raw mprotect and stray ioctl rejected"
