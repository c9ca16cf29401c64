"""Kernel threads of this (the initial) PID namespace, real ones, known by
the kernel's own flag (PF_KTHREAD in ``stat``), not by pid 2: every verb
here only reads them (``reap`` as a dry run), nothing is ever signalled.
How pid 2 of a container is treated instead: `test_reap_ns` and
`test_stacks_pool`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _proc import stat_fields

PF_KTHREAD = 0x00200000
CLI = [sys.executable, "-m", "tractor_diag"]

pytestmark = pytest.mark.timeout(120)


def _kthreadd() -> int | None:
    """The kernel threads' parent (a kernel thread whose parent is not
    visible), read with the suite's own stat reader; None in a container."""
    for name in sorted((n for n in os.listdir("/proc") if n.isdigit()), key=int):
        f = stat_fields(int(name))
        if f is not None and int(f[6]) & PF_KTHREAD and int(f[1]) == 0:
            return int(name)
    return None


KTHREADD = _kthreadd()
needs_kthreads = pytest.mark.skipif(KTHREADD is None, reason="no kernel threads visible here")


def kernel_threads_under(parent: int) -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        f = stat_fields(int(name)) if name.isdigit() else None
        if f is not None and int(f[1]) == parent and int(f[6]) & PF_KTHREAD:
            out.add(int(name))
    return out


def cli_json(*args: str) -> tuple[int, object, str]:
    r = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=90)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None, r.stderr


@needs_kthreads
@pytest.mark.parametrize("everything", [False, True], ids=["actors", "all"])
def test_reap_refuses_kernel_threads_by_their_flag(everything):
    """A dry run below kthreadd: every child is refused as a kernel thread
    (by the flag), and kthreadd is no "init" to refuse the whole request for."""
    args = ["reap", "--parent", str(KTHREADD), "--dry-run"] + (["--all"] if everything else [])
    rc, report, err = cli_json(*args)
    assert rc == 0, err
    assert report["plan"]["targets"] == []
    reasons = {s["pid"]: s["reason"] for s in report["plan"]["skipped"]}
    # kernel threads come and go (kworkers): compare those seen by both reads
    both = kernel_threads_under(KTHREADD) & set(reasons)
    assert len(both) >= 3, (reasons, kernel_threads_under(KTHREADD))
    assert {reasons[pid] for pid in both} == {"a kernel thread"}


@needs_kthreads
def test_the_snapshot_marks_kernel_threads_and_stacks_skips_them():
    """``ptree --json`` carries the flag per process (kthreadd and its
    children set, this test's own process clear); ``stacks`` reads a kernel
    thread's kernel side only: no py-spy, no task-tree request."""
    from tractor_diag import procfs

    rc, snap, err = cli_json("ptree", str(KTHREADD))
    assert rc == 0, err
    # (strays elsewhere on the box are in the snapshot too: only the tree)
    flags = {int(pid): e["proc"]["kthread"] for pid, e in snap["entries"].items()
             if e["root"] == KTHREADD}
    assert flags[KTHREADD] is True
    assert len(flags) > 3 and set(flags.values()) == {True}, flags
    assert procfs.read_proc(KTHREADD).kthread is True
    assert procfs.read_proc(os.getpid()).kthread is False

    one = min(kernel_threads_under(KTHREADD))
    rc, procs, err = cli_json("stacks", str(one))
    assert rc == 0, err
    assert [p["pid"] for p in procs] == [one]
    assert procs[0]["python"]["status"] == "skipped"
    assert procs[0]["python"]["reason"] == "kernel thread"
    assert procs[0]["tasks"]["status"] == "no-handler"
