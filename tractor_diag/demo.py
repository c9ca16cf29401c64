"""``python -m tractor_diag.demo``: the dashboard on a bundled hung actor tree.

On a terminal this is ``tractor-diag dash -- <python> -m tractor_diag.demo_tree``:
the dashboard launches the tree (see `tractor_diag.demo_tree` for what is
stuck where), supervises it, and stops all of it when you quit.

Without a terminal (CI, a pipe) there is nothing to look at interactively:
the tree is started the same way, shown once as ``ptree --tree`` (with a
CPU window, so the runaway shows), and stopped cleanly.

Either way, socket files the tree's SIGKILLed actors could not unlink are
removed afterwards (only those named after a pid of this tree that is gone).
"""
from __future__ import annotations

import argparse
import io
import os
import stat
import sys

READY_TIMEOUT = 30.0


def demo_command(no_runaway: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "tractor_diag.demo_tree"]
    if no_runaway:
        argv.append("--no-runaway")
    return argv


def _gone(pid: int) -> bool:
    """Exited: no such pid, or a zombie (nothing left to listen)."""
    from .procfs import read_proc

    proc = read_proc(pid, detail=False)
    return proc is None or proc.state in ("Z", "X")


def sweep_sockets(pids: set[int]) -> list[str]:
    """Unlink ``<name>@<pid>.sock`` files of ``pids`` that are gone, and the
    task-dump files (``/tmp/tractor-stackscope-<pid>.log``) they wrote."""
    from .actors import parse_sock_name
    from .bindspace import default_dir
    from .errors import DiagError

    removed: list[str] = []
    for pid in pids:
        dump = f"/tmp/tractor-stackscope-{pid}.log"
        if _ours(dump) and _gone(pid):
            try:
                os.unlink(dump)
                removed.append(dump)
            except OSError:
                pass
    try:
        directory, _notes = default_dir()  # without platformdirs' fallback warning
        names = os.listdir(directory)
    except (OSError, DiagError):
        return removed
    for name in names:
        parsed = parse_sock_name(name)
        if parsed is None or parsed[1] not in pids or not _gone(parsed[1]):
            continue
        path = os.path.join(directory, name)
        try:
            if _ours(path, stat.S_ISSOCK):
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
    return removed


def _ours(path: str, kind=stat.S_ISREG) -> bool:
    """A file of that kind (never a symlink) owned by us: a name in /tmp or
    a shared dir proves nothing about whose it is."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return kind(st.st_mode) and st.st_uid == os.geteuid()


async def print_once(argv: list[str], out, grace: float = 2.0, cpu: float = 0.5) -> int:
    """Start the tree, print its ``ptree --tree`` once, stop it."""
    import trio

    from .cli import run_verb
    from .launch import Supervisor

    ready = trio.Event()
    errors: list[str] = []

    def on_output(stream: str, lines: list[str]) -> None:
        if stream == "stdout" and any(line.startswith("READY") for line in lines):
            ready.set()
        if stream == "stderr":
            errors.extend(lines)

    sup = Supervisor(argv, on_output=on_output, grace=grace)
    rc = 0
    async with trio.open_nursery() as nursery:
        pid = await nursery.start(sup.run)
        with trio.move_on_after(READY_TIMEOUT) as waited:
            await ready.wait()
        if waited.cancelled_caught:
            out.write(f"demo tree did not come up within {READY_TIMEOUT:.0f}s\n")
            out.writelines(line + "\n" for line in errors[-20:])
            rc = 1
        else:
            buf = io.StringIO()
            rc = await trio.to_thread.run_sync(
                lambda: run_verb(["ptree", "--tree", "--no-strays", "--cpu-window", str(cpu), str(pid)], out=buf, err=buf))
            out.write(buf.getvalue())
        out.write("stopping the demo tree (SIGINT, grace, SIGKILL)...\n")
        nursery.cancel_scope.cancel()
    out.write(f"demo tree stopped (root exit status {sup.returncode}); "
              f"{len(sup.killed)} process(es) needed SIGKILL\n")
    sweep_sockets(sup.seen_pids)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tractor_diag.demo",
        description="Run the dashboard on a bundled hung actor tree "
                    "(without a terminal: print its tree once and stop it).",
    )
    parser.add_argument("--no-runaway", action="store_true",
                        help="keep the demo's runaway actor idle (no core burnt)")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval (s)")
    parser.add_argument("--grace", type=float, default=2.0,
                        help="after SIGINT on quit, seconds before SIGKILL")
    parser.add_argument("--strays", action="store_true",
                        help="also show actors outside the demo tree (other runs' leftovers)")
    parser.add_argument("--print", dest="print_once", action="store_true",
                        help="print the tree once and stop, even on a terminal")
    args = parser.parse_args(argv)
    cmd = demo_command(args.no_runaway)

    if args.print_once or not (sys.stdin.isatty() and sys.stdout.isatty()):
        import trio

        return trio.run(print_once, cmd, sys.stdout, args.grace)

    from .tui.app import DashApp

    app = DashApp(launch=cmd, interval=args.interval, grace=args.grace,
                  strays=True if args.strays else None)
    try:
        app.run()
    finally:
        if app.supervisor is not None and app.guest.running:
            app.supervisor.kill_now()
    if app.supervisor is not None:
        sweep_sockets(app.supervisor.seen_pids)
        print(f"demo tree (root pid {app.supervisor.pid}) stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
