"""why: who waits on whom across actors, and why the bottom of the chain
cannot move, with the evidence for each step."""
from __future__ import annotations

from . import add_common, write_answer

HELP = "the verdict: who waits on whom across actors, the root cause, its evidence"
DESCRIPTION = """\
Name the root cause of a hang. For the trees under each root (a pid, or a
pattern matched against command lines / process titles; none: every tree
that holds actors) it reads the kernel state of every process twice (signal
dispositions, tracer, scheduler time, context switches), their Python stacks
(py-spy) and trio task trees between the two reads, and prints:

  each chain, root cause first: who waits for whom (tractor's waiting
  points: Context.wait_for_result, Portal.result, MsgStream.receive, the
  actor nursery's exit, soft_kill, hard_kill, Portal.cancel_actor,
  wait_for_peer, the debugger lock, multiprocessing's Process.join, ...),
  down to the process that cannot move: blocked in a sync call, a runaway
  (judged by the kernel: on a CPU or queued for one all the window, and
  never yielding), stopped, traced, a zombie nobody reaps, ignoring SIGINT
  or SIGTERM, an orphan, a lost cancel, a boot hang, a cycle;
  the evidence for every step, and what to run next.

A process waits on another only with evidence; an idle process gets no
verdict. Stale socket files in the bindspace dir that belong to the trees
are listed too (other runs' are counted).
--json: the wait-for edges, verdicts and chains.
Exit codes: 0 shown (with or without verdicts), 1 nothing matched / no such
pid, 2 usage error.
"""


def add_arguments(parser) -> None:
    from .ptree import add_targets
    from .stacks import add_stack_options

    add_targets(parser)
    add_stack_options(parser)
    add_common(parser)


def run(args, out) -> int:
    from ..diagnosis import examine
    from ..render.why import render_why
    from .stacks import capture_targets

    taken = capture_targets(args, out, examine, verb="why", empty_json="null",
                            needs="kernel state, wchan, schedstat")
    if taken is not None:
        _, diag = taken  # (the stacks report, the diagnosis)
        write_answer(args, out, diag, lambda st: render_why(diag, st))
    return 0
