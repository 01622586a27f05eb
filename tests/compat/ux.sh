#!/usr/bin/env bash
# ux.sh CASE - what a new user meets in `snapfault run` and `report`: rate
# figures, huge pages, output targets, the installed tree, warnings, programs
# that run untracked, where the summary and the records go, mapping names.
# Exit 0 pass, 1 fail, 77 skip.  Driven by events (the intervals a record
# shows, a program's exit), never by the machine's speed.
set -uo pipefail

case_name=${1:?usage: ux.sh CASE}
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${SNAPFAULT_PRELOAD_LIB:?path of libsnapfault-preload.so}"
: "${COMPAT_BIN:?directory of the compat test programs}"
export SNAPFAULT_PRELOAD_LIB
T=$SNAPFAULT_TOOL
U=$COMPAT_BIN/uxprog

work=$(mktemp -d /tmp/snapfault-ux.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
skip() { echo "SKIP: $*"; exit 77; }

# ge A B: A >= B for decimal numbers
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# check_rates WHAT REPORT ERR: peak >= mean in the report (total and every
# mapping row) and in the -s summary
check_rates() {
    local what=$1 rep=$2 err=$3 mean peak
    mean=$(sed -n 's/^dirtied: .*; mean \([0-9.]*\) MiB\/s; peak \([0-9.]*\) MiB\/s.*/\1/p' "$rep")
    peak=$(sed -n 's/^dirtied: .*; mean \([0-9.]*\) MiB\/s; peak \([0-9.]*\) MiB\/s.*/\2/p' "$rep")
    [ -n "$mean" ] && [ -n "$peak" ] || { bad "$what: no rates in the report: $(grep dirtied: "$rep")"; return; }
    ge "$mean" 0.05 || bad "$what: mean $mean MiB/s: nothing measured"
    ge "$peak" "$mean" || bad "$what: report: peak $peak < mean $mean MiB/s"
    # mapping rows: pages MiB mean peak kind ...
    awk '/^top mappings/ { on = 1; getline; next } on && NF >= 6 && $1 ~ /^[0-9]+$/ { if ($4 + 0.05 < $3) print }' "$rep" >rows.txt
    [ ! -s rows.txt ] || bad "$what: mapping rows with peak < mean: $(cat rows.txt)"
    mean=$(sed -n 's/^snapfault: dirtied .*: mean \([0-9.]*\) MiB\/s, peak \([0-9.]*\) MiB\/s.*/\1/p' "$err" | tail -1)
    peak=$(sed -n 's/^snapfault: dirtied .*: mean \([0-9.]*\) MiB\/s, peak \([0-9.]*\) MiB\/s.*/\2/p' "$err" | tail -1)
    [ -n "$mean" ] || { bad "$what: no -s summary: $(cat "$err")"; return; }
    ge "$peak" "$mean" || bad "$what: summary: peak $peak < mean $mean MiB/s"
    awk '$1 == "snapfault:" && NF >= 7 && $2 ~ /^[0-9]+$/ { if ($5 + 0.05 < $4) print }' "$err" >rows.txt
    [ ! -s rows.txt ] || bad "$what: summary rows with peak < mean: $(cat rows.txt)"
}

case "$case_name" in
rates)
    # shorter than one interval: one collect, at exit
    "$T" run -s --interval 10s --output short.sft -- "$U" dirty 16 >out.txt 2>err.txt || bad "short run failed"
    "$T" report short.sft >rep.txt || bad "report short failed"
    grep -q '^duration:  .*, 1 intervals' rep.txt || bad "short: expected one interval: $(grep duration: rep.txt)"
    check_rates short rep.txt err.txt
    # several intervals, each waited for by the program
    "$T" run -s --interval 50ms --output long.sft -- "$U" long "$work/long.sft" 6 8 >out.txt 2>err.txt || bad "long run failed"
    "$T" report long.sft >rep.txt || bad "report long failed"
    check_rates long rep.txt err.txt
    head -8 rep.txt
    ;;
thp)
    en=/sys/kernel/mm/transparent_hugepage/enabled
    [ -r $en ] && ! grep -q '\[never\]' $en || skip "transparent huge pages are off here"
    for backend in uffd-async uffd-sync mprotect; do
        "$T" run --thp keep --backend "$backend" --output "thp-$backend.sft" -- "$U" thp "$work/thp-$backend.sft" >out.txt 2>err.txt ||
            { bad "$backend: run failed: $(cat err.txt)"; continue; }
        read -r _ _ before _ after < <(grep '^raw' out.txt)
        [ "${before:-0}" -gt 0 ] || skip "no huge page appeared (memory too fragmented?)"
        [ "${after:-0}" -gt 0 ] || bad "$backend: THP=keep: AnonHugePages went from $before kB to ${after:-?} kB"
        mm=$(sed -n 's/^mmap after //p' out.txt)
        [ "${mm:-0}" -gt 0 ] || bad "$backend: THP=keep: an mmap'd MADV_HUGEPAGE range lost its huge pages"
        grep -q '^W.*huge pages kept' "thp-$backend.sft" || bad "$backend: the record does not say huge pages were left untracked"
        "$T" report "thp-$backend.sft" | grep -q 'note: huge pages kept' || bad "$backend: the report does not say so"
        echo "$backend THP=keep: $(tr '\n' ' ' <out.txt)"
    done
    # what tracking does to huge pages (the default, documented): printed, not asserted
    for backend in uffd-async uffd-sync mprotect; do
        "$T" run --backend "$backend" --output "split-$backend.sft" -- "$U" thp "$work/split-$backend.sft" >out.txt 2>&1
        echo "$backend THP=split: $(tr '\n' ' ' <out.txt)"
    done
    # --attribute: faults in the writing thread (uffd-sync in-thread, or mprotect)
    "$T" run --attribute --output split-attr.sft -- "$U" thp "$work/split-attr.sft" >out.txt 2>&1
    echo "$(sed -n 's/^P.*backend=\([^\t]*\)\tfaults=\([^\t]*\).*/\1, \2/p' split-attr.sft) THP=split: $(tr '\n' ' ' <out.txt)"
    ;;
output)
    devs() { ls -d /dev/stdout.* /dev/null.* 2>/dev/null || true; }
    devs >devs-before.txt
    for o in - /dev/stdout /dev/null; do
        "$T" run --output "$o" -- true >out.txt 2>err.txt; rc=$?
        [ "$rc" = 2 ] || bad "--output $o: exit $rc, expected 2"
        [ "$(wc -l <err.txt)" = 1 ] || bad "--output $o: not one line: $(cat err.txt)"
    done
    [ -e ./- ] && bad "a file named - was created"
    devs | cmp -s - devs-before.txt || bad "files were created in /dev: $(devs)"
    # /dev/shm is a file system: records may go there
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
        shm=/dev/shm/snapfault-ux-$$.sft
        "$T" run --output "$shm" -- true || bad "--output $shm refused"
        [ -s "$shm" ] || bad "no record in $shm"
        rm -f "$shm"
    fi
    # the preload alone refuses them too, and the program runs
    out=$(SNAPFAULT_OUTPUT=/dev/stdout LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' 2>err.txt)
    [ "$out" = ran ] || bad "preload with /dev/stdout: program output '$out'"
    grep -q 'not a regular file' err.txt || bad "preload with /dev/stdout: no warning: $(cat err.txt)"
    devs | cmp -s - devs-before.txt || bad "the preload created files in /dev: $(devs)"
    # after exec the same pid writes FILE.PID (no %p in the name) or FILE.1 (with %p)
    "$T" run --output ex.sft -- sh -c 'exec sh -c "echo x"' >/dev/null || bad "exec run failed"
    n=$(ls ex.sft ex.sft.[0-9]* 2>/dev/null | wc -l)
    [ "$n" = 2 ] || bad "exec without %p: expected ex.sft and ex.sft.PID: $(ls)"
    "$T" run --output 'ep.%p.sft' -- sh -c 'exec sh -c "echo x"' >/dev/null || bad "exec run failed"
    compgen -G "ep.*.sft.1" >/dev/null || bad "exec with %p: expected ep.PID.sft.1: $(ls)"
    ;;
install)
    : "${MESON_BUILD_ROOT:?the build directory}"
    dest=$work/dest
    meson install -C "$MESON_BUILD_ROOT" --no-rebuild --quiet --destdir "$dest" >inst.txt 2>&1 || { bad "meson install failed: $(tail -5 inst.txt)"; exit 1; }
    bin=$(find "$dest" -path '*/bin/snapfault' -type f | head -1)
    [ -x "$bin" ] || { bad "no installed snapfault"; exit 1; }
    find "$dest" -path '*/bin/*' -printf '%f\n' | grep -v '^snapfault' | grep . && bad "generic names installed in bin/"
    # nothing from the build tree may help it
    unset SNAPFAULT_PRELOAD_LIB LD_LIBRARY_PATH
    env -u SNAPFAULT_PRELOAD_LIB "$bin" probe >probe.txt 2>&1 || bad "installed probe failed: $(head -3 probe.txt)"
    env -u SNAPFAULT_PRELOAD_LIB "$bin" run -v --output "$work/inst.sft" -- cat /proc/self/maps >maps.txt 2>err.txt ||
        bad "installed run failed: $(cat err.txt)"
    grep -q "$dest.*libsnapfault-preload.so" maps.txt || bad "the installed preload was not the one loaded: $(grep preload maps.txt)"
    "$bin" report "$work/inst.sft" | grep -q '^dirtied:' || bad "installed report failed"
    # the pkg-config file builds and links a program against the installed library
    pcdir=$(dirname "$(find "$dest" -name snapfault.pc | head -1)")
    echo '#include <snapfault.h>
int main(void) { sf_caps c; return sf_probe(&c) < 0; }' >pc.c
    flags=$(PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs snapfault) || bad "pkg-config failed"
    libdir=$(PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir snapfault) # with the sysroot
    cc pc.c $flags -o pc 2>cc.txt || bad "cannot build against the installed tree: $(cat cc.txt)"
    LD_LIBRARY_PATH=$libdir ./pc || bad "a program linked with the installed library failed"
    ;;
warnings)
    SNAPFAULT_INTERVL=5ms "$T" run --snapshot-every 1s --output w.sft -- sh -c 'sh -c true; sh -c true' >out.txt 2>err.txt
    grep -q 'SNAPFAULT_INTERVL.*did you mean SNAPFAULT_INTERVAL' err.txt || bad "no suggestion for a misspelt name: $(cat err.txt)"
    grep -q -- '--snapshot-every has no effect in track mode' err.txt || bad "no warning for --snapshot-every in track mode"
    [ "$(grep -c INTERVL err.txt)" = 1 ] || bad "the misspelling was warned more than once: $(cat err.txt)"
    [ "$(grep -c 'no effect' err.txt)" = 1 ] || bad "the mode warning was given more than once: $(cat err.txt)"
    # the preload alone: once for the whole tree
    SNAPFAULT_MODE=track SNAPFAULT_SHOW_STAT=1 SNAPFAULT_MAX_IMAGES=3 SNAPFAULT_OUTPUT=$work/w2.%p \
        LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'sh -c true; sh -c true' 2>err.txt
    grep -q 'SNAPFAULT_SHOW_STAT .*did you mean SNAPFAULT_SHOW_STATS' err.txt || bad "preload: no suggestion: $(cat err.txt)"
    grep -q 'SNAPFAULT_MAX_IMAGES has no effect in track mode' err.txt || bad "preload: no mode warning: $(cat err.txt)"
    [ "$(grep -c SHOW_STAT err.txt)" = 1 ] || bad "preload: warned more than once: $(cat err.txt)"
    # names that belong to others are not called unknown
    SNAPFAULT_DEBUG=0 SNAPFAULT_OUTPUT=$work/w3.%p LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB true 2>err.txt
    [ ! -s err.txt ] || bad "a known name was warned about: $(cat err.txt)"
    # nor with -v, where the preload lists what it ignores: the command's
    # own SNAPFAULT_NOTED is not an unknown option
    "$T" run -v --output w4.sft -- true 2>err.txt
    grep -q 'unknown option' err.txt && bad "-v: the command's own settings called unknown: $(grep unknown err.txt)"
    ;;
untracked)
    cc -static -O1 -o static "${COMPAT_SRC:?}/uxprog.c" 2>/dev/null ||
        cc -static -x c -o static - <<<'int main(void){return 0;}' 2>/dev/null || skip "no static libc to link with"
    "$T" run --output st.sft -- ./static dirty 1 >out.txt 2>err.txt
    grep -q 'runs untracked: statically linked; no record will appear' err.txt || bad "static: no warning: $(cat err.txt)"
    "$T" run -v -s --output st.sft -- ./static dirty 1 >out.txt 2>err.txt
    grep -q 'no ELF interpreter' err.txt || bad "static -v: no detail: $(cat err.txt)"
    grep -q '^snapfault: pid .*untracked' err.txt || bad "static -s: not in the summary: $(cat err.txt)"
    # a dynamic program is not called untracked
    "$T" run --output dyn.sft -- "$U" dirty 1 >out.txt 2>err.txt
    [ ! -s err.txt ] || bad "dynamic program: $(cat err.txt)"
    # a set-user-ID program owned by someone else
    if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
        cp "$U" suid && chown nobody suid && chmod 4755 suid
        "$T" run --output su.sft -- ./suid dirty 1 >out.txt 2>err.txt
        grep -q 'runs untracked: set-ID program' err.txt || bad "setuid: no warning: $(cat err.txt)"
    fi
    ;;
stats)
    # the program closes its stderr: the summary still reaches run's stderr
    "$T" run -s --output c.sft -- "$U" closeerr 4 2>err.txt
    grep -q '^snapfault: dirtied' err.txt || bad "summary lost when the program closed stderr: $(cat err.txt)"
    # the same in snapshot mode
    "$T" run -s --mode snapshot --snapshot-every 50ms --output sd -- "$U" closeerr 4 2>err.txt
    grep -q '^snapfault: pid [0-9]*, snapshot mode' err.txt ||
        bad "snapshot mode: summary lost when the program closed stderr: $(cat err.txt)"
    "$T" run --stats-file sst.txt --mode snapshot --snapshot-every 50ms --output sd2 -- "$U" dirty 1 >out.txt 2>err.txt
    grep -q snapfault: err.txt && bad "snapshot mode --stats-file: summary in the program's stderr: $(cat err.txt)"
    grep -q '^snapfault: pid [0-9]*, snapshot mode' sst.txt ||
        bad "snapshot mode --stats-file: no summary in the file: $(cat sst.txt)"
    # --stats-file: nothing in the program's output, one summary per process
    "$T" run --stats-file st.txt --output c2/ -- sh -c "$U dirty 2 >&2; $U dirty 1" >out.txt 2>err.txt
    grep -q snapfault: err.txt && bad "--stats-file: summary in the program's stderr: $(cat err.txt)"
    n=$(grep -c '^snapfault: pid' st.txt)
    [ "$n" -ge 3 ] || bad "--stats-file: expected a summary per process, got $n: $(cat st.txt)"
    # one directory of records, one report over the tree
    [ "$(ls c2 | wc -l)" -ge 3 ] || bad "--output DIR/: expected a record per process: $(ls c2)"
    "$T" report c2 >rep.txt || bad "report DIR failed: $(cat rep.txt)"
    grep -q '^process tree: [0-9]* records' rep.txt || bad "report DIR: no tree summary: $(head -3 rep.txt)"
    grep -q 'uxprog' rep.txt || bad "report DIR: the programs are not listed"
    "$T" report c2/* >rep2.txt || bad "report FILE FILE failed"
    cmp -s <(tail -n +2 rep.txt) rep2.txt || bad "report DIR and report FILES differ"
    cat rep.txt
    ;;
names)
    "$T" run --interval 50ms --output n.sft -- "$U" names "$work/n.sft" >out.txt 2>err.txt || bad "names run failed: $(cat err.txt)"
    grep -q '^L	[0-9]*	heap	[0-9a-f]*	[0-9a-f]*	rw-p	\[heap\]$' n.sft || bad "no [heap] with its protection: $(grep ^L n.sft | head -3)"
    if grep -q 'named 1' out.txt; then
        grep -q '^L.*	\[anon:uxbuf\]$' n.sft || bad "the named mapping is not [anon:uxbuf]: $(grep ^L n.sft)"
        "$T" report n.sft | grep -q '\[anon:uxbuf\]' || bad "the report does not name [anon:uxbuf]"
    fi
    "$T" report n.sft | grep -q 'rw-p  \[heap\]' || bad "the report does not show [heap] with its protection"
    grep '^L' n.sft | head -5
    ;;
*)
    echo "unknown case $case_name"; exit 2 ;;
esac

if [ $fail = 0 ]; then echo "PASS: $case_name"; else echo "FAILED: $case_name"; fi
exit $fail
