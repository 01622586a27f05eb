#!/usr/bin/env bash
# budget.sh CASE - snapshot mode's disk budget and retention (budget.c),
# settings that survive a rewritten argv/environ (proctitle.c), and Redis
# under the preload.  Exit 0 pass, 1 fail, 77 skip.
#
# Every take is asked for by SIGUSR2 from the program itself, which waits
# for the index to answer it; Redis is driven by redis-cli and waited for
# by bounded PING and LASTSAVE loops.  No verdict depends on speed.
set -uo pipefail

case_name=${1:?usage: budget.sh CASE}
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${SNAPFAULT_PRELOAD_LIB:?path of libsnapfault-preload.so}"
: "${COMPAT_BIN:?directory of the compat test programs}"
export SNAPFAULT_PRELOAD_LIB

work=$(mktemp -d /tmp/snapfault-budget.XXXXXX)
cleanup() {
    [ -n "${redis_pid:-}" ] && kill -KILL "$redis_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1
fail=0
skip() { echo "SKIP: $*"; exit 77; }
note() { echo "--- $*"; }
bad() { echo "FAIL: $*"; fail=1; }
B=$COMPAT_BIN/budget

# idx DIR: the one index in DIR
idx() { local f=("$1"/*.index); [ ${#f[@]} = 1 ] && [ -f "${f[0]}" ] && echo "${f[0]}"; }
# kept DIR: the sequence numbers of the images the index lists and did not delete
kept() { awk -F'\t' '$1 == "S" { k[$2] = $3 } $1 == "D" { delete k[$2] } END { for (s in k) print s }' "$(idx "$1")" | sort -n; }
# readback NAME: every kept image holds, at a page its round wrote, the
# round's tag (read through its chain)
readback() {
    local name=$1 dir=$work/$1 addr s img r
    addr=$(sed -n 's/^buf 0x//p' "$work/$name.out")
    for s in $(kept "$dir"); do
        img=$(awk -F'\t' -v s="$s" '$1 == "S" && $2 == s { print $3 }' "$(idx "$dir")")
        # image s was taken after round min(s, ROUNDS) (the final one after the last)
        r=$((s > rounds ? rounds : s))
        local page=$((r % 4 + 4))
        local a; a=$(printf '0x%x' $((0x$addr + page * 4096)))
        local want="R${r}P${page};"
        local got; got=$("$SNAPFAULT_TOOL" image cat --raw "$dir/$img" "$a" ${#want} 2>&1)
        [ "$got" = "$want" ] || bad "$name: image $s ($img) holds '$got' at $a, expected '$want'"
    done
}
# verify NAME: what the index lists verifies, and nothing else is left
verify() {
    local dir=$work/$1
    "$SNAPFAULT_TOOL" image verify "$(idx "$dir")" >"$work/$1.verify" 2>&1 ||
        { bad "$1: verify failed: $(cat "$work/$1.verify")"; return; }
    grep -q 'warning' "$work/$1.verify" && bad "$1: verify warns: $(cat "$work/$1.verify")"
    local listed on_disk
    listed=$(kept "$dir" | wc -l)
    on_disk=$(ls "$dir"/*.sfimg 2>/dev/null | wc -l)
    [ "$listed" = "$on_disk" ] || bad "$1: the index keeps $listed images, $on_disk are on disk"
}
# run NAME OPTS...: the budget program under snapshot mode
rounds=12 mib=8
run() {
    local name=$1; shift
    "$SNAPFAULT_TOOL" run --mode snapshot --output "$work/$name" "$@" -- "$B" "$work/$name" "$rounds" "$mib" \
        >"$work/$name.out" 2>"$work/$name.err"
    rc=$?
    [ "$rc" = 0 ] || bad "$name: exit $rc: $(head -5 "$work/$name.err")"
}

case "$case_name" in
proctitle)
    # the title overwrites the argv/environ block; the forked child must
    # still find its image directory (SNAPFAULT_OUTPUT) and take an image
    "$SNAPFAULT_TOOL" run --mode snapshot --output "$work/pt" -- "$COMPAT_BIN/proctitle" "$work/pt" >pt.out 2>pt.err
    rc=$?
    [ "$rc" = 0 ] || bad "proctitle: exit $rc"
    grep -q 'child status 0' pt.out || bad "proctitle: the child did not get its image: $(cat pt.err)"
    grep -q 'cannot use' pt.err && bad "proctitle: $(cat pt.err)"
    n=$(ls pt/*.index 2>/dev/null | wc -l)
    [ "$n" = 2 ] || bad "proctitle: expected two indexes (parent, child): $(ls pt)"
    for f in pt/*.index; do
        grep -q '^#end	clean	' "$f" || bad "proctitle: $f: $(tail -1 "$f")"
    done
    "$SNAPFAULT_TOOL" image verify pt >verify.txt || bad "proctitle: verify: $(cat verify.txt)"
    ;;
bytes)
    # a byte budget: at every image and at the end the images on disk stay
    # under it; what remains verifies and reads back each round's data
    for comp in "" --no-compress; do
        max=$((20 << 20)); name=bytes$comp
        run "$name" --max-bytes $max $comp
        note "$name: $(tail -1 "$(idx "$work/$name")")"
        n=0
        while read -r _ r _ files _ bytes; do
            n=$((n + 1))
            [ "$bytes" -le "$max" ] || bad "$name: after image $r: $bytes bytes on disk, more than $max"
            [ "$files" -ge 1 ] || bad "$name: after image $r: no image on disk"
        done < <(grep '^round' "$work/$name.out")
        [ "$n" = "$rounds" ] || bad "$name: $n rounds reported, expected $rounds"
        # the index in order: when an image is listed, the images listed and
        # not deleted (an image over the budget is deleted right after its
        # S line) take at most the budget
        awk -F'\t' -v max="$max" '
            function check() { if (pend != "" && sum > max) print "at image " pend ": " sum " bytes listed"; pend = "" }
            $1 == "D" { if ($2 != pend) check(); sum -= size[$2]; delete size[$2]; check(); next }
            { check() }
            $1 == "S" { size[$2] = $6; sum += $6; pend = $2 }
            END { check() }' "$(idx "$work/$name")" >"$work/$name.listed"
        [ -s "$work/$name.listed" ] && bad "$name: the index lists more than the budget: $(head -3 "$work/$name.listed")"
        total=$(cat "$work/$name"/*.sfimg | wc -c)
        [ "$total" -le "$max" ] || bad "$name: at the end $total bytes on disk, more than $max"
        grep -q '^D	' "$(idx "$work/$name")" || bad "$name: nothing was deleted: the budget was never needed"
        verify "$name"
        readback "$name"
    done
    # compression is on by default: the same run takes fewer bytes per image
    a=$(awk -F'\t' '$1 == "S" && $2 == 1 { print $6 }' "$(idx "$work/bytes")")
    b=$(awk -F'\t' '$1 == "S" && $2 == 1 { print $6 }' "$(idx "$work/bytes--no-compress")")
    [ "$a" -lt "$b" ] || bad "the compressed first image ($a bytes) is not smaller than the raw one ($b)"
    ;;
keep)
    # --keep 4: never more than 4 images on disk after any image, at least
    # 2 (chains of 2); the rest verifies and reads back
    run keep --keep 4
    while read -r _ r _ files _ _; do
        [ "$files" -le 4 ] || bad "keep: after image $r: $files images on disk"
        [ "$r" -lt 3 ] || [ "$files" -ge 2 ] || bad "keep: after image $r: only $files images on disk"
    done < <(grep '^round' keep.out)
    n=$(ls keep/*.sfimg | wc -l)
    [ "$n" -le 4 ] && [ "$n" -ge 2 ] || bad "keep: $n images at the end"
    verify keep
    readback keep
    ;;
full)
    # a full image every 3: images 1, 4, 7, 10, 13 have no parent, the
    # others have the one before; no budget, nothing deleted
    run full --full-every 3
    i=$(idx "$work/full")
    awk -F'\t' '$1 == "S" { full = ($2 % 3 == 1); if ((($5 == "0000000000000000") != full)) print "image " $2 " parent " $5 }' "$i" >wrong.txt
    [ -s wrong.txt ] && bad "full: $(cat wrong.txt)"
    [ "$(grep -c '^S' "$i")" = $((rounds + 1)) ] || bad "full: $(grep -c '^S' "$i") images"
    grep -q '^D' "$i" && bad "full: an image was deleted without a budget"
    verify full
    grep -c ': ok (full' full.verify | grep -qx 5 || bad "full: expected 5 full images: $(cat full.verify)"
    readback full
    ;;
backoff)
    # a budget smaller than any image: every image is deleted at once, the
    # back-off is said once on stderr and once in the index
    run backoff --max-bytes 64K --snapshot-every 10min
    i=$(idx "$work/backoff")
    [ "$(grep -c 'outgrow MAX_BYTES' backoff.err)" = 1 ] || bad "backoff: stderr: $(cat backoff.err)"
    [ "$(grep -c '^#backoff' "$i")" = 1 ] || bad "backoff: index: $(grep '^#' "$i")"
    grep -q 'period 600000 ms -> 1200000 ms' backoff.err || bad "backoff: the period did not double: $(cat backoff.err)"
    grep -q "^#end	clean	.*final=none	.*backoffs=$((rounds + 1))	bytes=0" "$i" || bad "backoff: end: $(tail -1 "$i")"
    n=$(ls backoff/*.sfimg 2>/dev/null | wc -l)
    [ "$n" = 0 ] || bad "backoff: $n images left over a budget none fits"
    ;;
killed)
    # a process killed in the middle of writing an image leaves no damaged
    # image: what the index lists and every *.sfimg verifies, the unfinished
    # write is a .part file verify names.  The kill is sent when a file
    # appears in the directory that the index does not list (a write in
    # progress, whatever its name) after the first image; the second, of
    # 64 MiB raw, is long enough to be caught: up to 5 tries, each decided
    # by what is on disk.
    caught=0
    for try in 1 2 3 4 5; do
        d=$work/killed$try
        "$SNAPFAULT_TOOL" run --mode snapshot --no-compress --output "$d" -- "$B" "$d" 4 256 \
            >"$work/killed$try.out" 2>"$work/killed$try.err" &
        runner=$!
        pid='' inprog=''
        while kill -0 "$runner" 2>/dev/null; do
            i=$(idx "$d") || continue
            pid=${i##*/snap-}; pid=${pid%.index}
            grep -q '^S	' "$i" || continue # the second image: one is there to verify
            for f in "$d"/*; do
                b=${f##*/}
                case $b in *.index) continue ;; esac
                grep -q "	${b%.part}	" "$i" 2>/dev/null && continue
                inprog=$b; break
            done
            [ -n "$inprog" ] && break
        done
        [ -n "$inprog" ] && [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
        wait "$runner"
        [ -n "$inprog" ] || continue
        # caught only if the write had not ended: the file is still unlisted
        grep -q "	${inprog%.part}	" "$i" && continue
        caught=1
        note "killed: try $try: pid $pid killed while writing $inprog"
        "$SNAPFAULT_TOOL" image verify "$d" >"$work/killed.verify" 2>&1
        rc=$?
        cat "$work/killed.verify"
        [ "$rc" = 0 ] || bad "killed: verify of the directory failed (exit $rc)"
        for f in "$d"/*.sfimg; do
            [ -e "$f" ] || continue
            "$SNAPFAULT_TOOL" image verify "$f" >/dev/null 2>&1 || bad "killed: $f does not verify"
        done
        grep -q 'DAMAGED' "$work/killed.verify" && bad "killed: damaged images left"
        grep -q '\.part: incomplete' "$work/killed.verify" || bad "killed: verify does not name the unfinished write"
        grep -q 'NO END MARK' "$work/killed.verify" || bad "killed: verify does not say the process was killed"
        break
    done
    [ "$caught" = 1 ] || bad "killed: no write was caught in progress in 5 tries"
    ;;
redis)
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null ||
        skip "redis-server/redis-tools are not installed (tests/compat/setup.sh installs them)"
    port=$((20000 + $$ % 20000))
    rc() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
    # up: PING answered, at most 1000 tries; the server must still run
    up() {
        local i
        for i in $(seq 1000); do
            [ "$(rc PING 2>/dev/null)" = PONG ] && return 0
            kill -0 "$redis_pid" 2>/dev/null || return 1
            sleep 0.02
        done
        return 1
    }
    # a fixed data set: strings, hashes, lists, sets, sorted sets, and
    # DEBUG POPULATE's keys
    awk 'BEGIN {
        for (i = 0; i < 3000; i++) printf "SET s:%d v%d\n", i, i * 7
        for (i = 0; i < 300; i++) for (j = 0; j < 10; j++) printf "HSET h:%d f%d %d\n", i, j, i * j
        for (i = 0; i < 1000; i++) printf "RPUSH l:%d a%d\n", i % 50, i
        for (i = 0; i < 1000; i++) printf "SADD st:%d m%d\n", i % 20, i
        for (i = 0; i < 1000; i++) printf "ZADD z:%d %d e%d\n", i % 10, i, i
    }' >load.txt
    # serve MODE: redis-server (plain or under snapfault run MODE), the
    # load, the digest (digest.MODE), redis-benchmark in db 1 (flushed
    # after), BGSAVE waited for by LASTSAVE, SHUTDOWN; the server's status
    # in srv_rc
    serve() {
        local mode=$1 pre=()
        mkdir -p "$work/data.$mode"
        [ "$mode" = plain ] || pre=("$SNAPFAULT_TOOL" run --mode "$mode" --output "$work/out.$mode")
        "${pre[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
            --dir "$work/data.$mode" --enable-debug-command yes --logfile "$work/redis.$mode.log" \
            >"$work/srv.$mode.out" 2>&1 &
        redis_pid=$!
        [ "$mode" = snapshot ] && snap_server=$redis_pid  # snapfault run execs: the same pid
        up || { bad "redis/$mode: no PONG: $(tail -5 "$work/redis.$mode.log")"; kill -KILL "$redis_pid"; redis_pid=; return; }
        rc <load.txt >/dev/null
        rc DEBUG POPULATE 20000 pop 64 >/dev/null
        rc DEBUG DIGEST >"digest.$mode"
        redis-benchmark -h 127.0.0.1 -p "$port" --dbnum 1 -q -n 20000 -t set,get,incr,lpush,lpop,hset >"bench.$mode" 2>&1 ||
            bad "redis/$mode: redis-benchmark failed: $(tail -3 "bench.$mode")"
        [ "$(rc -n 1 FLUSHDB)" = OK ] || bad "redis/$mode: FLUSHDB"
        [ "$(rc DEBUG DIGEST)" = "$(cat "digest.$mode")" ] || bad "redis/$mode: the benchmark changed db 0"
        # BGSAVE: its forked child runs long enough (a delay per key) to
        # be asked for an image by SIGUSR2
        rc CONFIG SET rdb-key-save-delay 100 >/dev/null
        local before; before=$(rc LASTSAVE)
        rc BGSAVE >/dev/null
        local child="" i
        for i in $(seq 500); do
            child=$(cat /proc/"$redis_pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . | head -1)
            [ -n "$child" ] && break
            sleep 0.01
        done
        [ -n "$child" ] || bad "redis/$mode: no BGSAVE child"
        if [ -n "$child" ] && [ "$mode" = snapshot ]; then
            kill -USR2 "$child"
            for i in $(seq 1000); do
                grep -q '^S	' "$work/out.$mode/snap-$child.index" 2>/dev/null && break
                kill -0 "$child" 2>/dev/null || break
                sleep 0.02
            done
            grep -q '^S	' "$work/out.$mode/snap-$child.index" 2>/dev/null ||
                bad "redis/$mode: the BGSAVE child $child wrote no image: $(grep -i snapfault "$work/srv.$mode.out" | head -3)"
        fi
        rc CONFIG SET rdb-key-save-delay 0 >/dev/null
        for i in $(seq 3000); do
            [ "$(rc LASTSAVE)" != "$before" ] && break
            sleep 0.02
        done
        [ "$(rc LASTSAVE)" != "$before" ] || bad "redis/$mode: BGSAVE did not finish"
        [ -s "$work/data.$mode/dump.rdb" ] || bad "redis/$mode: no dump.rdb"
        rc SHUTDOWN NOSAVE >/dev/null 2>&1
        wait "$redis_pid"; srv_rc=$?
        redis_pid=
        [ "$srv_rc" = 0 ] || bad "redis/$mode: server exit $srv_rc: $(tail -5 "$work/srv.$mode.out")"
        grep -qi 'snapfault' "$work/srv.$mode.out" && bad "redis/$mode: the preload said: $(grep -i snapfault "$work/srv.$mode.out" | head -3)"
        note "redis/$mode: digest $(cat "digest.$mode"), $(grep -c . "bench.$mode") benchmark lines"
    }
    serve plain
    for mode in track snapshot; do
        serve "$mode"
        [ "$(cat digest.$mode)" = "$(cat digest.plain)" ] || bad "redis/$mode: digest $(cat digest.$mode), plain $(cat digest.plain)"
    done
    # track: a record for the server (and its BGSAVE child)
    n=$(ls "$work"/out.track* 2>/dev/null | wc -l)
    [ "$n" -ge 2 ] || bad "redis/track: expected records of the server and its BGSAVE child: $(ls "$work")"
    for f in "$work"/out.track*; do
        "$SNAPFAULT_TOOL" report "$f" >report.txt 2>&1 || bad "redis/track: report $f: $(tail -3 report.txt)"
    done
    # snapshot: the server's chain ended clean by exit with its final
    # image; the child's image verifies
    # (by its pid: pids wrap, the BGSAVE child's may be the lower one)
    spid=$snap_server
    grep -q '^#end	clean	.*how=exit	final=[0-9]' "$work/out.snapshot/snap-$spid.index" ||
        bad "redis/snapshot: server chain: $(tail -1 "$work/out.snapshot/snap-$spid.index")"
    "$SNAPFAULT_TOOL" image verify "$work/out.snapshot" >verify.txt 2>&1 || bad "redis/snapshot: verify: $(cat verify.txt)"
    [ "$(ls "$work"/out.snapshot/*.index | wc -l)" -ge 2 ] || bad "redis/snapshot: no index of the BGSAVE child"
    ;;
*)
    echo "unknown case $case_name"; exit 2 ;;
esac

if [ $fail = 0 ]; then echo "PASS: $case_name"; else echo "FAILED: $case_name"; fi
exit $fail
