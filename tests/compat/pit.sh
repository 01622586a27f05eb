#!/usr/bin/env bash
# pit.sh - point-in-time images of a multi-threaded program under
# `snapfault run` snapshot mode (pit.c): every image shows, for each
# writer thread, its two pages from one instant, and a thread asleep in
# epoll_wait sees no EINTR.  Exit 0 pass, 1 fail, 77 skip.  Event-driven:
# each take is asked for by the program and waited for in the index.
set -uo pipefail
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${SNAPFAULT_PRELOAD_LIB:?path of libsnapfault-preload.so}"
: "${COMPAT_BIN:?directory of the compat test programs}"
export SNAPFAULT_PRELOAD_LIB
work=$(mktemp -d /tmp/snapfault-pit.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
takes=20
for backend in auto uffd-async mprotect; do
    dir=$work/$backend
    "$SNAPFAULT_TOOL" run --mode snapshot --backend "$backend" --point-in-time --no-exit-image \
        -s --output "$dir" -- "$COMPAT_BIN/pit" "$dir" "$takes" \
        >"$work/$backend.out" 2>"$work/$backend.err"
    rc=$?
    [ "$rc" = 0 ] || { bad "$backend: status $rc: $(tail -3 "$work/$backend.err")"; continue; }
    a=$(sed -n 's/^A //p' "$work/$backend.out")
    b=$(sed -n 's/^B //p' "$work/$backend.out")
    idx=("$dir"/*.index)
    n=0
    for img in $(awk -F'\t' '$1 == "S" { print $3 }' "${idx[0]}"); do
        va=($("$SNAPFAULT_TOOL" image cat --raw "$dir/$img" "$a" 24 | od -An -tu8))
        vb=($("$SNAPFAULT_TOOL" image cat --raw "$dir/$img" "$b" 24 | od -An -tu8))
        [ ${#va[@]} = 3 ] && [ ${#vb[@]} = 3 ] || { bad "$backend/$img: cannot read A and B"; continue; }
        for i in 0 1 2; do
            [ "${vb[$i]}" = "${va[$i]}" ] || [ "$((vb[i] + 1))" = "${va[$i]}" ] ||
                bad "$backend/$img: writer $i: A ${va[$i]} B ${vb[$i]}: not one instant"
        done
        n=$((n + 1))
    done
    [ "$n" = "$takes" ] || bad "$backend: $n images, expected $takes"
    # one stop per take, plus one per retake
    line=$(grep 'point-in-time: ' "$work/$backend.err")
    stops=$(sed -n 's/.*point-in-time: \([0-9]*\) stops.*/\1/p' <<<"$line")
    retakes=$(sed -n 's/.* \([0-9]*\) retakes.*/\1/p' <<<"$line")
    [ -n "$stops" ] && [ -n "$retakes" ] && [ "$((stops - retakes))" = "$takes" ] ||
        bad "$backend: the summary does not report $takes takes' stops: $line"
    echo "--- $backend: $n images checked; $(grep -o 'stop median.*' "$work/$backend.err")"
done
exit $fail
