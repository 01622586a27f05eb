#!/usr/bin/env bash
# Installs the real programs the compat suite runs (Debian 12 packages); the
# main scripts/setup.sh calls this.  Idempotent; a package that cannot be
# installed only makes its case skip (exit 77).
set -uo pipefail
pkgs=(python3 default-jdk-headless gawk sqlite3 gzip coreutils libunwind-dev redis-server redis-tools)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# an installed JDK of another name serves as well
if command -v javac >/dev/null 2>&1; then
  missing=("${missing[@]/default-jdk-headless}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "compat setup: installing ${missing[*]}"
$SUDO apt-get update -qq || { echo "compat setup: apt-get update failed; affected cases will skip"; exit 0; }
for p in "${missing[@]}"; do
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
    echo "compat setup: could not install $p; its case will skip"
done
exit 0
