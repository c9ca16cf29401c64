"""run: launch a program with the task dumper armed in every Python process."""
from __future__ import annotations

HELP = "run CMD with a trio task dumper armed in each of its Python processes (run -- CMD ARGS...)"
DESCRIPTION = """\
  tractor-diag run -- CMD ARGS...

Runs CMD (stdin, stdout and stderr are yours) with TRACTOR_DIAG_TASKDUMP=1
and tractor-diag's start-up hook first on PYTHONPATH: every Python process
of the tree, in any venv, arms tractor_diag.taskdump at interpreter start,
so 'stacks', 'dump-all' and the dashboard get each actor's full trio task
tree on SIGUSR1 (tractor's own stackscope dump shows no task below the main
nursery on Python 3.13). Nothing in CMD's code changes; a program that
installs its own SIGUSR1 handler keeps it. An existing sitecustomize still
runs.

Exit code: CMD's own (128+N when a signal N ended it), 127 when CMD cannot
be started, 2 usage error.
"""


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                        help="'--' and the command to run")


def run(args, out) -> int:
    import os
    import signal
    import subprocess
    import sys
    import threading

    from ..errors import UsageError
    from ..taskdump import startup_env

    argv = list(args.argv or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or not argv[0].strip():
        raise UsageError("tractor-diag run: nothing to run (usage: tractor-diag run -- CMD ARGS...)")
    try:
        proc = subprocess.Popen(argv, env=startup_env())
    except OSError as exc:
        print(f"tractor-diag run: cannot run {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    # SIGTERM/SIGHUP to us are meant for the program; a terminal's ^C
    # already reached it (same process group), so we keep waiting for it.
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def forward(signum, frame):
            if proc.returncode is None:
                proc.send_signal(signum)
        previous = {s: signal.signal(s, forward) for s in forwarded}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        # Processes of the tree killed by a signal could not remove their
        # empty dump files.
        from ..taskdump import sweep_stale

        sweep_stale()
    return rc if rc >= 0 else 128 - rc
