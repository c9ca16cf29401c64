"""watch: re-run a verb in the alternate screen, repainting without flicker."""
from __future__ import annotations

import argparse

HELP = "re-run a verb every few seconds in the alternate screen (no flicker)"
DESCRIPTION = """\
Run VERB with its ARGS every SEC seconds and show its output full screen,
like watch(1) but in-process and without flicker: each frame is painted over
the previous one. The header shows the interval, the command, the time, and
the verb's exit code when it fails.

Keys: q or Ctrl-C quits (the terminal is restored), space runs it again now.
A resize redraws at once.

  tractor-diag watch ptree pytest
  tractor-diag watch -n 0.5 ptree --tree --cpu 1234

Exit codes: 0 after quitting, 2 usage error (checked before the screen opens).
"""

# Verbs that cannot be repainted: watch itself, and the dashboard (it owns
# the terminal).
UNWATCHABLE = {"watch": "watch cannot watch itself", "dash": "dash is interactive: run it directly"}


def add_interval(parser) -> None:
    from ..watch import DEFAULT_INTERVAL

    parser.add_argument(
        "-n", "--interval", type=float, default=DEFAULT_INTERVAL, metavar="SEC",
        help=f"seconds between runs (default {DEFAULT_INTERVAL:g}, at least 0.1)",
    )


def add_arguments(parser) -> None:
    add_interval(parser)
    parser.add_argument("verb", metavar="VERB", help="the verb to run (ptree, stacks, bindspace, ...)")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the verb's arguments")


def _verb(name: str):
    """-> (parser, module) of a verb that can be watched, or UsageError."""
    from ..errors import UsageError
    from ..invoke import verb_parser
    from . import VERBS

    if name in UNWATCHABLE:
        raise UsageError(UNWATCHABLE[name])
    if name not in VERBS:
        choices = ", ".join(v for v in VERBS if v not in UNWATCHABLE)
        raise UsageError(f"unknown verb {name!r} (choose from {choices})")
    return verb_parser(name)


def run(args, out) -> int:
    import shlex

    from .. import watch as screen
    from ..render import want_color

    interval = screen.check_interval(args.interval)
    parser, mod = _verb(args.verb)
    argv = list(args.args)
    # Bad arguments are reported now, in the normal screen, with exit 2.
    parser.parse_args(argv)
    out_fd, in_fd = screen.terminal_fds(out)
    color = want_color("auto", out)

    def produce() -> screen.Frame:
        buf = screen.Capture(color)
        rc = run_parsed(mod.run, parser, argv, buf, f"tractor-diag {args.verb}")
        return screen.Frame(buf.getvalue(), rc)

    command = shlex.join(["tractor-diag", args.verb, *argv])
    return screen.run(produce, interval=interval, command=command,
                      out_fd=out_fd, in_fd=in_fd, color=color)


def run_parsed(run, parser, argv: list[str], out, prog: str) -> int:
    """One run of a verb into ``out``: an expected failure is one line there.

    KeyboardInterrupt is not caught: in watch, Ctrl-C ends the watch.
    """
    from ..invoke import run_mapped

    return run_mapped(lambda: run(parser.parse_args(argv), out), out, prog,
                      catch_interrupt=False)
