#!/usr/bin/env bash
# One source of the version: the SONAME, the pkg-config file and the
# generated version macros all follow meson.build's project version.
# Usage: check_version.sh VERSION LIB PCFILE VERSION_HEADER
set -u
version=${1:?project version} lib=${2:?library} pc=${3:?pkg-config file} hdr=${4:?version header}
rc=0
IFS=. read -r major minor patch <<<"$version"
soname=$(readelf -d "$lib" | sed -nE 's/.*\(SONAME\).*\[(.*)\].*/\1/p')
[ "$soname" = "libsnapfault.so.$major" ] || { echo "FAIL: SONAME '$soname', want libsnapfault.so.$major"; rc=1; }
pcver=$(sed -nE 's/^Version:[[:space:]]*//p' "$pc")
[ "$pcver" = "$version" ] || { echo "FAIL: $(basename "$pc") says Version '$pcver', want $version"; rc=1; }
macro() { sed -nE "s/^#define $1[[:space:]]+//p" "$hdr"; }
[ "$(macro SF_VERSION_MAJOR)" = "$major" ] || { echo "FAIL: SF_VERSION_MAJOR '$(macro SF_VERSION_MAJOR)', want $major"; rc=1; }
[ "$(macro SF_VERSION_MINOR)" = "$minor" ] || { echo "FAIL: SF_VERSION_MINOR '$(macro SF_VERSION_MINOR)', want $minor"; rc=1; }
[ "$(macro SF_VERSION_PATCH)" = "$patch" ] || { echo "FAIL: SF_VERSION_PATCH '$(macro SF_VERSION_PATCH)', want $patch"; rc=1; }
[ "$(macro SF_VERSION_STRING)" = "\"$version\"" ] || { echo "FAIL: SF_VERSION_STRING $(macro SF_VERSION_STRING), want \"$version\""; rc=1; }
[ $rc = 0 ] && echo "ok: version $version in the SONAME ($soname), $(basename "$pc") and $(basename "$hdr")"
exit $rc
