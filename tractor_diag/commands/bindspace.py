"""bindspace: classify the socket files of a UDS bindspace dir."""
from __future__ import annotations

from . import add_common, write_answer

HELP = "classify the socket files of the UDS bindspace dir by their binders' liveness"
DESCRIPTION = """\
Scan a tractor UDS bindspace dir and classify each entry by its binder
(the pid in the file name <name>@<pid>.sock):

  live-active     the binder runs and is not orphaned
  orphaned-alive  the binder runs but is an orphaned actor
  orphaned-dead   the binder is gone or a zombie (the file is stale)
  non-tractor     not a socket, or a name of neither tractor shape

registry@1616.sock is the registrar sentinel (1616 is not a pid): it is
alive when something listens on it (per /proc/net/unix).

The dir: with no argument, platformdirs.user_runtime_dir('tractor'), exactly
as the runtime resolves it ($XDG_RUNTIME_DIR/tractor, else /run/user/<uid>/
tractor, else <tmp>/runtime-<uid>/tractor); a bare NAME is that app's dir
beside it; anything with a '/' (or starting with '.' or '~') is a path.
Stale files are removed by 'tractor-diag reap --uds-only'.

Exit codes: 0 scanned, 1 the given dir does not exist, 2 usage error.
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", nargs="?", metavar="NAME|DIR",
                        help="an app name beside the default dir, or a path")
    add_common(parser)


def run(args, out) -> int:
    from ..bindspace import scan
    from ..render.bindspace import render_bindspace

    result = scan(args.dir)
    write_answer(args, out, result, lambda st: render_bindspace(result, st))
    return 0
