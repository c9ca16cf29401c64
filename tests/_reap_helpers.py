"""Helpers for the reap / bindspace / shm safety suite.

Stdlib only at import time: some programs below run as uid 65534 under the
system python (``/usr/bin/python3``), which cannot see the project venvs.

PID namespace
-------------
Default-mode ``reap`` acts on every orphaned actor of the user on the box.
Other test sessions run on this machine as the same user (root), so a real
default-mode reap must never run in the host PID namespace. `NsInit` starts
``unshare --pid --fork --mount-proc --kill-child`` with this file's
``ns-init`` program as pid 1 of a fresh namespace and drives it over a
JSON-lines pipe: every process a test starts through it lives (and is
orphaned, re-parented to that pid 1, and reaped) inside the namespace, and
``/proc`` there shows nothing else. When the test ends, the namespace's init
exits and the kernel SIGKILLs everything left inside it: nothing can leak.

Programs (``python tests/_reap_helpers.py PROGRAM ...``)
-------------------------------------------------------
``ns-init``                the namespace init + RPC server (see `NsInit`)
``spawner JSON``           start each argv of the JSON list as a child, print
                           ``READY <pid> ...``, then sleep (a parent to scope
                           ``reap --parent`` to)
``as-actor NAME -- ARGV``  set the title ``_subactor[NAME@pid]`` (a current
                           actor to /proc), run ARGV as a child, relay its
                           stdout, exit with its code
``mapper PATH MODE``       MODE ``map``: mmap PATH and close the fd;
                           ``hold``: keep it open without mapping;
                           ``thread-hold``: a thread unshares its fd table
                           (``unshare(CLONE_FILES)``) and holds it there,
                           the process's own table never has it; then
                           ``READY <pid>`` and sleep
``scenario NAME ARGS``     one of `SCENARIOS`, run whole inside a namespace
                           (they need ``ns_last_pid`` or a private /dev/shm);
                           prints its findings as one JSON line
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

from _leaks_helpers import kill_pinned  # noqa: F401 - the one pinned kill of the suite
from _poll import poll as wait_for  # noqa: F401 - the one poll loop of the suite
from _proc import stat_fields

HERE = os.path.dirname(os.path.abspath(__file__))
THIS = os.path.abspath(__file__)
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534


# --- small programs -------------------------------------------------------------------

def _ready(*parts) -> None:
    print(" ".join(["READY", *map(str, parts)]), flush=True)


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def prog_spawner(spec: str) -> None:
    """A parent that reaps its children as they exit and takes the rest down
    with it on SIGINT (so teardown never waits on init to reap them).

    ``spec``: a JSON list; an entry is an argv, or ``{"argv": [...], "ready":
    PREFIX}`` for a child whose stdout line starting with PREFIX must be seen
    before we report READY (it is fully up, past its interpreter's start-up)."""
    kids = []
    for entry in json.loads(spec):
        if isinstance(entry, dict):
            kid = subprocess.Popen(entry["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            while not kid.stdout.readline().startswith(entry["ready"].encode()):
                if kid.poll() is not None:
                    sys.exit(f"child {entry['argv']} exited before {entry['ready']!r}")
        else:
            kid = subprocess.Popen(entry, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        kids.append(kid)
    for kid in kids:
        threading.Thread(target=kid.wait, daemon=True).start()
    _ready(*(k.pid for k in kids))
    try:
        _sleep_forever()
    finally:
        for kid in kids:
            if kid.poll() is None:
                kid.kill()
        for kid in kids:
            kid.wait()


def prog_as_actor(name: str, argv: list[str]) -> None:
    import setproctitle

    setproctitle.setproctitle(f"_subactor[{name}@{os.getpid()}]")
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    sys.stdout.buffer.write(proc.stdout)
    sys.stdout.flush()
    sys.exit(proc.returncode)


GOT_SIGNAL = 99  # exit code of a twin's child that received SIGINT/SIGTERM


def prog_twin() -> None:
    """A fork server titled ``_subactor[twin@1]`` (an actor to /proc), driven
    by stdin lines: ``fork`` forks a child (same title, same command line)
    and prints its pid; ``kill PID`` SIGKILLs and waits for that child of
    ours; ``status PID`` prints ``running`` or the child's exit code
    (`GOT_SIGNAL` when a SIGINT or SIGTERM reached it)."""
    import setproctitle

    setproctitle.setproctitle("_subactor[twin@1]")
    kids: dict[int, int | None] = {}
    _ready(os.getpid())
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                def got(signum, frame):
                    os._exit(GOT_SIGNAL)

                signal.signal(signal.SIGINT, got)
                signal.signal(signal.SIGTERM, got)
                while True:
                    time.sleep(3600)
            kids[pid] = None
            answer = str(pid)
        elif cmd == "kill":
            pid = int(arg[0])
            if kids.get(pid, 0) is None:  # ours and not yet waited for
                os.kill(pid, signal.SIGKILL)
                kids[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            answer = "ok"
        elif cmd == "status":
            pid = int(arg[0])
            if kids.get(pid, 0) is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    kids[pid] = os.waitstatus_to_exitcode(status)
            answer = "running" if kids.get(pid) is None else str(kids[pid])
        else:
            answer = f"unknown {cmd}"
        print(answer, flush=True)


class Twin:
    """Client of a `prog_twin` started as our child."""

    def __init__(self):
        self.popen = subprocess.Popen([sys.executable, THIS, "twin"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        line = self.popen.stdout.readline()
        assert line.startswith("READY"), line
        self.pid = self.popen.pid
        self.kids: list[int] = []

    def ask(self, *words) -> str:
        self.popen.stdin.write(" ".join(map(str, words)) + "\n")
        self.popen.stdin.flush()
        return self.popen.stdout.readline().strip()

    def fork(self) -> int:
        pid = int(self.ask("fork"))
        self.kids.append(pid)
        return pid

    def close(self) -> None:
        for pid in self.kids:  # the twin kills only children it has not waited for
            self.ask("kill", pid)
        self.popen.kill()
        self.popen.wait(10)


def prog_mapper(path: str, mode: str) -> None:
    if mode == "thread-hold":
        import ctypes

        opened = threading.Event()

        def holder() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x400) != 0:  # CLONE_FILES
                os._exit(3)
            os.open(path, os.O_RDONLY)
            opened.set()
            _sleep_forever()

        threading.Thread(target=holder, daemon=True).start()
        if not opened.wait(10):
            sys.exit("the holder thread did not open the file")
        _ready(os.getpid())
        _sleep_forever()
    fd = os.open(path, os.O_RDONLY)
    if mode == "map":
        # libc mmap, not the mmap module: that one keeps a dup of the fd, and
        # the point here is a mapping with no fd left at all
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, os.fstat(fd).st_size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            sys.exit(f"mmap failed: errno {ctypes.get_errno()}")
        os.close(fd)
    _ready(os.getpid())
    _sleep_forever()


def fake_released_pkg(root: str) -> str:
    """A dir holding a stand-in ``tractor._child`` module, so that any python
    run as ``python -m tractor._child --uid ... --parent_addr ...`` has the
    exact command line of a released-runtime actor (used for actors of
    another uid, whose python cannot import the real runtime's venv)."""
    pkg = os.path.join(root, "tractor")
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("")
    with open(os.path.join(pkg, "_child.py"), "w") as f:
        f.write("import time\nprint('READY', flush=True)\n"
                "try:\n    time.sleep(3600)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)\n")
    for d in (root, pkg):
        os.chmod(d, 0o755)
    return root


def released_argv(python: str, name: str, port: int = 1) -> list[str]:
    return [python, "-m", "tractor._child", "--uid", repr((name, "0" * 32)),
            "--parent_addr", repr(("127.0.0.1", port)), "--loglevel", "error"]


def build_leader_exits(out_dir: str) -> str:
    """Compile ``progs/leader_exits.c`` (a process whose main thread exits
    while another runs) into ``out_dir`` -> the executable's path."""
    exe = os.path.join(out_dir, "leader_exits")
    subprocess.run(["gcc", "-O1", "-pthread", "-o", exe,
                    os.path.join(HERE, "progs", "leader_exits.c")],
                   check=True, capture_output=True, timeout=60)
    return exe


def leader_exits_argv(exe: str, title: str) -> list[str]:
    """Run ``exe`` with argv[0] ``title`` (e.g. an actor title)."""
    return ["bash", "-c", 'exec -a "$0" "$1"', title, exe]


def as_nobody(argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


# --- /proc reads (no tractor_diag: the suite must not share its bugs) --------------------

def proc_info(pid: int) -> dict | None:
    """{'state', 'ppid', 'start'} or None when gone."""
    rest = stat_fields(pid)
    if rest is None:
        return None
    return {"state": rest[0].decode(), "ppid": int(rest[1]), "start": int(rest[19])}


def alive(pid: int, start: int | None = None) -> bool:
    """Running (not a zombie), and the same process when ``start`` is given."""
    info = proc_info(pid)
    if info is None or info["state"] in ("Z", "X"):
        return False
    return start is None or info["start"] == start


@contextlib.contextmanager
def orphans_go_to_init():
    """Within this block, orphans re-parent to init even if another test left
    this pytest process a child subreaper (the dashboard's launch mode makes
    its process one): the host-namespace orphan tests need init's adoption."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    was = libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value  # PR_GET_CHILD_SUBREAPER
    if was:
        libc.prctl(36, 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        if was:
            libc.prctl(36, 1, 0, 0, 0)


# --- the namespace init --------------------------------------------------------------

def _ns_procs() -> list[dict]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        info = proc_info(pid)
        if info is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        while argv and argv[-1] == "":
            argv.pop()
        out.append({"pid": pid, "ppid": info["ppid"], "state": info["state"],
                    "start": info["start"], "uid": uid, "argv": argv})
    return out


def prog_ns_init() -> None:
    """pid 1 of a PID namespace: adopt and reap orphans, serve requests."""
    assert os.getpid() == 1, "ns-init must be the init of its namespace"
    lock = threading.Lock()
    waited: set[int] = set()  # children a `run` request waits on itself
    stop = threading.Event()

    def reap_orphans() -> None:
        while not stop.wait(0.05):
            with lock:
                for p in _ns_procs():
                    if p["ppid"] == 1 and p["state"] == "Z" and p["pid"] not in waited:
                        try:
                            os.waitpid(p["pid"], os.WNOHANG)
                        except ChildProcessError:
                            pass

    threading.Thread(target=reap_orphans, daemon=True).start()
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        try:
            resp = _ns_handle(req, lock, waited)
        except Exception as exc:  # reported to the test, which fails loudly
            resp = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(resp) + "\n")
        out.flush()
        if req["op"] == "exit":
            break
    stop.set()


def _ns_handle(req: dict, lock: threading.Lock, waited: set[int]) -> dict:
    op = req["op"]
    env = dict(os.environ)
    env.update(req.get("env") or {})
    if op == "spawn":
        with lock:
            proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
        line = ""
        if req.get("ready"):
            line = _read_line(proc, req["ready"], req.get("timeout", 30))
        return {"pid": proc.pid, "line": line}
    if op == "run":
        with lock:
            proc = subprocess.Popen(req["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
            waited.add(proc.pid)
        try:
            out, err = proc.communicate(timeout=req.get("timeout", 60))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        finally:
            waited.discard(proc.pid)
        return {"rc": proc.returncode, "stdout": out.decode(errors="replace"),
                "stderr": err.decode(errors="replace")}
    if op == "procs":
        return {"procs": _ns_procs()}
    if op == "kill":
        if not kill_pinned(req["pid"], req["start"], req["sig"]):
            raise ValueError(f"pid {req['pid']} is no longer the process started at {req['start']}")
        return {}
    if op == "mount-tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tdiag", req["path"]], check=True)
        return {}
    if op == "exit":
        return {}
    raise ValueError(f"unknown op {op!r}")


def _read_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
    raise TimeoutError(f"no {prefix!r} line from {proc.args}")


class NsError(RuntimeError):
    pass


class NsInit:
    """Client side: a PID namespace whose init serves JSON requests."""

    def __init__(self, python: str, log_path: str):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
             python, THIS, "ns-init"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True,
        )
        self._buf = b""

    def call(self, op: str, timeout: float = 60.0, **kw) -> dict:
        self.popen.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.popen.stdin.flush()
        return self._answer(op, timeout)

    def _answer(self, op: str, timeout: float) -> dict:
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NsError(f"ns-init: no answer to {op} within {timeout}s")
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    self._log.flush()
                    with open(self.log_path, errors="replace") as f:
                        tail = f.read()[-2000:]
                    # unshare --pid needs CAP_SYS_ADMIN: these tests run as root
                    raise NsError(f"ns-init exited (rc={self.popen.wait(5)}): {tail}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        resp = json.loads(line)
        if "error" in resp:
            raise NsError(f"ns-init {op}: {resp['error']}")
        return resp

    def spawn(self, argv, ready: str | None = "READY", env=None, timeout: float = 60.0) -> dict:
        # `timeout` bounds the ready line inside; the call itself gets a margin
        return self._call_with("spawn", timeout, argv=[str(a) for a in argv], ready=ready, env=env)

    def _call_with(self, op: str, inner: float, **kw) -> dict:
        self.popen.stdin.write((json.dumps({"op": op, "timeout": inner, **kw}) + "\n").encode())
        self.popen.stdin.flush()
        return self._answer(op, inner + 5)

    def run(self, argv, env=None, timeout: float = 60.0) -> dict:
        return self._call_with("run", timeout, argv=[str(a) for a in argv], env=env)

    def procs(self) -> dict[int, dict]:
        return {p["pid"]: p for p in self.call("procs")["procs"]}

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal ``pid`` in the namespace, pinned to the process listed now."""
        start = self.procs()[pid]["start"]
        self.call("kill", pid=pid, sig=int(sig), start=start)

    def wait_until(self, pred, timeout: float = 15.0) -> bool:
        return wait_for(lambda: pred(self.procs()), timeout, 0.1)

    def close(self) -> None:
        try:
            if self.popen.poll() is None:
                self.call("exit", timeout=5)
        except (NsError, OSError, ValueError):
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # --kill-child: the namespace dies with it
            self.popen.wait(5)
        self._log.close()



# --- scenarios run as a whole inside a PID namespace (they print one JSON line) ---------

def _spawn_ready(argv, env=None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    assert line.startswith(b"READY"), (argv, line)
    return proc


def take_pid(pid: int) -> None:
    """Make the next fork of this namespace get ``pid`` (CRIU's mechanism)."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))


def scenario_pid_reuse(fake_pkg: str) -> dict:
    """Plan a reap of an actor child, let the kernel give its pid to a new
    actor, then signal the old plan."""
    from tractor_diag import reap

    env = dict(os.environ, PYTHONPATH=fake_pkg)
    old = _spawn_ready(released_argv(sys.executable, "old"), env)
    plan = reap.make_plan(parent=os.getpid())
    assert [t.pid for t in plan.targets] == [old.pid], plan
    old.kill()
    old.wait()
    time.sleep(0.05)  # the newcomer starts clock ticks later
    take_pid(old.pid)
    new = _spawn_ready(released_argv(sys.executable, "new"), env)
    outcome = reap.execute(plan, grace=1)
    time.sleep(0.2)
    fate = outcome.fates[0]
    out = dict(reused_pid=new.pid == old.pid, fate=fate.fate, signals=fate.signals,
               detail=fate.detail, new_alive=new.poll() is None, pidfd=outcome.pidfd)
    new.kill()
    new.wait()
    return out


def scenario_tick_reuse(mode: str) -> dict:
    """A planned (or observed) actor exits and its pid goes to a process with
    the same command line, started within the same clock tick, under
    another parent: a start-time check alone cannot tell them apart.

    Two `Twin` fork servers, A and B, with identical titles. A forks C (the
    observed process); C is planned / pinned; A kills and reaps C; B forks N
    with C's pid (``ns_last_pid``). Retried until N starts in C's tick.

    ``mode``: ``reap`` (make_plan, then execute the plan), ``pin-held`` (a
    Pin on C, then send), ``pin-open`` (Pin.open with C's identity after the
    reuse). -> whether N was signalled, and what the API said."""
    from tractor_diag import procfs, reap

    a, b = Twin(), Twin()
    try:
        for attempt in range(1, 81):
            pid = 300 + 5 * attempt  # a pid this namespace has not used yet
            take_pid(pid)
            c = a.fork()
            seen = procfs.read_proc(c, detail=False)
            assert c == pid and seen is not None and seen.actor is not None, (c, pid, seen)
            plan = pin = None
            if mode == "reap":
                plan = reap.make_plan(parent=a.pid)
                assert plan.pids() == [c], plan
            elif mode == "pin-held":
                from tractor_diag.pinning import Pin

                pin = Pin.open(c, start_time=seen.create_time, ppid=seen.ppid,
                               cmdline=seen.cmdline)
            a.ask("kill", c)
            take_pid(pid)
            n = b.fork()
            now = proc_info(n)
            if n != c or now is None or now["start"] != procfs.ticks_of(seen.create_time):
                b.ask("kill", n)
                if plan is not None and hasattr(plan, "release"):  # (older API: no pins)
                    plan.release()
                if pin is not None:
                    pin.close()
                continue
            out: dict = dict(attempts=attempt, pid=n, old_ppid=seen.ppid, new_ppid=now["ppid"],
                             same_cmdline=_cmdline(n) == _cmdline_of(seen))
            if mode == "reap":
                outcome = reap.execute(plan, grace=0.5)
                (fate,) = outcome.fates
                out.update(fate=fate.fate, signals=fate.signals, detail=fate.detail)
            elif mode == "pin-held":
                out.update(sent=pin.send(signal.SIGINT))
                pin.close()
            else:
                from tractor_diag.pinning import Pin, PinError

                try:
                    Pin.open(n, start_time=seen.create_time, ppid=seen.ppid,
                             cmdline=seen.cmdline).close()
                    out.update(outcome="pinned")
                except PinError as exc:
                    out.update(outcome=exc.outcome, detail=str(exc))
            time.sleep(0.3)
            status = b.ask("status", n)
            out.update(new_signalled=status == str(GOT_SIGNAL), new_status=status)
            return out
        return dict(attempts=80, reproduced=False)
    finally:
        a.close()
        b.close()


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def _cmdline_of(proc) -> list[str]:
    return ("\0".join(proc.cmdline) + "\0").encode().split(b"\0")


_BIND = ("import os, socket, sys, time; s = socket.socket(socket.AF_UNIX); "
         "s.bind(sys.argv[1] % os.getpid()); s.listen(); print('READY', flush=True); time.sleep(600)")
_SLEEP = "import time; print('READY', flush=True); time.sleep(600)"


def scenario_socket_reuse(bindspace: str) -> dict:
    """A binder dies leaving its socket file; a younger process gets its pid."""
    old = _spawn_ready([sys.executable, "-c", _BIND, bindspace + "/ghost@%d.sock"])
    old.kill()
    old.wait()
    time.sleep(1.5)  # younger than the file beyond the clock slack
    take_pid(old.pid)
    new = _spawn_ready([sys.executable, "-c", _SLEEP])
    cli = [sys.executable, "-m", "tractor_diag"]
    scan = subprocess.run([*cli, "bindspace", "--json"], capture_output=True, text=True)
    sweep = subprocess.run([*cli, "reap", "--uds-only", "--json"], capture_output=True, text=True)
    out = dict(old=old.pid, new=new.pid, scan=json.loads(scan.stdout),
               sweep=json.loads(sweep.stdout), sweep_rc=sweep.returncode,
               new_alive=new.poll() is None)
    new.kill()
    new.wait()
    return out


def scenario_shm_default() -> dict:
    """``reap --shm-only`` on the default /dev/shm (a private tmpfs here)."""
    for name in ("mapped", "held", "unused"):
        with open("/dev/shm/" + name, "wb") as f:
            f.write(b"x" * 8192)
    os.symlink("/dev/shm/unused", "/dev/shm/link")
    m = _spawn_ready([sys.executable, THIS, "mapper", "/dev/shm/mapped", "map"])
    h = _spawn_ready([sys.executable, THIS, "mapper", "/dev/shm/held", "hold"])
    r = subprocess.run([sys.executable, "-m", "tractor_diag", "reap", "--shm-only", "--json"],
                       capture_output=True, text=True)
    out = dict(rc=r.returncode, report=json.loads(r.stdout), left=sorted(os.listdir("/dev/shm")),
               alive=m.poll() is None and h.poll() is None)
    for p in (m, h):
        p.kill()
        p.wait()
    return out


_ARMED_ACTOR = ("import os, signal, sys, time, setproctitle; "
                "setproctitle.setproctitle(f'_subactor[{sys.argv[1]}@{os.getpid()}]'); "
                "signal.signal(signal.SIGUSR1, lambda *a: None); "
                "print('READY', flush=True); time.sleep(600)")


def scenario_usr1_reuse() -> dict:
    """A task-tree request for an armed actor whose pid goes, while the
    request checks it, to a process without a SIGUSR1 handler (for which
    the signal's default action is death)."""
    from tractor_diag import procfs, tasks

    old = _spawn_ready([sys.executable, "-c", _ARMED_ACTOR, "old"])
    seen = procfs.read_proc(old.pid)
    assert seen is not None and seen.actor is not None and seen.handles_signal(signal.SIGUSR1)
    newcomer: list[subprocess.Popen] = []
    original = tasks.announced_path

    def replace_then_look(pid, target=None):
        found = original(pid, target)
        old.kill()
        old.wait()
        time.sleep(0.05)
        take_pid(old.pid)
        newcomer.append(_spawn_ready([sys.executable, "-c", _SLEEP]))
        return found

    tasks.announced_path = replace_then_look
    try:
        got = tasks.request(seen)
    finally:
        tasks.announced_path = original
    (new,) = newcomer
    time.sleep(0.3)
    out = dict(reused_pid=new.pid == old.pid, result=type(got).__name__,
               status=getattr(got, "status", None), new_rc=new.poll())
    if new.poll() is None:
        new.kill()
    new.wait()
    return out


def scenario_shm_late_holder(directory: str) -> dict:
    """A segment nobody uses when scanned, mapped by a process before the
    sweep runs: the sweep of that scan must keep it."""
    from tractor_diag import shm

    path = os.path.join(directory, "late")
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    scan = shm.scan(directory)
    before = {f.name: f.status for f in scan.files}
    m = _spawn_ready([sys.executable, THIS, "mapper", path, "map"])
    removals = shm.sweep(scan)
    out = dict(before=before, removed=[os.path.basename(r.path) for r in removals if r.removed],
               reasons=[r.reason for r in removals], left=sorted(os.listdir(directory)))
    m.kill()
    m.wait()
    return out


_TITLED = ("import os, sys, time, setproctitle; "
           "setproctitle.setproctitle(f'_subactor[{sys.argv[1]}@{os.getpid()}]'); "
           "print('READY', flush=True); time.sleep(600)")


def prog_container_init(python: str) -> None:
    """pid 1 of a nested PID namespace, run as ``tini`` (a known subreaper):
    leaves an orphaned actor, then reaps whatever exits."""
    subprocess.Popen(["sh", "-c", '"$0" -c "$1" boxed >/dev/null 2>&1 &', python, _TITLED])
    _ready()
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.1)


def _titled(word: str) -> int | None:
    for p in _ns_procs():
        if any(f"_subactor[{word}@" in a for a in p["argv"]):
            return p["pid"]
    return None


def scenario_container_orphan(tmp: str) -> dict:
    """Default-mode reap beside a 'container' (a nested PID namespace whose
    init is tini) holding an orphaned actor of the same uid, and an orphaned
    actor of our own namespace as the control."""
    tini = os.path.join(tmp, "tini")  # the system python under a subreaper's name
    os.symlink(SYSTEM_PYTHON, tini)
    box = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", tini,
                            THIS, "container-init", sys.executable],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert box.stdout.readline().startswith(b"READY")
    subprocess.run(["sh", "-c", '"$0" -c "$1" ours >/dev/null 2>&1 &', sys.executable, _TITLED])
    assert wait_for(lambda: _titled("boxed") is not None and _titled("ours") is not None), \
        _ns_procs()
    boxed, ours = _titled("boxed"), _titled("ours")
    r = subprocess.run([sys.executable, "-m", "tractor_diag", "reap", "--grace", "1", "--json"],
                       capture_output=True, text=True, timeout=60)
    time.sleep(0.3)
    out = dict(rc=r.returncode, planned=[t["pid"] for t in json.loads(r.stdout)["plan"]["targets"]],
               boxed=boxed, ours=ours, boxed_alive=alive(boxed), ours_alive=alive(ours))
    box.kill()  # --kill-child: the nested init dies with it, and its namespace
    box.wait()
    return out


# pid 2 of a fresh namespace: an orphaned actor (its parent is init) with an
# actor child (``_TITLED``, argv[1]) and a child of another uid (argv[2:]).
_PID_TWO = ("import os, subprocess, sys, time, setproctitle; "
            "setproctitle.setproctitle(f'_subactor[two@{os.getpid()}]'); "
            "kid = subprocess.Popen([sys.executable, '-c', sys.argv[1], 'three'], "
            "stdout=subprocess.PIPE); kid.stdout.readline(); "
            "other = subprocess.Popen(sys.argv[2:]); "
            "print('READY', kid.pid, other.pid, flush=True); time.sleep(600)")


def scenario_pid_two() -> dict:
    """Run as pid 1 of a fresh namespace itself (under ns-init, its reaper
    thread would hold pid 2): pid 2 there is an ordinary process, and
    neither it nor its children may be refused as kernel threads."""
    assert os.getpid() == 1, "pid-two must be the init of its namespace"
    two = subprocess.Popen([sys.executable, "-c", _PID_TWO, _TITLED,
                            *as_nobody(["sleep", "600"])], stdout=subprocess.PIPE, text=True)
    three, other = (int(w) for w in two.stdout.readline().split()[1:])
    reap = [sys.executable, "-m", "tractor_diag", "reap", "--all", "--json"]

    def run(*args: str) -> dict:
        r = subprocess.run([*reap, *args], capture_output=True, text=True, timeout=60)
        return {"rc": r.returncode, "report": json.loads(r.stdout) if r.stdout.strip() else None,
                "stderr": r.stderr}

    before = {p["pid"]: p["start"] for p in _ns_procs()}
    dry = run("--parent", "2", "--dry-run")
    after_dry = {p["pid"]: p["start"] for p in _ns_procs()}
    real = run("--grace", "5")
    with contextlib.suppress(subprocess.TimeoutExpired):
        two.wait(10)  # signalled: reaped by us, its parent (not signalled: the test says so)
    return dict(two=two.pid, three=three, other=other, dry=dry, real=real,
                dry_left_all=all(after_dry.get(pid) == start for pid, start in before.items()),
                alive={pid: alive(pid, before[pid]) for pid in (two.pid, three, other)})


SCENARIOS = {
    "pid-two": scenario_pid_two,
    "container-orphan": scenario_container_orphan,
    "shm-late-holder": scenario_shm_late_holder,
    "usr1-reuse": scenario_usr1_reuse,
    "pid-reuse": scenario_pid_reuse,
    "tick-reuse": scenario_tick_reuse,
    "socket-reuse": scenario_socket_reuse,
    "shm-default": scenario_shm_default,
}


def main(argv: list[str]) -> None:
    prog, args = argv[0], argv[1:]
    try:
        if prog == "ns-init":
            prog_ns_init()
        elif prog == "spawner":
            prog_spawner(args[0])
        elif prog == "as-actor":
            sep = args.index("--")
            prog_as_actor(args[0], args[sep + 1:])
        elif prog == "twin":
            prog_twin()
        elif prog == "container-init":
            prog_container_init(args[0])
        elif prog == "mapper":
            prog_mapper(args[0], args[1])
        elif prog == "scenario":
            print(json.dumps(SCENARIOS[args[0]](*args[1:])), flush=True)
        else:
            sys.exit(f"unknown program {prog!r}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
