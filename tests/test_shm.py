"""The ``/dev/shm`` sweep with real mappers.

Each test works in a private dir on the real ``/dev/shm`` tmpfs (passed as
``--shm-dir`` / ``scan(dir)``), so other sessions' segments are never in
scope. Verdicts of "unused" need every process of the box to be readable,
which is not the case here (the sandbox's own pid 1 is unreadable even to
root): those scans run inside a private PID namespace (`_reap_helpers.NsInit`),
where /proc lists only the test's processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from _reap_helpers import NOBODY, SYSTEM_PYTHON, THIS, NsInit, as_nobody, wait_for
from tractor_diag import shm

PY = sys.executable
CLI = [PY, "-m", "tractor_diag"]
CAPLESS = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def shm_dir():
    d = Path(tempfile.mkdtemp(prefix="tdx-shm-", dir="/dev/shm"))
    d.chmod(0o755)  # uid 65534 maps files in here
    yield d
    shutil.rmtree(d, ignore_errors=True)


def segment(d: Path, name: str, size: int = 8192) -> Path:
    p = d / name
    p.write_bytes(b"\0" * size)
    p.chmod(0o644)
    return p


def ns_mapper(ns: NsInit, path: Path, mode: str, prefix=(), python=PY) -> int:
    """A mapper inside the namespace -> its pid there."""
    return int(ns.spawn([*prefix, python, THIS, "mapper", path, mode])["line"].split()[1])


def ns_sweep(ns: NsInit, d: Path, *extra, prefix=()) -> tuple[int, dict]:
    r = ns.run([*prefix, *CLI, "reap", "--shm-only", "--shm-dir", d, "--json", *extra])
    assert r["stdout"], r["stderr"]
    return r["rc"], json.loads(r["stdout"])


def files_of(report: dict) -> dict[str, dict]:
    return {f["name"]: f for f in report["shm"]["scan"]["files"]}


def removed(report: dict) -> list[str]:
    return [Path(r["path"]).name for r in report["shm"]["removals"] if r["removed"]]


def test_mapped_held_and_unused(ns, shm_dir):
    mapped, held, unused = (segment(shm_dir, n) for n in ("mapped", "held", "unused"))
    m = ns_mapper(ns, mapped, "map")
    h = ns_mapper(ns, held, "hold")
    rc, report = ns_sweep(ns, shm_dir)
    assert rc == 0
    files = files_of(report)
    assert {n: f["status"] for n, f in files.items()} == {
        "mapped": "in-use", "held": "in-use", "unused": "unused"}
    assert files["mapped"]["holders"] == [m] and files["held"]["holders"] == [h]
    assert removed(report) == ["unused"]
    assert sorted(p.name for p in shm_dir.iterdir()) == ["held", "mapped"]
    procs = ns.procs()
    assert procs[m]["state"] != "Z" and procs[h]["state"] != "Z"


def test_mapping_without_fd_is_seen_on_the_host(spawn, shm_dir):
    """In the host namespace too: a segment only mapped (its fd closed) is in use."""
    seg = segment(shm_dir, "seg")
    pid = int(spawn([PY, THIS, "mapper", str(seg), "map"]).ready_line.split()[1])
    assert not any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/seg")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    scan = shm.scan(str(shm_dir))
    assert [(f.name, f.status, f.holders) for f in scan.files] == [("seg", "in-use", [pid])]
    assert shm.sweep(scan) == [] and seg.exists()


def test_only_own_regular_files(shm_dir):
    theirs = segment(shm_dir, "theirs")
    os.chown(theirs, NOBODY, NOBODY)
    outside = segment(Path(tempfile.mkdtemp(prefix="tdx-shm-out-", dir="/dev/shm")), "target")
    try:
        os.symlink(outside, shm_dir / "link")
        (shm_dir / "subdir").mkdir()
        segment(shm_dir / "subdir", "deep")
        os.mkfifo(shm_dir / "fifo")
        scan = shm.scan(str(shm_dir))
        assert scan.files == []
        assert shm.sweep(scan) == []
        assert theirs.exists() and outside.exists() and (shm_dir / "subdir" / "deep").exists()
        assert (shm_dir / "link").is_symlink()
        # for the other user's sweep, their file is the one in scope
        assert [f.name for f in shm.scan(str(shm_dir), uid=NOBODY).files] == ["theirs"]
    finally:
        shutil.rmtree(outside.parent, ignore_errors=True)


def test_holder_in_another_mount_namespace(ns, shm_dir, tmp_path):
    """A process that opened the segment through a bind mount only it sees:
    its fd link names a path that means nothing here; the inode still matches."""
    held = segment(shm_dir, "held")
    unused = segment(shm_dir, "unused")
    view = Path(tempfile.mkdtemp(prefix="tdx-mnt-", dir="/tmp"))
    try:
        script = f"mount --bind {shm_dir} {view} && exec {PY} {THIS} mapper {view}/held hold"
        pid = int(ns.spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
                           )["line"].split()[1])
        rc, report = ns_sweep(ns, shm_dir)
        files = files_of(report)
        assert files["held"]["status"] == "in-use" and files["held"]["holders"] == [pid]
        assert removed(report) == ["unused"]
        assert held.exists() and not unused.exists()
        assert not any(view.iterdir())  # the bind mount never showed up out here
    finally:
        os.rmdir(view)


def test_mapped_by_a_thread_after_the_leader_exited(spawn, shm_dir):
    """The thread group leader exits (its maps and fd table read empty) while
    another thread keeps running with the segment mapped."""
    seg = segment(shm_dir, "seg")
    code = ("import ctypes, mmap, os, sys, threading, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)\n"
            "os.close(fd)\n"
            "threading.Thread(target=lambda: time.sleep(600)).start()\n"
            "print('READY', os.getpid(), flush=True)\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")
    pid = spawn([PY, "-c", code, str(seg)], label="zombie-leader").root
    assert wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z", 5)
    assert Path(f"/proc/{pid}/maps").read_text() == ""
    scan = shm.scan(str(shm_dir))
    assert [(f.name, f.status, f.holders) for f in scan.files] == [("seg", "in-use", [pid])]
    assert shm.sweep(scan) == [] and seg.exists()
    os.kill(pid, signal.SIGKILL)  # no main thread left to act on the teardown's SIGINT


def test_unreadable_mapper_means_keep(ns, shm_dir):
    """A segment mapped by another user's process: a sweeper that may not
    read that process's maps (root without capabilities) cannot prove the
    segment unused, so it keeps it, and every other unclaimed segment too."""
    mapped = segment(shm_dir, "mapped-by-nobody")
    unused = segment(shm_dir, "unused")
    pid = ns_mapper(ns, mapped, "map", prefix=as_nobody([]), python=SYSTEM_PYTHON)
    assert ns.procs()[pid]["uid"] == NOBODY
    probe = ns.run([*CAPLESS, PY, "-c", f"open('/proc/{pid}/maps').read()"])
    assert "PermissionError" in probe["stderr"], "the capless sweeper can read the mapper after all"

    rc, report = ns_sweep(ns, shm_dir, prefix=CAPLESS)
    assert rc == 0
    files = files_of(report)
    assert files["mapped-by-nobody"]["status"] == "unknown"
    assert files["unused"]["status"] == "unknown"
    assert f"pid {pid} (python3)" in files["unused"]["note"]
    # pid 1 (the namespace's init, root with all capabilities) is out of reach too
    assert pid in report["shm"]["scan"]["unreadable"]
    assert set(report["shm"]["scan"]["unreadable"]) <= {1, pid}
    assert report["shm"]["removals"] == []
    assert mapped.exists() and unused.exists()

    # control: allowed to read the mapper, the sweep sees the mapping and
    # removes only the truly unused segment
    rc, report = ns_sweep(ns, shm_dir)
    files = files_of(report)
    assert files["mapped-by-nobody"]["status"] == "in-use"
    assert files["mapped-by-nobody"]["holders"] == [pid]
    assert removed(report) == ["unused"]
    assert mapped.exists() and not unused.exists()
    assert ns.procs()[pid]["state"] != "Z"


def test_replaced_between_scan_and_unlink(shm_dir):
    seg = segment(shm_dir, "seg")
    scan = shm.scan(str(shm_dir))
    # decided unused (as a scan with every process readable would), then the
    # name is swapped for a symlink before the sweep gets to it
    scan.files = [msgspec.structs.replace(f, status="unused") for f in scan.files]
    seg.unlink()
    os.symlink("/etc/hostname", seg)
    (removal,) = shm.sweep(scan)
    assert not removal.removed and "replaced" in removal.reason
    assert seg.is_symlink()


def test_dry_run_and_text(ns, shm_dir):
    segment(shm_dir, "unused")
    r = ns.run([*CLI, "reap", "--shm-only", "--shm-dir", shm_dir, "--dry-run", "--color", "never"])
    assert r["rc"] == 0, r["stderr"]
    assert "would unlink 1" in r["stdout"] and f"{shm_dir}/unused" in r["stdout"]
    assert (shm_dir / "unused").exists()


def test_unknown_is_reported_in_text(ns, shm_dir):
    segment(shm_dir, "seg")
    ns_mapper(ns, shm_dir / "seg", "hold", prefix=as_nobody([]), python=SYSTEM_PYTHON)
    segment(shm_dir, "other")
    r = ns.run([*CAPLESS, *CLI, "reap", "--shm-only", "--shm-dir", shm_dir, "--color", "never"])
    assert r["rc"] == 0
    assert f"kept (unknown) {shm_dir}/other" in r["stdout"]
    assert "cannot prove it unused" in r["stdout"]


# --- holders that reach the file by another path or through another fd table --------------
# A tmpfs mounted only inside the namespace stands in for /dev/shm: the bind
# mount and the files live and die with the namespace.

@pytest.fixture
def private_shm(ns, tmp_path):
    """-> (shm, view): a private tmpfs and a bind mount of it, both in the namespace only."""
    root, view = tmp_path / "shm", tmp_path / "view"
    root.mkdir()
    view.mkdir()
    ns.call("mount-tmpfs", path=str(root))
    r = ns.run(["mount", "--bind", root, view])
    assert r["rc"] == 0, r["stderr"]
    return root, view


def ns_sh(ns: NsInit, script: str) -> str:
    r = ns.run(["sh", "-ec", script])
    assert r["rc"] == 0, r["stderr"]
    return r["stdout"]


def ns_segments(ns: NsInit, d: Path, *names: str) -> None:
    ns_sh(ns, "; ".join(f"head -c 8192 /dev/zero > {d}/{n}" for n in names))


def ns_left(ns: NsInit, d: Path) -> list[str]:
    return sorted(ns_sh(ns, f"ls -A {d}").split())


def test_held_through_a_bind_mount(ns, private_shm):
    root, view = private_shm
    ns_segments(ns, root, "held", "unused")
    pid = ns_mapper(ns, view / "held", "hold")
    rc, report = ns_sweep(ns, root)
    assert rc == 0
    files = files_of(report)
    assert files["held"]["status"] == "in-use" and files["held"]["holders"] == [pid]
    assert removed(report) == ["unused"]
    assert ns_left(ns, root) == ["held"]


def test_held_through_a_hard_link_in_a_subdirectory(ns, private_shm):
    root, _ = private_shm
    ns_segments(ns, root, "held", "unused")
    ns_sh(ns, f"mkdir {root}/sub && ln {root}/held {root}/sub/alias")
    pid = ns_mapper(ns, root / "sub" / "alias", "hold")
    rc, report = ns_sweep(ns, root)
    files = files_of(report)
    assert files["held"]["status"] == "in-use" and files["held"]["holders"] == [pid]
    assert removed(report) == ["unused"]
    assert ns_left(ns, root) == ["held", "sub"]


def test_held_by_a_thread_with_its_own_fd_table(ns, private_shm):
    """unshare(CLONE_FILES) in a thread: /proc/<pid>/fd never shows the file."""
    root, _ = private_shm
    ns_segments(ns, root, "held", "unused")
    pid = ns_mapper(ns, root / "held", "thread-hold")
    leader_fds = ns_sh(ns, f"ls -l /proc/{pid}/fd/")
    assert f"{root}/held" not in leader_fds  # the case: only the thread's table has it
    rc, report = ns_sweep(ns, root)
    files = files_of(report)
    assert files["held"]["status"] == "in-use" and files["held"]["holders"] == [pid]
    assert removed(report) == ["unused"]
    assert ns_left(ns, root) == ["held"]
