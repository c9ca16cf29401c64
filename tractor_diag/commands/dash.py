"""dash: the Textual dashboard, attached to trees or launching one."""
from __future__ import annotations

HELP = "live dashboard: attach to trees, or launch and supervise a program (dash -- CMD ARGS...)"
DESCRIPTION = """\
A live view of actor trees: every process with its liveness bucket and
state, CPU, memory, age and kernel wait channel; the selected process's
command line, parent address, sockets and children; a timeline of spawns,
exits (with codes), zombies, orphans and runaways.

  tractor-diag dash [PID|PATTERN ...]        attach (no target: every tree
                                             that holds tractor actors)
  tractor-diag dash [OPTIONS] -- CMD ARGS... launch CMD and supervise it

In launch mode the program's stdin is /dev/null, its stdout/stderr go to
the Log tab line by line, its exit code is shown, and quitting stops its
whole tree: SIGINT, a grace period (--grace), then SIGKILL. Where the
machine allows it (cgroup v2, writable by us) the program runs in a cgroup
of its own, so even a daemon that left its session is stopped; elsewhere
orphans are adopted (child subreaper) and anything left is named on exit.
The exit status is the program's (128+N when a signal N ended it).

Keys: s stacks (py-spy) · t trio task tree (SIGUSR1, only with a handler)
d dump-all of the selected tree · r reap the selected subtree (asks first)
k send a signal (asks first) · p pause · i interval · / filter
a actors only · l events/log · q quit · ctrl+p command palette.
"""


def add_options(parser) -> None:
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS",
        help="sampling interval (default 1.0)",
    )
    parser.add_argument(
        "--grace", type=float, default=3.0, metavar="SECONDS",
        help="launch mode: how long the tree gets after SIGINT on quit before SIGKILL (default 3)",
    )
    parser.add_argument(
        "--no-strays", action="store_true",
        help="attach mode: leave out actors outside the watched trees (ghosts of other runs)",
    )
    parser.add_argument(
        "--strays", action="store_true",
        help="launch mode: also show actors outside the launched tree (ghosts of other "
             "runs; by default only the launched tree and its own orphans are shown)",
    )
    parser.add_argument(
        "--no-subreaper", action="store_true",
        help="launch mode: do not adopt orphans of the launched tree "
             "(they then re-parent to init and are shown as strays/orphans only if actors)",
    )
    parser.add_argument(
        "--no-cgroup", action="store_true",
        help="launch mode: do not run the program in a cgroup of its own, even where "
             "possible (also: TRACTOR_DIAG_NO_CGROUP=1)",
    )


def add_arguments(parser) -> None:
    import argparse

    add_options(parser)
    parser.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="PID|PATTERN ... | -- CMD ARGS",
        help="roots to attach to, or '--' and the command to launch",
    )


def split_argv(args) -> tuple[list[str], list[str] | None]:
    """-> (targets, command to launch or None); options given after the
    targets are parsed too (argparse's REMAINDER would swallow them)."""
    from ..errors import UsageError

    argv = list(args.argv or [])
    command = None
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
        if not command:
            raise UsageError("tractor-diag dash: nothing to launch after '--'")
    if any(a.startswith("-") for a in argv):
        from ..invoke import Parser

        p = Parser(prog="tractor-diag dash")
        add_options(p)
        p.add_argument("targets", nargs="*")
        ns = p.parse_args(argv)
        for name in ("interval", "grace", "no_subreaper", "no_strays", "strays", "no_cgroup"):
            if getattr(ns, name) != p.get_default(name):
                setattr(args, name, getattr(ns, name))
        argv = ns.targets
    if command is not None and argv:
        raise UsageError("tractor-diag dash: give roots to attach to, or '-- CMD ARGS' to launch, not both")
    return argv, command


def strays_of(args) -> bool | None:
    """--strays / --no-strays, or None: the mode's default (attach: shown,
    launch: only the launched tree)."""
    if args.strays and args.no_strays:
        from ..errors import UsageError

        raise UsageError("tractor-diag dash: --strays and --no-strays contradict each other")
    return True if args.strays else False if args.no_strays else None


def check_command(command: list[str]) -> None:
    import os
    import shutil

    from ..errors import NotFound

    exe = command[0]
    if os.sep in exe:
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise NotFound(f"cannot launch {exe}: not an executable file")
    elif shutil.which(exe) is None:
        raise NotFound(f"cannot launch {exe}: command not found")


def check_roots(targets: list[str]) -> None:
    """NotFound, as one line, when none of the roots given exists. Pids
    alone are looked up in /proc: a snapshot of the whole box for that was
    a tenth of what the dashboard spent before its first frame."""
    from ..trees import Targets

    parsed = Targets(targets)
    if parsed.patterns:
        from ..trees import snapshot_for

        snapshot_for(targets)  # a pattern is matched against every command line
        return
    if not any(_is_process(pid) for pid in parsed.pids):
        from ..errors import NotFound

        raise NotFound("no such process: " + ", ".join(map(str, parsed.pids)))


def _is_process(pid: int) -> bool:
    """``pid`` is a process (a thread group's leader), as a pass over /proc
    lists it; another thread's id has a /proc entry too, but is no root."""
    from ..procfs import status_field

    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            tgid = status_field(f.read(), b"Tgid")
    except OSError:
        return False
    return tgid is not None and tgid.strip() == str(pid).encode()


def run(args, out) -> int:
    import sys

    from ..errors import DiagError, UsageError

    targets, command = split_argv(args)
    strays = strays_of(args)
    if not 0.1 <= args.interval <= 3600:
        raise UsageError("tractor-diag dash: --interval must be between 0.1 and 3600 seconds")
    if not 0 <= args.grace <= 600:
        raise UsageError("tractor-diag dash: --grace must be between 0 and 600 seconds")
    if command is not None:
        check_command(command)
    elif targets:
        check_roots(targets)  # one clear line if nothing matches
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DiagError("tractor-diag dash: needs a terminal (stdin and stdout must be a tty); "
                        "use 'tractor-diag ptree' or 'watch' otherwise")

    import gc

    # Start-up allocates a great many objects that all live on (modules,
    # classes, widgets, styles), and the collector walked them some 200
    # times before the first frame: a sixth of the CPU spent until then.
    # The app turns it back on at its first frame.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from ..tui.app import DashApp

        app = DashApp(targets, launch=command, interval=args.interval, grace=args.grace,
                      subreaper=not args.no_subreaper, strays=strays,
                      cgroup=False if args.no_cgroup else None)
        app.collect_after_first_frame = collecting
        try:
            app.run()
        finally:
            if app.supervisor is not None and app.guest.running:
                app.supervisor.kill_now()
    finally:
        if collecting:
            gc.enable()
    if command is not None:
        sup = app.supervisor
        if app.launch_error:
            out.write(f"tractor-diag dash: {app.launch_error}\n")
            return 1
        if sup is not None and sup.pid is not None:
            return _report(app, sup, out)
    return 0


def _report(app, sup, out) -> int:
    """The quit message; -> the launched program's exit status."""
    from ..launch import status_code
    from ..model import exit_status

    code = sup.returncode
    status = "?" if code is None else exit_status(code)
    if app.child_running_at_quit:
        how = "SIGINT, then SIGKILL" if sup.killed else "SIGINT"
        out.write(f"tractor-diag dash: launched pid {sup.pid} was running at quit: "
                  f"stopped its tree ({how}, held by {app.containment}); exit status {status}\n")
    else:
        out.write(f"tractor-diag dash: launched pid {sup.pid} exited {status}; "
                  f"its tree was held by {app.containment}\n")
    from ..safetext import escape

    for pid, title in sup.survivors:
        out.write(f"tractor-diag dash: still running after quit: pid {pid} {escape(title)}\n")
    if sup.cgroup_left:
        out.write(f"tractor-diag dash: could not remove {sup.cgroup_left}\n")
    if code is None:
        return 1
    return status_code(code)
