"""Whole processes, as users run them, beside what they would type instead.

Every figure here is a whole program started from a shell-like
``subprocess.run`` (interpreter start, imports, work, exit), timed in the
same run as its alternatives, interleaved round by round so the box's load
drifts over all of them alike. The 1-minute load average is recorded beside
each case (the box is shared): read ratios, not milliseconds.

- ``stacks``: ``tractor-diag stacks ROOT`` on released-runtime actor trees
  (``tests/trees/released_tree.py``, depth 1: the root and n-1 leaves stuck
  in a sync ``time.sleep``) of 20 and 50 processes, against
  ``for pid in ROOT $(pgrep -P ROOT); do py-spy dump --pid $pid; done`` and
  ``{ echo ROOT; pgrep -P ROOT; } | xargs -P2 -n1 py-spy dump --pid``
  (the same py-spy binary), and the same with ``setsid -w`` before each
  dump: ours run each in its own session (so a timeout kills it whole), and
  with the kernel's scheduler autogroups (``sched_autogroup_enabled``) a
  session gets its own share of a loaded box's CPUs. Wall time and CPU time (the children's
  ``rusage``) both.
- ``ptree``: ``tractor-diag ptree ROOT`` (the installed console script) on
  trees of 100 and 1000 processes
  (``bench.ptree.Tree``: sh groups of sleeps) against ``pstree -p ROOT``
  and ``python -c pass`` of the interpreter running tractor-diag; also
  ``ptree --no-strays ROOT`` (reads the given tree alone, not every
  process) and ``python -c 'import re'`` (what a console-script wrapper
  that imports ``re`` adds; pip's current wrapper does not, and argparse
  imports it anyway). Judged on the least CPU of the rounds, ours against
  the baseline's (and the least wall time against ``pstree``): medians are
  reported too. ``BENCH_PTREE_SIZES`` picks the sizes (default 100,1000).
- ``dash``: ``tractor-diag dash ROOT`` in a pty on the 200-process tree of
  ``bench.dash`` for ``BENCH_DASH_RSS_SECONDS`` (default 300); its RSS every
  30 s, to see the end value and whether it stays flat.

``BENCH_WHOLE`` picks the parts (default ``stacks,ptree,dash``).

The stacks rows also set both against the floor of one py-spy per pid:
the sequential loop's CPU (py-spy's own) spread over every core.

Targets: stacks <= 0.9x ``xargs -P2`` at 20 and 50; ptree at 100 processes
<= 2.5x ``python -c pass``; ptree at 1000 <= 1.3x ``pstree -p``; dashboard
RSS after 5 minutes <= 80 MB and flat (the last half grows < 5 %).
"""
from __future__ import annotations

import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PARTS = os.environ.get("BENCH_WHOLE", "stacks,ptree,dash").split(",")
STACK_SIZES = (20, 50)
STACK_REPEAT = int(os.environ.get("BENCH_STACKS_REPEAT", "5"))
# also time `stacks --jobs N` for each N listed (default parallelism vs fixed)
STACK_JOBS = [int(j) for j in os.environ.get("BENCH_STACKS_JOBS", "8").split(",") if j]
PTREE_SIZES = tuple(int(n) for n in os.environ.get("BENCH_PTREE_SIZES", "100,1000").split(",") if n)
PTREE_REPEAT = int(os.environ.get("BENCH_PTREE_REPEAT", "15"))
DASH_SECONDS = float(os.environ.get("BENCH_DASH_RSS_SECONDS", "300"))
DASH_EVERY = 30.0


def _load() -> float:
    return os.getloadavg()[0]


def _user_env() -> dict[str, str]:
    """What a user's shell has: bytecode caching on (no
    PYTHONDONTWRITEBYTECODE, which a test environment may set), no colour."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall ms, CPU ms of the process and everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env, check=True)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000
    return wall, cpu


def _script(name: str) -> str:
    exe = BIN / name
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: is the project installed in this venv?")
    return str(exe)


def _compare(cases: dict[str, list[str]], repeat: int, env=None) -> dict[str, dict]:
    """Interleaved rounds of every case -> medians of wall and CPU, and the
    load seen over the rounds."""
    env = env or _user_env()
    for argv in cases.values():  # warm-up: page cache, bytecode
        _run(argv, env)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    loads = []
    for _ in range(repeat):
        for name, argv in cases.items():
            loads.append(_load())
            samples[name].append(_run(argv, env))
    return {name: {"wall": statistics.median(w for w, _ in s),
                   "cpu": statistics.median(c for _, c in s),
                   # the least a round took: what the program costs when
                   # nothing else on the box got in its way
                   "wall_min": min(w for w, _ in s), "cpu_min": min(c for _, c in s),
                   "walls": [round(w, 1) for w, _ in s],
                   "load": (round(min(loads), 1), round(max(loads), 1))}
            for name, s in samples.items()}


# -- stacks ----------------------------------------------------------------------

def _released_tree(n: int, workdir: Path):
    sys.path.insert(0, str(REPO / "tests"))
    from trees.harness import RELEASED_SCRIPT, Tree, ensure_tractor_venv, free_port

    python = ensure_tractor_venv()
    port = free_port()
    argv = [str(python), str(RELEASED_SCRIPT), str(port), "--depth", "1", "--breadth",
            str(n - 1), "--hang", "sleep", "--loglevel", "error"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", XDG_RUNTIME_DIR=str(workdir))
    tree = Tree(argv, kind="released", depth=1, breadth=n - 1, hang="sleep", port=port,
                env=env, log_dir=workdir, bindspace=workdir / "tractor")
    try:
        tree.wait_ready(180)
    except BaseException:
        tree.stop()
        raise
    return tree


def bench_stacks() -> list[dict]:
    from tractor_diag.pyspy import find_py_spy

    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not found: the benchmark needs it")
    spy = shlex.quote(py_spy)
    rows = []
    for n in STACK_SIZES:
        with tempfile.TemporaryDirectory(prefix="bwh-", dir="/tmp") as tmp:
            tree = _released_tree(n, Path(tmp))
            try:
                root = tree.root if isinstance(tree.root, int) else tree.root.pid
                got = len(tree.pids())
                if got != n:
                    raise RuntimeError(f"tree has {got} processes, wanted {n}")
                cases = {
                    "tractor-diag stacks ROOT": [_script("tractor-diag"), "stacks", str(root)],
                    "for pid; py-spy dump": ["sh", "-c", f"for pid in {root} $(pgrep -P {root}); "
                                             f"do {spy} dump --pid $pid; done"],
                    "xargs -P2 py-spy dump": ["sh", "-c", f"{{ echo {root}; pgrep -P {root}; }} | "
                                              f"xargs -P2 -n1 {spy} dump --pid"],
                    # each dump in its own session, as ours run: with the
                    # kernel's autogroups each session gets its own CPU share
                    "xargs -P2 setsid py-spy dump": [
                        "sh", "-c", f"{{ echo {root}; pgrep -P {root}; }} | "
                                    f"xargs -P2 -n1 setsid -w {spy} dump --pid"],
                }
                for j in STACK_JOBS:
                    cases[f"tractor-diag stacks --jobs {j} ROOT"] = [
                        _script("tractor-diag"), "stacks", "--jobs", str(j), str(root)]
                res = _compare(cases, STACK_REPEAT)
            finally:
                tree.stop()
        ours = res["tractor-diag stacks ROOT"]
        for base, target in (("xargs -P2 py-spy dump", 0.9), ("for pid; py-spy dump", None),
                             ("xargs -P2 setsid py-spy dump", None)):
            b = res[base]
            row = {"case": f"tractor-diag stacks ROOT, {n} procs", "median_ms": ours["wall"],
                   "baseline": base, "baseline_ms": b["wall"], "ratio": ours["wall"] / b["wall"],
                   "cpu_ms": ours["cpu"], "baseline_cpu_ms": b["cpu"],
                   "cpu_ratio": ours["cpu"] / b["cpu"], "load": ours["load"],
                   "walls": ours["walls"], "baseline_walls": b["walls"], "n": STACK_REPEAT}
            if target is not None:
                row["target"] = f"<= {target}x"
                row["ok"] = row["ratio"] <= target
            rows.append(row)
        # The floor with one py-spy per pid: every dump's CPU, spread over
        # every core with nothing else to do (the sequential loop's CPU is
        # py-spy's alone, bar one sh and one pgrep).
        cores = len(os.sched_getaffinity(0))
        floor = res["for pid; py-spy dump"]["cpu"] / cores
        for name in ("tractor-diag stacks ROOT", "xargs -P2 py-spy dump"):
            r = res[name]
            rows.append({"case": f"{name}, {n} procs, against the floor", "median_ms": r["wall"],
                         "baseline": f"sequential py-spy CPU / {cores} cores",
                         "baseline_ms": floor, "ratio": r["wall"] / floor,
                         "cpu_ms": r["cpu"], "baseline_cpu_ms": res["for pid; py-spy dump"]["cpu"],
                         "cpu_ratio": r["cpu"] / res["for pid; py-spy dump"]["cpu"],
                         "load": r["load"], "walls": r["walls"], "n": STACK_REPEAT})
        b = res["xargs -P2 py-spy dump"]
        for j in STACK_JOBS:
            r = res[f"tractor-diag stacks --jobs {j} ROOT"]
            rows.append({"case": f"tractor-diag stacks --jobs {j} ROOT, {n} procs",
                         "median_ms": r["wall"], "baseline": "xargs -P2 py-spy dump",
                         "baseline_ms": b["wall"], "ratio": r["wall"] / b["wall"],
                         "cpu_ms": r["cpu"], "baseline_cpu_ms": b["cpu"],
                         "cpu_ratio": r["cpu"] / b["cpu"], "load": r["load"],
                         "walls": r["walls"], "n": STACK_REPEAT})
        _say(rows[-5 - len(STACK_JOBS):])
    return rows


# -- ptree -----------------------------------------------------------------------

def bench_ptree() -> list[dict]:
    from bench.ptree import Tree

    pstree = shutil.which("pstree")
    rows = []
    env = _user_env()
    for n in PTREE_SIZES:
        tree = Tree(n)
        try:
            root = str(tree.root.pid)
            cases = {"tractor-diag ptree ROOT": [_script("tractor-diag"), "ptree", root],
                     "tractor-diag ptree --no-strays ROOT": [_script("tractor-diag"), "ptree",
                                                             "--no-strays", root],
                     "python -c pass": [sys.executable, "-c", "pass"],
                     # what a console-script wrapper that imports re would add
                     "python -c 'import re'": [sys.executable, "-c", "import re"]}
            if pstree:
                cases["pstree -p ROOT"] = [pstree, "-p", root]
            res = _compare(cases, PTREE_REPEAT, env)
        finally:
            tree.stop()
        # judged on the least CPU (and wall) of the rounds, ours against the
        # baseline's: the box is shared, and a round another program got in
        # the way of says nothing about either
        for name, base, target, also_wall in (
                ("tractor-diag ptree ROOT", "python -c pass", 2.5 if n == 100 else None, False),
                ("tractor-diag ptree ROOT", "pstree -p ROOT", 1.3 if n == 1000 else None, True),
                ("tractor-diag ptree --no-strays ROOT", "pstree -p ROOT", None, False),
                ("python -c 'import re'", "python -c pass", None, False)):
            if base not in res:
                print(f"[bench] whole: pstree not installed, no pstree row at {n}",
                      file=sys.stderr)
                continue
            r, b = res[name], res[base]
            row = {"case": f"{name}, {n} procs", "median_ms": r["wall"], "baseline": base,
                   "baseline_ms": b["wall"], "ratio": r["wall"] / b["wall"],
                   "cpu_ms": r["cpu"], "baseline_cpu_ms": b["cpu"],
                   "cpu_ratio": r["cpu"] / b["cpu"] if b["cpu"] else None,
                   "cpu_min_ms": r["cpu_min"], "baseline_cpu_min_ms": b["cpu_min"],
                   "cpu_min_ratio": r["cpu_min"] / b["cpu_min"] if b["cpu_min"] else None,
                   "wall_min_ms": r["wall_min"], "baseline_wall_min_ms": b["wall_min"],
                   "wall_min_ratio": r["wall_min"] / b["wall_min"],
                   "load": r["load"], "n": PTREE_REPEAT}
            if target is not None:
                row["target"] = f"<= {target}x min CPU" + (" and wall" if also_wall else "")
                row["ok"] = (row["cpu_min_ratio"] is not None and row["cpu_min_ratio"] <= target
                             and (not also_wall or row["wall_min_ratio"] <= target))
            rows.append(row)
            _say([row])
    return rows


# -- dashboard memory --------------------------------------------------------------

def bench_dash_rss() -> list[dict]:
    import pexpect

    from bench.dash import SIZE, ActorTree, _status_kib

    tree = ActorTree()
    try:
        n = len(tree.pids())
        env = dict(_user_env(), TERM="xterm-256color", COLUMNS=str(SIZE[1]), LINES=str(SIZE[0]))
        child = pexpect.spawn(_script("tractor-diag"), ["dash", "--interval", "1",
                                                       str(tree.root.pid)],
                              env=env, dimensions=SIZE, timeout=60, encoding="utf-8",
                              codec_errors="replace")
        stop = threading.Event()
        try:
            child.expect("spawner_0")

            def drain() -> None:  # a terminal keeps reading: so do we
                while not stop.is_set():
                    try:
                        child.read_nonblocking(65536, timeout=0.2)
                    except pexpect.TIMEOUT:
                        continue
                    except (pexpect.EOF, OSError, ValueError):
                        return

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            start = time.monotonic()
            series, loads = [], []
            while True:
                elapsed = time.monotonic() - start
                series.append((round(elapsed), round(_status_kib(child.pid, "VmRSS") / 1024, 1)))
                loads.append(_load())
                if elapsed >= DASH_SECONDS:
                    break
                time.sleep(min(DASH_EVERY, DASH_SECONDS - elapsed + 0.01))
            hwm = _status_kib(child.pid, "VmHWM") / 1024
        finally:
            stop.set()
            if child.isalive():
                child.send("q")
                try:
                    child.expect(pexpect.EOF, timeout=15)
                except pexpect.TIMEOUT:
                    pass
            if child.isalive():
                child.terminate(force=True)
    finally:
        tree.stop()
    end = series[-1][1]
    half = next(rss for t, rss in series if t >= DASH_SECONDS / 2)
    growth = (end - half) / half
    row = {"case": f"dash RSS MB after {DASH_SECONDS:g}s, {n} procs @1s", "median_ms": None,
           "value": end, "unit": "MB", "peak": hwm, "series": series,
           "growth_last_half": growth, "load": (round(min(loads), 1), round(max(loads), 1)),
           "target": "<= 80 MB, last half < 5 % growth",
           "ok": end <= 80 and growth < 0.05}
    print(f"[bench] whole: dash RSS (s, MB) {series}; peak {hwm:.1f} MB; load "
          f"{row['load']}", file=sys.stderr)
    return [row]


def _say(rows: list[dict]) -> None:
    for r in rows:
        print(f"[bench] whole: {r['case']}: {r['median_ms']:.0f} ms vs {r['baseline']} "
              f"{r['baseline_ms']:.0f} ms = {r['ratio']:.2f}x wall, CPU "
              f"{r['cpu_ms']:.0f} vs {r['baseline_cpu_ms']:.0f} ms"
              + (f"; least of {r['n']}: CPU {r['cpu_min_ms']:.1f} vs {r['baseline_cpu_min_ms']:.1f}"
                 f" ms = {r['cpu_min_ratio']:.2f}x, wall {r['wall_min_ratio']:.2f}x"
                 if r.get("cpu_min_ratio") is not None else "")
              + f"; load {r['load']}", file=sys.stderr)


def main() -> list[dict]:
    rows: list[dict] = []
    if "stacks" in PARTS:
        rows += bench_stacks()
    if "ptree" in PARTS:
        rows += bench_ptree()
    if "dash" in PARTS:
        rows += bench_dash_rss()
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
