"""reap: polite cleanup of orphaned actors, stale UDS sockets and /dev/shm."""
from __future__ import annotations

from . import add_common, write_answer

HELP = "clean up orphaned actors (SIGINT, grace, SIGKILL), stale UDS sockets and /dev/shm"
DESCRIPTION = """\
Default: every orphaned actor of the current user (adopted by init or a
subreaper) in this PID namespace (not a container's) and its whole subtree. --parent PID: the actor descendants of a
live pid instead (init or a subreaper as PID only with --all: their
children are every orphan on the machine). Only actors are signalled
unless --all is given.

Ladder: SIGINT to every target (a stopped one also gets SIGCONT so it can
act on it), wait up to --grace seconds (progress on stderr), SIGKILL the
survivors; then each pid's fate is reported. --dry-run lists exactly the
set that would be signalled.

Never signalled: another user's process, a non-actor (without --all), the
reaper and its ancestors, a pid whose process changed since the scan. Each
target is pinned by a pidfd when planned, after its start time, parent and
command line are checked against the scan; every signal goes through that
pidfd. Without pidfds (Linux < 5.3) nothing is signalled.

Sweeps (after reaping; the *-only forms skip the signalling):
  --uds   unlink stale socket files (binder gone) in the bindspace dir; never
          follows symlinks, never the registry socket while something listens
  --shm   unlink /dev/shm files of yours that no process maps or holds open;
          a file is kept when some process could not be read; every
          process is read again right before the unlinks; only a tmpfs

Exit codes: 0 clean, 1 SIGKILL was needed or something failed / is left,
2 usage error.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--parent", type=int, metavar="PID",
                        help="reap the actor descendants of this live pid instead of orphans")
    parser.add_argument("--all", action="store_true", dest="everything",
                        help="signal non-actor processes in those subtrees too")
    parser.add_argument("--grace", type=float, default=None, metavar="S",
                        help="seconds to wait after SIGINT before SIGKILL (default 5)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="list what would be signalled / unlinked, touch nothing")
    uds = parser.add_mutually_exclusive_group()
    uds.add_argument("--uds", action="store_true", help="also sweep stale UDS socket files")
    uds.add_argument("--uds-only", action="store_true", help="only sweep stale UDS socket files")
    shm = parser.add_mutually_exclusive_group()
    shm.add_argument("--shm", action="store_true", help="also sweep unused /dev/shm files")
    shm.add_argument("--shm-only", action="store_true", help="only sweep unused /dev/shm files")
    parser.add_argument("--bindspace", metavar="NAME|DIR", default=None,
                        help="the bindspace dir for --uds (default: as 'tractor-diag bindspace')")
    parser.add_argument("--shm-dir", metavar="DIR", default=None,
                        help="the shared-memory dir for --shm (default /dev/shm)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr while the grace runs")
    add_common(parser)


def _check(args) -> None:
    from ..errors import UsageError

    only = args.uds_only or args.shm_only
    if args.grace is not None and not args.grace >= 0:
        raise UsageError("--grace needs a number of seconds >= 0")
    if only and (args.parent is not None or args.everything or args.grace is not None):
        raise UsageError("--uds-only/--shm-only signal nothing: "
                         "--parent, --all and --grace do not apply")
    if args.bindspace is not None and not (args.uds or args.uds_only):
        raise UsageError("--bindspace only applies with --uds or --uds-only")
    if args.shm_dir is not None and not (args.shm or args.shm_only):
        raise UsageError("--shm-dir only applies with --shm or --shm-only")


def run(args, out) -> int:
    import sys

    from ..reap import DEFAULT_GRACE, reap
    from ..render.reap import render_reap

    _check(args)
    only = args.uds_only or args.shm_only
    progress = None
    if not args.json and not args.quiet and not args.dry_run:
        from ..safetext import escape

        err = sys.stderr

        def progress(line: str) -> None:
            try:
                err.write(f"reap: {escape(line)}\n")  # may name an actor
                err.flush()
            except (OSError, ValueError):
                pass

    report = reap(
        parent=args.parent,
        everything=args.everything,
        grace=DEFAULT_GRACE if args.grace is None else args.grace,
        dry_run=args.dry_run,
        processes=not only,
        uds=args.uds or args.uds_only,
        shm=args.shm or args.shm_only,
        bindspace_arg=args.bindspace,
        shm_dir=args.shm_dir,
        progress=progress,
    )
    write_answer(args, out, report, lambda st: render_reap(report, st))
    return 0 if report.clean else 1
