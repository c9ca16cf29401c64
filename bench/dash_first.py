"""How long until the dashboard first shows the tree, and what CPU it spends to get there?

On the 201-process tree of `bench.dash` (its ``ActorTree``), ``tractor-diag dash
ROOT`` is started in a pty (its ``Program``) ``BENCH_FIRST_ROUNDS`` times
(default 10) and timed from the spawn until its output shows ``spawner_0``;
the process's CPU time (utime + stime, every thread) is read at that moment.

``BENCH_FIRST_BEFORE=DIR``: a checkout of an earlier commit, started the same
way in the same rounds, interleaved (which one goes first alternates), so both
meet the same box; the bare Textual app of `bench.dash` (the floor of any
Textual dashboard) is timed in the same rounds, to its first label.
``BENCH_FIRST_SPIN=N``: N busy-looping processes run meanwhile (started and
stopped here), to see the start under load.

Target (issue 12): first frame <= 1.5 s.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.dash import _FLOOR_TEXTUAL, ActorTree, Program, _box, _cpu_seconds

ROUNDS = int(os.environ.get("BENCH_FIRST_ROUNDS", "10"))
BEFORE = os.environ.get("BENCH_FIRST_BEFORE")
SPIN = int(os.environ.get("BENCH_FIRST_SPIN", "0"))
HERE = Path(__file__).resolve().parent.parent


def _start(checkout: Path | None, root: int) -> tuple[float, float]:
    """-> (seconds to the first frame with the tree, CPU seconds by then);
    ``checkout`` None: the bare Textual app of `bench.dash` (its first label)."""
    # -P: not the working directory first on sys.path, the checkout given;
    # bytecode cached, as an installed package has it (compiling the package
    # at every start would be most of what differs between two checkouts)
    env = ["env", "-u", "PYTHONDONTWRITEBYTECODE"]
    if checkout is None:
        prog = Program("floor", [*env, sys.executable, "-c", _FLOOR_TEXTUAL], "floor")
    else:
        prog = Program("dash", [*env, f"PYTHONPATH={checkout}", sys.executable, "-P", "-m",
                                "tractor_diag", "dash", str(root)], "spawner_0")
    try:
        cpu = _cpu_seconds(prog.pid)
    finally:
        prog.stop()
    return prog.first, cpu


def main() -> list[dict]:
    runs: dict[str, Path | None] = {"now": HERE}
    if BEFORE:
        runs["before"] = Path(BEFORE).resolve()
    runs["floor"] = None
    spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(SPIN)]
    tree = ActorTree()
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    loads = []
    try:
        for checkout in runs.values():
            _start(checkout, tree.root.pid)  # untimed: bytecode written, files cached
        time.sleep(2)
        for i in range(ROUNDS):
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in order:
                loads.append(_box()[0])
                got[name].append(_start(runs[name], tree.root.pid))
                time.sleep(1)
            line = ", ".join(f"{k} {got[k][-1][0] * 1000:.0f} ms (CPU {got[k][-1][1] * 1000:.0f} ms)"
                             for k in runs)
            print(f"[bench] dash_first: round {i + 1}/{ROUNDS} (load {loads[-1]:.1f}): {line}",
                  file=sys.stderr)
    finally:
        tree.stop()
        for p in spinners:
            p.kill()
            p.wait()
    load = statistics.median(loads)
    rows = []
    for name in runs:
        wall = statistics.median(w for w, _ in got[name]) * 1000
        cpu = statistics.median(c for _, c in got[name]) * 1000
        row = {"case": f"dash first frame ({name}), 201 procs, {SPIN} spinners",
               "median_ms": wall, "cpu_ms": cpu, "load": load, "target": "<= 1500 ms",
               "ok": wall <= 1500, "rounds": got[name]}
        if name == "floor":
            row.update(case=f"bare Textual app, first label, {SPIN} spinners", target=None,
                       ok=None)
        if name == "now" and "before" in runs:
            before = statistics.median(w for w, _ in got["before"]) * 1000
            row.update(baseline="before", baseline_ms=before, ratio=wall / before)
        rows.append(row)
        print(f"[bench] dash_first: {name}: median {wall:.0f} ms, CPU {cpu:.0f} ms "
              f"(load {load:.1f}, {SPIN} spinners)", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for row in main():
        print({k: v for k, v in row.items() if k != "rounds"})
