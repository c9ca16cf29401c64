"""Decoys no test owns, to prove the suite touched only what it started.

``./dev test`` runs ``start`` before the suite and ``check`` after it (every
Python), then ``stop``. The decoys are what a careless test or a careless
``reap`` would hit on a developer's machine:

- ``actor``: an orphaned actor, titled ``_subactor[canary@<pid>]`` like the
  current tractor runtime (setproctitle), adopted by init or the nearest
  subreaper (double fork);
- ``socket``: an orphaned process listening on ``canary@<pid>.sock`` in the
  bindspace dir, resolved the way the library resolves it;
- ``shm``: an orphaned process holding ``/dev/shm/tractor-diag-canary-<pid>``
  open (not mapped).

Each decoy blocks every catchable signal and takes them with
``sigtimedwait``, recording each one with its sender (pid, uid, command
line) in ``<state dir>/<kind>.signals``: a signal never ends it, so a whole
reap ladder shows. SIGKILL and SIGSTOP cannot be caught: ``check`` sees the
decoy gone, replaced or stopped instead. A decoy also exits by itself once
its state dir is removed or after ``TRACTOR_DIAG_CANARY_HOURS`` (default 6),
so an interrupted run leaves nothing for long.

    python tests/canary.py start DIR    # decoys up; DIR/state.json
    python tests/canary.py check DIR    # exit 1, one line per harm, when any
    python tests/canary.py stop DIR     # SIGKILL our decoys (pidfd-pinned), remove files

Stdlib only, apart from setproctitle (the actor's title), the suite's poll
loop and stat reader (``_poll``, ``_proc``) and, for the bindspace dir,
``tractor_diag.bindspace.default_dir``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time

from _poll import poll
from _proc import stat_fields

THIS = os.path.abspath(__file__)
KINDS = ("actor", "socket", "shm")
CATCHABLE = sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP})
SHM_DIR = "/dev/shm"
DESCRIBE = {
    "actor": "the orphaned actor",
    "socket": "the live bindspace socket's binder",
    "shm": "the /dev/shm file's holder",
}


# --- /proc, read here with the stdlib: the check must not share the library's bugs ---

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) or None when gone."""
    rest = stat_fields(pid)
    return None if rest is None else (rest[0].decode(), int(rest[1]), int(rest[19]))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "backslashreplace")[:200]
    # one line whatever the argv holds: control characters escaped
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --- the decoys -------------------------------------------------------------------------

def _record(state_dir: str, kind: str, info) -> None:
    line = json.dumps({"signal": _signame(info.si_signo), "from_pid": info.si_pid,
                       "from_uid": info.si_uid, "from": _cmdline(info.si_pid),
                       "code": info.si_code, "at": time.time()})
    with open(os.path.join(state_dir, f"{kind}.signals"), "a") as f:
        f.write(line + "\n")


def decoy(kind: str, state_dir: str) -> None:
    """Run as a decoy of ``kind`` (the grandchild of ``start``)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, CATCHABLE)
    for signum in CATCHABLE:  # a handler too, so SigCgt shows them caught like an actor's
        try:
            signal.signal(signum, lambda *a: None)
        except (OSError, ValueError, RuntimeError):
            pass
    me = os.getpid()
    info: dict = {"pid": me, "start": _stat(me)[2]}
    keep = []
    if kind == "actor":
        import setproctitle

        title = f"_subactor[canary@{me}]"
        setproctitle.setproctitle(title)
        info["title"] = title
    elif kind == "socket":
        from tractor_diag.bindspace import default_dir

        path_dir, _ = default_dir()
        made = not os.path.isdir(path_dir)
        os.makedirs(path_dir, mode=0o700, exist_ok=True)
        path = os.path.join(path_dir, f"canary@{me}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen()
        keep.append(s)
        info.update(path=path, ino=os.lstat(path).st_ino, made_dir=path_dir if made else None)
    elif kind == "shm":
        path = os.path.join(SHM_DIR, f"tractor-diag-canary-{me}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"canary\n" * 512)
        keep.append(fd)
        info.update(path=path, ino=os.fstat(fd).st_ino)
    tmp = os.path.join(state_dir, f"{kind}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.rename(tmp, os.path.join(state_dir, f"{kind}.json"))
    deadline = time.monotonic() + 3600 * float(os.environ.get("TRACTOR_DIAG_CANARY_HOURS", "6"))
    while os.path.isdir(state_dir) and time.monotonic() < deadline:
        got = signal.sigtimedwait(CATCHABLE, 2.0)
        if got is not None:
            _record(state_dir, kind, got)
    # left behind by an interrupted run: tidy up our own file and go
    if kind in ("socket", "shm"):
        _unlink_if(info["path"], info["ino"])
    os._exit(0)


def _unlink_if(path: str, ino: int) -> None:
    """Unlink ``path`` only while it is the file we made (same inode)."""
    try:
        if os.lstat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass


def _spawn_orphan(kind: str, state_dir: str) -> None:
    """Double fork: the decoy's parent exits at once, so init or the nearest
    subreaper adopts it; it runs in a session of its own, on /dev/null."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1):
                    os.dup2(null, fd)
                err = os.open(os.path.join(state_dir, f"{kind}.stderr"),
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(err, 2)
                os.execv(sys.executable, [sys.executable, THIS, "decoy", kind, state_dir])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# --- the verbs -----------------------------------------------------------------------

def start(state_dir: str) -> int:
    os.makedirs(state_dir, exist_ok=True)
    for kind in KINDS:
        _spawn_orphan(kind, state_dir)
    state = {}

    def all_up() -> bool:
        for kind in KINDS:
            path = os.path.join(state_dir, f"{kind}.json")
            if kind not in state and os.path.exists(path):
                with open(path) as f:
                    state[kind] = json.load(f)
        return len(state) == len(KINDS)

    if not poll(all_up, 30):
        missing = sorted(set(KINDS) - set(state))
        print(f"canary: decoys did not start: {', '.join(missing)} "
              f"(see {state_dir}/*.stderr)", file=sys.stderr)
        stop(state_dir)
        return 1
    with open(os.path.join(state_dir, "state.json"), "w") as f:
        json.dump(state, f)
    actor = state["actor"]
    ppid = (_stat(actor["pid"]) or ("", 0, 0))[1]
    print(f"canary: decoys up in {state_dir}: {actor['title']} (adopted by pid {ppid}), "
          f"{state['socket']['path']}, {state['shm']['path']}", file=sys.stderr)
    return 0


def _load(state_dir: str) -> dict:
    with open(os.path.join(state_dir, "state.json")) as f:
        return json.load(f)


def harms(state_dir: str) -> list[str]:
    """What happened to the decoys, one line each (empty: untouched)."""
    out = []
    state = _load(state_dir)
    for kind in KINDS:
        d = state[kind]
        who = f"{DESCRIBE[kind]} (pid {d['pid']})"
        try:
            with open(os.path.join(state_dir, f"{kind}.signals")) as f:
                got = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            got = []
        for g in got:
            out.append(f"{who} received {g['signal']} from pid {g['from_pid']} "
                       f"(uid {g['from_uid']}): {g['from']}")
        now = _stat(d["pid"])
        if now is None or now[2] != d["start"]:
            out.append(f"{who} is gone: killed (SIGKILL or a signal it could not record)")
        elif now[0] in ("Z", "X"):
            out.append(f"{who} was killed (a zombie now)")
        elif now[0] in ("T", "t"):
            out.append(f"{who} was stopped (state {now[0]})")
        if kind in ("socket", "shm"):
            try:
                st = os.lstat(d["path"])
                if st.st_ino != d["ino"]:
                    out.append(f"{d['path']} was replaced by another file")
                elif kind == "socket" and not stat.S_ISSOCK(st.st_mode):
                    out.append(f"{d['path']} is no longer a socket")
            except FileNotFoundError:
                out.append(f"{d['path']} was unlinked")
    return out


def check(state_dir: str) -> int:
    found = harms(state_dir)
    if not found:
        print("canary: no decoy was signalled, killed or unlinked", file=sys.stderr)
        return 0
    print(f"canary: FAILED: the test run touched {len(found)} thing"
          f"{'s' if len(found) != 1 else ''} it did not start:", file=sys.stderr)
    for line in found:
        print(f"canary:   {line}", file=sys.stderr)
    return 1


def _kill_pinned(pid: int, start_ticks: int) -> None:
    """SIGKILL our decoy: pidfd first, then the start check, then the signal
    through the pidfd, so a process that took over its pid is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        now = _stat(pid)
        if now is not None and now[2] == start_ticks:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def stop(state_dir: str) -> int:
    """Stop our decoys and remove what they made; then the state dir."""
    import shutil

    for kind in KINDS:
        try:
            with open(os.path.join(state_dir, f"{kind}.json")) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        _kill_pinned(d["pid"], d["start"])
        if "path" in d:
            _unlink_if(d["path"], d["ino"])
        if d.get("made_dir"):
            try:
                os.rmdir(d["made_dir"])  # only if empty
            except OSError:
                pass
    shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("start", "check", "stop"):
        return {"start": start, "check": check, "stop": stop}[argv[0]](argv[1])
    if len(argv) == 3 and argv[0] == "decoy" and argv[1] in KINDS:
        decoy(argv[1], argv[2])
        return 0
    print("usage: canary.py start|check|stop STATE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
