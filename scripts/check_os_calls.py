#!/usr/bin/env python3
"""check_os_calls.py - fails the build when an object calls what it must not.

Reads the undefined symbols of every object in the given archives (nm -u)
and judges each one:
  --allowed FILE   the core's rule: a symbol is fine if it is the core's
                   own (sf_*, which includes the OS contract sf__os_*) or
                   matches a line of FILE (names or globs: pure libc
                   functions, compiler and library runtimes); anything else
                   is an OS call outside the contract (src/embed/os.h).
  --forbid-map MAP the preload's rule: no object may reference a name that
                   the version script MAP exports (an interposer): such a
                   call would reach the preload's own interposer.
  --only SYM=FILE  SYM may be referenced only from FILE's object.
  --except SYM=FILE FILE's object may reference SYM whatever the rules say.
Writes --stamp when everything passes; prints every violation otherwise.
"""
import argparse
import fnmatch
import os
import re
import subprocess
import sys


def members(nm, archive):
    """(source file name, undefined symbol) for every object in archive."""
    out = subprocess.run([nm, '-A', '-u', '-P', archive], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    for line in out.splitlines():
        m = re.match(r'^(.*?)\[(.*?)\]: (\S+) [Uw]', line) or re.match(r'^(.*?): (\S+) [Uw]', line)
        if not m:
            continue
        obj, sym = (m.group(2), m.group(3)) if m.lastindex == 3 else (m.group(1), m.group(2))
        src = os.path.basename(obj)
        if src.endswith('.o'):
            src = src[:-2]
        yield src, sym


def read_list(path):
    names = []
    with open(path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                names.append(line)
    return names


def map_globals(path):
    text = open(path).read()
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    m = re.search(r'global:(.*?)local:', text, flags=re.S)
    return set(re.findall(r'[A-Za-z_]\w*', m.group(1) if m else ''))


def pairs(values):
    out = {}
    for v in values or []:
        sym, _, f = v.partition('=')
        out.setdefault(sym, set()).add(f)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--nm', default='nm')
    ap.add_argument('--allowed')
    ap.add_argument('--forbid-map')
    ap.add_argument('--only', action='append')
    ap.add_argument('--except', dest='exc', action='append')
    ap.add_argument('--stamp', required=True)
    ap.add_argument('archives', nargs='+')
    a = ap.parse_args()
    allowed = read_list(a.allowed) if a.allowed else None
    forbidden = map_globals(a.forbid_map) if a.forbid_map else set()
    only, exc = pairs(a.only), pairs(a.exc)
    bad = []
    for archive in a.archives:
        seen = 0
        for src, sym in members(a.nm, archive):
            seen += 1
            if src in exc.get(sym, ()):
                continue
            if sym in only and src not in only[sym]:
                bad.append('%s: calls %s, which only %s may call' % (src, sym, ', '.join(sorted(only[sym]))))
            elif sym in forbidden:
                bad.append('%s: calls %s, which is one of the preload\'s interposers: '
                           'call the preload\'s OS contract (sf__os_*, os_preload.c) or sfp_real' % (src, sym))
            elif allowed is not None and not sym.startswith('sf_') and \
                    not any(fnmatch.fnmatchcase(sym, g) for g in allowed):
                bad.append('%s: calls %s outside the OS contract: use its sf__os_* function '
                           '(src/embed/os.h), or add one there and to every implementation' % (src, sym))
        if not seen:  # an nm whose output this script cannot read would pass everything
            bad.append('%s: no undefined symbol read (nm output not understood?)' % archive)
    if bad:
        for b in sorted(set(bad)):
            print('error: ' + b, file=sys.stderr)
        sys.exit(1)
    with open(a.stamp, 'w') as f:
        f.write('ok\n')


if __name__ == '__main__':
    main()
