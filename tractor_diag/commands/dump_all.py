"""dump-all: write a complete, shareable snapshot bundle of a hung tree."""
from __future__ import annotations

from . import add_common

HELP = "write a snapshot bundle of a hung tree (tree, stacks, task trees, summary) to a directory"
DESCRIPTION = """\
Capture everything about the trees under each root (a pid, or a pattern
matched against command lines / process titles) into one new directory:

  summary.md        which actors look stuck, with state, wchan and the
                    innermost Python and trio frames: read this first
  meta.json         versions, host, kernel, argv, label, timings, and what
                    could not be collected and why
  tree.txt/.json    the process tree, with each process's listening addresses
  ipc.json          who listens where and who talks to whom (parent
                    channels, registrar connections), from the kernel
  stacks.txt/.json  kernel side, Python stacks (py-spy) and trio task trees
  stacks/<pid>.*    the same per process; tasks/<pid>.txt whole task dumps
  bindspace.*, shm.json  the UDS socket dir and /dev/shm scans

The directory is written under a temporary name and renamed when complete;
an error, a full disk, SIGTERM, SIGHUP or ^C removes it (running py-spy
dumps are killed at once).
Default location: $XDG_CACHE_HOME/tractor/hung-dumps/ (see --out-dir).
Prints the bundle's path (--json: its meta.json).
Exit codes: 0 written, 1 nothing matched / cannot write, 2 usage error,
128+N stopped by signal N.
"""


def add_arguments(parser) -> None:
    from .ptree import add_targets
    from .stacks import add_stack_options

    add_targets(parser)
    parser.add_argument("--label", "-l", default=None, help="a name for the bundle (e.g. the test name)")
    parser.add_argument("--out-dir", "-o", default=None, metavar="DIR",
                        help="where to create the bundle (default: $XDG_CACHE_HOME/tractor/hung-dumps)")
    add_stack_options(parser)
    add_common(parser)


def run(args, out) -> int:
    import sys

    from ..errors import Unsupported
    from ..model import to_json
    from ..procfs import HAVE_PROCFS
    from ..bundle import dump_all
    from .stacks import options_from

    options = options_from(args)
    if not HAVE_PROCFS:
        raise Unsupported("dump-all needs Linux' /proc (kernel state, wchan, SigCgt)")
    interactive = bool(getattr(sys.stdin, "isatty", lambda: False)())
    with _signals_unwind():
        meta = dump_all(args.targets, label=args.label, out_dir=args.out_dir, options=options,
                        strays=args.strays, interactive=interactive)
    if args.json:
        out.write(to_json(meta).decode() + "\n")
    else:
        from ..safetext import escape

        out.write(escape(meta.path) + "\n")
    return 0


class Stopped(Exception):
    """A signal asked us to stop: unwound like ^C so the partial bundle goes."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _signals_unwind():
    """SIGTERM, SIGHUP and SIGINT raise `Stopped` in the main thread, after
    killing the running py-spy dumps, so the bundle's partial dir is removed
    on the way out and the CLI exits with one line and 128 + the signal.
    Further signals while unwinding are ignored: they would cut the clean-up
    short. Off the main thread (xonsh may run aliases in threads) signals
    cannot be caught: nothing changes."""
    import contextlib
    import signal
    import threading

    from ..errors import DiagError
    from ..pyspy import allow_running, cancel_running

    caught = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def stop(signum, _frame):
        for sig in caught:
            signal.signal(sig, signal.SIG_IGN)
        cancel_running()
        raise Stopped(signum)

    @contextlib.contextmanager
    def scope():
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, stop) for sig in caught}
        try:
            yield
        except Stopped as exc:
            err = DiagError(f"stopped by {exc.name}: no bundle was written")
            err.code = 128 + exc.signum
            raise err from None
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            allow_running()

    return scope()
