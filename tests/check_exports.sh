#!/usr/bin/env bash
# The export map of the shipped library: every function the public header
# declares SF_API is exported, in the version node of the map, and nothing
# else is: no symbol outside sf_*, no internal sf__*, no sf_* the header
# does not declare.  Usage: check_exports.sh LIB HEADER MAPFILE
set -u
lib=${1:?library} header=${2:?header} map=${3:?version script}
rc=0
node=$(sed -nE 's/^[[:space:]]*([A-Za-z0-9_.]+)[[:space:]]*\{.*/\1/p' "$map" | head -n 1)
[ -n "$node" ] || { echo "FAIL: no version node in $map"; exit 1; }

# SF_API declarations start their line: "SF_API <type> name(...".
declared=$(grep -E '^[[:space:]]*SF_API[[:space:]]' "$header" | sed -E 's/\(.*//' |
           grep -oE '[A-Za-z_][A-Za-z0-9_]*$' | sort -u)
[ -n "$declared" ] || { echo "FAIL: no SF_API declaration found in $header"; exit 1; }
# Defined dynamic symbols as "name@@node" (or "name" when unversioned).
exported=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u) ||
    { echo "FAIL: nm -D $lib"; exit 1; }

for f in $declared; do
  if grep -qxF "$f@@$node" <<<"$exported"; then
    :
  elif grep -qE "^$f(@|$)" <<<"$exported"; then
    echo "FAIL: $f is exported outside version node $node: $(grep -E "^$f(@|$)" <<<"$exported")"; rc=1
  else
    echo "FAIL: $f is declared SF_API in $(basename "$header") but not exported"; rc=1
  fi
done
for s in $exported; do
  name=${s%%@*}
  [ "$name" = "$node" ] && continue # the version node's own symbol
  case $name in
    sf__*) echo "FAIL: internal symbol $name is exported"; rc=1 ;;
    sf_*) grep -qxF "$name" <<<"$declared" ||
            { echo "FAIL: $name is exported but not declared SF_API in $(basename "$header")"; rc=1; } ;;
    *) echo "FAIL: $name is exported (only sf_* may be)"; rc=1 ;;
  esac
done
n=$(wc -w <<<"$declared")
[ $rc = 0 ] && echo "ok: $(basename "$lib") exports exactly the $n SF_API functions of $(basename "$header"), all in $node"
exit $rc
