#!/usr/bin/env bash
# The shipped libraries are linked with -z now: no PLT entry is resolved
# lazily (by the dynamic linker, which takes locks) inside a signal handler.
set -u
rc=0
for lib in "$@"; do
  if readelf -d "$lib" | grep -Eq '\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*NOW'; then
    echo "ok: $lib is bound at load (BIND_NOW)"
  else
    echo "FAIL: $lib has lazy PLT binding (link it with -Wl,-z,now)"; rc=1
  fi
done
exit $rc
