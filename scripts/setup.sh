#!/usr/bin/env bash
# Installs what building and testing snapfault needs on Debian 12 (as root,
# or with sudo).  Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc libc6-dev libxxhash-dev libzstd-dev libunwind-dev
      clang libclang-rt-14-dev python3 stress-ng libsigsegv-dev
      libopenmpi-dev openmpi-bin   # libsnapfault-mpi, mpiheat, the mpi suite
      ${SNAPFAULT_EXTRA_PKGS:-})
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The programs the compat suite runs under the preload (python3, a JDK,
# gawk, sqlite3): a package that cannot be installed makes its case skip.
"$(dirname "$0")/../tests/compat/setup.sh"
