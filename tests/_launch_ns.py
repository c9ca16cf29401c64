"""Launch-mode scenarios run whole inside a private PID namespace.

``python tests/_launch_ns.py SCENARIO ARGS...`` runs one scenario and prints
its findings as one JSON line. They run under `_reap_helpers.NsInit`: pids
are predictable there (``ns_last_pid``), and an orphan re-parents to the
namespace's init, never to the host's.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
THIS = os.path.abspath(__file__)
sys.path.insert(0, HERE)

from _reap_helpers import take_pid  # noqa: E402 - found through the line above

# A process of ours that is not part of any launched tree: it reports every
# catchable signal it gets.
NEWCOMER = (
    "import os, signal, sys, time\n"
    "def got(n, f):\n"
    "    print('GOT', n, flush=True)\n"
    "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
    "    signal.signal(s, got)\n"
    "print('READY', os.getpid(), os.getpgid(0), flush=True)\n"
    "while True:\n"
    "    time.sleep(1)\n"
)

# Starts a daemon the classic way (fork, setsid, fork again, the middle
# process exits): the daemon is in no process group, session or ancestry of
# the launched program any more. It ignores SIGINT.
DAEMONIZER = (
    "import os, signal, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "        sys.stdout.write(f'DAEMON {os.getpid()}\\n'); sys.stdout.flush()\n"
    "        time.sleep(600)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "sys.stdout.write('READY\\n'); sys.stdout.flush()\n"  # one write: the daemon writes to the same pipe
    "time.sleep(600)\n"
)


_started: list[subprocess.Popen] = []  # killed however a scenario ends


def _start(argv, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, **kw)
    _started.append(proc)
    return proc


def _newcomer_at(pid: int, code: str = NEWCOMER, **kw) -> tuple[subprocess.Popen, list[str]]:
    """Start ``code`` as the next process of this namespace, which gets
    ``pid``: (the newcomer, its READY line)."""
    take_pid(pid)
    new = _start([sys.executable, "-c", code], stdout=subprocess.PIPE,
                 stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return new, _ready_line(new)


def _fate(new: subprocess.Popen) -> dict:
    """What became of a newcomer: what it printed (every signal it got) and
    whether it still runs; then it is killed."""
    time.sleep(0.3)
    fate = {"new_output": _read_all(new), "new_alive": new.poll() is None}
    new.kill()
    new.wait()
    return fate


def _ready_line(proc: subprocess.Popen, timeout: float = 20.0) -> list[str]:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no READY line from {proc.args}: {buf!r}"
        r, _, _ = select.select([fd], [], [], min(left, 0.1))
        if r:
            chunk = os.read(fd, 4096)
            assert chunk, f"{proc.args} exited before READY"
            buf += chunk
    return buf.decode().split("\n", 1)[0].split()


def _read_all(proc: subprocess.Popen, wait: float = 0.3) -> str:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def scenario_reused_pid(cgroup: str) -> dict:
    """The dashboard launches a program that exits at once; once it has been
    reaped, a process of ours gets its pid, as the leader of a process group
    of the same number; the dashboard samples it (it watches that pid) and
    quits. The newcomer must get no signal."""
    from _dash_helpers import until
    from tractor_diag.tui.app import DashApp

    out: dict = {}

    async def body() -> None:
        app = DashApp(launch=[sys.executable, "-c", "print('BYE')"], interval=0.2, grace=0.5,
                      **({"cgroup": False} if cgroup == "off" else {}))
        async with app.run_test(size=(120, 40)) as pilot:
            await until(lambda: app.supervisor is not None
                        and app.supervisor.returncode is not None, 20, pilot=pilot,
                        what="the launched program to exit and be reaped")
            old = app.supervisor.pid
            new, line = _newcomer_at(old, process_group=0)
            out.update(old=old, new=new.pid, new_pgid=int(line[2]))
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 3, 10, pilot=pilot, what="samples")
            out["containment"] = getattr(app, "containment", None)
            await pilot.press("q")
            await until(lambda: not app.is_running, 20, pilot=pilot, what="quit")
        out.update(_fate(new))

    asyncio.run(asyncio.wait_for(body(), 60))
    return out


def scenario_daemon(cgroup: str, subreaper: str) -> dict:
    """Launch `DAEMONIZER`, stop the tree, report what became of the daemon."""
    import trio

    from tractor_diag.launch import Supervisor, set_child_subreaper

    if subreaper == "on":
        assert set_child_subreaper(True)
    lines: list[str] = []
    out: dict = {}

    async def main() -> Supervisor:
        sup = Supervisor([sys.executable, "-c", DAEMONIZER], grace=0.5, cgroup=cgroup == "on",
                         on_output=lambda name, ls: lines.extend(ls))
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                with trio.move_on_after(15):
                    while "READY" not in lines or not any(ln.startswith("DAEMON ") for ln in lines):
                        await trio.sleep(0.02)
                assert "READY" in lines and any(ln.startswith("DAEMON ") for ln in lines), \
                    (lines, sup.exit_codes, sup.tree())
                out["containment"] = sup.containment
                out["cgroup"] = sup.cgroup_path
                nursery.cancel_scope.cancel()
        return sup

    sup = trio.run(main)
    daemon = int(next(ln for ln in lines if ln.startswith("DAEMON ")).split()[1])
    time.sleep(0.2)
    try:
        with open(f"/proc/{daemon}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        state = None
    out.update(daemon=daemon, daemon_alive=state not in (None, "Z", "X"),
               survivors=[[pid, title] for pid, title in sup.survivors],
               killed=sorted(sup.killed),
               cgroup_exists=bool(out["cgroup"]) and os.path.exists(out["cgroup"]))
    if out["daemon_alive"]:
        os.kill(daemon, signal.SIGKILL)  # ours: this namespace holds nothing else
    return out


def scenario_signal_key_reused() -> dict:
    """The ``k`` key's signal, confirmed after the selected process died and
    a newcomer got its pid 20 ms after it had started: within the old 50 ms
    start-time slack, but not the same clock tick."""
    from _dash_helpers import until
    from tractor_diag import procfs
    from tractor_diag.tui import key_jobs
    from tractor_diag.tui.app import DashApp

    out: dict = {}

    async def body() -> None:
        app = DashApp([str(os.getpid())], live=False)  # the key's action alone
        async with app.run_test(size=(120, 40)) as pilot:
            await until(lambda: app.guest.running, 10, pilot=pilot)
            old = subprocess.Popen(["sleep", "600"])
            seen = procfs.read_proc(old.pid, detail=False)
            old.kill()
            old.wait()
            time.sleep(0.02)
            new, _ = _newcomer_at(old.pid)
            now = procfs.read_proc(new.pid, detail=False)
            out.update(old=old.pid, new=new.pid, apart=now.create_time - seen.create_time)
            # what the key starts once the user confirmed
            app._start("signal", key_jobs.send_signal, old.pid, seen.create_time,
                       signal.SIGTERM)
            await until(lambda: "signal" in app._extras.get(old.pid, {}), 10, pilot=pilot)
            out["result"] = app._extras[old.pid]["signal"][1].plain
        out.update(_fate(new))

    asyncio.run(asyncio.wait_for(body(), 60))
    return out


ACTOR_NEWCOMER = (
    "import os, setproctitle\n"
    "setproctitle.setproctitle(f'_subactor[newcomer@{os.getpid()}]')\n" + NEWCOMER
)


def scenario_reap_key_reused() -> dict:
    """The ``r`` key on a selected actor that died, its pid taken by a new
    actor of the same user before the key's plan is made: the plan (and so
    the confirm dialog) must not be of the newcomer."""
    from _dash_helpers import until
    from tractor_diag import procfs
    from tractor_diag.tui.app import DashApp
    from tractor_diag.tui.dialogs import ConfirmScreen

    out: dict = {}

    async def body() -> None:
        app = DashApp([str(os.getpid())], live=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(lambda: app.guest.running, 10, pilot=pilot)
            old = _start([sys.executable, "-c", ACTOR_NEWCOMER.replace("newcomer", "old")],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            _ready_line(old)
            seen = procfs.read_proc(old.pid)
            assert seen is not None and seen.actor is not None

            class Selected:  # the row the user had selected: the old actor
                proc = seen
                root = None
                children = ()

            app.selected_entry = lambda: Selected
            old.kill()
            old.wait()
            time.sleep(0.02)
            new, _ = _newcomer_at(old.pid, ACTOR_NEWCOMER)
            out.update(old=old.pid, new=new.pid)
            app.action_reap()
            await until(lambda: isinstance(app.screen, ConfirmScreen)
                        or "reap" in app._extras.get(old.pid, {}), 10, pilot=pilot)
            out["asked"] = isinstance(app.screen, ConfirmScreen)
            if out["asked"]:
                await pilot.press("y")  # what a user who trusts the dialog does
                await pilot.pause(1.0)
            extra = app._extras.get(old.pid, {}).get("reap")
            out["result"] = extra[1].plain if extra else None
        out.update(_fate(new))

    asyncio.run(asyncio.wait_for(body(), 60))
    return out


SCENARIOS = {
    "reap-key-reused": scenario_reap_key_reused,
    "signal-key-reused": scenario_signal_key_reused,
    "reused-pid": scenario_reused_pid,
    "daemon": scenario_daemon,
}


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(80, exit=True)  # a hang says where
    try:
        print(json.dumps(SCENARIOS[sys.argv[1]](*sys.argv[2:])), flush=True)
    finally:
        for proc in _started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
