"""What do the socket tables add to a snapshot pass?

On a real 100-process tree (built like ``bench/ptree.py``: a python root,
``sh`` groups, ``sleep`` leaves), in the same run and interleaved round by
round:

- baseline: ``trees.take_snapshot`` of the tree, as ``ptree`` took it
  before it showed listening addresses;
- ``+ listeners``: the same plus ``ipc.annotate`` (listeners-only socket
  tables by sock_diag, and the fd join of the tree's endpoints), what
  ``ptree`` now pays. Target: <= 1.3x the baseline;
- ``+ IPC graph``: the same plus ``ipc.graph`` (every TCP and Unix socket
  with peers), what ``dump-all`` pays (reported, no target);
- ``+ IPC graph, every process joined``: the graph with all 100 processes
  joined (``pids=``), the cost of a tree made only of Python processes
  (reported, no target).
"""
from __future__ import annotations

import os
import statistics
import time

from tractor_diag import ipc, procfs, trees

from .ptree import REPEAT, Tree, _timed

N = 100


def main() -> list[dict]:
    if not procfs.HAVE_PROCFS:
        raise RuntimeError("the sockets benchmark needs Linux /proc")
    tree = Tree(N)
    try:
        targets = trees.Targets([tree.root.pid])
        snap = trees.take_snapshot(targets)
        if len(snap.entries) < N:
            raise RuntimeError(f"snapshot saw {len(snap.entries)} of {N} processes")
        everyone = list(snap.entries)

        def base():
            trees.take_snapshot(targets)

        def listeners():
            ipc.annotate(trees.take_snapshot(targets))

        def graph():
            ipc.graph(trees.take_snapshot(targets))

        def graph_all():
            ipc.graph(trees.take_snapshot(targets), pids=everyone)

        cases = [base, listeners, graph, graph_all]
        for fn in cases * 3:  # warm caches
            fn()
        times: dict = {fn: [] for fn in cases}
        cpu: dict = {fn: [] for fn in cases}
        for _ in range(REPEAT * 2):
            for fn in cases:
                c0 = time.process_time()
                times[fn].append(_timed(fn))
                cpu[fn].append((time.process_time() - c0) * 1000.0)
        med = {fn: statistics.median(t) for fn, t in times.items()}
        med_cpu = {fn: statistics.median(t) for fn, t in cpu.items()}
        joined = len(ipc.endpoints(snap))
        box = sum(1 for n in os.listdir("/proc") if n.isdigit())
    finally:
        tree.stop()
    b = med[base]
    row = {"baseline": f"snapshot pass (box {box})", "baseline_ms": b, "n": REPEAT * 2}
    return [
        {"case": f"snapshot + listeners ({joined} of {N} procs joined)", "median_ms": med[listeners],
         "ratio": med[listeners] / b, "target": "<= 1.3x", "ok": med[listeners] <= 1.3 * b, **row},
        {"case": f"snapshot + IPC graph ({joined} of {N} joined)", "median_ms": med[graph],
         "ratio": med[graph] / b, **row},
        {"case": f"snapshot + IPC graph, all {N} joined", "median_ms": med[graph_all],
         "ratio": med[graph_all] / b, **row},
        # the same in CPU time of this process: steadier on a busy box,
        # where wall time mostly measures waiting for a core
        {"case": "snapshot + listeners, CPU time", "median_ms": med_cpu[listeners],
         "baseline": "snapshot pass, CPU time", "baseline_ms": med_cpu[base],
         "ratio": med_cpu[listeners] / med_cpu[base], "target": "<= 1.3x",
         "ok": med_cpu[listeners] <= 1.3 * med_cpu[base], "n": REPEAT * 2},
        {"case": "snapshot + IPC graph, CPU time", "median_ms": med_cpu[graph],
         "baseline": "snapshot pass, CPU time", "baseline_ms": med_cpu[base],
         "ratio": med_cpu[graph] / med_cpu[base], "n": REPEAT * 2},
    ]
