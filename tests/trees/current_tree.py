"""A process tree that looks to the OS exactly like a *current* tractor runtime.

Current tractor is not on the package index, so this script reproduces, for
real, what such a tree shows to ``/proc`` (titles, parent links, sockets). Run it with the
project venv's python (3.11 .. 3.13)::

    python tests/trees/current_tree.py [--depth N] [--breadth M]
        [--hang {sleep,wait-child,wait-child-sync,runaway,none}]
        [--registry] [--unarmed NAME ...] [--root-name NAME]

What every sub-actor does, like the real runtime's trio spawn backend:

- it is started as an ordinary python command line
  (``<python> <this file> --child <path> --parent-addr <sock> ...``) and, first
  thing, calls ``setproctitle.setproctitle(f'_subactor[{name}@{pid}]')``: its
  ``/proc/<pid>/cmdline`` becomes that title padded to the original argv
  length and its ``comm`` the title truncated to 15 bytes;
- it binds and listens on a real UDS socket ``<bindspace>/<name>@<pid>.sock``
  where ``bindspace = platformdirs.user_runtime_dir('tractor')`` (so it follows
  ``$XDG_RUNTIME_DIR``); a path that would overflow the 108-byte limit is bound
  as ``actor.<32 hex>@<pid>.sock``;
- it connects to its parent's socket and keeps that channel open; it reports
  ``ready`` over it once its own subtree is up, and cancels itself when the
  parent channel drops (unless its loop is wedged, see ``--hang``);
- unless named by ``--unarmed``, it arms a SIGUSR1 handler that appends the
  full trio task tree to ``/tmp/tractor-stackscope-<pid>.log``
  (``tractor_diag.taskdump.arm()`` when importable, else a local equivalent).

The root is an ordinary python process (this script, title untouched); it
binds ``<root-name>@<pid>.sock`` and, with ``--registry``, also
``registry@1616.sock``. Every parent is a trio program that spawns its
children with ``trio.lowlevel.open_process`` and waits on them. On
cancellation (SIGINT -> KeyboardInterrupt, or its parent channel closing or
sending ``cancel``) a parent sends ``cancel`` over each child's channel, waits
(2 s for leaves, 2 s more per level below) and SIGKILLs the rest. Sockets are
unlinked on clean exit (a SIGKILLed actor leaves its socket file behind).

Names are deterministic: ``spawner_0``, ``spawner_0_1`` for mid-levels,
``leaf_0_1`` for the last level (``leaf_0`` .. when ``--depth 1``).
Once the whole tree is up the root prints one line ``READY`` on stdout.

Hangs (applied after READY):

- ``sleep``: every leaf is stuck in a sync ``time.sleep(3600)`` inside a task.
- ``wait-child``: the first leaf (``leaf_0_0`` at depth 2) ignores SIGINT and
  SIGTERM and never exits; its parent waits on it forever, and when cancelled
  it terminates that child and then waits on it forever (no SIGKILL fallback).
- ``wait-child-sync``: like ``wait-child`` but the parent of the first leaf is
  blocked in a *synchronous* ``os.waitpid()`` on it (kernel wchan
  ``do_wait``), its trio loop wedged.
- ``runaway``: the first leaf burns CPU in a tight sync loop.
- ``none``: everybody idles in the event loop.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

HANGS = ('sleep', 'wait-child', 'wait-child-sync', 'runaway', 'none')
REGISTRY_SOCK = 'registry@1616.sock'
STACKSCOPE_LOG = '/tmp/tractor-stackscope-{pid}.log'


def actor_name(path: tuple[int, ...], depth: int) -> str:
    kind = 'leaf' if len(path) == depth else 'spawner'
    return kind + '_' + '_'.join(map(str, path))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--depth', type=int, default=2)
    p.add_argument('--breadth', type=int, default=2)
    p.add_argument('--hang', choices=HANGS, default='sleep')
    p.add_argument('--registry', action='store_true',
                   help='root also binds registry@1616.sock')
    p.add_argument('--unarmed', action='append', default=[], metavar='NAME',
                   help='actor that gets no SIGUSR1 handler (repeatable)')
    p.add_argument('--root-name', default='root')
    # internal: set by a parent for its children
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    p.add_argument('--parent-addr', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.depth < 1 or args.breadth < 1:
        p.error('--depth and --breadth must be >= 1')
    return args


ARGS = parse_args() if __name__ == '__main__' else None
if ARGS is not None and ARGS.child is not None:
    # as early as possible, like the real runtime's child entry point
    import setproctitle
    PATH = tuple(int(i) for i in ARGS.child.split('_'))
    NAME = actor_name(PATH, ARGS.depth)
    setproctitle.setproctitle(f'_subactor[{NAME}@{os.getpid()}]')
elif ARGS is not None:
    PATH = ()
    NAME = ARGS.root_name

import platformdirs  # noqa: E402
import trio  # noqa: E402


def log(msg: str) -> None:
    print(f'[{NAME}@{os.getpid()}] {msg}', file=sys.stderr, flush=True)


# --- SIGUSR1 task-tree dump -------------------------------------------------

def _format_task_tree() -> str:
    lines: list[str] = []

    trio_dir = os.path.dirname(trio.__file__)

    def where(task) -> str:
        """The task's await chain outside trio itself (innermost last)."""
        chain = [(f.f_code.co_name, f.f_code.co_filename, lineno)
                 for f, lineno in task.iter_await_frames()]
        own = [c for c in chain if not c[1].startswith(trio_dir)] or chain
        if not own:
            return ''
        return '  @ ' + ' -> '.join(
            f'{name} ({os.path.basename(fn)}:{ln})' for name, fn, ln in own)

    def walk(task, indent: int) -> None:
        lines.append('  ' * indent + f'<Task {task.name!r}>' + where(task))
        for nursery in task.child_nurseries:
            lines.append('  ' * (indent + 1) + '<Nursery>')
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, indent + 2)

    walk(trio.lowlevel.current_root_task(), 0)
    return '\n'.join(lines)


def _local_dump_handler(signum, frame) -> None:
    try:
        tree = _format_task_tree()
    except Exception as err:  # never let the dump kill the actor
        tree = f'<task tree unavailable: {err!r}>'
    header = (f'=== trio task tree of {NAME} (pid {os.getpid()}) at '
              f'{time.strftime("%Y-%m-%dT%H:%M:%S")} ===')
    with open(STACKSCOPE_LOG.format(pid=os.getpid()), 'a') as f:
        f.write(f'{header}\n{tree}\n\n')


def arm_sigusr1() -> str:
    """Install the SIGUSR1 task-tree dump; returns which implementation."""
    try:
        from tractor_diag.taskdump import arm
        arm()
        return 'tractor_diag.taskdump'
    except Exception:
        signal.signal(signal.SIGUSR1, _local_dump_handler)
        return 'local'


# --- UDS channel server -----------------------------------------------------

def bindspace() -> str:
    d = platformdirs.user_runtime_dir('tractor')
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def sock_path(d: str, name: str, pid: int) -> str:
    path = os.path.join(d, f'{name}@{pid}.sock')
    if len(os.fsencode(path)) >= 108:
        import uuid
        path = os.path.join(d, f'actor.{uuid.uuid4().hex}@{pid}.sock')
    return path


async def bind_listener(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    return trio.SocketListener(sock)


class Actor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.path = PATH
        self.name = NAME
        self.is_leaf = len(PATH) == args.depth
        self.ready_children: set[str] = set()
        self.children_up = trio.Event()
        self.sockets: list[str] = []
        self.n_actors = 1
        self.procs: dict[int, trio.Process] = {}
        self.child_chans: dict[str, trio.SocketStream] = {}

    # children report over our socket
    async def handle_conn(self, stream: trio.SocketStream) -> None:
        buf = b''
        async with stream:
            async for chunk in stream:
                buf += chunk
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    parts = line.decode().split()
                    if parts and parts[0] == 'ready':
                        _, name, pid, n = parts
                        self.child_chans[name] = stream
                        self.ready_children.add(name)
                        self.n_actors += int(n)
                        if len(self.ready_children) >= self.args.breadth:
                            self.children_up.set()

    def child_cmd(self, i: int) -> list[str]:
        a = self.args
        cmd = [sys.executable, os.path.abspath(__file__),
               '--depth', str(a.depth), '--breadth', str(a.breadth),
               '--hang', a.hang,
               '--child', '_'.join(map(str, self.path + (i,))),
               '--parent-addr', self.sockets[0]]
        for u in a.unarmed:
            cmd += ['--unarmed', u]
        return cmd

    def is_stuck_parent(self) -> bool:
        """The parent of the never-exiting first leaf (wait-child hangs)."""
        return (self.args.hang in ('wait-child', 'wait-child-sync')
                and len(self.path) == self.args.depth - 1
                and all(i == 0 for i in self.path))

    async def supervise(self, i: int) -> None:
        proc = await trio.lowlevel.open_process(
            self.child_cmd(i), stdin=subprocess.DEVNULL)
        self.procs[i] = proc
        cname = actor_name(self.path + (i,), self.args.depth)
        never_exits = self.is_stuck_parent() and i == 0
        try:
            rc = await proc.wait()
            log(f'child {cname} exited with {rc}')
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    await self.cancel_child(cname, proc, never_exits)

    async def cancel_child(self, cname: str, proc, never_exits: bool) -> None:
        """Like the runtime: a cancel request over the child's channel, a
        bounded soft wait, then a hard kill (never for the stuck parent)."""
        chan = self.child_chans.get(cname)
        with trio.move_on_after(0.5):
            try:
                if chan is not None:
                    await chan.send_all(b'cancel\n')
                else:  # not connected yet: ask the OS
                    proc.send_signal(signal.SIGINT)
            except (trio.BrokenResourceError, trio.ClosedResourceError,
                    trio.BusyResourceError, OSError):
                pass
        if never_exits:
            await proc.wait()  # forever: this child never exits
        # deeper subtrees get longer, so they can hard-kill their own
        # stuck children before we hard-kill them
        levels_below = self.args.depth - len(self.path) - 1
        with trio.move_on_after(2 + 2 * levels_below):
            await proc.wait()
        if proc.returncode is None:
            log(f'hard killing {cname}')
            proc.kill()
            await proc.wait()

    async def watch_parent(self, stream: trio.SocketStream,
                           cancel: trio.CancelScope) -> None:
        why = 'parent channel closed'
        try:
            async for chunk in stream:
                if b'cancel' in chunk:
                    why = 'cancel requested by parent'
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        log(f'{why}; cancelling')
        cancel.cancel()

    async def hang(self) -> None:
        a = self.args
        first = all(i == 0 for i in self.path)
        if self.is_stuck_parent():
            child = self.procs[0]
            if a.hang == 'wait-child-sync':
                # the whole loop wedged in a blocking wait on the child
                os.waitpid(child.pid, 0)
            else:
                await child.wait()
        elif not self.is_leaf:
            pass
        elif a.hang == 'sleep':
            time.sleep(3600)
        elif a.hang == 'runaway' and first:
            n = 0
            while True:
                n += 1
        elif a.hang in ('wait-child', 'wait-child-sync') and first:
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()
        await trio.sleep_forever()

    async def main(self) -> None:
        a = self.args
        if a.hang in ('wait-child', 'wait-child-sync') and self.is_leaf and \
                all(i == 0 for i in self.path):
            # the child that never exits
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.name not in a.unarmed:
            arm_sigusr1()
        d = bindspace()
        pid = os.getpid()
        self.sockets.append(sock_path(d, self.name, pid))
        if a.registry and a.child is None:
            self.sockets.append(os.path.join(d, REGISTRY_SOCK))
        listeners = []
        try:
            for path in self.sockets:
                listeners.append(await bind_listener(path))
            async with trio.open_nursery() as nursery:
                for lst in listeners:
                    nursery.start_soon(trio.serve_listeners,
                                       self.handle_conn, [lst])
                parent = None
                if a.parent_addr:
                    parent = await trio.open_unix_socket(a.parent_addr)
                    nursery.start_soon(self.watch_parent, parent,
                                       nursery.cancel_scope)
                if not self.is_leaf:
                    for i in range(a.breadth):
                        nursery.start_soon(self.supervise, i)
                    await self.children_up.wait()
                if parent is not None:
                    await parent.send_all(
                        f'ready {self.name} {pid} {self.n_actors}\n'.encode())
                else:
                    print('READY', flush=True)
                await self.hang()
        finally:
            for path in self.sockets:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _is_ki(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_ki(e) for e in exc.exceptions)
    return False


if __name__ == '__main__':
    try:
        trio.run(Actor(ARGS).main)
    except BaseException as exc:
        if _is_ki(exc):
            sys.exit(130)
        raise
