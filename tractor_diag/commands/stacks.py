"""stacks: where every process of a tree is stuck (kernel, Python, trio)."""
from __future__ import annotations

from . import add_common, write_answer

HELP = "kernel state, Python stacks (py-spy) and trio task trees of every process in a tree"
DESCRIPTION = """\
For every process under each root (a pid, or a pattern matched against the
full command line / process title): the kernel state, wchan and kernel
stack, the Python stack of every thread (py-spy, innermost frame last), and
the trio task tree of processes that armed a SIGUSR1 task dumper (tractor's
stackscope handler or tractor_diag.taskdump). A process without a SIGUSR1
handler is never signalled: the signal's default action would kill it. Nor
is one that is neither a tractor actor nor announced a tractor-diag dumper
(its SIGUSR1 may mean "restart"), unless named with --tasks-from PID. The
process tree is read before any signal is sent.

Dumps run concurrently (--jobs, default: the CPUs free now, at least 2),
each bounded by --timeout. py-spy runs without sudo; on a permission error
it is retried with 'sudo -n' when sudo exists (--sudo lets sudo ask for a
password on a terminal, --no-sudo never uses it). Every missing piece says
why.

py-spy is looked up in $TRACTOR_DIAG_PY_SPY, next to the Python running
tractor-diag, then on PATH.
Exit codes: 0 shown, 1 nothing matched / no such pid, 2 usage error.
"""


def add_stack_options(parser) -> None:
    """Flags shared by ``stacks`` and ``dump-all``."""
    parser.add_argument("--locals", action="store_true", help="show each frame's local variables")
    parser.add_argument("--native", action="store_true", help="include native (C/C++) frames")
    sudo = parser.add_mutually_exclusive_group()
    sudo.add_argument("--sudo", action="store_true",
                      help="on a permission error, let sudo prompt for a password (on a terminal)")
    sudo.add_argument("--no-sudo", action="store_true", help="never fall back to sudo")
    parser.add_argument("--no-tasks", action="store_true",
                        help="do not request trio task trees (no SIGUSR1 is sent)")
    parser.add_argument("--tasks-from", type=int, action="append", default=[], metavar="PID",
                        help="also ask PID for its task tree when it is not a recognised "
                             "actor and announced no dumper (repeatable)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="bound on each py-spy dump (default 5)")
    parser.add_argument("--task-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="bound on waiting for the requested task trees (default 2)")
    parser.add_argument("--jobs", "-j", type=int, default=0, metavar="N",
                        help="dumps run at once (default: the CPUs nothing else is running on now, at least 2)")
    parser.add_argument("--strays", action="store_true",
                        help="also cover stray/orphan actors outside the given roots")


def add_arguments(parser) -> None:
    from .ptree import add_targets

    add_targets(parser)
    add_stack_options(parser)
    add_common(parser)


def options_from(args):
    """argparse namespace -> StacksOptions (usage errors as one line)."""
    from ..errors import UsageError
    from ..stackmodel import StacksOptions

    if args.timeout <= 0 or args.task_timeout <= 0:
        raise UsageError("--timeout and --task-timeout need a positive number of seconds")
    if args.jobs < 0:
        raise UsageError("--jobs needs a number >= 0 (0: the default)")
    sudo = "prompt" if args.sudo else "never" if args.no_sudo else "noninteractive"
    return StacksOptions(
        locals=args.locals, native=args.native, tasks=not args.no_tasks,
        timeout=args.timeout, task_timeout=args.task_timeout, jobs=args.jobs,
        sudo=sudo, tasks_from=tuple(args.tasks_from),
    )


def capture_targets(args, out, capture, *, verb: str, needs: str, empty_json: str):
    """What ``stacks`` and ``why`` share: the options checked, ``/proc``
    required, the targets' tree read before any signal, then
    ``capture(snapshot, options, interactive=stdin is a terminal)``.
    -> what the capture returns, or None when no tree matched (said on
    ``out``: a line, or ``empty_json`` with ``--json``)."""
    import sys

    from ..errors import Unsupported
    from ..procfs import HAVE_PROCFS
    from ..trees import snapshot_for

    options = options_from(args)
    if not HAVE_PROCFS:
        raise Unsupported(f"{verb} needs Linux' /proc ({needs})")
    snap = snapshot_for(args.targets, strays=args.strays)
    if not snap.entries:
        out.write(f"{empty_json}\n" if args.json else "no tractor actor trees found\n")
        return None
    interactive = bool(getattr(sys.stdin, "isatty", lambda: False)())
    return capture(snap, options, interactive=interactive)


def run(args, out) -> int:
    from ..diagnosis.where import whereabouts_of
    from ..pyspy import no_py_spy_reason
    from ..render.stacks import render_report
    from ..stacks import capture

    report = capture_targets(args, out, capture, verb="stacks", empty_json="[]",
                             needs="kernel state, wchan, SigCgt")
    if report is not None:
        write_answer(args, out, report.procs, lambda st: render_report(
            report, whereabouts_of(report), st, no_py_spy_reason()))
    return 0
