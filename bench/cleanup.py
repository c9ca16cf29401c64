"""What do the cleanup scans cost? (``reap`` planning, ``bindspace``, shm)

Baseline, measured in the same run: `procfs.scan()`, the foundation's one
pass over every process (stat + cmdline, detail for actors).

- ``make_plan``: default-mode planning (one pass + uid checks of the orphans)
  must stay close to that pass: target <= 1.5x.
- ``bindspace.scan``: a bindspace of 200 stale socket files and 20 live ones
  (one real listener), against a minimal loop doing the same reads (list
  the dir, lstat each entry, read /proc/net/unix once, stat each claimed
  binder's /proc/<pid>/stat): target <= 1.5x that loop. (It used to be
  compared with the process pass, which measures the box, not the scan.)
- ``shm.scan``: one pass reading every process's maps and fd links (the
  expensive kind of pass: maps can be long): informational, no target.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPEAT = 15


def _median_ms(fn, repeat: int = REPEAT) -> float:
    fn()  # warm caches and imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


_LISTENER = r"""
import os, socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(sys.argv[1], f"live{i}@{os.getpid()}.sock"))
    s.listen()
    socks.append(s)
print("ok", flush=True)
time.sleep(600)
"""


def _minimal_bindspace(path: str) -> int:
    """The least a bindspace classification must read, without any of the
    classification: who binds what, and is each binder there."""
    with open("/proc/net/unix", "rb") as f:
        listening = {ln.rsplit(None, 1)[-1] for ln in f.read().splitlines()[1:]}
    alive = 0
    for name in os.listdir(path):
        os.lstat(os.path.join(path, name))
        pid = name.rpartition("@")[2].partition(".")[0]
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    f.read()
                alive += 1
            except OSError:
                pass
        alive += os.path.join(path, name).encode() in listening
    return alive


def main() -> list[dict]:
    from tractor_diag import bindspace, procfs, reap, shm

    if not procfs.HAVE_PROCFS:
        raise RuntimeError("the cleanup benchmark needs Linux /proc")
    nprocs = len(procfs.scan())
    base = _median_ms(procfs.scan)
    rows = [{"case": f"procfs.scan ({nprocs} processes)", "median_ms": base}]

    def row(case: str, ms: float, target: float | None) -> dict:
        ratio = ms / base
        return {"case": case, "median_ms": ms, "baseline": "procfs.scan", "baseline_ms": base,
                "ratio": ratio, "target": f"<= {target}x" if target else None,
                "ok": (ratio <= target) if target else None}

    rows.append(row("reap.make_plan (default mode)", _median_ms(reap.make_plan), 1.5))

    bdir = tempfile.mkdtemp(prefix="tdx-bench-", dir="/tmp")
    listener = None
    try:
        for i in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.bind(os.path.join(bdir, f"stale{i}@{4000000 + i}.sock"))  # above any pid_max
            s.close()
        listener = subprocess.Popen([sys.executable, "-c", _LISTENER, bdir, "20"],
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        listener.stdout.readline()
        minimal = _median_ms(lambda: _minimal_bindspace(bdir))
        ms = _median_ms(lambda: bindspace.scan(bdir, holders=False))
        rows.append({"case": "bindspace.scan (220 entries)", "median_ms": ms,
                     "baseline": "minimal dir + /proc/net/unix loop", "baseline_ms": minimal,
                     "ratio": ms / minimal, "target": "<= 1.5x", "ok": ms / minimal <= 1.5})
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        shutil.rmtree(bdir, ignore_errors=True)

    sdir = tempfile.mkdtemp(prefix="tdx-bench-", dir="/dev/shm")
    try:
        for i in range(20):
            with open(os.path.join(sdir, f"seg{i}"), "wb") as f:
                f.write(b"\0" * 4096)
        rows.append(row("shm.scan (20 segments: maps + fds of every process)",
                        _median_ms(lambda: shm.scan(sdir), repeat=7), None))
    finally:
        shutil.rmtree(sdir, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in main():
        print(r)
