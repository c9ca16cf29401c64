"""What does the dashboard's quiet re-judge of drawn waits-on chains cost?

After ``w`` the dashboard keeps each drawn chain true: every
``ChainWatch.refresh`` seconds (30) a tree with chains drawn is due for a
quiet new why. A real current-runtime-style tree of ``BENCH_REJUDGE_N``
processes (default 50: ``bench.stacks.start_tree``, a root and armed leaves
stuck in a sync ``time.sleep``, each leaf the bottom of a chain) is judged
once as ``w`` does (`key_jobs.why`), then, round by round:

- full: the quiet why the dashboard ran every period before
  (`key_jobs.why(quiet=True)`: py-spy and a task tree of every process);
- rejudge: what it runs now (`key_jobs.rejudge` with the evidence the
  last why left): when no process of the chains ran since, a reading of
  their threads' kernel state instead of the capture.

CPU of this process (every thread: the job runs in a worker thread), of
the py-spy children it waited for, and of the tree's own processes (the
task-tree signal makes each of them write a dump), per re-judge; and the
same spread over the period, as % of one core: the dashboard's whole
budget is ~3% of a core (0.3x htop, issue 12's box).
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

N = int(os.environ.get("BENCH_REJUDGE_N", "50"))
REPEAT = int(os.environ.get("BENCH_REJUDGE_REPEAT", "5"))
PERIOD = 30.0
TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pids) -> float:
    """Seconds of CPU the processes ``pids`` spent, all threads."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _measure(fn, pids) -> dict:
    import trio

    me0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree0 = _tree_cpu(pids)
    wall0 = time.perf_counter()
    result = trio.run(fn)
    wall = time.perf_counter() - wall0
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "result": result,
        "wall": wall,
        "self": (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime),
        "py_spy": (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime),
        "tree": _tree_cpu(pids) - tree0,
    }


def main() -> list[dict]:
    from bench.stacks import start_tree
    from tractor_diag.tui import key_jobs
    from tractor_diag.tui.messages import ActionDone, Unchanged

    with tempfile.TemporaryDirectory(prefix="brj-", dir="/tmp") as tmp:
        tree = start_tree(N, Path(tmp))
        try:
            pids = tree.pids()
            root = tree.root
            first = _measure(lambda: key_jobs.why(root, None), pids)["result"]
            assert isinstance(first, ActionDone) and first.ok, first.summary
            chains = len(first.judged)
            assert chains >= N - 1, f"only {chains} chains judged"
            full, fast, skipped = [], [], 0
            evidence = first.evidence
            for _ in range(REPEAT):
                m = _measure(lambda: key_jobs.why(root, None, quiet=True), pids)
                full.append(m)
                evidence = m["result"].evidence
                time.sleep(1.0)
                m = _measure(lambda: key_jobs.rejudge(root, None, evidence), pids)
                fast.append(m)
                skipped += isinstance(m["result"], Unchanged)
                if not isinstance(m["result"], Unchanged):
                    evidence = m["result"].evidence
        finally:
            tree.stop()

    def row(case: str, runs: list[dict], **more) -> dict:
        cpu = [r["self"] + r["py_spy"] + r["tree"] for r in runs]
        med = statistics.median(cpu)
        return {
            "case": case,
            "median_ms": med * 1000,
            "wall_ms": statistics.median(r["wall"] for r in runs) * 1000,
            "dash_ms": statistics.median(r["self"] for r in runs) * 1000,
            "py_spy_ms": statistics.median(r["py_spy"] for r in runs) * 1000,
            "tree_ms": statistics.median(r["tree"] for r in runs) * 1000,
            "core_percent_over_period": 100 * med / PERIOD,
            **more,
        }

    full_row = row(f"quiet why, {N} processes, {chains} chains (before)", full)
    fast_row = row(f"rejudge, nothing ran ({skipped}/{REPEAT} skipped)", fast,
                   baseline="quiet why", baseline_ms=full_row["median_ms"])
    fast_row["ratio"] = fast_row["median_ms"] / full_row["median_ms"]
    for r in (full_row, fast_row):
        print(f"{r['case']}: CPU {r['median_ms']:.0f} ms (dashboard {r['dash_ms']:.0f}, "
              f"py-spy {r['py_spy_ms']:.0f}, tree {r['tree_ms']:.0f}), wall {r['wall_ms']:.0f} ms, "
              f"{r['core_percent_over_period']:.2f}% of a core over {PERIOD:.0f} s")
    return [full_row, fast_row]


if __name__ == "__main__":
    main()
