#!/usr/bin/env bash
# libsigsegv.sh - the 'libsigsegv' compat case (kept apart from compat.sh):
# a libsigsegv program (guard pages repaired by sigsegv_install_handler,
# deep recursion caught by stackoverflow_install_handler, twice per round)
# under the preload, on the signal-delivered backends (uffd-sync: tracking
# the stacks too).  Its output and exit status must be the plain run's.  Exit 0 pass,
# 1 fail, 77 skip (the program was not built: no libsigsegv-dev).
set -uo pipefail
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${SNAPFAULT_PRELOAD_LIB:?path of libsnapfault-preload.so}"
: "${COMPAT_BIN:?directory of the compat test programs}"
export SNAPFAULT_PRELOAD_LIB
prog=$COMPAT_BIN/sigsegv
[ -x "$prog" ] || { echo "SKIP: $prog not built (libsigsegv-dev missing; scripts/setup.sh installs it)"; exit 77; }

work=$(mktemp -d /tmp/snapfault-sigsegv.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }

"$prog" 3 >plain.out 2>plain.err; plain_rc=$?
echo "--- plain: exit $plain_rc"; cat plain.out
[ "$plain_rc" = 0 ] || bad "plain run failed"
for backend in mprotect uffd-sync; do
    for mode in track snapshot; do
        name=$backend/$mode
        # the stacks too where the backend can (not with faults as signals)
        include=heap,anon,data; [ "$backend" = uffd-sync ] && include+=,stacks
        opts=(--mode "$mode" --backend "$backend" --include "$include" --output "$work/out.$backend.$mode.%p")
        args=(3)
        # snapshot mode: the program asks for one per round (SIGUSR2), no timer
        if [ "$mode" = track ]; then opts+=(--interval 20ms); else opts+=(--snapshot-signal USR2); args+=(snap); fi
        "$SNAPFAULT_TOOL" run "${opts[@]}" -- "$prog" "${args[@]}" >pre.out 2>pre.err; rc=$?
        if grep -q "backend.*not available\|-ENOTSUP\|not supported" pre.err && [ "$rc" != 0 ]; then
            echo "--- $name: backend unavailable here, skipped"; continue
        fi
        [ "$rc" = "$plain_rc" ] || { bad "$name: exit $rc, expected $plain_rc"; sed 's/^/    /' pre.err | head -20; }
        cmp -s plain.out pre.out || { bad "$name: stdout differs"; diff plain.out pre.out | head -10; }
        cmp -s plain.err pre.err || { bad "$name: stderr differs"; diff plain.err pre.err | head -10; }
        shopt -s nullglob; files=("$work/out.$backend.$mode".*); shopt -u nullglob
        [ ${#files[@]} -gt 0 ] || bad "$name: no output"
        for f in "${files[@]}"; do
            if [ "$mode" = track ]; then
                "$SNAPFAULT_TOOL" report "$f" >report.txt 2>&1 || { bad "$name: report $f failed"; head -5 report.txt; }
                grep -q 'no exit record' report.txt && bad "$name: $f has no exit record"
            elif compgen -G "$f/*.sfimg" >/dev/null; then
                "$SNAPFAULT_TOOL" image verify "$f" >verify.txt 2>&1 || { bad "$name: image verify $f failed"; tail -5 verify.txt; }
                echo "--- $name: $(grep -c ': ok' verify.txt) images verified"
            fi
        done
        echo "--- $name: exit $rc, output as plain"
    done
done
exit $fail
