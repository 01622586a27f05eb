#!/usr/bin/env python3
# bench/run.py - driver of the benchmark suite: builds sfbench, runs each
# scenario's baseline and snapfault jobs interleaved, writes Markdown tables and SVG plots.
"""Usage: bench/run.py [--quick | --full] [--out DIR] [--only fault,collect,...]

Builds sfbench in build-bench/ (meson; falls back to sfbench-raw, the
baseline-only binary, if libsnapfault does not build, and to a direct gcc
build if meson cannot configure), runs the benchmark scenarios with the
baseline and snapfault jobs of each row next to each other in time, and
writes bench/results/<date>-<host>[-quick].md plus one SVG per scenario and
the raw RESULT lines into the output folder (default bench/results/latest/).
Python 3 standard library only.
"""

import argparse
import datetime
import html
import math
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ---------------------------------------------------------------------------
# What each mode runs.  Sizes follow the goals; quick mode shrinks what costs
# minutes on a 2-core VM (named in the report header, never silently).
# ---------------------------------------------------------------------------

RAW_FAULT = ["plain-write", "memcpy", "raw-async-wp", "raw-sigbus", "raw-sigbus-copy",
             "raw-mprotect", "raw-mprotect-copy", "raw-fork-cow", "raw-uffd-thread",
             "raw-uffd-spin"]
SF_FAULT = ["sf-uffd-async", "sf-uffd-sync-inthread", "sf-uffd-sync-handler", "sf-mprotect",
            "sf-soft-dirty", "sf-snap-auto", "sf-snap-uffd-sync-inthread",
            "sf-snap-uffd-sync-handler", "sf-snap-mprotect"]

# Snapshot engines (bench/sf_mech.c engine_options): where the fault
# delivery of uffd-sync matters (writes inside the measured loop), both.
ENG_TAKE = ["mirror", "cow-uffd", "cow-mprotect", "auto"]
ENG_FAULTS = ["mirror", "cow-uffd-handler", "cow-uffd-inthread", "cow-mprotect", "auto"]
# the parts of the engines family, each selectable alone with --only
ENGINE_PARTS = ["take-1pct", "take-all", "first-take", "engine-rollback", "bg-save", "engine-memory"]

MODES = {
    "quick": dict(
        fault=dict(mib=256, pages=512, reps=3, rounds=1,
                   raw=["plain-write", "memcpy", "raw-async-wp", "raw-sigbus", "raw-mprotect",
                        "raw-fork-cow", "raw-uffd-thread"],
                   sf=["sf-uffd-async", "sf-uffd-sync-inthread", "sf-uffd-sync-handler",
                       "sf-mprotect", "sf-soft-dirty", "sf-snap-auto"]),
        collect=dict(mib=256, reps=1, rounds=1,
                     raw=["raw-async-wp", "raw-mprotect", "raw-mprotect-full"],
                     sf=["sf-auto", "sf-mprotect"]),
        pause=dict(points=[(256, 100), (256, 1), (1024, 1)], reps=2, rounds=1),
        bgsave=dict(mib=256, threads=[1], reps=1, base_ms=300, rounds=1),
        rollback=dict(mib=256, iters=30, reps=2, rounds=1),
        stall=dict(mib=1024, writers=[1, 8], secs=0.2, rounds=1,
                   raw=["raw-async-wp", "raw-mprotect", "raw-rwlock"],
                   sf=["sf-auto", "sf-mprotect"]),
        memory=dict(mib=1024, copies=1024,
                    mechs=["fork", "sf-auto", "sf-mprotect", "sf-snap-auto"]),
        engines=dict(rounds=1,
                     take=dict(points=[(256, 0)], takes=10, engines=ENG_TAKE),
                     take_all=dict(mib=256, takes=3, engines=ENG_TAKE),
                     first=dict(mib=256, engines=ENG_TAKE),
                     rollback=dict(mib=256, iters=30, reps=2, engines=ENG_FAULTS),
                     bgsave=dict(mib=256, reps=1, engines=ENG_FAULTS),
                     memory=dict(mib=256, engines=ENG_TAKE)),
    ),
    # Sized for ~10 minutes on a loaded 2-core VM whose faults cost 20-100 us
    # (see README "Reading the numbers"); each fault-heavy step is bounded.
    "full": dict(
        fault=dict(mib=256, pages=2048, reps=5, rounds=2, raw=RAW_FAULT, sf=SF_FAULT),
        collect=dict(mib=1024, reps=2, rounds=1,
                     raw=["raw-async-wp", "raw-mprotect", "raw-mprotect-full"],
                     sf=["sf-auto", "sf-mprotect"]),
        pause=dict(points=[(256, 100), (256, 1), (1024, 100), (1024, 1), (4096, 100), (4096, 1)],
                   reps=2, rounds=1),
        bgsave=dict(mib=1024, threads=[1, 2], reps=2, base_ms=1000, rounds=1),
        rollback=dict(mib=256, iters=100, reps=3, rounds=1),
        stall=dict(mib=1024, writers=[1, 2, 4, 8], secs=0.5, rounds=1,
                   raw=["raw-async-wp", "raw-sigbus", "raw-mprotect", "raw-rwlock"],
                   sf=["sf-auto", "sf-uffd-sync-inthread", "sf-uffd-sync-handler", "sf-mprotect"]),
        memory=dict(mib=1024, copies=4096,
                    mechs=["fork", "sf-auto", "sf-uffd-async", "sf-uffd-sync", "sf-mprotect",
                           "sf-snap-auto", "sf-snap-mprotect"]),
        # the snapshot engines at the sizes of their goals; ~10 minutes once
        # the engines are fast (today's full-copy uffd-async engine is slower)
        engines=dict(rounds=1,
                     take=dict(points=[(1024, 0), (1024, 3), (4096, 0)], takes=10, engines=ENG_TAKE),
                     take_all=dict(mib=1024, takes=4, engines=ENG_TAKE),
                     first=dict(mib=1024, engines=ENG_TAKE),
                     rollback=dict(mib=256, iters=100, reps=3, engines=ENG_FAULTS),
                     bgsave=dict(mib=1024, reps=2, engines=ENG_FAULTS),
                     memory=dict(mib=1024, engines=ENG_TAKE)),
    ),
}

SCENARIOS = ["fault", "collect", "pause", "bgsave", "rollback", "stall", "memory", "engines"]

# Figures of /work/shared/FIELD-NOTES.md ("measured here", 256 MiB, one thread),
# quoted next to this run's raw figures so a slower or faster VM shows at once.
FIELD_NOTES_NS = {
    "plain-write": 18, "memcpy": 420, "raw-async-wp": 850, "raw-sigbus-copy": 5100,
    "raw-mprotect-copy": 6000, "raw-uffd-thread": 48000, "raw-fork-cow": 2400,
}


def interleave(a, b):
    """Baseline and snapfault jobs alternate, so slow drift of a noisy VM
    hits both sides of a ratio alike."""
    out = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(a[i])
        if i < len(b):
            out.append(b[i])
    return out


def jobs_for(scn, p):
    """List of (argv-after-binary, timeout_s) for one scenario."""
    J = []
    if scn == "fault":
        for pat in ("seq", "rand"):
            for m in interleave(p["raw"], p["sf"]):
                J.append((["fault", "--mech", m, "--pattern", pat, "--mib", p["mib"],
                           "--pages", p["pages"], "--reps", p["reps"]], 240))
    elif scn == "collect":
        for m in interleave(p["raw"], p["sf"]):
            J.append((["collect", "--mech", m, "--mib", p["mib"], "--reps", p["reps"]], 600))
    elif scn == "pause":
        for mib, pct in p["points"]:
            for m in ("fork", "sf-snap-auto"):
                J.append((["pause", "--mech", m, "--mib", mib, "--pct", pct, "--reps", p["reps"]], 600))
    elif scn == "bgsave":
        for t in p["threads"]:
            for m in ("fork", "sf-snap-auto"):
                J.append((["bgsave", "--mech", m, "--mib", p["mib"], "--threads", t,
                           "--reps", p["reps"], "--base-ms", p["base_ms"]], 600))
    elif scn == "rollback":
        for m in ("fork", "sf-snap-auto"):
            J.append((["rollback", "--mech", m, "--mib", p["mib"], "--iters", p["iters"],
                       "--reps", p["reps"]], 300))
    elif scn == "stall":
        for m in interleave(p["raw"], p["sf"]):
            J.append((["stall", "--mech", m, "--mib", p["mib"], "--writers", 0, "--collect", 1,
                       "--secs", p["secs"]], 120))
            for w in p["writers"]:
                for c in (0, 1):
                    J.append((["stall", "--mech", m, "--mib", p["mib"], "--writers", w,
                               "--collect", c, "--secs", p["secs"]], 120))
    elif scn == "memory":
        for m in p["mechs"]:
            J.append((["memory", "--mech", m, "--mib", p["mib"], "--copies", p["copies"]], 300))
    elif scn == "engines":
        parts = p.get("parts", ENGINE_PARTS)
        if "take-1pct" in parts:
            q = p["take"]
            for mib, live in q["points"]:
                base = [["take", "--mech", "fork", "--mib", mib, "--pct", 1, "--takes", q["takes"]]] \
                    if live == 0 else []
                eng = [["take", "--mech", e, "--mib", mib, "--pct", 1, "--takes", q["takes"], "--live", live]
                       for e in q["engines"]]
                J += [(a, 600) for a in interleave(base, eng)]
        if "take-all" in parts:
            q = p["take_all"]
            base = [["take", "--mech", b, "--mib", q["mib"], "--pct", 100, "--takes", q["takes"]]
                    for b in ("fork", "raw-wp", "raw-mprotect")]
            eng = [["take", "--mech", e, "--mib", q["mib"], "--pct", 100, "--takes", q["takes"]]
                   for e in q["engines"]]
            J += [(a, 600) for a in interleave(base, eng)]
        if "first-take" in parts:
            q = p["first"]
            J += [(["first-take", "--mech", e, "--mib", q["mib"]], 300) for e in ["fork"] + q["engines"]]
        if "engine-rollback" in parts:
            q = p["rollback"]
            J += [(["rollback", "--mech", e, "--mib", q["mib"], "--iters", q["iters"], "--reps", q["reps"],
                    "--label", "engine-rollback"], 300) for e in interleave(["fork"], q["engines"])]
        if "bg-save" in parts:
            q = p["bgsave"]
            J += [(["bg-save", "--mech", e, "--mib", q["mib"], "--reps", q["reps"]], 300)
                  for e in interleave(["fork"], q["engines"])]
        if "engine-memory" in parts:
            q = p["memory"]
            J += [(["engine-memory", "--mech", e, "--mib", q["mib"]], 300) for e in ["fork"] + q["engines"]]
    return [([str(x) for x in a], t) for a, t in J]


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

def log(msg):
    print(msg, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


def build(bdir):
    """Returns (path of the binary, what was built)."""
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        cmd = ["meson", "setup", bdir, "-Dtests=false"]
        if os.path.isdir(bdir):
            cmd.insert(2, "--wipe")
        r = sh(cmd)
        if r.returncode != 0:
            log("meson setup failed (tail below); compiling the baselines with gcc directly")
            log("\n".join(r.stdout.splitlines()[-15:]))
            return gcc_fallback(bdir)
    r = sh(["ninja", "-C", bdir, "bench/sfbench"])
    if r.returncode == 0:
        return os.path.join(bdir, "bench", "sfbench"), "sfbench (raw + snapfault)"
    log("building sfbench (with libsnapfault) failed; baselines only. Tail:")
    log("\n".join(r.stdout.splitlines()[-15:]))
    r = sh(["ninja", "-C", bdir, "bench/sfbench-raw"])
    if r.returncode == 0:
        return os.path.join(bdir, "bench", "sfbench-raw"), "sfbench-raw (baselines only)"
    return gcc_fallback(bdir)


def gcc_fallback(bdir):
    out = os.path.join(bdir, "raw-fallback")
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(out, "sfbench-raw")
    srcs = [os.path.join(HERE, f) for f in
            ("sfbench.c", "util.c", "raw_mech.c", "scenarios.c", "engines.c", "sf_absent.c")]
    r = sh(["gcc", "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-o", exe]
           + srcs + ["-lpthread"])
    if r.returncode != 0:
        sys.exit("gcc fallback build failed:\n" + r.stdout)
    return exe, "sfbench-raw via gcc (meson unavailable; baselines only)"


# ---------------------------------------------------------------------------
# Running and parsing
# ---------------------------------------------------------------------------

IDENT = ["scenario", "mech", "pattern", "mib", "pages", "pct", "threads", "writers", "collect",
         "dirty", "copies", "live"]


def parse_result(line):
    d = {}
    for tok in shlex.split(line[len("RESULT "):]):
        k, _, v = tok.partition("=")
        d[k] = v
    return d


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def run_job(exe, argv, timeout, logf):
    t0 = time.monotonic()
    try:
        r = subprocess.run([exe] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = "timeout after %ds" % timeout, "timeout"
    dt = time.monotonic() - t0
    logf.write("$ %s %s\n# rc=%s %.1fs\n%s%s\n" % (os.path.basename(exe), " ".join(argv), rc, dt,
                                                   out, err))
    rows = [parse_result(l) for l in out.splitlines() if l.startswith("RESULT ")]
    if not rows:
        # a crash or timeout still yields a row, so the table says so
        d = {"scenario": argv[0], "status": "error" if rc != "timeout" else "timeout",
             "reason": (err.strip().splitlines() or ["exit %s" % rc])[-1]}
        it = iter(argv[1:])
        for k, v in zip(it, it):
            d[k.lstrip("-")] = v
        if "pct" in d and argv[0] == "pause":
            d["pct"] = v_norm(d["pct"])
        rows = [d]
    return rows, dt, rc


def v_norm(v):
    f = num(v)
    return ("%g" % f) if f is not None else v


def key_of(d):
    return tuple((k, v_norm(d[k])) for k in IDENT if k in d)


def aggregate(rows):
    """Median of every numeric field over the rounds of one row identity."""
    groups = {}
    for d in rows:
        groups.setdefault(key_of(d), []).append(d)
    out = {}
    for k, ds in groups.items():
        ok = [d for d in ds if d.get("status") == "ok"]
        if not ok:
            out[k] = dict(ds[0])
            continue
        m = dict(ok[0])
        for f in ok[0]:
            vals = [num(d.get(f)) for d in ok]
            if f not in IDENT and all(v is not None for v in vals):
                m[f] = statistics.median(vals)
        m["rounds"] = len(ok)
        out[k] = m
    return out


class Results:
    def __init__(self, agg):
        self.agg = agg

    def get(self, **ident):
        want = tuple((k, v_norm(str(ident[k]))) for k in IDENT if k in ident)
        for k, d in self.agg.items():
            if all(item in k for item in want):
                return d
        return None

    def all(self, scenario):
        return [d for k, d in self.agg.items() if d.get("scenario") == scenario]


# ---------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1e6:
        s = "%.3gM" % (v / 1e6)
    elif a >= 1e4:
        s = "%.0f" % v
    elif a >= 100:
        s = "%.0f" % v
    elif a >= 10:
        s = "%.1f" % v
    elif a >= 1:
        s = "%.2f" % v
    else:
        s = "%.3g" % v
    return s + (" " + unit if unit else "")


def status_text(d):
    if d is None:
        return "not run"
    st = d.get("status", "?")
    return {"unsupported": "unsupported", "not-built": "not built", "timeout": "timeout",
            "wrong": "WRONG RESULT", "skip": "skip"}.get(st, st)


def figure(d, field, unit="", scale=1.0):
    """Cell text and numeric value of one side of a comparison."""
    if d is None or d.get("status") != "ok":
        return status_text(d), None
    v = num(d.get(field))
    if v is None:
        return "—", None
    return fmt(v * scale, unit), v * scale


class Table:
    """One comparison table: workload | snapfault | baseline | ratio | goal | verdict."""

    def __init__(self):
        self.rows = []
        self.goals = []

    def add(self, workload, sf, base, ratio_kind, goal=None, sf_label=None, base_label=None):
        """ratio_kind 'sf/base' or 'base/sf'; goal ('<=', x) or ('>=', x) or None."""
        sf_txt, sfv = sf
        b_txt, bv = base
        ratio = None
        if sfv is not None and bv is not None and sfv > 0 and bv > 0:
            ratio = sfv / bv if ratio_kind == "sf/base" else bv / sfv
        if goal is None:
            verdict = "info"
        elif ratio is None:
            verdict = "n/a"
        else:
            op, x = goal
            verdict = "met" if (ratio <= x if op == "<=" else ratio >= x) else "missed"
        gtxt = "—" if goal is None else "%s %s %.3g" % (ratio_kind, "≤" if goal[0] == "<=" else "≥", goal[1])
        if sf_label:
            sf_txt = "%s: %s" % (sf_label, sf_txt)
        if base_label:
            b_txt = "%s: %s" % (base_label, b_txt)
        self.rows.append([workload, sf_txt, b_txt, "—" if ratio is None else "%.2fx" % ratio, gtxt,
                          verdict])
        if goal is not None:
            self.goals.append((workload, ratio, gtxt, verdict))

    def md(self):
        return md_table(["workload", "snapfault", "baseline (same run)", "ratio", "goal", "verdict"],
                        self.rows)


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# SVG (hand-written: readable in any browser, no dependencies)
# ---------------------------------------------------------------------------

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]


def esc(s):
    return html.escape(str(s), quote=True)


def log_ticks(lo, hi):
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** e for e in range(a, b + 1)]


def lin_ticks(hi):
    if hi <= 0:
        return [0, 1]
    step = 10 ** math.floor(math.log10(hi))
    for m in (1, 2, 5, 10):
        if hi / (step * m) <= 6:
            step *= m
            break
    t, out = 0.0, []
    while t <= hi * 1.0001 + step:
        out.append(t)
        t += step
    return out


def tick_label(v):
    if v == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return "%g%s" % (v / div, suffix)
    return "%g" % v


class Scale:
    def __init__(self, values, log, x0, x1):
        vals = [v for v in values if v is not None and v > 0]
        self.log = log and bool(vals)
        if self.log:
            self.ticks = log_ticks(min(vals), max(vals))
            self.lo, self.hi = self.ticks[0], self.ticks[-1]
            if self.lo == self.hi:
                self.hi = self.lo * 10
                self.ticks.append(self.hi)
        else:
            self.ticks = lin_ticks(max(vals) if vals else 1)
            self.lo, self.hi = 0.0, self.ticks[-1]
        self.x0, self.x1 = x0, x1

    def __call__(self, v):
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0
        return self.x0 + f * (self.x1 - self.x0)


def svg_bar_panel(y0, title, categories, series, unit, log=True, width=900):
    """Horizontal grouped bars; series = [(name, [value or None per category])].
    Returns (svg fragment, height)."""
    label_w, right = 250, 90
    bar_h, gap = 13, 9
    n_ser = max(1, len(series))
    group_h = n_ser * bar_h + gap
    top = y0 + 42
    h = 42 + len(categories) * group_h + 40 + 18 * ((len(series) + 3) // 4)
    allv = [v for _, vs in series for v in vs]
    sc = Scale(allv, log, label_w, width - right)
    out = ['<text x="10" y="%d" class="t">%s</text>' % (y0 + 20, esc(title))]
    out.append('<text x="%d" y="%d" class="u">%s%s</text>' % (label_w, y0 + 36, esc(unit),
                                                             " (log scale)" if sc.log else ""))
    bottom = top + len(categories) * group_h
    for t in sc.ticks:
        x = sc(t)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="g"/>' % (x, top - 4, x, bottom))
        out.append('<text x="%.1f" y="%d" class="k" text-anchor="middle">%s</text>'
                   % (x, bottom + 14, tick_label(t)))
    for ci, cat in enumerate(categories):
        gy = top + ci * group_h
        out.append('<text x="%d" y="%d" class="c" text-anchor="end">%s</text>'
                   % (label_w - 8, gy + n_ser * bar_h / 2 + 4, esc(cat)))
        for si, (name, vals) in enumerate(series):
            v = vals[ci]
            y = gy + si * bar_h
            if v is None:
                out.append('<text x="%d" y="%d" class="k">n/a</text>' % (label_w + 4, y + 10))
                continue
            x1 = sc(v)
            out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s</title></rect>'
                       % (label_w, y, max(1.0, x1 - label_w), bar_h - 2, PALETTE[si % len(PALETTE)],
                          esc("%s, %s" % (cat, name)), esc(fmt(v, unit))))
            out.append('<text x="%.1f" y="%d" class="k">%s</text>' % (x1 + 3, y + 10, esc(fmt(v))))
    ly = bottom + 32
    for si, (name, _) in enumerate(series):
        lx = label_w + (si % 4) * 160
        yy = ly + (si // 4) * 18
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (lx, yy - 10, PALETTE[si % len(PALETTE)]))
        out.append('<text x="%d" y="%d" class="c">%s</text>' % (lx + 16, yy, esc(name)))
    return "\n".join(out), h


def svg_line_panel(y0, title, xs, series, xlabel, unit, log=True, width=900):
    """Lines over numeric xs; series = [(name, [y or None per x])]."""
    left, right, ph = 80, 230, 260
    top = y0 + 42
    h = 42 + max(ph, 18 * len(series)) + 50
    allv = [v for ser in series for v in ser[1]]
    ys = Scale(allv, log, top + ph, top)  # inverted: larger values higher
    xsc = Scale(xs, False, left, width - right)
    xsc.lo, xsc.hi = min(xs), max(xs)
    if xsc.lo == xsc.hi:
        xsc.hi = xsc.lo + 1
    out = ['<text x="10" y="%d" class="t">%s</text>' % (y0 + 20, esc(title))]
    out.append('<text x="%d" y="%d" class="u">%s%s</text>' % (left, y0 + 36, esc(unit),
                                                             " (log scale)" if ys.log else ""))
    for t in ys.ticks:
        y = ys(t)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="g"/>' % (left, y, width - right, y))
        out.append('<text x="%d" y="%.1f" class="k" text-anchor="end">%s</text>' % (left - 5, y + 4, tick_label(t)))
    for x in xs:
        px = xsc(x)
        out.append('<text x="%.1f" y="%d" class="k" text-anchor="middle">%s</text>' % (px, top + ph + 16, esc(x)))
    out.append('<text x="%d" y="%d" class="c" text-anchor="middle">%s</text>'
               % ((left + width - right) // 2, top + ph + 34, esc(xlabel)))
    for si, ser in enumerate(series):
        # (name, values) or (name, values, colour index, dashed): one colour
        # per mechanism, dashes for its variant, keeps 16 lines tellable apart
        name, vals = ser[0], ser[1]
        col = PALETTE[(ser[2] if len(ser) > 2 else si) % len(PALETTE)]
        dash = ' stroke-dasharray="5,3"' if len(ser) > 3 and ser[3] else ""
        pts = [(xsc(x), ys(v)) for x, v in zip(xs, vals) if v is not None and v > 0]
        if len(pts) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>'
                       % (col, dash, " ".join("%.1f,%.1f" % p for p in pts)))
        for (px, py), x, v in zip(pts, [x for x, v in zip(xs, vals) if v is not None and v > 0],
                                  [v for v in vals if v is not None and v > 0]):
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s</title></circle>'
                       % (px, py, col, esc("%s @ %s: %s" % (name, x, fmt(v, unit)))))
        ly = top + 10 + si * 18
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                   % (width - right + 15, ly - 4, width - right + 35, ly - 4, col, dash))
        out.append('<text x="%d" y="%d" class="c">%s</text>' % (width - right + 40, ly, esc(name)))
    return "\n".join(out), h


def svg_doc(title, panels, width=900):
    """panels: list of callables y0 -> (svg, height)."""
    body, y = [], 34
    for p in panels:
        frag, h = p(y)
        body.append(frag)
        y += h + 10
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="sans-serif">\n<style>.t{font-size:14px;font-weight:bold}'
            '.u{font-size:11px;fill:#555}.c{font-size:11px}.k{font-size:10px;fill:#333}'
            '.g{stroke:#ddd;stroke-width:1}.h{font-size:16px;font-weight:bold}</style>\n'
            '<rect width="100%%" height="100%%" fill="white"/>\n'
            '<text x="10" y="22" class="h">%s</text>\n%s\n</svg>\n'
            % (width, y, width, y, esc(title), "\n".join(body)))


# ---------------------------------------------------------------------------
# Scenario reports: (markdown, svg) each
# ---------------------------------------------------------------------------

def v_of(d, f):
    return num(d.get(f)) if d and d.get("status") == "ok" else None


def rep_fault(R, p):
    T = Table()
    pairs = [
        ("async tracking (uffd-async)", "sf-uffd-async", "raw-async-wp", ("seq", "rand"), 1.05),
        ("uffd-sync in-thread (SIGBUS)", "sf-uffd-sync-inthread", "raw-sigbus", ("rand",), 1.2),
        ("uffd-sync handler threads", "sf-uffd-sync-handler", "raw-uffd-thread", ("rand",), 1.2),
        ("mprotect", "sf-mprotect", "raw-mprotect", ("rand",), 1.2),
    ]
    for label, sfm, rawm, goal_pats, g in pairs:
        for pat in ("seq", "rand"):
            T.add("%s, %s writes" % (label, pat), figure(R.get(scenario="fault", mech=sfm, pattern=pat), "ns_per_page", "ns"),
                  figure(R.get(scenario="fault", mech=rawm, pattern=pat), "ns_per_page", "ns"), "sf/base",
                  ("<=", g) if pat in goal_pats else None, sfm, rawm)
    snap = R.get(scenario="fault", mech="sf-snap-auto", pattern="seq")
    mode = " (%s, %s)" % (snap.get("backend"), snap.get("fault_mode")) if snap and snap.get("status") == "ok" else ""
    T.add("snapshot COW, AUTO%s, seq writes" % mode, figure(snap, "ns_per_page", "ns"),
          figure(R.get(scenario="fault", mech="raw-fork-cow", pattern="seq"), "ns_per_page", "ns"),
          "sf/base", ("<=", 0.5), "sf-snap-auto", "raw-fork-cow")
    T.add("snapshot COW, AUTO, rand writes", figure(R.get(scenario="fault", mech="sf-snap-auto", pattern="rand"), "ns_per_page", "ns"),
          figure(R.get(scenario="fault", mech="raw-fork-cow", pattern="rand"), "ns_per_page", "ns"),
          "sf/base", None, "sf-snap-auto", "raw-fork-cow")
    for sfm, rawm in (("sf-snap-uffd-sync-inthread", "raw-sigbus-copy"), ("sf-snap-mprotect", "raw-mprotect-copy")):
        for pat in ("seq", "rand"):
            a, b = R.get(scenario="fault", mech=sfm, pattern=pat), R.get(scenario="fault", mech=rawm, pattern=pat)
            if a or b:
                T.add("snapshot COW vs its raw floor, %s" % pat, figure(a, "ns_per_page", "ns"),
                      figure(b, "ns_per_page", "ns"), "sf/base", None, sfm, rawm)
    mechs = []
    for d in R.all("fault"):
        if d["mech"] not in mechs:
            mechs.append(d["mech"])
    order = p["raw"] + p["sf"]
    mechs.sort(key=lambda m: order.index(m) if m in order else 99)
    rows = []
    for m in mechs:
        cells = [m]
        for pat in ("seq", "rand"):
            d = R.get(scenario="fault", mech=m, pattern=pat)
            cells.append(figure(d, "ns_per_page", "ns")[0] if d else "not run")
        c = num((R.get(scenario="fault", mech=m, pattern="rand") or {}).get("collected"))
        cells.append("%d" % c if c is not None and c >= 0 else "")
        cells.append(fmt(FIELD_NOTES_NS.get(m), "ns") if m in FIELD_NOTES_NS else "")
        rows.append(cells)
    md = ["### 1. First-write fault cost per 4 KiB page",
          "",
          "%d pages written per repetition out of a %d MiB resident region (MADV_NOHUGEPAGE), "
          "median of %d repetitions%s. `seq`: pages in address order; `rand`: a random subset in "
          "random order. Baselines: the kernel mechanism used directly (bench/raw_mech.c)."
          % (p["pages"], p["mib"], p["reps"], ", median of %d interleaved rounds" % p["rounds"] if p["rounds"] > 1 else ""),
          "", T.md(), "",
          "All mechanisms (pages verified: the collect after each repetition reported that many):", "",
          md_table(["mechanism", "seq", "rand", "pages collected", "FIELD-NOTES"], rows)]
    svg = svg_doc("1. First-write fault cost per 4 KiB page", [
        lambda y: svg_bar_panel(y, "ns per page (%d of %d MiB)" % (p["pages"], p["mib"]), mechs,
                                [(pat, [v_of(R.get(scenario="fault", mech=m, pattern=pat), "ns_per_page") for m in mechs])
                                 for pat in ("seq", "rand")], "ns/page")])
    return "\n".join(md), svg, T


def rep_collect(R, p):
    T = Table()
    pcts = ["0", "1", "10", "100"]
    for pct in pcts:
        T.add("collect+reset %d MiB, %s%% written" % (p["mib"], pct),
              figure(R.get(scenario="collect", mech="sf-auto", pct=pct), "ms", "ms"),
              figure(R.get(scenario="collect", mech="raw-async-wp", pct=pct), "ms", "ms"),
              "sf/base", ("<=", 1.2), "sf-auto", "PAGEMAP_SCAN")
    for pct in pcts:
        T.add("mprotect backend, %s%% written" % pct,
              figure(R.get(scenario="collect", mech="sf-mprotect", pct=pct), "ms", "ms"),
              figure(R.get(scenario="collect", mech="raw-mprotect-full", pct=pct), "ms", "ms"),
              "sf/base", None, "sf-mprotect", "full mprotect re-arm")
    mechs = p["raw"] + p["sf"]
    rows = []
    for m in mechs:
        rows.append([m] + [figure(R.get(scenario="collect", mech=m, pct=pct), "ms", "ms")[0] for pct in pcts])
    md = ["### 2. Collect + reset",
          "",
          "%d MiB tracked, resident; before each timed collect+reset, 0/1/10%% of the pages (random) "
          "or 100%% (in order) were written. Median of %d. raw-async-wp is PAGEMAP_SCAN with "
          "PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC (4096-entry vector, resumed from walk_end); "
          "raw-mprotect re-arms dirty runs from its own bitmap, raw-mprotect-full re-arms the whole "
          "region with one mprotect." % (p["mib"], p["reps"]),
          "", T.md(), "", md_table(["mechanism"] + [x + "%" for x in pcts], rows)]
    svg = svg_doc("2. Collect + reset of %d MiB" % p["mib"], [
        lambda y: svg_bar_panel(y, "time of one collect+reset", mechs,
                                [(pct + "% written", [v_of(R.get(scenario="collect", mech=m, pct=pct), "ms") for m in mechs])
                                 for pct in pcts], "ms")])
    return "\n".join(md), svg, T


def rep_pause(R, p):
    T = Table()
    cats, fk, sf = [], [], []
    for mib, pct in p["points"]:
        f = R.get(scenario="pause", mech="fork", mib=mib, pct=pct)
        s = R.get(scenario="pause", mech="sf-snap-auto", mib=mib, pct=pct)
        what = "all" if pct >= 100 else "%g%%" % pct
        T.add("%d MiB resident, %s written since previous" % (mib, what), figure(s, "pause_ms", "ms"),
              figure(f, "pause_ms", "ms"), "base/sf", (">=", 3 if pct >= 100 else 10),
              "sf_snapshot_take", "fork()")
        cats.append("%d MiB, %s written" % (mib, what))
        fk.append(v_of(f, "pause_ms"))
        sf.append(v_of(s, "pause_ms"))
    md = ["### 3. Snapshot pause",
          "",
          "Time of the fork() call in the parent (child `_exit(0)` at once) vs sf_snapshot_take, "
          "after writing all or 1%% (random) of the pages since the previous fork/take. Median of %d."
          % p["reps"], "", T.md()]
    svg = svg_doc("3. Snapshot pause: fork() vs sf_snapshot_take", [
        lambda y: svg_bar_panel(y, "pause", cats, [("fork()", fk), ("sf_snapshot_take", sf)], "ms")])
    return "\n".join(md), svg, T


def rep_bgsave(R, p):
    T = Table()
    cats = []
    thr, stall, save = {"fork": [], "sf": []}, {"fork": [], "sf": []}, {"fork": [], "sf": []}
    detail = []
    for t in p["threads"]:
        f = R.get(scenario="bgsave", mech="fork", threads=t)
        s = R.get(scenario="bgsave", mech="sf-snap-auto", threads=t)
        T.add("%d mutator(s): throughput during save, %% of without" % t, figure(s, "throughput_ratio", "%", 100.0),
              figure(f, "throughput_ratio", "%", 100.0), "sf/base", (">=", 1.0), "sf", "fork")
        fp = v_of(f, "pause_ms")
        T.add("%d mutator(s): longest stall vs fork's pause" % t, figure(s, "stall_ms", "ms"),
              (fmt(fp, "ms") if fp is not None else status_text(f), fp),
              "sf/base", ("<=", 1 / 3.0), "sf stall", "fork() pause")
        T.add("%d mutator(s): longest stall, both" % t, figure(s, "stall_ms", "ms"), figure(f, "stall_ms", "ms"),
              "sf/base", None, "sf", "fork")
        T.add("%d mutator(s): total save time" % t, figure(s, "save_ms", "ms"), figure(f, "save_ms", "ms"),
              "sf/base", None, "sf", "fork")
        T.add("%d mutator(s): extra memory (Pss growth)" % t, figure(s, "extra_mib", "MiB"),
              figure(f, "extra_mib", "MiB"), "sf/base", None, "sf", "fork")
        cats.append("%d mutator%s" % (t, "s" if t > 1 else ""))
        for key, d in (("fork", f), ("sf", s)):
            thr[key].append(None if v_of(d, "throughput_ratio") is None else 100 * v_of(d, "throughput_ratio"))
            stall[key].append(v_of(d, "stall_ms"))
            save[key].append(None if v_of(d, "save_ms") is None else v_of(d, "save_ms") / 1000)
            if d:
                detail.append([key, t, figure(d, "save_ms", "ms")[0], figure(d, "pause_ms", "ms")[0],
                               figure(d, "ops_per_s_save")[0], figure(d, "ops_per_s_base")[0],
                               figure(d, "stall_ms", "ms")[0], figure(d, "idle_stall_ms", "ms")[0],
                               figure(d, "extra_mib", "MiB")[0], figure(d, "image_mib", "MiB")[0]])
    md = ["### 4. Background save",
          "",
          "%d MiB resident; mutator threads do random 8-byte writes (a timestamp every 8 writes; "
          "the longest gap is the stall). Baseline: fork() and the child writes the region to a "
          "file in /tmp (Redis BGSAVE); snapfault: sf_snapshot_take + sf_snapshot_write to the "
          "same kind of file + release. Throughput is relative to the same mutators before any "
          "tracker or fork existed. One unmeasured save first, then median of %d saves. Extra "
          "memory: growth of Pss_Anon of parent (+ child) at the end of the save."
          % (p["mib"], p["reps"]), "", T.md(), "",
          md_table(["side", "mutators", "save", "fork/take pause", "ops/s in save", "ops/s without",
                    "longest stall", "longest stall w/o save", "extra memory", "image"], detail)]
    svg = svg_doc("4. Background save of %d MiB" % p["mib"], [
        lambda y: svg_bar_panel(y, "mutator throughput during the save, % of without", cats,
                                [("fork", thr["fork"]), ("snapfault", thr["sf"])], "%", log=False),
        lambda y: svg_bar_panel(y, "longest mutator stall during the save", cats,
                                [("fork", stall["fork"]), ("snapfault", stall["sf"])], "ms"),
        lambda y: svg_bar_panel(y, "total save time", cats,
                                [("fork", save["fork"]), ("snapfault", save["sf"])], "s", log=False)])
    return "\n".join(md), svg, T


def rep_rollback(R, p):
    T = Table()
    f = R.get(scenario="rollback", mech="fork")
    s = R.get(scenario="rollback", mech="sf-snap-auto")
    T.add("%d MiB state, 64 random pages per iteration" % p["mib"], figure(s, "iters_per_s", "it/s"),
          figure(f, "iters_per_s", "it/s"), "sf/base", (">=", 50), "restore", "fork per iteration")
    md = ["### 5. Rollback loop", "",
          "Iterations per second (median of %d × %d iterations). Baseline: fork per iteration, the "
          "child dirties the pages and exits. snapfault: dirty the pages, sf_snapshot_restore. "
          "Each repetition checks that the last iteration's pages were restored."
          % (p["reps"], p["iters"]), "", T.md()]
    svg = svg_doc("5. Rollback loop", [
        lambda y: svg_bar_panel(y, "iterations per second", ["fork per iteration", "sf_snapshot_restore"],
                                [("it/s", [v_of(f, "iters_per_s"), v_of(s, "iters_per_s")])], "it/s")])
    return "\n".join(md), svg, T


def rep_stall(R, p):
    T = Table()
    W = p["writers"]
    mechs = p["raw"] + p["sf"]
    for w in W:
        a = R.get(scenario="stall", mech="sf-auto", writers=w, collect=1)
        b = R.get(scenario="stall", mech="sf-auto", writers=w, collect=0)
        T.add("%d writer(s): fault p99 with collects vs without" % w, figure(a, "fault_p99_us", "us"),
              figure(b, "fault_p99_us", "us"), "sf/base", ("<=", 1.5), "with", "without")
    for w in W:
        a = R.get(scenario="stall", mech="sf-auto", writers=w, collect=1)
        b = R.get(scenario="stall", mech="raw-rwlock", writers=w, collect=1)
        T.add("%d writer(s): fault p99 vs rwlock design, with collects" % w, figure(a, "fault_p99_us", "us"),
              figure(b, "fault_p99_us", "us"), "base/sf", (">=", 10) if w > 2 else None, "sf-auto", "raw-rwlock")
    for w in W:
        a = R.get(scenario="stall", mech="sf-mprotect", writers=w, collect=1)
        b = R.get(scenario="stall", mech="raw-mprotect", writers=w, collect=1)
        if a or b:
            T.add("%d writer(s): mprotect backend vs raw mprotect, with collects" % w,
                  figure(a, "fault_p99_us", "us"), figure(b, "fault_p99_us", "us"), "sf/base", None,
                  "sf-mprotect", "raw-mprotect")
    rows = []
    for m in mechs:
        d0 = R.get(scenario="stall", mech=m, writers=0, collect=1)
        rows.append([m, "collector alone", "", "", "", figure(d0, "collect_p50_ms", "ms")[0],
                     figure(d0, "collect_p99_ms", "ms")[0], figure(d0, "collect_max_ms", "ms")[0]])
        for w in W:
            for c in (0, 1):
                d = R.get(scenario="stall", mech=m, writers=w, collect=c)
                rows.append([m, "%d writer(s)%s" % (w, ", collects" if c else ""),
                             figure(d, "fault_p50_us", "us")[0], figure(d, "fault_p99_us", "us")[0],
                             figure(d, "fault_max_us", "us")[0],
                             figure(d, "collect_p50_ms", "ms")[0] if c else "",
                             figure(d, "collect_p99_ms", "ms")[0] if c else "",
                             figure(d, "collect_max_ms", "ms")[0] if c else ""])
    md = ["### 6. Stall: faults on fresh pages while a collector resets every millisecond", "",
          "%d MiB tracked; each writer walks its own slice once, so every store hits an armed page "
          "(every write is a fault); the collector resets the whole region every 1 ms. %.1f s per "
          "run; 2 cores, so 4 and 8 writers are oversubscribed on purpose. raw-rwlock: SIGBUS uffd "
          "handler read-locks a writer-preferring pthread_rwlock, the collector write-locks it while "
          "re-arming (the mmap_sem design)." % (p["mib"], p["secs"]), "", T.md(), "",
          md_table(["mechanism", "run", "fault p50", "fault p99", "fault max", "collect p50",
                    "collect p99", "collect max"], rows)]
    ser = []
    for mi, m in enumerate(mechs):
        for c in (1, 0):
            ser.append(("%s%s" % (m, "" if c else " (no collect)"),
                        [v_of(R.get(scenario="stall", mech=m, writers=w, collect=c), "fault_p99_us") for w in W],
                        mi, not c))
    cser = [(m, [v_of(R.get(scenario="stall", mech=m, writers=w, collect=1), "collect_p99_ms") for w in W]) for m in mechs]
    svg = svg_doc("6. Stall: fault and collect latency vs writer threads", [
        lambda y: svg_line_panel(y, "p99 latency of one faulting write", W, ser, "writer threads", "us"),
        lambda y: svg_line_panel(y, "p99 latency of one collect+reset (while writers fault)", W, cser,
                                 "writer threads", "ms")])
    return "\n".join(md), svg, T


def rep_scaling(R, p):
    W = p["writers"]
    mechs = p["raw"] + p["sf"]
    rows = [[m] + [figure(R.get(scenario="stall", mech=m, writers=w, collect=0), "faults_per_s")[0] for w in W]
            for m in mechs]
    md = ["### 7. Scaling: faults per second vs writer threads", "",
          "From the stall runs without collector (one pass over fresh pages).", "",
          md_table(["mechanism"] + ["%d writer(s)" % w for w in W], rows)]
    svg = svg_doc("7. Faults per second vs writer threads", [
        lambda y: svg_line_panel(y, "faults per second (no collector)", W,
                                 [(m, [v_of(R.get(scenario="stall", mech=m, writers=w, collect=0), "faults_per_s") for w in W])
                                  for m in mechs], "writer threads", "faults/s")])
    return "\n".join(md), svg, None


def rep_memory(R, p):
    rows, cats, meta, per = [], [], [], []
    for m in p["mechs"]:
        d = R.get(scenario="memory", mech=m)
        rows.append([m if m != "fork" else "fork (child page tables; COW copy)",
                     figure(d, "metadata_bytes_per_gib", "MiB", 1.0 / 1048576)[0],
                     figure(d, "store_bytes_per_copy", "B")[0] if v_of(d, "store_bytes_per_copy") not in (None, -1.0) else ""])
        cats.append(m)
        meta.append(v_of(d, "metadata_bytes_per_gib"))
        v = v_of(d, "store_bytes_per_copy")
        per.append(v if v and v > 0 else None)
    md = ["### 8. Memory", "",
          "snapfault: sf_stats.metadata_bytes per tracked GiB (%d MiB tracked) and store_bytes per "
          "page copied (after %d random first writes under a live snapshot). fork: the child's "
          "page tables (VmPTE) per GiB, and Pss growth of parent+child per copied page."
          % (p["mib"], p["copies"]), "",
          md_table(["mechanism", "metadata per tracked GiB", "bytes per copied page"], rows)]
    svg = svg_doc("8. Memory overhead", [
        lambda y: svg_bar_panel(y, "metadata bytes per tracked GiB", cats, [("bytes", meta)], "bytes"),
        lambda y: svg_bar_panel(y, "bytes held per copied page", cats, [("bytes", per)], "bytes", log=False)])
    return "\n".join(md), svg, None


def engine_kind(name, d):
    """'mirror' or 'cow': by name, or for auto by the backend it got."""
    if name == "mirror":
        return "mirror"
    if name.startswith("cow-"):
        return "cow"
    if d and d.get("status") == "ok":
        if d.get("engine") in ("mirror", "cow"):  # sf_stats.engine, when the library has it
            return d["engine"]
        return "mirror" if d.get("backend") == "uffd-async" else "cow"
    return None


def engine_label(name, d):
    if name == "auto" and d and d.get("backend"):
        return "auto (%s)" % (d.get("engine") or d.get("backend"))
    return name


def rep_engines(R, p):
    parts = p.get("parts", ENGINE_PARTS)
    T = Table()
    md = ["### 9. Snapshot engines", "",
          "Each engine chosen through the public options only (bench/sf_mech.c `engine_options`): "
          "**mirror** = `SF_BACKEND_UFFD_ASYNC` + `SF_OPT_SNAPSHOTS`; **cow-uffd** = "
          "`SF_BACKEND_UFFD_SYNC` (default fault delivery; `-handler` / `-inthread` pin it); "
          "**cow-mprotect** = `SF_BACKEND_MPROTECT`; **auto** = `SF_BACKEND_AUTO` + "
          "`SF_OPT_SNAPSHOTS` (its goal is that of the engine it got). store_limit 2.5x the tracked "
          "size (more with several live snapshots). Every baseline is measured in the same run.", ""]
    skipped = []
    svg_panels = []
    parts_table = []

    def note_skip(d, what):
        if d and d.get("status") not in (None, "ok"):
            skipped.append([what, status_text(d), d.get("reason", "")])

    if "take-1pct" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["take"]
        md += ["#### take-1pct: take after 1% of the pages were written", "",
               "All pages resident and filled; per take: 1%% random pages written, then the timed take "
               "(`live` = earlier snapshots kept live during it; 0: the previous one is released "
               "first, in a call timed apart: `release` below; a program releases a snapshot when "
               "it is done with it, and faults do not wait for a release). fork(): the same process and memory, the fork() call in the parent (child "
               "`_exit(0)`, reaped). Median and p99 of %d takes after one unmeasured; the verdict is "
               "on the median." % q["takes"], ""]
        tpos = len(md)
        rows, cats, fk, en = [], [], [], []
        for mib, live in q["points"]:
            f = R.get(scenario="take-1pct", mech="fork", mib=mib, live=0)
            note_skip(f, "take-1pct %d MiB fork" % mib)
            for e in q["engines"]:
                d = R.get(scenario="take-1pct", mech=e, mib=mib, live=live)
                note_skip(d, "take-1pct %d MiB live %d %s" % (mib, live, e))
                k = engine_kind(e, d)
                goal = (">=", 10) if k == "mirror" else (">=", 4) if k == "cow" else None
                t.add("take-1pct %d MiB, %d live: %s take vs fork" % (mib, live, engine_label(e, d)),
                      figure(d, "take_ms", "ms"), figure(f, "take_ms", "ms"), "base/sf", goal, e, "fork()")
                rows.append(["%d MiB" % mib, live, engine_label(e, d), figure(d, "take_ms", "ms")[0],
                             figure(d, "take_p99_ms", "ms")[0], figure(d, "take_max_ms", "ms")[0],
                             figure(d, "release_ms", "ms")[0],
                             figure(d, "write_ns_per_page", "ns")[0], figure(f, "take_ms", "ms")[0],
                             figure(f, "take_p99_ms", "ms")[0]])
                cats.append("%d MiB live %d %s" % (mib, live, e))
                fk.append(v_of(f, "take_ms"))
                en.append(v_of(d, "take_ms"))
        md += [md_table(["tracked", "live", "engine", "take p50", "take p99", "take max",
                         "release p50", "write per page", "fork p50", "fork p99"], rows), ""]
        svg_panels.append(lambda y, c=cats, a=fk, b=en: svg_bar_panel(
            y, "take-1pct: take vs fork()", c, [("fork()", a), ("take", b)], "ms"))

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    if "take-all" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["take_all"]
        mib = q["mib"]
        md += ["#### take-all: take after every page was written", "",
               "%d MiB; all pages written (in order) since the previous take. raw-wp: a uffd "
               "registered for WP, all pages made writable and written, then one timed "
               "`UFFDIO_WRITEPROTECT` of the whole range; raw-mprotect: the same with one "
               "`mprotect(PROT_READ)`. The release of the previous snapshot is timed apart "
               "(`release`). Median of %d." % (mib, q["takes"]), ""]
        tpos = len(md)
        f = R.get(scenario="take-all", mech="fork", mib=mib)
        wp = R.get(scenario="take-all", mech="raw-wp", mib=mib)
        mp = R.get(scenario="take-all", mech="raw-mprotect", mib=mib)
        for d0, w in ((f, "fork"), (wp, "raw-wp"), (mp, "raw-mprotect")):
            note_skip(d0, "take-all %s" % w)
        rows = []
        for e in q["engines"]:
            d = R.get(scenario="take-all", mech=e, mib=mib)
            note_skip(d, "take-all %s" % e)
            k = engine_kind(e, d)
            t.add("take-all %d MiB: %s take vs one UFFDIO_WRITEPROTECT" % (mib, engine_label(e, d)),
                  figure(d, "take_ms", "ms"), figure(wp, "take_ms", "ms"), "sf/base",
                  ("<=", 1.1) if k == "cow" else None, e, "raw-wp")
            if e == "cow-mprotect":
                t.add("take-all %d MiB: cow-mprotect take vs one mprotect" % mib, figure(d, "take_ms", "ms"),
                      figure(mp, "take_ms", "ms"), "sf/base", None, e, "raw-mprotect")
            t.add("take-all %d MiB: %s take vs fork" % (mib, engine_label(e, d)), figure(d, "take_ms", "ms"),
                  figure(f, "take_ms", "ms"), "base/sf", None, e, "fork()")
            rows.append([engine_label(e, d), figure(d, "take_ms", "ms")[0], figure(d, "take_max_ms", "ms")[0],
                         figure(d, "release_ms", "ms")[0], figure(d, "write_ns_per_page", "ns")[0]])
        for b, d0 in (("fork()", f), ("raw-wp", wp), ("raw-mprotect", mp)):
            rows.append([b, figure(d0, "take_ms", "ms")[0], figure(d0, "take_max_ms", "ms")[0], "",
                         figure(d0, "write_ns_per_page", "ns")[0]])
        md += [md_table(["mechanism", "take p50", "take max", "release p50", "write per page"], rows), ""]

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    if "first-take" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["first"]
        mib = q["mib"]
        md += ["#### first-take: the first take after sf_track", "",
               "%d MiB resident and filled; sf_tracker_create + sf_track timed, then a bounded wait "
               "for a background pre-copy (sf_tracker_stats polled every 5 ms until store_bytes "
               "reaches the tracked size, stops growing for 200 ms, or 10 s passed: `wait end`), "
               "then the first take; a second take after 1%% written. fork(): the first and a second "
               "fork() of the process (1%% written between them). Goal: no take longer than the "
               "fork at the same point." % mib, ""]
        tpos = len(md)
        f = R.get(scenario="first-take", mech="fork", mib=mib)
        note_skip(f, "first-take fork")
        rows = []
        for e in q["engines"]:
            d = R.get(scenario="first-take", mech=e, mib=mib)
            note_skip(d, "first-take %s" % e)
            t.add("first-take %d MiB: %s first take vs first fork" % (mib, engine_label(e, d)),
                  figure(d, "first_take_ms", "ms"), figure(f, "first_take_ms", "ms"), "base/sf",
                  (">=", 1), e, "fork()")
            t.add("first-take %d MiB: %s second take (1%% written) vs second fork" % (mib, engine_label(e, d)),
                  figure(d, "second_take_ms", "ms"), figure(f, "second_take_ms", "ms"), "base/sf",
                  (">=", 1), e, "fork()")
            rows.append([engine_label(e, d), figure(d, "track_ms", "ms")[0], figure(d, "wait_ms", "ms")[0],
                         (d or {}).get("wait_end", ""), figure(d, "first_take_ms", "ms")[0],
                         figure(d, "second_take_ms", "ms")[0]])
        rows.append(["fork()", "", "", "", figure(f, "first_take_ms", "ms")[0], figure(f, "second_take_ms", "ms")[0]])
        md += [md_table(["engine", "create + track", "wait", "wait end", "first take", "second take"], rows), ""]

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    if "engine-rollback" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["rollback"]
        md += ["#### engine-rollback: write 64 random pages, restore", "",
               "%d MiB, iterations per second (median of %d x %d). fork per iteration: the child "
               "writes the 64 pages and exits, the parent waits (the fork-server reset). Each "
               "repetition checks the last iteration's pages hold their original content again."
               % (q["mib"], q["reps"], q["iters"]), ""]
        tpos = len(md)
        f = R.get(scenario="engine-rollback", mech="fork", mib=q["mib"])
        note_skip(f, "engine-rollback fork")
        cats, vals = ["fork per iteration"], [v_of(f, "iters_per_s")]
        for e in q["engines"]:
            d = R.get(scenario="engine-rollback", mech=e, mib=q["mib"])
            note_skip(d, "engine-rollback %s" % e)
            k = engine_kind(e, d)
            goal = (">=", 50) if k == "mirror" else (">=", 15) if k == "cow" else None
            t.add("rollback %d MiB, 64 pages: %s restore vs fork" % (q["mib"], engine_label(e, d)),
                  figure(d, "iters_per_s", "it/s"), figure(f, "iters_per_s", "it/s"), "sf/base", goal, e,
                  "fork per iteration")
            cats.append(e)
            vals.append(v_of(d, "iters_per_s"))
        svg_panels.append(lambda y, c=cats, v=vals: svg_bar_panel(
            y, "engine-rollback: iterations per second", c, [("it/s", v)], "it/s"))

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    if "bg-save" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["bgsave"]
        mib = q["mib"]
        md += ["#### bg-save: one mutator while a snapshot is saved", "",
               "%d MiB; one mutator thread does random 8-byte writes over the whole range and samples "
               "the clock every 16 writes (longest gap = longest stall). Engines: the mutator is "
               "paused (flag + spin handshake) for the take only, then `sf_snapshot_write` streams "
               "the image into a pipe drained by a thread of the process. fork(): the child "
               "`write(2)`s the memory into the same kind of pipe while the parent mutates (a pipe, "
               "not /dev/null: a write to /dev/null reads no page, so the child would save nothing). "
               "Without a save: the same mutator, untracked, for as long as a save took. One "
               "unmeasured save, then median of %d." % (mib, q["reps"]), ""]
        tpos = len(md)
        f = R.get(scenario="bg-save", mech="fork", mib=mib)
        note_skip(f, "bg-save fork")
        fp = v_of(f, "pause_ms")
        rows = []
        cats, tr = ["fork()"], [None if v_of(f, "throughput_ratio") is None else 100 * v_of(f, "throughput_ratio")]
        for e in q["engines"]:
            d = R.get(scenario="bg-save", mech=e, mib=mib)
            note_skip(d, "bg-save %s" % e)
            k = engine_kind(e, d)
            lab = engine_label(e, d)
            t.add("bg-save %d MiB: %s mutator throughput during the save vs without" % (mib, lab),
                  figure(d, "ops_per_s_save", "ops/s"), figure(d, "ops_per_s_base", "ops/s"), "sf/base",
                  (">=", 0.5) if k == "mirror" else None, e, "without save")
            t.add("bg-save %d MiB: %s kept throughput vs fork's" % (mib, lab),
                  figure(d, "throughput_ratio", "%", 100.0), figure(f, "throughput_ratio", "%", 100.0),
                  "sf/base", (">=", 0.5) if k == "cow" else None, e, "fork()")
            t.add("bg-save %d MiB: %s longest stall vs fork's pause" % (mib, lab), figure(d, "stall_ms", "ms"),
                  (fmt(fp, "ms") if fp is not None else status_text(f), fp), "sf/base",
                  ("<=", 1 / 3.0) if k else None, e, "fork() pause")
            cats.append(e)
            tr.append(None if v_of(d, "throughput_ratio") is None else 100 * v_of(d, "throughput_ratio"))
        for e in ["fork"] + q["engines"]:
            d = R.get(scenario="bg-save", mech=e, mib=mib)
            rows.append([engine_label(e, d), figure(d, "save_ms", "ms")[0], figure(d, "pause_ms", "ms")[0],
                         figure(d, "handshake_ms", "ms")[0], figure(d, "ops_per_s_save")[0],
                         figure(d, "ops_per_s_base")[0], figure(d, "throughput_ratio", "%", 100.0)[0],
                         figure(d, "stall_ms", "ms")[0], figure(d, "base_stall_ms", "ms")[0]])
        md += [md_table(["side", "save", "fork/take pause", "handshake", "ops/s in save", "ops/s without",
                         "kept", "longest stall", "longest stall w/o save"], rows), ""]
        svg_panels.append(lambda y, c=cats, v=tr: svg_bar_panel(
            y, "bg-save: mutator throughput during the save, % of without", c, [("%", v)], "%", log=False))

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    if "engine-memory" in parts:
        t = parts_table.append(Table()) or parts_table[-1]
        q = p["memory"]
        mib = q["mib"]
        md += ["#### engine-memory: memory per tracked GiB", "",
               "%d MiB resident. From sf_tracker_stats (metadata_bytes, store_bytes; further "
               "members printed as `sf_*` when the library has them, see bench/meson.build) and "
               "VmRSS growth over the filled region alone: after sf_track (and the pre-copy wait), "
               "with one live snapshot after 1%% written, with two live after another 1%%. fork(): "
               "the child's page tables (VmPTE), and Pss_Anon of parent + child after 1%% written, "
               "over the parent's before the fork." % mib, ""]
        tpos = len(md)
        rows = []
        for e in ["fork"] + q["engines"]:
            d = R.get(scenario="engine-memory", mech=e, mib=mib)
            note_skip(d, "engine-memory %s" % e)
            more = " ".join("%s=%s" % (k2, v) for k2, v in (d or {}).items()
                            if k2.startswith("sf_") and k2 not in (
                                "sf_faults", "sf_spurious", "sf_unprotected", "sf_copies", "sf_degraded",
                                "sf_vma_estimate", "sf_store_bytes", "sf_metadata_bytes"))
            rows.append([engine_label(e, d), figure(d, "metadata_per_gib", "MiB", 1 / 1048576.0)[0],
                         figure(d, "store_per_gib", "MiB", 1 / 1048576.0)[0],
                         figure(d, "rss_track_per_gib", "MiB", 1 / 1048576.0)[0],
                         figure(d, "rss_live_per_gib", "MiB", 1 / 1048576.0)[0],
                         figure(d, "rss_two_per_gib", "MiB", 1 / 1048576.0)[0]
                         if v_of(d, "rss_two_per_gib") not in (None, -1.0) else "", more])
        md += [md_table(["engine", "metadata / GiB", "store / GiB (1 live, 1%)", "RSS after track / GiB",
                         "RSS 1 live / GiB", "RSS 2 live / GiB", "other stats"], rows), ""]

        md[tpos:tpos] = [t.md(), ""] if t.rows else []

    T.goals = [g for tt in parts_table for g in tt.goals]
    if skipped:
        md += ["Rows that did not run:", "", md_table(["row", "status", "reason"], skipped), ""]
    if not svg_panels:
        svg_panels = [lambda y: svg_bar_panel(y, "no data", ["-"], [("", [None])], "")]
    svg = svg_doc("9. Snapshot engines", svg_panels)
    return "\n".join(md), svg, T


REPORTS = [("fault", "fault", rep_fault), ("collect", "collect", rep_collect), ("pause", "pause", rep_pause),
           ("bgsave", "bgsave", rep_bgsave), ("rollback", "rollback", rep_rollback),
           ("stall", "stall", rep_stall), ("stall", "scaling", rep_scaling), ("memory", "memory", rep_memory),
           ("engines", "engines", rep_engines)]


# ---------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def machine():
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = read("/proc/meminfo").splitlines()
    memtotal = mem[0].split(":")[1].strip() if mem else "?"
    cmdline = read("/proc/cmdline")
    virt = []
    for w in ("pvm", "pti=on"):
        if w in cmdline:
            virt.append(w)
    git = sh(["git", "rev-parse", "--short", "HEAD"])
    return {
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "cpu": "%s, %d CPUs" % (cpu, os.cpu_count() or 0),
        "memory": memtotal,
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "kernel cmdline hints": ", ".join(virt) or "none",
        "commit": git.stdout.strip() if git.returncode == 0 else "(no commit yet)",
    }


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="reduced sizes, < 2 min (default)")
    g.add_argument("--full", action="store_true", help="the goals' sizes, < 15 min")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest"),
                    help="folder for the SVGs, results.md and the raw RESULT log")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"),
                    help="where <date>-<host>.md is written")
    ap.add_argument("--sfbench", help="use this sfbench binary, do not build")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS)
                    + "; or parts of engines: " + ",".join(ENGINE_PARTS))
    ap.add_argument("--rounds", type=int, help="override interleaved rounds per scenario")
    ap.add_argument("--from-log", help="re-render tables from a previous results.txt, run nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs and exit")
    a = ap.parse_args()
    mode = "full" if a.full else "quick"
    P = MODES[mode]
    only = a.only.split(",") if a.only else SCENARIOS
    parts = [s for s in only if s in ENGINE_PARTS]
    if parts:
        only = [s for s in only if s not in ENGINE_PARTS]
        if "engines" not in only:
            only.append("engines")
            P["engines"]["parts"] = parts
    for s in only:
        if s not in SCENARIOS:
            ap.error("unknown scenario %s (or an engines part: %s)" % (s, ",".join(ENGINE_PARTS)))
    if a.rounds:
        for s in P:
            if "rounds" in P[s]:
                P[s]["rounds"] = a.rounds

    plan = [(s, jobs_for(s, P[s]), P[s].get("rounds", 1)) for s in SCENARIOS if s in only]
    if a.dry_run:
        for s, J, r in plan:
            for argv, t in J:
                print("%s x%d: %s" % (s, r, " ".join(argv)))
        return 0

    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.results_dir, exist_ok=True)
    t_start = time.monotonic()
    rows = []
    built = ""
    if a.from_log:
        with open(a.from_log) as f:
            rows = [parse_result(l) for l in f if l.startswith("RESULT ")]
        calibs = [d for d in rows if d.get("scenario") == "calib"]
        if len(calibs) > 1:
            calibs[-1]["scenario"] = "calib-end"
        meta = [d for d in rows if d.get("scenario") == "meta"]
        built = meta[-1].get("binary", "?") if meta else "unknown"
        built += " (re-rendered from %s)" % os.path.basename(a.from_log)
    else:
        if a.sfbench:
            exe, built = os.path.abspath(a.sfbench), "given: " + a.sfbench
        else:
            log("building in %s ..." % a.build_dir)
            exe, built = build(a.build_dir)
        log("binary: %s (%s)" % (exe, built))
        logpath = os.path.join(a.out, "results.txt")
        with open(logpath, "w") as logf:
            for argv in (["probe"], ["calib"]):
                rr, _, _ = run_job(exe, argv, 60, logf)
                rows += rr
            for s, J, rounds in plan:
                for r in range(rounds):
                    for argv, timeout in J:
                        rr, dt, rc = run_job(exe, argv, timeout, logf)
                        rows += rr
                        brief = ", ".join("%s" % d.get("status") for d in rr)
                        log("[%5.0fs] %s (%.1fs) %s" % (time.monotonic() - t_start, " ".join(argv), dt, brief))
            rr, _, _ = run_job(exe, ["calib"], 60, logf)  # the machine may change during the run
            for d in rr:
                d["scenario"] = "calib-end"
            rows += rr
            elapsed = time.monotonic() - t_start
            # read back by --from-log, so a re-rendered report keeps its header
            logf.write('RESULT scenario=meta mode=%s elapsed_s=%.0f binary="%s" commit=%s\n'
                       % (mode, elapsed, built, machine()["commit"].replace(" ", "_")))
    meta = [d for d in rows if d.get("scenario") == "meta"]
    elapsed = num(meta[-1].get("elapsed_s")) if meta else time.monotonic() - t_start
    R = Results(aggregate(rows))

    mi = machine()
    if meta and meta[-1].get("commit"):
        mi["commit"] = meta[-1]["commit"]  # the commit measured, not the one re-rendering
    date = datetime.date.today().isoformat()
    name = "%s-%s%s.md" % (date, mi["host"], "" if mode == "full" else "-quick")
    md_path = os.path.join(a.results_dir, name)
    rel = os.path.relpath(a.out, a.results_dir)
    probe, sfprobe = R.get(scenario="probe"), R.get(scenario="sfprobe")
    cal, cal2 = R.get(scenario="calib"), R.get(scenario="calib-end")
    out = ["# snapfault benchmark results (%s mode)" % mode, "",
           "Produced by `bench/run.py --%s` in %.0f s on %s. Binary: %s." % (mode, elapsed, date, built), "",
           md_table(["machine", ""], [[k, v] for k, v in mi.items()]), ""]
    if probe:
        out += ["Kernel mechanisms: uffd features %s, WP_ASYNC %s, WP_UNPOPULATED %s, PAGEMAP_SCAN %s, "
                "vm.max_map_count %s." % (probe.get("uffd_features"), probe.get("wp_async"),
                                          probe.get("wp_unpopulated"), probe.get("pagemap_scan"),
                                          probe.get("max_map_count")), ""]
    if sfprobe and sfprobe.get("status") == "ok":
        out += ["snapfault sf_probe: AUTO tracking = %s, AUTO with snapshots = %s, uffd-sync delivery = %s."
                % (sfprobe.get("auto_tracking"), sfprobe.get("auto_snapshots"), sfprobe.get("sync_mode")), ""]
    if cal:
        crow = [["bare syscall", fmt(v_of(cal, "syscall_ns"), "ns"), fmt(v_of(cal2, "syscall_ns"), "ns"), "170 ns"],
                ["signal raise + return", fmt(v_of(cal, "raise_ns"), "ns"), fmt(v_of(cal2, "raise_ns"), "ns"), "3.1 us"],
                ["first touch of an anonymous page", fmt(v_of(cal, "first_touch_ns"), "ns"),
                 fmt(v_of(cal2, "first_touch_ns"), "ns"), ""],
                ["store to a resident page", fmt(v_of(cal, "resident_write_ns"), "ns"),
                 fmt(v_of(cal2, "resident_write_ns"), "ns"), "18 ns"],
                ["mprotect(PROT_READ) of 64 MiB", fmt(v_of(cal, "mprotect_64mib_ms"), "ms"),
                 fmt(v_of(cal2, "mprotect_64mib_ms"), "ms"), "~1 ms (3.9 ms / 256 MiB)"]]
        out += ["Kernel entry costs at the start and the end of this run, next to FIELD-NOTES.md "
                "(absolute figures move with the VM; compare ratios, which come from the same run):", "",
                md_table(["cost", "start of run", "end of run", "FIELD-NOTES"], crow), ""]
    if mode == "quick":
        out += ["Quick mode shrinks sizes (named in each section); run `--full` for the goals' sizes.", ""]
    goals = []
    sections = []
    for scn, fname, fn in REPORTS:
        if scn not in only:
            continue
        md, svg, T = fn(R, P[scn])
        with open(os.path.join(a.out, fname + ".svg"), "w") as f:
            f.write(svg)
        sections += [md, "", "![%s](%s/%s.svg)" % (fname, rel, fname), ""]
        if T:
            goals += T.goals
    if goals:
        out += ["## Goals", "", md_table(["goal", "ratio", "target", "verdict"],
                                         [[w, "—" if r is None else "%.2fx" % r, g, v] for w, r, g, v in goals]),
                "", "Ratios are from the same run; `n/a`: one side unsupported, not built or failed "
                "(see the section).", ""]
    out += ["## Scenarios", ""] + sections
    text = "\n".join(out) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text.replace("](%s/" % rel, "]("))
    log("wrote %s and %s/ (%.0f s)" % (md_path, a.out, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
