"""A remote-controlled process parent for sampler and ptree tests.

``python tests/_ptree_helpers.py puppet DIR`` starts a parent that prints
``READY`` and then runs commands the test drops into ``DIR`` (``cmd.<n>``,
answered in ``ack.<n>``), so a test decides exactly when a child is born,
exits, turns zombie, is reaped, burns CPU or calms down. Children are real
processes; the puppet never reaps one unless told to.

Commands (answer in brackets):

    sleep                      a ``sleep 600`` child                  [pid]
    exit-later CODE            a python child that exits with CODE
                               when released                          [pid]
    release PID                let that child exit (it stays a zombie) [ok]
    reap PID                   waitpid() it                           [status]
    burn                       a child titled ``_subactor[burner@pid]``
                               burning a core until calmed            [pid]
    calm PID                   make the burner sleep instead           [ok]
    actor-pair                 ``_subactor[mid@pid]`` with a child
                               ``_subactor[leaf@pid]`` (sleeping)      [mid leaf]
    shell-pair                 ``sh`` with a ``sleep`` child           [sh sleep]

The test side is `Puppet`, built on the conftest ``spawn`` fixture, which
tears the whole tree down (orphans included, when killed via
``handle.kill_pid``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _poll import poll
from _proc import stat_fields

HERE = Path(__file__).resolve()

_BURNER = """
import os, time, setproctitle
setproctitle.setproctitle(f"_subactor[burner@{{os.getpid()}}]")
stop = os.path.join({dir!r}, f"calm.{{os.getpid()}}")
n = 0
while True:
    n += 1
    if n % 200000 == 0 and os.path.exists(stop):
        break
while True:
    time.sleep(3600)
"""

_MID = """
import os, subprocess, sys, time, setproctitle
setproctitle.setproctitle(f"_subactor[mid@{os.getpid()}]")
leaf = subprocess.Popen([sys.executable, "-c",
    "import os, time, setproctitle; "
    "setproctitle.setproctitle(f'_subactor[leaf@{os.getpid()}]'); "
    "print('up', flush=True); time.sleep(3600)"],
    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
leaf.stdout.readline()
print(leaf.pid, flush=True)
time.sleep(3600)
"""


def puppet(directory: str) -> None:
    d = Path(directory)
    kids: dict[int, subprocess.Popen] = {}  # held so nothing reaps them behind our back
    print("READY", os.getpid(), flush=True)
    n = 0
    while True:
        cmd_file = d / f"cmd.{n}"
        if not cmd_file.exists():
            time.sleep(0.01)
            continue
        words = cmd_file.read_text().split()
        op, args = words[0], words[1:]
        if op == "sleep":
            p = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
            kids[p.pid] = p
            answer = str(p.pid)
        elif op == "exit-later":
            p = subprocess.Popen(
                [sys.executable, "-c", f"import sys; sys.stdin.read(); sys.exit({int(args[0])})"],
                stdin=subprocess.PIPE)
            kids[p.pid] = p
            answer = str(p.pid)
        elif op == "release":
            kids[int(args[0])].stdin.close()
            answer = "ok"
        elif op == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            kids.pop(int(args[0]), None)
            answer = str(status)
        elif op == "burn":
            p = subprocess.Popen([sys.executable, "-c", _BURNER.format(dir=str(d))],
                                 stdin=subprocess.DEVNULL)
            kids[p.pid] = p
            answer = str(p.pid)
        elif op == "calm":
            (d / f"calm.{args[0]}").touch()
            answer = "ok"
        elif op == "actor-pair":
            p = subprocess.Popen([sys.executable, "-c", _MID], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE)
            kids[p.pid] = p
            answer = f"{p.pid} {int(p.stdout.readline())}"
        elif op == "shell-pair":
            p = subprocess.Popen(["sh", "-c", "sleep 600 & echo $!; wait"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            kids[p.pid] = p
            answer = f"{p.pid} {int(p.stdout.readline())}"
        else:
            answer = f"error unknown command {op}"
        tmp = d / f".ack.{n}"
        tmp.write_text(answer)
        tmp.rename(d / f"ack.{n}")
        n += 1


class Puppet:
    """Test-side handle: ``puppet.do("sleep") -> "1234"``."""

    def __init__(self, spawn, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handle = spawn([sys.executable, str(HERE), "puppet", str(self.dir)],
                            label="puppet")
        self.pid = self.handle.root
        self._n = 0

    def do(self, *words: object, timeout: float = 20.0) -> str:
        n = self._n
        self._n += 1
        tmp = self.dir / f".cmd.{n}"
        tmp.write_text(" ".join(map(str, words)))
        tmp.rename(self.dir / f"cmd.{n}")
        ack = self.dir / f"ack.{n}"
        if not poll(ack.exists, timeout, 0.01):
            raise TimeoutError(f"puppet did not answer {words}")
        answer = ack.read_text()
        if answer.startswith("error"):
            raise RuntimeError(answer)
        return answer

    def pid_of(self, *words: object) -> int:
        return int(self.do(*words))


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``pred`` until it returns something truthy; return that (an
    AssertionError when it never does)."""
    value = poll(pred, timeout, interval)
    if not value:
        raise AssertionError(f"condition not met within {timeout}s: {pred}")
    return value


_CPU_CGROUP = Path("/sys/fs/cgroup/cpu")  # cgroup v1 cpu controller
_boost_seq = 0


@pytest.fixture
def cpu_boost():
    """``cpu_boost(pid)``: let a burner really have a core on a shared box.

    The test machine has 2 cores, often saturated by other test runs, and
    the kernel's autogroups share CPU per session, so ``nice`` alone cannot
    help: a busy loop gets 40-50 % of a core. A cpu cgroup of its own with
    a large weight gives it ~100 %. Needs root and the v1 cpu controller;
    elsewhere only ``nice -20`` is tried and the tests' retries must do.
    The cgroup is removed at teardown (its tasks moved back first).
    """
    global _boost_seq
    made: list[Path] = []

    def boost(pid: int) -> None:
        global _boost_seq
        try:
            os.setpriority(os.PRIO_PROCESS, pid, -20)
        except OSError:
            pass
        if not (_CPU_CGROUP / "cpu.shares").exists() or not os.access(_CPU_CGROUP, os.W_OK):
            return
        _boost_seq += 1
        group = _CPU_CGROUP / f"tdiag-burner-{os.getpid()}-{_boost_seq}"
        try:
            group.mkdir()
            made.append(group)
            (group / "cpu.shares").write_text("262144")
            (group / "cgroup.procs").write_text(str(pid))
        except OSError:
            pass

    yield boost
    for group in made:
        try:
            for task in (group / "cgroup.procs").read_text().split():
                try:
                    (_CPU_CGROUP / "cgroup.procs").write_text(task)
                except OSError:
                    pass
            group.rmdir()
        except OSError:
            pass


def proc_state(pid: int) -> str | None:
    rest = stat_fields(pid)
    return None if rest is None else rest[0].decode()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "puppet":
        puppet(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} puppet DIR")
