#!/usr/bin/env bash
# overhead.sh [RUNS] - wall and CPU time of real programs without the preload,
# in track mode at 10 Hz and in snapshot mode at 1/s, interleaved (median).
set -uo pipefail
runs=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
tool=${SNAPFAULT_TOOL:-$here/../../build-preload/tools/snapfault}
work=$(mktemp -d /tmp/snapfault-overhead.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
py=/usr/bin/python3; [ -x "$py" ] || py=$(command -v python3)

# inputs, made once
head -c 20000000 /dev/urandom >data.bin
awk 'BEGIN { srand(42); for (i = 0; i < 1500000; i++) printf "%08d %s line %d\n", int(rand() * 1e8), substr("abcdefghijklmnop", i % 16 + 1), i }' >big.txt
sed -n "/cat >work.py <<'PY'/,/^PY$/p" "$here/compat.sh" | sed '1d;$d' >work.py
sed -n "/cat >script.sql <<'SQL'/,/^SQL$/p" "$here/compat.sh" | sed '1d;$d' >script.sql
sed -n "/cat >Work.java <<'JAVA'/,/^JAVA$/p" "$here/compat.sh" | sed '1d;$d' >Work.java
javac -d . Work.java 2>/dev/null || echo "javac failed: java is skipped"

declare -A cmds=(
  [python3]="$py work.py data.bin"
  [sqlite3]="sh -c 'rm -f db.sqlite; exec sqlite3 db.sqlite < script.sql'"
  [sort]="sort -S 64M big.txt -o sorted.txt"
  [gzip]="sh -c 'gzip -c big.txt | gunzip -c | md5sum'"
  [java]="java -Xmx256m -cp . Work"
)
modes=(plain track snapshot)

# MODE CMD -> "wall cpu" seconds (cpu: user+sys of the whole process tree)
one() {
    local mode=$1 cmd=$2 pre=""
    rm -rf out.*
    case $mode in
    track) pre="$tool run --mode track --interval 100ms --output out.%p --" ;;
    snapshot) pre="$tool run --mode snapshot --snapshot-every 1s --snapshot-signal 0 --output out.%p --" ;;
    esac
    /usr/bin/time -f "%e %U %S" -o time.txt sh -c "$pre $cmd" >/dev/null 2>&1
    awk '{ printf "%s %.2f\n", $1, $2 + $3 }' time.txt
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf "%-8s | %20s | %27s | %27s\n" "" "plain" "track 10 Hz" "snapshot 1/s"
printf "%-8s | %9s %10s | %9s %10s %6s | %9s %10s %6s\n" program wall_s cpu_s wall_s cpu_s wall% wall_s cpu_s wall%
for p in python3 sqlite3 sort gzip java; do
    [ "$p" = java ] && [ ! -f Work.class ] && continue
    declare -A w=() c=()
    for m in "${modes[@]}"; do w[$m]=""; c[$m]=""; done
    for ((r = 0; r < runs; r++)); do
        for m in "${modes[@]}"; do
            read -r wall cpu < <(one "$m" "${cmds[$p]}")
            w[$m]+=" $wall"; c[$m]+=" $cpu"
        done
    done
    pw=$(median ${w[plain]}); tw=$(median ${w[track]}); sw=$(median ${w[snapshot]})
    printf "%-8s | %9.2f %10.2f | %9.2f %10.2f %5.0f%% | %9.2f %10.2f %5.0f%%\n" "$p" "$pw" "$(median ${c[plain]})" \
        "$tw" "$(median ${c[track]})" "$(echo "($tw / $pw - 1) * 100" | bc -l)" \
        "$sw" "$(median ${c[snapshot]})" "$(echo "($sw / $pw - 1) * 100" | bc -l)"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
