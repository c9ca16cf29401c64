"""A small hung actor tree to point the dashboard at (``python -m tractor_diag.demo``).

It looks to the OS exactly like a current tractor runtime's tree, for real:
every sub-actor sets its process title to ``_subactor[<name>@<pid>]``
(setproctitle), binds and listens on a Unix socket ``<name>@<pid>.sock`` in
the runtime's bindspace (``platformdirs.user_runtime_dir('tractor')``, so it
follows ``$XDG_RUNTIME_DIR``), keeps a channel open to its parent's socket,
and arms a SIGUSR1 task-tree dump (`tractor_diag.taskdump.arm`). The root is
an ordinary python process, as in tractor.

Once up (the root prints ``READY``), it is stuck in the ways real trees get
stuck::

    demo_tree (root)
    ├── gateway            idle, its children:
    │   ├── db_pool        a leaf stuck in a sync time.sleep(): loop wedged
    │   └── cache          healthy, idle in the event loop
    ├── supervisor         waits forever on its child...
    │   └── stubborn       ...which ignores SIGINT/SIGTERM and never exits
    ├── hot_loop           a runaway: a tight CPU loop (--no-runaway: idle)
    └── flaky_parent       never reaps its child...
        └── crasher        ...which exits with code 3: a zombie

Stopping it like Ctrl-C does (SIGINT to the whole process group) ends
everyone but ``stubborn``, which needs SIGKILL; the dashboard's quit does
exactly that. Sockets are unlinked on the way out.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

# parent -> children, and what each actor does once the tree is up.
PLAN: dict[str, list[str]] = {
    "root": ["gateway", "supervisor", "hot_loop", "flaky_parent"],
    "gateway": ["db_pool", "cache"],
    "supervisor": ["stubborn"],
    "flaky_parent": ["crasher"],
}
BEHAVIOUR: dict[str, str] = {
    "db_pool": "sleep",
    "cache": "idle",
    "stubborn": "stubborn",
    "hot_loop": "runaway",
    "crasher": "crash",
    "flaky_parent": "no-reap",
}
CRASH_CODE = 3


def count_actors(name: str = "root") -> int:
    """Sub-actors below ``name``."""
    return sum(1 + count_actors(child) for child in PLAN.get(name, ()))


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tractor_diag.demo_tree",
                                description=__doc__.splitlines()[0])
    p.add_argument("--no-runaway", action="store_true",
                   help="hot_loop idles instead of burning a core")
    p.add_argument("--actor", default="root", help=argparse.SUPPRESS)
    p.add_argument("--parent-addr", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _set_title(name: str) -> None:
    title = f"_subactor[{name}@{os.getpid()}]"
    try:
        import setproctitle
    except ImportError:
        # Without setproctitle only the kernel comm can carry the title.
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        return
    setproctitle.setproctitle(title)


def _log(name: str, msg: str) -> None:
    print(f"[{name}@{os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _bindspace() -> str:
    import platformdirs

    path = platformdirs.user_runtime_dir("tractor")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _sock_path(directory: str, name: str) -> str:
    path = os.path.join(directory, f"{name}@{os.getpid()}.sock")
    if len(os.fsencode(path)) >= 108:  # sun_path limit: the runtime hashes the name
        import uuid

        path = os.path.join(directory, f"actor.{uuid.uuid4().hex}@{os.getpid()}.sock")
    return path


class Actor:
    def __init__(self, args: argparse.Namespace) -> None:
        import trio

        self.args = args
        self.name: str = args.actor
        self.kids = PLAN.get(self.name, [])
        self.behaviour = BEHAVIOUR.get(self.name, "idle")
        if self.behaviour == "runaway" and args.no_runaway:
            self.behaviour = "idle"
        self.sock = ""
        self.ready: set[str] = set()
        self.all_ready = trio.Event()
        self.chans: dict[str, object] = {}
        if not self.kids:
            self.all_ready.set()

    def child_argv(self, child: str) -> list[str]:
        argv = [sys.executable, "-m", "tractor_diag.demo_tree", "--actor", child,
                "--parent-addr", self.sock]
        if self.args.no_runaway:
            argv.append("--no-runaway")
        return argv

    async def serve(self, stream) -> None:
        import trio

        buf = b""
        try:
            async for chunk in stream:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    words = line.decode(errors="replace").split()
                    if len(words) == 3 and words[0] == "ready":
                        self.chans[words[1]] = stream
                        self.ready.add(words[1])
                        if self.ready >= set(self.kids):
                            self.all_ready.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def spawn(self, child: str, nursery) -> None:
        import trio

        proc = await trio.lowlevel.open_process(self.child_argv(child), stdin=subprocess.DEVNULL)
        if self.behaviour == "no-reap":
            # Never wait(): once the child exits it stays a zombie.
            return
        try:
            code = await proc.wait()
            _log(self.name, f"child {child} exited with {code}")
        finally:
            with trio.CancelScope(shield=True):
                await self._stop_child(child, proc)

    async def _stop_child(self, child: str, proc) -> None:
        import trio

        if proc.returncode is not None:
            return
        chan = self.chans.get(child)
        with trio.move_on_after(0.5):
            try:
                if chan is not None:
                    await chan.send_all(b"cancel\n")
                else:
                    proc.send_signal(signal.SIGINT)
            except (trio.BrokenResourceError, trio.ClosedResourceError,
                    trio.BusyResourceError, OSError):
                pass
        if self.name == "supervisor":
            _log(self.name, f"waiting for {child} to finish (forever)")
            await proc.wait()
        with trio.move_on_after(3):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def watch_parent(self, stream, scope) -> None:
        import trio

        try:
            async for chunk in stream:
                if b"cancel" in chunk:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if self.behaviour == "stubborn":
            _log(self.name, "parent says stop; ignoring it")
            return
        scope.cancel()

    async def behave(self) -> None:
        import trio

        if self.behaviour == "sleep":
            _log(self.name, "calling time.sleep(3600) inside a trio task")
            time.sleep(3600)
        elif self.behaviour == "runaway":
            _log(self.name, "spinning in a tight loop")
            n = 0
            while True:
                n += 1
        elif self.behaviour == "crash":
            _log(self.name, f"exiting with code {CRASH_CODE}")
            try:
                os.unlink(self.sock)  # a crash that at least leaves no stale socket
            except OSError:
                pass
            os._exit(CRASH_CODE)
        elif self.behaviour == "stubborn":
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()
        await trio.sleep_forever()

    async def main(self) -> None:
        import trio

        try:
            from tractor_diag.taskdump import arm

            arm()
        except ImportError:
            pass
        self.sock = _sock_path(_bindspace(), self.name)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(self.sock)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self.serve, [listener])
                parent = None
                if self.args.parent_addr:
                    parent = await trio.open_unix_socket(self.args.parent_addr)
                    nursery.start_soon(self.watch_parent, parent, nursery.cancel_scope)
                for child in self.kids:
                    nursery.start_soon(self.spawn, child, nursery)
                await self.all_ready.wait()
                if parent is not None:
                    await parent.send_all(f"ready {self.name} {os.getpid()}\n".encode())
                else:
                    print("READY", flush=True)
                    print(f"demo tree up: root pid {os.getpid()}, {count_actors()} actors",
                          flush=True)
                await self.behave()
        finally:
            try:
                os.unlink(self.sock)
            except OSError:
                pass


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return False


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.actor != "root":
        _set_title(args.actor)
    if BEHAVIOUR.get(args.actor) == "stubborn":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        # A shell's background job inherits SIGINT ignored: stay cancellable
        # by Ctrl-C whatever started us (before trio.run, which only installs
        # its own handler over the default one).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    import trio

    try:
        trio.run(Actor(args).main)
    except BaseException as exc:  # noqa: BLE001
        if _only_interrupts(exc):
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
