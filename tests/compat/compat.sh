#!/usr/bin/env bash
# compat.sh CASE - runs one real program without and with the snapfault
# preload (track mode, then snapshot mode with periodic snapshots) and
# compares stdout, stderr and exit status; checks the record or image chain.
# Exit 0 pass, 1 fail, 77 skip (program missing and not installable).
#
# No verdict depends on the machine's speed: the periods only add snapshots
# taken while the program runs; what is asserted comes from events (the
# final image every process writes at exit, SIGUSR2 raised by the program
# itself, whose images it waits for) and counts.
set -uo pipefail

case_name=${1:?usage: compat.sh CASE}
: "${SNAPFAULT_TOOL:?path of the snapfault command}"
: "${SNAPFAULT_PRELOAD_LIB:?path of libsnapfault-preload.so}"
: "${COMPAT_BIN:?directory of the compat test programs}"
export SNAPFAULT_PRELOAD_LIB

work=$(mktemp -d /tmp/snapfault-compat.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0

skip() { echo "SKIP: $*"; exit 77; }
need() { command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed (tests/compat/setup.sh installs it)"; }
# Debian's python3 rather than a version manager's shim script
pybin() { if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi; }
note() { echo "--- $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# run_cmp NAME CMD...: plain run, then track and snapshot runs, compared.
run_cmp() {
    local name=$1; shift
    "$@" >plain.out 2>plain.err; local plain_rc=$?
    note "$name: plain exit $plain_rc"
    local mode
    for mode in track snapshot; do
        local out=$work/$name.$mode
        local opts=(--mode "$mode" --output "$out.%p")
        # periodic snapshots for coverage only: the final image is what the
        # checks rely on
        if [ "$mode" = track ]; then opts+=(--interval 100ms); else opts+=(--snapshot-every "${SNAP_EVERY:-250ms}" --snapshot-signal 0); fi
        [ -n "${COMPAT_BACKEND:-}" ] && opts+=(--backend "$COMPAT_BACKEND")
        "$SNAPFAULT_TOOL" run "${opts[@]}" -- "$@" >pre.out 2>pre.err; local rc=$?
        if [ "$rc" != "$plain_rc" ]; then bad "$name/$mode: exit $rc, expected $plain_rc"; sed 's/^/    /' pre.err | head -20; fi
        if ! cmp -s plain.out pre.out; then bad "$name/$mode: stdout differs"; diff plain.out pre.out | head -10; fi
        if ! cmp -s plain.err pre.err; then bad "$name/$mode: stderr differs"; diff plain.err pre.err | head -10; fi
        check_output "$name" "$mode" "$out"
    done
}

# The records or images the runs left must be readable and consistent.
check_output() {
    local name=$1 mode=$2 out=$3
    shopt -s nullglob
    local files=("$out".*)
    shopt -u nullglob
    if [ ${#files[@]} -eq 0 ]; then bad "$name/$mode: no output at $out.*"; return; fi
    local f n=0
    for f in "${files[@]}"; do
        if [ "$mode" = track ]; then
            "$SNAPFAULT_TOOL" report "$f" >report.txt 2>&1 || { bad "$name/$mode: report $f failed"; cat report.txt; continue; }
            grep -q '^dirtied:' report.txt || bad "$name/$mode: report of $f has no summary"
            [ "${REQUIRE_EXIT:-1}" = 1 ] && grep -q 'no exit record' report.txt && bad "$name/$mode: $f has no exit record"
            local perm; perm=$(stat -c %a "$f")
            [ "$perm" = 600 ] || bad "$name/$mode: $f has mode $perm, not 600"
        else
            check_chains "$name/$mode" "$f"
            if compgen -G "$f/*.sfimg" >/dev/null; then
                "$SNAPFAULT_TOOL" image verify "$f" >verify.txt 2>&1 || { bad "$name/$mode: image verify $f failed"; tail -5 verify.txt; }
                n=$((n + $(grep -c ': ok' verify.txt)))
            fi
        fi
    done
    if [ "$mode" = snapshot ]; then
        note "$name/$mode: ${#files[@]} processes, $n images verified"
        # every process that ended by exit wrote its final image
        [ "${MIN_IMAGES:-1}" -le "$n" ] || bad "$name/$mode: expected at least ${MIN_IMAGES:-1} images, got $n"
    else
        note "$name/$mode: ${#files[@]} records"
        head -6 report.txt | sed 's/^/    /'
    fi
}

# check_chains WHAT DIR: every index in DIR has its end line (unless
# REQUIRE_EXIT=0: a crash kills without one); one that ended by exit or a
# fatal signal is clean and names its final image, which verifies.
check_chains() {
    local what=$1 dir=$2 idx
    shopt -s nullglob
    local idxs=("$dir"/*.index)
    shopt -u nullglob
    [ ${#idxs[@]} -gt 0 ] || { bad "$what: no index in $dir"; return; }
    for idx in "${idxs[@]}"; do
        local end; end=$(grep '^#end' "$idx")
        if [ -z "$end" ]; then
            [ "${REQUIRE_EXIT:-1}" = 1 ] && bad "$what: $idx has no end mark: $(tail -2 "$idx")"
            continue
        fi
        case "$end" in
        *how=exec*|*how=_exit*) ;;   # no final image can be taken there
        "#end	clean	"*final=[0-9]*)
            local img; img=$(final_file "$idx")
            [ -n "$img" ] && [ -f "$dir/$img" ] || bad "$what: $idx: final image $img missing"
            ;;
        *) bad "$what: $idx: not a clean end: $end" ;;
        esac
    done
}


# Starts the exitimg program NAME in mode MODE under snapshot mode in the
# background (pid in $pid) and returns once it printed "ready" (an event,
# not a delay) or died.
start_ready() {
    "$SNAPFAULT_TOOL" run --mode snapshot --backend "$backend" --output "$work/$1" -- "$X" "$work/$1" 0 "$2" \
        >"$work/$1.out" 2>"$work/$1.err" &
    pid=$!
    until grep -q '^ready' "$work/$1.out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
}

# final_file INDEX: the file name of the final image the end line names
final_file() {
    local fin; fin=$(sed -n 's/^#end.*final=\([0-9][0-9]*\).*/\1/p' "$1")
    [ -n "$fin" ] && awk -F'\t' -v s="$fin" '$1 == "S" && $2 == s { print $3 }' "$1"
}

case "$case_name" in
python3)
    need python3
    py=$(pybin)
    head -c 3000000 /dev/urandom >data.bin
    cat >work.py <<'PY'
import hashlib, os, sys, threading, zlib
path = sys.argv[1]
size = os.path.getsize(path)
buf = bytearray(size)
with open(path, 'rb', buffering=0) as f:        # read(2) straight into a tracked buffer
    n = f.readinto(buf)
print("read", n, hashlib.sha256(buf).hexdigest()[:16])
results = [None] * 4
def worker(i):
    d = {}
    for k in range(60000):
        d[k] = (k * (i + 7)) % 1000003
    blob = bytes(buf[i::4])
    results[i] = (sum(d.values()), zlib.crc32(zlib.compress(blob, 6)))
threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("threads", results)
chunks = [os.urandom(0) + bytes([i % 256]) * (i * 1000) for i in range(400)]
print("chunks", sum(len(c) for c in chunks))
with open(path, 'rb') as f:
    parts = [f.read(65536) for _ in range(size // 65536 + 1)]
print("parts", len(parts), hashlib.md5(b''.join(parts)).hexdigest()[:16])
PY
    MIN_IMAGES=1 run_cmp python3 "$py" work.py data.bin
    ;;
java)
    need java; need javac
    cat >Work.java <<'JAVA'
import java.util.*;
import java.util.concurrent.*;
public class Work {
    static int nulls(Object[] a) {
        int n = 0;
        for (Object o : a) { try { n += o.hashCode() & 1; } catch (NullPointerException e) { n += 2; } }
        return n;
    }
    public static void main(String[] args) throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(3);
        List<Future<Long>> fs = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            final int seed = t;
            fs.add(ex.submit(() -> {
                long s = 0;
                for (int r = 0; r < 30; r++) {
                    long[] a = new long[200000];
                    for (int i = 0; i < a.length; i++) a[i] = (i * 31L + seed) ^ r;
                    Arrays.sort(a);
                    s += a[a.length / 2];
                    HashMap<Integer, String> m = new HashMap<>();
                    for (int i = 0; i < 20000; i++) m.put(i, Integer.toString(i * seed));
                    s += m.size();
                }
                return s;
            }));
        }
        long total = 0;
        for (Future<Long> f : fs) total += f.get();
        ex.shutdown();
        Object[] objs = new Object[1000];
        for (int i = 0; i < objs.length; i += 3) objs[i] = Integer.valueOf(i);
        int n = 0;
        for (int r = 0; r < 3000; r++) n += nulls(objs);   // JIT-compiled: implicit null checks via SIGSEGV
        System.out.println("total " + total + " nulls " + n);
    }
}
JAVA
    javac -d . Work.java 2>javac.err || { cat javac.err; exit 1; }
    MIN_IMAGES=1 run_cmp java java -Xmx256m -cp . Work
    ;;
gawk)
    need gawk
    cat >deep.awk <<'AWK'
function depth(n) { return n == 0 ? 0 : 1 + depth(n - 1) }
function fib(n,   a, b, t, i) { a = 0; b = 1; for (i = 0; i < n; i++) { t = a + b; a = b; b = t % 1000000007 } return a }
BEGIN {
    print "depth", depth(200000)
    for (i = 0; i < 300000; i++) h[i % 5003] += i
    s = 0; for (k in h) s += h[k]
    print "sum", s, "fib", fib(100000)
    str = ""; for (i = 0; i < 20000; i++) str = str sprintf("%x", i)
    print "len", length(str), substr(str, 5000, 20)
}
AWK
    MIN_IMAGES=1 run_cmp gawk gawk -f deep.awk
    ;;
sqlite3)
    need sqlite3
    cat >script.sql <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
INSERT INTO t(k, v) SELECT (x * 7919) % 10007, printf('%08d', x) FROM c;
CREATE INDEX tk ON t(k);
SELECT count(*), sum(k), max(v) FROM t;
SELECT k, count(*) FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 5;
UPDATE t SET v = upper(v) || 'x' WHERE k % 3 = 0;
SELECT count(*), sum(length(v)) FROM t WHERE v LIKE '%x';
DELETE FROM t WHERE id % 2 = 0;
VACUUM;
SELECT count(*), min(id), max(id) FROM t;
SQL
    rm -f db.sqlite
    MIN_IMAGES=1 run_cmp sqlite3 sh -c 'rm -f db.sqlite; exec sqlite3 db.sqlite < script.sql'
    ;;
sortgzip)
    need sort; need gzip
    # tens of MiB of text, the same every time
    awk 'BEGIN { srand(42); for (i = 0; i < 700000; i++) printf "%08d %s line %d\n", int(rand() * 1e8), substr("abcdefghijklmnop", i % 16 + 1), i }' >big.txt
    note "input $(du -m big.txt | cut -f1) MiB"
    # two snapshots a second: sort rewrites its whole buffer between two
    SNAP_EVERY=500ms MIN_IMAGES=1 run_cmp sort sort -S 64M big.txt -o sorted.txt
    cmp -s sorted.txt <(LC_ALL=${LC_ALL:-} sort -S 64M big.txt) || bad "sorted output differs"
    MIN_IMAGES=1 run_cmp gzip sh -c 'gzip -c big.txt | gunzip -c | md5sum'
    ;;
pipeline)
    need sh
    MIN_IMAGES=0 run_cmp pipeline sh -c 'seq 1 200000 | awk "{ s += \$1 } END { print s }"; for i in 1 2 3; do echo "$i" | tr 123 abc; done; x=$(ls / | wc -l); echo "entries $x" | sed s/entries/n/; (cd /etc && cat os-release | wc -l) | sort -n; sh -c "exit 3" || echo "inner exit $?"'
    ;;
segv-handler)
    MIN_IMAGES=1 run_cmp segv_handler "$COMPAT_BIN/segv_handler"
    ;;
crash)
    for how in segv readonly bus abort; do
        # a crashed process writes no exit record
        REQUIRE_EXIT=0 MIN_IMAGES=0 run_cmp "crash-$how" "$COMPAT_BIN/crash" "$how"
    done
    ;;
kwrite)
    # the signal-delivered fault modes, where EFAULT is the danger
    for backend in mprotect uffd-sync; do
        COMPAT_BACKEND=$backend MIN_IMAGES=0 run_cmp "kwrite-$backend" "$COMPAT_BIN/kwrite"
    done
    MIN_IMAGES=0 COMPAT_BACKEND=mprotect run_cmp kwrite-python "$(pybin)" -c 'import hashlib; d = open("/proc/self/exe","rb").read(); print(len(d) > 0, hashlib.md5(d).hexdigest() == hashlib.md5(open("/proc/self/exe","rb").read()).hexdigest())'
    ;;
heap-trim)
    # libc trims the heap and grows it back over tracked pages where no
    # interposer sees it (its internal brk): the next image holds what the
    # program wrote there, on every backend
    for backend in mprotect uffd-sync uffd-async; do
        "$SNAPFAULT_TOOL" run --mode snapshot --backend "$backend" --no-point-in-time \
            --output "$work/ht-$backend" -- "$COMPAT_BIN/heaptrim" "$work/ht-$backend" >ht.out 2>ht.err
        rc=$?
        if [ "$rc" != 0 ]; then bad "heap-trim/$backend: exit $rc: $(cat ht.err)"; continue; fi
        [ -s ht.err ] && bad "heap-trim/$backend: printed: $(head -5 ht.err)"
        read -r _ addr len <ht.out
        idx=("$work/ht-$backend"/*.index)
        img=$(awk -F'\t' '$1 == "S" && $2 == 2 { print $3 }' "${idx[0]}")
        [ -n "$img" ] || { bad "heap-trim/$backend: no second image in ${idx[0]}"; continue; }
        "$SNAPFAULT_TOOL" image cat --raw "$work/ht-$backend/$img" "$addr" "$len" >ht.bin 2>ht.cat ||
            { bad "heap-trim/$backend: image cat $img $addr $len failed: $(cat ht.cat)"; continue; }
        got=$(tr -d B <ht.bin | wc -c); size=$(stat -c %s ht.bin)
        [ "$size" = "$len" ] && [ "$got" = 0 ] ||
            bad "heap-trim/$backend: image 2 holds $got bytes of $size that are not the program's 'B' at $addr"
        note "heap-trim/$backend: image 2 holds the grown heap ($len bytes at $addr)"
    done
    ;;
forks)
    MIN_IMAGES=1 run_cmp forks "$COMPAT_BIN/forks"
    ;;
attribute)
    # write attribution: the stacks that dirtied pages first, with symbols
    "$COMPAT_BIN/crash" none >plain.out 2>&1 || bad "crash none failed"
    "$SNAPFAULT_TOOL" run --attribute --output "$work/attr.sft" -- "$COMPAT_BIN/crash" none >pre.out 2>pre.err ||
        bad "attribution run failed: $(cat pre.err)"
    cmp -s plain.out pre.out || bad "attribution changed the output"
    [ ! -s pre.err ] || bad "attribution printed: $(cat pre.err)"
    "$SNAPFAULT_TOOL" report "$work/attr.sft" >report.txt || bad "report failed"
    grep -q '^backend:   \(uffd-sync\|mprotect\)' report.txt || bad "attribution did not pick a sync backend: $(grep backend: report.txt)"
    grep -q 'top writers' report.txt || bad "no top writers in the report"
    # unwound from the signal frame through libc's memset into the program
    sed -n '/top writers/,$p' report.txt | head -6 | grep -q 'main\|crash+' || bad "the program is not among the top writers' frames"
    sed -n '/top writers/,$p' report.txt | head -8
    # with the async backend chosen explicitly it says so and records nothing
    "$SNAPFAULT_TOOL" run --attribute --backend uffd-async --output "$work/attr2.sft" -- "$COMPAT_BIN/crash" none >/dev/null 2>pre.err
    grep -q 'needs a sync backend' pre.err || bad "no warning for attribution with uffd-async"
    grep -q '^W' "$work/attr2.sft" || bad "no W record for attribution with uffd-async"
    ;;
options)
    # bad values: a warning, the program still runs with the defaults
    out=$(SNAPFAULT_INTERVAL=fast SNAPFAULT_OUTPUT=$work/opt.%p LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' 2>err.txt); rc=$?
    [ "$rc" = 0 ] && [ "$out" = ran ] || bad "bad interval: program did not run normally (rc $rc, out '$out')"
    grep -q 'SNAPFAULT_INTERVAL="fast"' err.txt || bad "bad interval: no warning: $(cat err.txt)"
    [ "$(grep -c INTERVAL err.txt)" = 1 ] || bad "bad interval: warned more than once"
    out=$(SNAPFAULT_MODE=turbo SNAPFAULT_OUTPUT=$work/opt2.%p LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' 2>err.txt); rc=$?
    [ "$rc" = 0 ] && [ "$out" = ran ] || bad "unknown mode: program did not run (rc $rc)"
    grep -q 'SNAPFAULT_MODE="turbo"' err.txt || bad "unknown mode: no warning"
    # unwritable output: one warning, the program runs
    mkdir ro && chmod 500 ro
    out=$(SNAPFAULT_OUTPUT=/proc/no/such/dir/x LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' 2>err.txt); rc=$?
    [ "$rc" = 0 ] && [ "$out" = ran ] || bad "unwritable output: program did not run (rc $rc)"
    grep -q 'cannot create' err.txt || bad "unwritable output: no warning: $(cat err.txt)"
    # never clobber: an existing file is left alone, the record goes beside it
    echo precious >keep.sft
    out=$(SNAPFAULT_OUTPUT=$work/keep.sft LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' 2>err.txt)
    [ "$(cat keep.sft)" = precious ] || bad "an existing output file was overwritten"
    compgen -G "keep.sft.*" >/dev/null || bad "no record beside the existing file"
    ln -s keep.sft link.sft
    SNAPFAULT_OUTPUT=$work/link.sft LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'true' 2>err.txt
    [ "$(cat keep.sft)" = precious ] || bad "a symlinked output was followed"
    # quiet by default: nothing on stderr when all is well
    SNAPFAULT_OUTPUT=$work/q.%p LD_PRELOAD=$SNAPFAULT_PRELOAD_LIB sh -c 'echo ran' >/dev/null 2>err.txt
    [ ! -s err.txt ] || bad "the preload printed without being asked: $(cat err.txt)"
    # setuid semantics: AT_SECURE ignores SNAPFAULT_* (checked via the mode off path)
    # snapfault run refuses bad usage with exit 2 and one line
    for args in "--mode turbo -- true" "--interval x -- true" "--bogus -- true" "--output /no/such/dir/f -- true" ""; do
        # shellcheck disable=SC2086
        "$SNAPFAULT_TOOL" run $args >/dev/null 2>err.txt; rc=$?
        [ "$rc" = 2 ] || bad "snapfault run $args: exit $rc, expected 2"
        [ "$(wc -l <err.txt)" = 1 ] || bad "snapfault run $args: not a one-line reason: $(cat err.txt)"
    done
    # report reads a short header before anything else: a device that never
    # ends a line (/dev/zero) or a large non-record is refused at once, in
    # bounded memory (256 MiB of address space is far more than it needs)
    for f in /dev/zero "$work/noise"; do
        [ "$f" = /dev/zero ] || head -c 50000000 /dev/urandom >"$f"
        (ulimit -v 262144; "$SNAPFAULT_TOOL" report "$f") >/dev/null 2>err.txt; rc=$?
        [ "$rc" = 1 ] || bad "snapfault report $f: exit $rc, expected 1"
        grep -q 'not a snapfault track record' err.txt || bad "snapfault report $f: $(cat err.txt)"
    done
    rm -f "$work/noise"
    for cmd in "report" "image" "image verify" "report --top 0 x" "image frob" "probe extra" "nonsense"; do
        # shellcheck disable=SC2086
        "$SNAPFAULT_TOOL" $cmd >/dev/null 2>err.txt; rc=$?
        [ "$rc" = 2 ] || bad "snapfault $cmd: exit $rc, expected 2"
    done
    for cmd in "" "run" "report" "probe" "image"; do
        # shellcheck disable=SC2086
        "$SNAPFAULT_TOOL" $cmd --help >help.txt 2>&1 || bad "snapfault $cmd --help failed"
        grep -q usage help.txt || bad "snapfault $cmd --help prints no usage"
    done
    # a damaged image makes verify fail
    # a chain of three: two on SIGUSR2 (the program waits for each), the final one
    "$SNAPFAULT_TOOL" run --mode snapshot --output "$work/img" -- "$COMPAT_BIN/exitimg" "$work/img" 2 exit >/dev/null ||
        bad "snapshot run failed"
    img=$(ls "$work"/img/*.sfimg | head -1)
    [ -n "$img" ] || bad "no image written"
    if [ -n "$img" ]; then
        "$SNAPFAULT_TOOL" image verify "$work/img" >/dev/null || bad "fresh images do not verify"
        size=$(stat -c %s "$img")
        printf '\xff\xff\xff\xff' | dd of="$img" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
        "$SNAPFAULT_TOOL" image verify "$img" >/dev/null && bad "a corrupted image verified"
        # remove the full image at the root of the newest chain
        last=$(ls "$work"/img/*.sfimg | tail -1)
        root=${last%-*}-000001.sfimg
        if [ "$last" != "$root" ]; then
            rm -f "$root"
            "$SNAPFAULT_TOOL" image verify "$last" >verify.txt && bad "a chain with a missing parent verified"
            grep -q 'parent image missing' verify.txt || bad "missing parent not reported"
        else
            bad "expected a chain of at least two images"
        fi
    fi
    ;;
exit-image)
    X=$COMPAT_BIN/exitimg
    # snap NAME OPTS... -- CMD...: a snapshot-mode run into $work/NAME; its
    # status in $rc, its stdout in NAME.out
    snap() {
        local name=$1; shift
        local opts=()
        while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
        "$SNAPFAULT_TOOL" run --mode snapshot --backend "$backend" --output "$work/$name" "${opts[@]}" -- "$@" \
            >"$work/$name.out" 2>"$work/$name.err"
        rc=$?
    }
    # the_index NAME: the one index in $work/NAME
    the_index() { local f=("$work/$1"/*.index); [ ${#f[@]} = 1 ] && [ -f "${f[0]}" ] && echo "${f[0]}"; }
    # expect_end NAME STATUS HOW IMAGES: the end line of NAME's one index
    expect_end() {
        local idx; idx=$(the_index "$1") || { bad "$backend/$1: expected one index: $(ls "$work/$1")"; return 1; }
        grep -q "^#end	$2	images=$4	failed=0	how=$3	" "$idx" ||
            { bad "$backend/$1: expected '#end $2 images=$4 how=$3', got: $(tail -1 "$idx")"; return 1; }
        [ "$(tail -1 "$idx" | cut -c1-4)" = "#end" ] || bad "$backend/$1: the end line is not last"
    }
    # expect_final NAME PATTERN [INDEX]: the final image holds PATTERN at the buffer
    expect_final() {
        local idx=${3:-$(the_index "$1")} addr img got
        addr=$(sed -n 's/^buf //p' "$work/$1.out")
        img=$(final_file "$idx")
        [ -n "$addr" ] && [ -n "$img" ] || { bad "$backend/$1: no buffer address or final image"; return; }
        got=$("$SNAPFAULT_TOOL" image cat --raw "$work/$1/$img" "$addr" 13 2>&1)
        [ "$got" = "$2" ] || bad "$backend/$1: final image $img holds '$got' at $addr, expected '$2'"
    }
    backends="auto mprotect uffd-async"
    for backend in $backends; do
        note "backend $backend"
        # a program far shorter than any period still leaves its image
        snap true --snapshot-every 10min -- true
        [ "$rc" = 0 ] || bad "$backend/true: exit $rc"
        expect_end true clean exit 1
        "$SNAPFAULT_TOOL" image verify "$(the_index true)" >verify.txt || bad "$backend/true: verify failed: $(cat verify.txt)"
        grep -q 'chain complete: 1 images, ended by exit, final image 1' verify.txt ||
            bad "$backend/true: verify does not say the chain is complete: $(cat verify.txt)"
        # the final image holds what the program wrote just before exit
        snap exit -- "$X" "$work/exit" 0 exit
        [ "$rc" = 0 ] || bad "$backend/exit: exit $rc"
        expect_end exit clean exit 1 && expect_final exit FINAL-PATTERN
        # three on SIGUSR2 (each waited for by the program), then the final one
        snap usr2 -- "$X" "$work/usr2" 3 exit
        expect_end usr2 clean exit 4 && expect_final usr2 FINAL-PATTERN
        "$SNAPFAULT_TOOL" image verify "$(the_index usr2)" >verify.txt || bad "$backend/usr2: verify failed: $(cat verify.txt)"
        [ "$(grep -c ': ok (' verify.txt)" = 4 ] || bad "$backend/usr2: verify of the index: $(cat verify.txt)"
        grep -q 'ok (incremental, chain of 4)' verify.txt || bad "$backend/usr2: no chain of 4: $(cat verify.txt)"
        grep -q 'final image 4' verify.txt || bad "$backend/usr2: final image is not the 4th: $(cat verify.txt)"
        idx=$(the_index usr2)
        for i in 1 2 3; do
            img=$(awk -F'\t' -v s=$i '$1 == "S" && $2 == s { print $3 }' "$idx")
            addr=$(sed -n 's/^buf //p' "$work/usr2.out")
            got=$("$SNAPFAULT_TOOL" image cat --raw "$work/usr2/$img" "$addr" 7 2>&1)
            # with faults delivered as signals a mapping is adopted at its
            # second scan: the first image may not hold it yet
            [ "$backend" = mprotect ] && [ $i = 1 ] && [ "${got#*range not tracked}" != "$got" ] && continue
            [ "$got" = "ROUND-$i" ] || bad "$backend/usr2: image $i holds '$got', expected ROUND-$i"
        done
        # SIGTERM the program does not handle: final image, then death by SIGTERM
        snap term -- "$X" "$work/term" 1 term
        [ "$rc" = 143 ] || bad "$backend/term: exit $rc, expected 143 (SIGTERM)"
        expect_end term clean SIGTERM 2 && expect_final term FINAL-PATTERN
        # killed from outside while it waits (ready: an event, not a delay)
        rm -f "$work/pause.out"
        start_ready pause pause
        kill -TERM "$pid"
        wait "$pid"; rc=$?
        [ "$rc" = 143 ] || bad "$backend/pause: exit $rc after kill -TERM, expected 143"
        expect_end pause clean SIGTERM 1 && expect_final pause FINAL-PATTERN
        # killed while mapping and unmapping (the signal lands inside the
        # runtime, or not: the same verdict either way, and no hang)
        for i in 1 2 3 4 5; do
            rm -rf "$work/mloop" "$work/mloop.out"
            start_ready mloop mmaploop
            kill -TERM "$pid"
            wait "$pid"; rc=$?
            [ "$rc" = 143 ] || bad "$backend/mmaploop: exit $rc after kill -TERM, expected 143"
            expect_end mloop clean SIGTERM 1 || break
        done
        # SIGINT left ignored by the parent stays ignored: no image, no death
        (trap '' INT; snap int -- "$X" "$work/int" 0 int; exit $rc); rc=$?
        [ "$rc" = 0 ] && grep -q 'after SIGINT' "$work/int.out" || bad "$backend/int: an ignored SIGINT was not ignored (exit $rc)"
        expect_end int clean exit 1
        # the program's own SIGTERM handler takes precedence
        snap handler -- "$X" "$work/handler" 0 handler
        [ "$rc" = 0 ] && grep -q 'handled 1' "$work/handler.out" || bad "$backend/handler: the program's handler did not run (exit $rc)"
        expect_end handler clean exit 1 && expect_final handler FINAL-PATTERN
        # a forked child writes its own final image
        snap child -- "$X" "$work/child" 0 child
        [ "$rc" = 0 ] && grep -q 'child status 0' "$work/child.out" || bad "$backend/child: exit $rc"
        cpid=$(sed -n 's/^child \([0-9][0-9]*\)$/\1/p' "$work/child.out")
        for f in "$work"/child/*.index; do
            grep -q "^#end	clean	images=1	failed=0	how=exit	final=1" "$f" || bad "$backend/child: $f: $(tail -1 "$f")"
        done
        [ "$(ls "$work"/child/*.index | wc -l)" = 2 ] || bad "$backend/child: expected two indexes: $(ls "$work/child")"
        if [ -n "$cpid" ] && [ -f "$work/child/snap-$cpid.index" ]; then
            expect_final child CHILD-PATTERN "$work/child/snap-$cpid.index"
            ppid_idx=$(ls "$work"/child/*.index | grep -v "snap-$cpid.index")
            expect_final child FINAL-PATTERN "$ppid_idx"
        else
            bad "$backend/child: no index for the child ($cpid)"
        fi
        # _exit and SIGKILL cannot be caught: no final image
        snap uexit -- "$X" "$work/uexit" 1 _exit
        [ "$rc" = 0 ] || bad "$backend/_exit: exit $rc"
        expect_end uexit incomplete _exit 1
        "$SNAPFAULT_TOOL" image verify "$work/uexit" >verify.txt || bad "$backend/_exit: verify failed"
        grep -q 'without a final image' verify.txt || bad "$backend/_exit: verify: $(cat verify.txt)"
        snap kill -- "$X" "$work/kill" 1 kill
        [ "$rc" = 137 ] || bad "$backend/kill: exit $rc, expected 137"
        idx=$(the_index kill)
        grep -q '^#end' "$idx" && bad "$backend/kill: an end mark after SIGKILL"
        "$SNAPFAULT_TOOL" image verify "$idx" >verify.txt || bad "$backend/kill: verify of the images failed"
        grep -q 'NO END MARK' verify.txt || bad "$backend/kill: verify does not say the chain has no end: $(cat verify.txt)"
        # off: no final image (the option and its environment variable)
        snap off --no-exit-image -- "$X" "$work/off" 0 exit
        [ "$rc" = 0 ] || bad "$backend/off: exit $rc"
        expect_end off clean exit 0
        compgen -G "$work/off/*.sfimg" >/dev/null && bad "$backend/off: an image with --no-exit-image"
        SNAPFAULT_EXIT_IMAGE=0 snap offterm -- "$X" "$work/offterm" 0 term
        [ "$rc" = 143 ] || bad "$backend/offterm: exit $rc, expected 143"
        compgen -G "$work/offterm/*.sfimg" >/dev/null && bad "$backend/offterm: an image with SNAPFAULT_EXIT_IMAGE=0"
        grep -q '^#end' "$(the_index offterm)" && bad "$backend/offterm: killed by SIGTERM, yet an end mark"
        rm -rf "${work:?}"/{true,exit,usr2,term,pause,mloop,int,handler,child,uexit,kill,off,offterm}
    done
    # verify says what a file is that is not an image
    : >empty.sfimg
    "$SNAPFAULT_TOOL" image verify empty.sfimg >verify.txt && bad "verify of an empty file succeeded"
    grep -q 'not a snapfault image (an empty file)' verify.txt || bad "verify of an empty file: $(cat verify.txt)"
    "$SNAPFAULT_TOOL" run --output "$work/rec.sft" -- true
    "$SNAPFAULT_TOOL" image verify "$work/rec.sft" >verify.txt && bad "verify of a track record succeeded"
    grep -q 'not a snapfault image (a track record)' verify.txt || bad "verify of a track record: $(cat verify.txt)"
    "$SNAPFAULT_TOOL" image info "$work/rec.sft" >verify.txt && bad "info of a track record succeeded"
    grep -q 'not a snapfault image (a track record)' verify.txt || bad "info of a track record: $(cat verify.txt)"
    echo hello >text.txt
    "$SNAPFAULT_TOOL" image verify text.txt >verify.txt && bad "verify of a text file succeeded"
    grep -q 'not a snapfault image (unknown content)' verify.txt || bad "verify of a text file: $(cat verify.txt)"
    grep -q DAMAGED verify.txt && bad "a text file called damaged"
    # ... and a directory without images
    mkdir emptydir
    "$SNAPFAULT_TOOL" image verify emptydir >verify.txt 2>&1 && bad "verify of an empty directory succeeded"
    grep -q 'no snapfault images' verify.txt || bad "verify of an empty directory: $(cat verify.txt)"
    # a damaged image listed by an index is found through the index
    backend=auto
    snap dmg -- "$X" "$work/dmg" 1 exit
    idx=$(the_index dmg)
    img=$(final_file "$idx")
    size=$(stat -c %s "$work/dmg/$img")
    printf '\xff\xff\xff\xff' | dd of="$work/dmg/$img" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
    "$SNAPFAULT_TOOL" image verify "$idx" >verify.txt && bad "verify of an index naming a damaged image succeeded"
    grep -q "$img: DAMAGED" verify.txt || bad "damaged image not named: $(cat verify.txt)"
    rm -f "$work/dmg/$img"
    "$SNAPFAULT_TOOL" image verify "$idx" >verify.txt && bad "verify of an index naming a missing image succeeded"
    grep -q "$img: MISSING" verify.txt || bad "missing image not named: $(cat verify.txt)"
    ;;
*)
    echo "unknown case $case_name"; exit 2 ;;
esac

if [ $fail = 0 ]; then echo "PASS: $case_name"; else echo "FAILED: $case_name"; fi
exit $fail
