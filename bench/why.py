"""How long does ``why`` take, against ``dump-all`` of the same tree?

A real current-runtime-style tree of 50 processes (``bench.stacks.start_tree``:
a root and 49 armed leaves stuck in a sync ``time.sleep``). Round by round,
interleaved so drift hits both alike, as whole processes (import, snapshot,
two kernel samples around the capture, py-spy and task trees of every
process, the rules; dump-all also writes its bundle, which holds the same
diagnosis):

- ``tractor-diag why ROOT``
- baseline: ``tractor-diag dump-all ROOT`` of the same tree.

Target: ``why`` <= 1.2x ``dump-all``. Each run also checks that ``why``
named all 49 sleeping leaves, so a fast run that judged nothing cannot pass.

Then, in-process, what the diagnosis adds to a capture (reported, no
target): `diagnosis.examine` (two kernel samples, the IPC graph, the
bindspace scan, the rules) against `stacks.capture` alone, same snapshot.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stacks import _timed, start_tree

N = 50
REPEAT = int(os.environ.get("BENCH_WHY_REPEAT", "5"))
TARGET = 1.2


def main() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bwy-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        tree = start_tree(N, workdir)
        try:
            why = [sys.executable, "-m", "tractor_diag", "why", "--json", str(tree.root)]
            dump = [sys.executable, "-m", "tractor_diag", "dump-all", "-o",
                    str(workdir / "bundles"), str(tree.root)]
            ours, base, named = [], [], []

            def run_why() -> None:
                out = subprocess.run(why, check=True, capture_output=True).stdout
                named.append(sum(1 for c in json.loads(out)["chains"]
                                 if c["cause"]["kind"] == "sync-blocked"))

            # Each run meets the tree left alone for a while, as a user meets
            # a hung tree: a capture wakes every process it attaches to, and
            # a sync call that ran within SYNC_BLOCKED_AFTER of a capture is
            # looked at again a second later. Back to back, whichever tool
            # ran second paid that second for the first one's wake-ups (why
            # 2.4x dump-all in one order, the reverse in the other).
            from tractor_diag.diagnosis.rules import LOOK_AGAIN, SYNC_BLOCKED_AFTER

            settle = SYNC_BLOCKED_AFTER + LOOK_AGAIN

            for _ in range(REPEAT):
                time.sleep(settle)
                ours.append(_timed(run_why))
                time.sleep(settle)
                base.append(_timed(lambda: subprocess.run(dump, check=True,
                                                          stdout=subprocess.DEVNULL)))
            inner = _in_process(tree.root)
        finally:
            tree.stop()
    med, bmed = statistics.median(ours), statistics.median(base)
    return [inner, {
        "case": f"tractor-diag why, {N} procs (whole process)", "median_ms": med,
        "baseline": f"dump-all, {N} procs", "baseline_ms": bmed, "ratio": med / bmed,
        "target": f"<= {TARGET}x", "ok": med / bmed <= TARGET and min(named) == N - 1,
        "n": len(ours), "verdicts_min": min(named),
    }]


def _in_process(root: int) -> dict:
    from tractor_diag.trees import snapshot_for
    from tractor_diag.diagnosis import examine
    from tractor_diag.stacks import capture

    snap = snapshot_for([str(root)], strays=False)
    ours, base = [], []
    for _ in range(REPEAT):
        ours.append(_timed(lambda: examine(snap)))
        base.append(_timed(lambda: capture(snap)))
    med, bmed = statistics.median(ours), statistics.median(base)
    return {"case": f"diagnosis.examine, {N} procs (in process)", "median_ms": med,
            "baseline": "stacks.capture alone", "baseline_ms": bmed, "ratio": med / bmed,
            "n": len(ours)}


if __name__ == "__main__":
    for row in main():
        print(row)
