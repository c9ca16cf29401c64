"""How long does a full ``stacks`` capture of a hung tree take?

Real current-runtime-style actor trees (``tests/trees/current_tree.py``,
every actor armed with a SIGUSR1 task dumper, leaves stuck in a sync
``time.sleep``) of 20 and 50 processes. For each, interleaved round by round
so drift hits all equally:

- ``stacks``: `tractor_diag.stacks.capture` of the tree as the verb runs it
  (one /proc pass for the snapshot, kernel side, ``py-spy dump --json`` of
  every pid concurrently, SIGUSR1 task trees collected), and the same with
  ``--no-tasks`` (reported, no target);
- baseline: ``py-spy dump --pid N`` for every pid of the tree, one after
  the other, as a shell loop would (pids known in advance).

Then ``tractor-diag dump-all`` of the 50-process tree as a whole process
(import, snapshot, capture, writing the bundle), wall time.

Targets: ``stacks`` <= 0.5x the sequential baseline; ``dump-all`` of the
50-process tree <= 3 s.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from trees.harness import CURRENT_SCRIPT, Tree  # noqa: E402

from tractor_diag.trees import snapshot_for  # noqa: E402
from tractor_diag.stackmodel import StacksOptions  # noqa: E402
from tractor_diag.pyspy import find_py_spy  # noqa: E402
from tractor_diag.stacks import capture  # noqa: E402

SIZES = (20, 50)
REPEAT = int(os.environ.get("BENCH_REPEAT", "7"))
DUMP_ALL_REPEAT = int(os.environ.get("BENCH_DUMP_ALL_REPEAT", "5"))


def start_tree(n: int, workdir: Path) -> Tree:
    """A root with n-1 leaves (depth 1: every process a real armed actor)."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(workdir))
    argv = [sys.executable, str(CURRENT_SCRIPT), "--depth", "1", "--breadth", str(n - 1),
            "--hang", "sleep"]
    tree = Tree(argv, kind="current", depth=1, breadth=n - 1, hang="sleep", env=env,
                log_dir=workdir, bindspace=workdir / "tractor")
    try:
        tree.wait_ready(120)
    except BaseException:
        tree.stop()
        raise
    return tree


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def bench_tree(tree: Tree, n: int, py_spy: str) -> list[dict]:
    pids = tree.pids()
    assert len(pids) == n, f"tree has {len(pids)} processes, wanted {n}"
    full, no_tasks, seq = [], [], []

    collected: list[int] = []

    def ours(tasks: bool) -> None:
        report = capture(snapshot_for([str(tree.root)], strays=False),
                         StacksOptions(tasks=tasks))
        got = sum(p.python.status == "ok" for p in report.procs)
        assert got == n, f"only {got}/{n} stacks"
        if tasks:
            collected.append(sum(p.tasks.status == "collected" for p in report.procs))

    def sequential() -> None:
        for pid in pids:
            subprocess.run([py_spy, "dump", "--pid", str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)

    ours(True)  # warm-up: imports, page cache
    for _ in range(REPEAT):
        seq.append(_timed(sequential))
        full.append(_timed(lambda: ours(True)))
        no_tasks.append(_timed(lambda: ours(False)))
    base = statistics.median(seq)
    rows = []
    for case, samples, target in (
        (f"stacks, {n} procs (py-spy + kernel + task trees)", full, 0.5),
        (f"stacks --no-tasks, {n} procs", no_tasks, None),
    ):
        med = statistics.median(samples)
        row = {"case": case, "median_ms": med, "baseline": "sequential py-spy dump per pid",
               "baseline_ms": base, "ratio": med / base, "n": len(samples)}
        if target is not None:
            row["target"] = f"<= {target}x"
            row["ok"] = med / base <= target
            # task trees collected per capture (min over the rounds), of n
            row["task_trees_min"] = min(collected)
        rows.append(row)
    return rows


def bench_dump_all(tree: Tree, n: int, workdir: Path) -> dict:
    out_dir = workdir / "bundles"
    cmd = [sys.executable, "-m", "tractor_diag", "dump-all", "-o", str(out_dir), str(tree.root)]
    samples = []
    for _ in range(DUMP_ALL_REPEAT):
        samples.append(_timed(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)))
    med = statistics.median(samples)
    return {"case": f"tractor-diag dump-all, {n} procs (whole process)", "median_ms": med,
            "target": "<= 3000 ms", "ok": med <= 3000, "n": len(samples)}


def main() -> list[dict]:
    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not found: the benchmark needs it")
    rows: list[dict] = []
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="bst-", dir="/tmp") as tmp:
            workdir = Path(tmp)
            tree = start_tree(n, workdir)
            try:
                rows += bench_tree(tree, n, py_spy)
                if n == max(SIZES):
                    rows.append(bench_dump_all(tree, n, workdir))
            finally:
                tree.stop()
    return rows


if __name__ == "__main__":
    for row in main():
        print(row)
