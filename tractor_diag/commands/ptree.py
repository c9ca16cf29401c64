"""ptree: the process tree of the given roots, classified into buckets."""
from __future__ import annotations

from . import add_common, write_answer

HELP = "process tree of the given roots, each process in a liveness bucket"
DESCRIPTION = """\
Show the process tree under each root (a pid, or a pattern matched against
the full command line / process title), every process classified:

  zombie  exited, the parent has not reaped it
  orphan  an actor whose parent is gone (adopted by init or a subreaper)
  stray   an actor outside every given root, under an orphan
  live    everything else

With no root given, every tree that holds tractor actors is shown; an empty
root ('' or blank, say an unset variable) is a usage error.
--cpu samples twice, 0.3 s apart, for CPU% and runaways; --cpu-window SEC
chooses the window (0.2 to 60 s). Output to a pipe or file is never clipped.
A pattern that begins with '-' goes after '--':  tractor-diag ptree -- -k
Each process that listens shows its addresses (TCP host:port, Unix sockets
by file name; --json has whole paths). ptree only reads /proc and the
socket tables; --names also reads the stacks of the actors nothing else
names (mp_spawn and mp_forkserver ones) with py-spy, for their names.

--port PORT|HOST:PORT|PATH names the processes listening there instead,
one line each: any process of this network namespace, e.g. who holds the
registry (--port 1616, --port registry@1616.sock).
Exit codes: 0 shown, 1 nothing matched / no such pid / nothing listens on
--port, 2 usage error.
"""


def add_targets(parser) -> None:
    parser.add_argument(
        "targets", nargs="*", metavar="PID|PATTERN",
        help="root pids, or patterns matched against command lines and titles",
    )


def add_arguments(parser) -> None:
    add_targets(parser)
    parser.add_argument("--tree", action="store_true", help="indented tree instead of bucket groups")
    parser.add_argument(
        "--actors", action="store_true",
        help="the actor tree: actors only, each under the actor that spawned it "
             "(not always its OS parent: see --tree for that)",
    )
    parser.add_argument(
        "--cpu", action="store_true",
        help=f"take two samples {DEFAULT_CPU_WINDOW:g} s apart for CPU%% and runaways",
    )
    parser.add_argument(
        "--cpu-window", type=cpu_window, default=None, metavar="SEC",
        help=f"the same, SEC seconds apart ({MIN_CPU_WINDOW:g} to {MAX_CPU_WINDOW:g}; implies --cpu)",
    )
    parser.add_argument(
        "--names", action="store_true",
        help="also name the actors nothing outside names (mp_spawn, mp_forkserver) from "
             "their own stacks: py-spy attaches to each of them for a moment",
    )
    parser.add_argument("--no-strays", action="store_true", help="leave out actors outside the given roots")
    parser.add_argument("--strays", action="store_true",
                        help="with --tree: draw the strays (actors outside the given roots) "
                             "too, not just count them")
    parser.add_argument("--port", default=None, metavar="PORT|HOST:PORT|PATH",
                        help="name the processes listening on this TCP port or Unix socket path")
    add_common(parser)


DEFAULT_CPU_WINDOW = 0.3
# CPU time moves in 10 ms ticks: below this a rate is noise (trees.MIN_RATE_WINDOW,
# not imported here: building the parser must stay cheap).
MIN_CPU_WINDOW = 0.2
# A one-shot look, not a monitor: `watch` or the dashboard sample for longer.
MAX_CPU_WINDOW = 60.0  # trees.MAX_RATE_WINDOW, not imported here either


def cpu_window(text: str) -> float:
    """``--cpu-window`` as argparse's type: a finite number of seconds in
    range, else a usage error naming the bounds."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not MIN_CPU_WINDOW <= value <= MAX_CPU_WINDOW:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from {MIN_CPU_WINDOW:g} to {MAX_CPU_WINDOW:g}")
    return value


def cpu_of(args) -> float | None:
    """The sampling window the options ask for, or None (one sample)."""
    import re

    from ..errors import UsageError

    if args.cpu_window is not None:
        return args.cpu_window
    if not args.cpu:
        return None
    # `--cpu 0.5 PID` from before --cpu took no value: 0.5 would become a
    # pattern matching any command line that holds it.
    for t in args.targets:
        if re.fullmatch(r"\d*\.\d+|\d+\.", t):
            raise UsageError(f"--cpu takes no value ({t!r} would be a root pattern): "
                             f"use --cpu-window {t}")
    return DEFAULT_CPU_WINDOW


def run_port(args, out) -> int:
    from ..errors import NotFound, UsageError
    from ..ipc import port_query
    from ..render.ptree import render_port
    from ..sockmodel import split_port_arg

    if args.targets or args.tree or args.cpu or args.cpu_window is not None:
        raise UsageError("--port takes no roots, --tree or --cpu: it looks at every process")
    if split_port_arg(args.port) == (None, None, None):
        raise UsageError(f"--port: not a port, host:port or socket path: {args.port!r}")
    query = port_query(args.port)
    if not query.holders:
        if query.unseen:
            where = ", ".join(f"{x.kind} {x.addr}" for x in query.unseen)
            raise NotFound(f"{where}: listening, but held by no process we can see "
                           "(another PID namespace, or fds we may not read)")
        raise NotFound(f"nothing listens on {args.port}")
    write_answer(args, out, query, lambda st: render_port(query, st))
    return 0


def run(args, out) -> int:
    from ..ipc import annotate
    from ..trees import snapshot_for
    from ..model import to_json
    from ..render import Style
    from ..render.ptree import render_actor_tree, render_grouped, render_tree

    if args.port is not None:
        return run_port(args, out)
    # machine output carries every field; the text shows none of the costly ones
    cpu = cpu_of(args)
    # with a CPU window: status and schedstat too, so the kernel judges runaways
    snap = snapshot_for(args.targets, cpu, strays=not args.no_strays,
                        full=args.json or cpu is not None)
    annotate(snap)
    if args.names:
        from ..stacks import name_unnamed

        name_unnamed(snap)
    if args.json:
        out.write(to_json(snap).decode() + "\n")
        return 0
    st = Style.for_output(args.color, out)
    if not snap.entries:
        out.write("no tractor actor trees found\n")
        return 0
    if args.actors:
        text = render_actor_tree(snap, st)
    else:
        text = render_tree(snap, st, strays=args.strays) if args.tree else render_grouped(snap, st)
    out.write(text + "\n")
    return 0
