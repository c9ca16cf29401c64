"""How fast is one classified snapshot of a process tree?

Real trees of about 20, 100 and 500 processes (a python root, ``sh`` groups
below it, ``sleep`` leaves below those) are built on this box; for each,
in the same run and interleaved round by round so drift hits all equally:

- ``trees.take_snapshot`` of the tree, as ``ptree`` takes it (the whole box
  is scanned once; the tree's processes also get their ``wchan``), and with
  ``full=True`` as the sampler and ``--json`` take it (+ ``status`` and
  ``cgroup`` per tree member; reported, no target);
- baseline (a): a minimal idiomatic loop reading ``/proc/*/stat`` and
  ``cmdline`` once with ``open()`` and linking ppids;
- baseline (b): ``ps -e --forest`` as a whole process.

Then ``tractor-diag ptree PID`` as a whole process on the 100-process tree
(import time included), against ``python -c pass`` on the same interpreter.

Targets: snapshot <= 1.5x baseline (a); ``tractor-diag ptree`` <= 150 ms.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tractor_diag import procfs, trees

SIZES = (20, 100, 500)
REPEAT = int(os.environ.get("BENCH_REPEAT", "25"))
CLI_REPEAT = int(os.environ.get("BENCH_CLI_REPEAT", "15"))
GROUP = 24  # sleep leaves per sh group

# The tree root: n-1 processes below it, in sh groups of GROUP sleeps.
_ROOT = r"""
import signal, subprocess, sys
n = int(sys.argv[1]); group = int(sys.argv[2])
left = n - 1
kids = []
while left > 0:
    sleeps = min(group, left - 1) if left > 1 else 0
    cmd = " ".join(["sleep 600 &"] * sleeps) + " wait"
    kids.append(subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.DEVNULL))
    left -= 1 + sleeps
print("ok", flush=True)
signal.pause()
"""


class Tree:
    """A real process tree of ``n`` processes, torn down by pid."""

    def __init__(self, n: int):
        self.n = n
        self.root = subprocess.Popen(
            [sys.executable, "-c", _ROOT, str(n), str(GROUP)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )
        if self.root.stdout.readline().strip() != b"ok":
            self.stop()
            raise RuntimeError("tree root did not start")
        self._wait_built()

    def pids(self) -> list[int]:
        procs = procfs.scan(detail_actors=False)
        return trees.descendants(trees.children_map(procs), [self.root.pid])

    def _wait_built(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            procs = procfs.scan(detail_actors=False)
            members = trees.descendants(trees.children_map(procs), [self.root.pid])
            execed = sum(1 for p in members if procs[p].comm == "sleep")
            if len(members) == self.n and execed == self.n - 1 - self._groups():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tree of {self.n} did not come up")

    def _groups(self) -> int:
        left, groups = self.n - 1, 0
        while left > 0:
            left -= 1 + (min(GROUP, left - 1) if left > 1 else 0)
            groups += 1
        return groups

    def stop(self) -> None:
        # leaves first, so nothing lingers re-parented to init
        for pid in reversed(self.pids()):
            if pid != self.root.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.root.kill()
        self.root.wait(timeout=10)


def minimal_loop() -> dict[int, list[int]]:
    """Baseline (a): what any script would write to get a process tree."""
    procs: dict[int, tuple[int, list[bytes]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        procs[int(name)] = (int(fields[1]), cmdline.split(b"\0"))
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _argv) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    return kids


def ps_forest() -> None:
    """Baseline (b): the usual tool, as a whole process."""
    subprocess.run(["ps", "-e", "--forest"], stdout=subprocess.DEVNULL, check=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def bench_snapshot(tree: Tree) -> list[dict]:
    targets = trees.Targets([tree.root.pid])
    snap = trees.take_snapshot(targets)
    if len(snap.entries) < tree.n:  # the benchmark must measure the real thing
        raise RuntimeError(f"snapshot saw {len(snap.entries)} of {tree.n} processes")
    for _ in range(3):  # warm caches, both sides
        trees.take_snapshot(targets)
        minimal_loop()
    ours, full, loop, ps = [], [], [], []
    for _ in range(REPEAT):
        ours.append(_timed(lambda: trees.take_snapshot(targets)))
        full.append(_timed(lambda: trees.take_snapshot(targets, full=True)))
        loop.append(_timed(minimal_loop))
        ps.append(_timed(ps_forest))
    box = sum(1 for n in os.listdir("/proc") if n.isdigit())
    m_ours, m_full, m_loop, m_ps = (statistics.median(x) for x in (ours, full, loop, ps))
    case = f"snapshot, {tree.n} procs (box {box})"
    return [
        {"case": case, "median_ms": m_ours, "baseline": "minimal /proc loop",
         "baseline_ms": m_loop, "ratio": m_ours / m_loop, "target": "<= 1.5x",
         "ok": m_ours <= 1.5 * m_loop, "n": REPEAT},
        {"case": case, "median_ms": m_ours, "baseline": "ps -e --forest",
         "baseline_ms": m_ps, "ratio": m_ours / m_ps, "n": REPEAT},
        # what the sampler and --json pay: + status and cgroup per tree member
        {"case": f"snapshot full=True, {tree.n} procs", "median_ms": m_full,
         "baseline": "minimal /proc loop", "baseline_ms": m_loop,
         "ratio": m_full / m_loop, "n": REPEAT},
    ]


def _script(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: is the project installed in this venv?")
    return str(exe)


def bench_cli(tree: Tree) -> list[dict]:
    cmd = [_script("tractor-diag"), "ptree", str(tree.root.pid)]
    env = {**os.environ, "NO_COLOR": "1"}
    # what users get: bytecode cached after the warm-up run
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def run_cli() -> None:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True)

    def bare_python() -> None:
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)

    run_cli()
    bare_python()
    cli, bare = [], []
    for _ in range(CLI_REPEAT):
        cli.append(_timed(run_cli))
        bare.append(_timed(bare_python))
    m_cli, m_bare = statistics.median(cli), statistics.median(bare)
    return [{
        "case": f"tractor-diag ptree PID, {tree.n} procs", "median_ms": m_cli,
        "baseline": "python -c pass", "baseline_ms": m_bare, "ratio": m_cli / m_bare,
        "target": "<= 150 ms", "ok": m_cli <= 150.0, "n": CLI_REPEAT,
    }]


def main() -> list[dict]:
    if not procfs.HAVE_PROCFS:
        raise RuntimeError("the ptree benchmark needs Linux /proc")
    rows: list[dict] = []
    for n in SIZES:
        tree = Tree(n)
        try:
            rows += bench_snapshot(tree)
            if n == 100:
                rows += bench_cli(tree)
        finally:
            tree.stop()
    return rows
