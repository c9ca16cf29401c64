"""``dump-all``: one shareable directory holding everything about a hung tree.

Layout of a bundle (``<root>/<UTC stamp>-<label>-<random>/``)::

    summary.md          read this first: the verdicts (`why`), then where each one waits
    why.json            wait-for edges and verdicts with their evidence
    meta.json           versions, host, kernel, argv, label, times, what is missing and why
    tree.txt/.json      the process tree (ptree --tree / Snapshot), with listening addresses
    ipc.json            the IPC graph (`ipc.graph`): listeners, peers, parent/registrar edges
    stacks.txt/.json    every process: kernel side, Python stacks, task trees
    stacks/<pid>.txt    the same, one file per process (and .json)
    tasks/<pid>.txt     a process's whole task-tree dump, as it wrote it
    bindspace.txt/.json the UDS bindspace scan (`bindspace`); shm.json: /dev/shm
    history.json        the sampler's recent snapshots and events, when one ran

The bundle is written under a hidden temporary name in the same directory
and renamed into place when complete, so a reader never sees half a bundle.
Names carry microseconds and a random suffix: two bundles taken within the
same second never collide. The default root follows platformdirs like the
tractor runtime does: ``$XDG_CACHE_HOME/tractor/hung-dumps``.
"""
from __future__ import annotations

import errno
import os
import platform
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Sequence

import msgspec.json

from .bundlemodel import BundleMeta, History, Missing  # noqa: F401 - History: its old name
from .model import Snapshot, to_json
from .stackmodel import ProcStacks, StacksOptions, StacksReport, TaskTree


def default_root() -> str:
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("tractor"), "hung-dumps")


def _slug(label: str | None) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", label or "").strip("-.")
    return text[:60] or "dump"


def _bundle_name(label: str | None, now: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
    return f"{stamp}-{_slug(label)}-{secrets.token_hex(3)}"


def _missing(report: StacksReport) -> list[Missing]:
    out = []
    for p in report.procs:
        if p.python.status != "ok":
            out.append(Missing(pid=p.pid, what="python stack",
                               why=f"{p.python.status}: {p.python.reason}"))
        if p.kernel.stack is None:
            out.append(Missing(pid=p.pid, what="kernel stack", why=p.kernel.stack_reason or "?"))
        if p.tasks.status not in ("collected", "no-handler", "not-requested", "not-asked"):
            out.append(Missing(pid=p.pid, what="task tree",
                               why=f"{p.tasks.status}: {p.tasks.reason}"))
    return out


# ---------------------------------------------------------------------------
# writing the bundle
# ---------------------------------------------------------------------------

def _mkdir_refusal(root: str, exc: OSError) -> str:
    """Why no bundle directory could be made in ``root``. A directory that
    exists but takes no new entries (``/proc``, ``/sys``) answers ENOENT,
    which would read as if it were missing."""
    import errno

    if os.path.isdir(root):
        if exc.errno == errno.EROFS:
            return "not writable (read-only file system)"
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
            return "not writable (the directory exists but refuses new entries)"
    elif os.path.exists(root) or exc.errno == errno.ENOTDIR:
        return "not a directory"
    return exc.strerror or str(exc)


def write_bundle(
    snap: Snapshot,
    *,
    label: str | None = None,
    out_dir: str | None = None,
    options: StacksOptions = StacksOptions(),
    deadline: float | None = None,
    history: History | None = None,
    targets: Sequence[str] = (),
    interactive: bool = False,
    known_tasks: dict[int, TaskTree] | None = None,
    hints: dict[int, str] | None = None,
) -> BundleMeta:
    """Capture stacks for ``snap`` and write the bundle; returns its meta
    (``meta.path`` is the final directory). ``known_tasks``: task trees
    written in-process (not asked again); ``hints``: pid -> why the caller
    knows it is stuck (the summary lists it first)."""
    from . import __version__
    from .render import Style
    from .render.ptree import render_tree
    from .render.stacks import render_proc, render_report
    from .safetext import escape_block
    from .diagnosis import examine
    from .diagnosis.where import whereabouts_of
    from .diagnosis.rules import stale_sockets, stuck_reasons
    from .render.summary import render_summary
    from .pyspy import no_py_spy_reason, py_spy_version

    started = time.time()
    root = out_dir or default_root()
    try:
        os.makedirs(root, exist_ok=True)
        tmp = _Partial(root)
    except OSError as exc:
        from .errors import DiagError

        raise DiagError(f"cannot create a bundle in {root}: {_mkdir_refusal(root, exc)}") from None
    try:
        scan_missing: list[Missing] = []
        # one IPC graph for ipc.json and the diagnosis; the bundle scans the
        # bindspace itself (bindspace.json), within the bound
        graph = _ipc_graph(snap, scan_missing)
        report, diag = examine(snap, options, deadline=deadline, interactive=interactive,
                               bindspace=False, ipc=graph, known_tasks=known_tasks,
                               hints=hints)
        plain = Style(False, wide=True)  # a file: nothing clipped
        wheres = whereabouts_of(report)
        files: dict[str, bytes | str] = {
            "tree.txt": render_tree(snap, plain, width=200) + "\n",
            "tree.json": to_json(snap),
            "stacks.txt": render_report(report, wheres, plain, no_py_spy_reason()) + "\n",
            "stacks.json": to_json(report),
        }
        for p in report.procs:
            files[f"stacks/{p.pid}.txt"] = render_proc(p, wheres[p.pid], plain) + "\n"
            files[f"stacks/{p.pid}.json"] = to_json(p)
            if p.tasks.status == "collected":
                # as the process wrote it, but no raw escape sequence in a
                # file someone will `cat`
                files[f"tasks/{p.pid}.txt"] = escape_block(p.tasks.text) + "\n"
        if history is not None:
            files["history.json"] = to_json(history)
        if graph is not None:
            files["ipc.json"] = to_json(graph)
        bind = _scans(scan_missing, deadline, files)
        if bind is not None:
            # stale socket files: verdicts of the box, from the bundle's own scan
            mine, diag.stale_elsewhere = stale_sockets(bind, snap)
            diag.verdicts += mine
        files["why.json"] = to_json(diag)
        uname = platform.uname()
        meta = BundleMeta(
            path="", label=label, started=started, finished=0.0, duration=0.0,
            host=socket.gethostname(), kernel=f"{uname.system} {uname.release}",
            platform=platform.platform(), python=sys.version.split()[0],
            tractor_diag=__version__, py_spy=report.py_spy,
            # Only ask a py-spy that answered: a wedged one would eat the bound.
            py_spy_version=py_spy_version(report.py_spy)
            if any(p.python.status == "ok" for p in report.procs) else None,
            argv=list(sys.argv), targets=list(targets), roots=list(snap.roots),
            pids=[p.pid for p in report.procs], stuck=sorted(stuck_reasons(diag)),
            files=sorted([*files, "meta.json", "summary.md"]),
            missing=_missing(report) + scan_missing, sampler_history=history is not None,
        )
        try:
            for name, data in files.items():
                tmp.write(name, data)
            final = _bundle_name(label, started)
            while tmp.taken(final):  # the random suffix makes this a formality
                final = _bundle_name(label, time.time())
            meta.path = os.path.join(root, final)
            meta.finished = time.time()
            meta.duration = meta.finished - started
            tmp.write("summary.md", render_summary(report, wheres, snap, meta, diag))
            tmp.write("meta.json", msgspec.json.format(to_json(meta)))
            tmp.publish(final)
        except OSError as exc:  # a full disk, a quota, the dir removed under us
            from .errors import DiagError

            raise DiagError(f"cannot write the bundle in {root}: {exc.strerror or exc}; "
                            "nothing was kept") from None
        finally:
            tmp.close()
        return meta
    except BaseException:
        # Every way out (an error, a signal turned into an exception, ^C)
        # leaves no half-written bundle behind.
        tmp.discard()
        raise


def _ipc_graph(snap: Snapshot, missing: list[Missing]):
    """The IPC graph of the snapshot (``ipc.json``), its listening addresses
    put on the entries for ``tree.txt``; a failure goes into ``missing``."""
    from .ipc import annotate, graph

    try:
        g = graph(snap)
    except Exception as exc:  # noqa: BLE001 - reported in meta.json instead
        missing.append(Missing(what="IPC graph", why=f"{type(exc).__name__}: {exc}"))
        return None
    annotate(snap, g)
    return g


def _scans(missing: list[Missing], deadline: float | None, files: dict[str, bytes | str]):
    """The UDS bindspace and /dev/shm scans (what `bindspace` and `reap
    --shm --dry-run` see) into ``files``; returns the bindspace scan (None
    without one). A scan that fails, or is not started because the time
    bound ran out, goes into ``missing``: it never costs the bundle."""
    from . import bindspace, shm
    from .render import Style

    found = None
    for stem, scan in (("bindspace", bindspace.scan), ("shm", shm.scan)):
        what = f"{stem} scan"
        if deadline is not None and time.monotonic() >= deadline:
            missing.append(Missing(what=what, why="not started: the capture's time bound ran out"))
            continue
        try:
            result = scan()
            files[f"{stem}.json"] = to_json(result)
            if stem == "bindspace":
                from .render.bindspace import render_bindspace

                found = result
                files["bindspace.txt"] = render_bindspace(result, Style(False, wide=True)) + "\n"
        except Exception as exc:  # noqa: BLE001 - reported in meta.json instead
            missing.append(Missing(what=what, why=f"{type(exc).__name__}: {exc}"))
    return found


class _Partial:
    """The bundle while it is written: a fresh dir in ``root``, held by a
    file descriptor. Every file, subdir, mode change and the final rename go
    through descriptors, never through a path: in an out dir someone else
    can write to, the dir may be renamed away or its name made a symlink
    meanwhile, and a write by name would land wherever that points."""

    def __init__(self, root: str):
        self.rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd: int | None = None
        try:
            for _ in range(100):
                self.name = f".partial-{secrets.token_hex(6)}"
                try:
                    os.mkdir(self.name, 0o700, dir_fd=self.rootfd)
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(f"no free temporary name in {root}")
            self.fd = os.open(self.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, dir_fd=self.rootfd)
            st = os.fstat(self.fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise PermissionError(errno.EPERM, "the new bundle dir was replaced (another "
                                      "user can write to the out dir)")
            self.ident = (st.st_dev, st.st_ino)
        except BaseException:
            self.close()
            os.close(self.rootfd)
            raise

    def write(self, name: str, data: bytes | str) -> None:
        parts = name.split("/")
        dfd = self.fd
        opened = []
        try:
            for sub in parts[:-1]:
                try:
                    os.mkdir(sub, 0o755, dir_fd=dfd)
                except FileExistsError:
                    pass
                dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dfd)
                opened.append(dfd)
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666, dir_fd=dfd)
            with open(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        finally:
            for fd in opened:
                os.close(fd)

    def _still_ours(self) -> bool:
        try:
            st = os.stat(self.name, dir_fd=self.rootfd, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def taken(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.rootfd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def publish(self, final: str) -> None:
        os.fchmod(self.fd, 0o755)  # made 0700; a bundle is meant to be shared
        if not self._still_ours():
            raise PermissionError(errno.EPERM, "the bundle dir was moved or replaced while "
                                  "it was written (another user can write to the out dir)")
        os.rename(self.name, final, src_dir_fd=self.rootfd, dst_dir_fd=self.rootfd)
        self.name = None
        os.close(self.rootfd)
        self.rootfd = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        """Remove the partial dir, only while its name is still our dir."""
        self.close()
        if self.rootfd is None:
            return
        try:
            if self.name is not None and self._still_ours():
                shutil.rmtree(self.name, dir_fd=self.rootfd, ignore_errors=True)
        finally:
            os.close(self.rootfd)
            self.rootfd = None


def dump_all(
    targets: Sequence[str | int],
    *,
    label: str | None = None,
    out_dir: str | None = None,
    options: StacksOptions = StacksOptions(),
    strays: bool = False,
    deadline: float | None = None,
    history: History | None = None,
    interactive: bool = False,
    known_tasks: dict[int, TaskTree] | None = None,
    hints: dict[int, str] | None = None,
) -> BundleMeta:
    """Snapshot the trees of ``targets`` and write a bundle of them (NotFound
    as one line when nothing matches)."""
    from .trees import snapshot_for
    from .errors import NotFound

    snap = snapshot_for([str(t) for t in targets], strays=strays)
    if not snap.entries:
        raise NotFound("no tractor actor trees found")
    return write_bundle(snap, label=label, out_dir=out_dir, options=options,
                        deadline=deadline, history=history,
                        targets=[str(t) for t in targets], interactive=interactive,
                        known_tasks=known_tasks, hints=hints)
