"""``dump-all`` bundles of real hung trees: complete, atomic, unique, and a
summary that names the stuck frames."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

import _leaks_helpers as lh

from tractor_diag.cli import run_verb
from tractor_diag.trees import snapshot_for
from tractor_diag.bundle import BundleMeta, default_root, write_bundle
from tractor_diag.stackmodel import StacksOptions, procs_from_json, report_from_json


def dump_all(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["dump-all", *argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def verdict_lines(summary: str) -> list[str]:
    """The numbered verdicts of summary.md, each with its indented lines."""
    section = summary.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    out: list[str] = []
    for ln in section.splitlines():
        if ln[:1].isdigit():
            out.append(ln)
        elif ln.startswith("   ") and out:
            out[-1] += "\n" + ln
    return out


def table_row(summary: str, pid: int) -> str:
    return next(ln for ln in summary.splitlines() if ln.startswith(f"| {pid} |"))


def test_current_tree_bundle_is_complete(current_tree, tmp_path):
    tree = current_tree(depth=2, breadth=2, hang="sleep", unarmed=["leaf_1_1"])
    actors = tree.actors()
    root = tmp_path / "bundles"
    rc, out, err = dump_all(str(tree.root), "--label", "sleepy leaves", "-o", str(root))
    assert rc == 0, err
    path = Path(out.strip())
    assert path.parent == root and path.is_dir()
    assert "sleepy-leaves" in path.name
    # written under a temporary name, renamed when complete: nothing partial left
    assert [p.name for p in root.iterdir()] == [path.name]

    meta = json.loads((path / "meta.json").read_text())
    assert meta["label"] == "sleepy leaves" and meta["path"] == str(path)
    assert meta["roots"] == [tree.root]
    assert set(actors.values()) <= set(meta["pids"])
    for name in ("summary.md", "meta.json", "tree.txt", "tree.json", "stacks.txt", "stacks.json",
                 "bindspace.txt", "bindspace.json", "shm.json"):
        assert (path / name).is_file(), name
        assert name in meta["files"]
    for pid in meta["pids"]:
        assert (path / "stacks" / f"{pid}.txt").is_file()
        assert (path / "stacks" / f"{pid}.json").is_file()
    armed = [pid for name, pid in actors.items() if name != "leaf_1_1"]
    for pid in armed:
        dump = (path / "tasks" / f"{pid}.txt").read_text()
        assert "trio run: active" in dump and "Actor.main" in dump
    assert not (path / "tasks" / f"{actors['leaf_1_1']}.txt").exists()
    assert meta["python"] and meta["kernel"].startswith("Linux") and meta["py_spy_version"]
    # the tree's own sockets, in the test's isolated bindspace, all live
    bind = json.loads((path / "bindspace.json").read_text())
    assert bind["dir"] == str(tree.bindspace)
    socks = {e["name"]: e["status"] for e in bind["entries"]}
    for name, pid in actors.items():
        assert socks[f"{name}@{pid}.sock"] == "live-active"
    assert "live-active" in (path / "bindspace.txt").read_text()
    assert json.loads((path / "shm.json").read_text())["dir"] == "/dev/shm"

    report = report_from_json((path / "stacks.json").read_bytes())
    assert {p.pid for p in report.procs} == set(meta["pids"])
    for pid in meta["pids"]:
        (one,) = procs_from_json(b"[" + (path / "stacks" / f"{pid}.json").read_bytes() + b"]")
        assert one.pid == pid
    assert str(tree.root) in (path / "tree.txt").read_text()

    summary = (path / "summary.md").read_text()
    assert summary.index("## Verdicts") < summary.index("## All processes")
    lines = verdict_lines(summary)
    # one verdict per sleeping leaf, each at the bottom of its chain; nobody else
    assert len(lines) == 4, summary
    for name in ("leaf_0_0", "leaf_0_1", "leaf_1_0", "leaf_1_1"):
        line = next(ln for ln in lines if f"**sync-blocked**: {name} ({actors[name]}) is blocked "
                    "in time.sleep at current_tree.py:" in ln)
        assert "a sync call that a cancel cannot interrupt" in line
        spawner = "spawner_" + name[5]
        assert f"waits for child {spawner} (trio Process.wait); {spawner} waits for child {name} " \
               "(trio Process.wait)" in line
        assert "kernel: wchan hrtimer_nanosleep" in line
        row = table_row(summary, actors[name])
        assert "live/blocked" in row and "| hrtimer_nanosleep |" in row
        assert "current_tree.py:" in row and "in Actor.hang" in row
        if name == "leaf_1_1":
            assert "no task dumper armed" in row
        else:
            assert "task '__main__.Actor.main' [running] at current_tree.py:" in row
    assert sorted(meta["stuck"]) == sorted(actors[n] for n in actors if n.startswith("leaf"))
    why = json.loads((path / "why.json").read_text())
    assert {v["pid"] for v in why["verdicts"]} == set(meta["stuck"])


def test_parent_waiting_on_child_in_summary(current_tree, tmp_path):
    tree = current_tree(depth=2, breadth=1, hang="wait-child-sync")
    actors = tree.actors()
    rc, out, err = dump_all(str(tree.root), "-o", str(tmp_path), "--no-tasks")
    assert rc == 0, err
    summary = (Path(out.strip()) / "summary.md").read_text()
    (line,) = verdict_lines(summary)
    assert line.startswith(f"1. **sync-blocked**: spawner_0 ({actors['spawner_0']}) is blocked in "
                           "os.waitpid at current_tree.py:")
    # the kernel names the child it waits for
    assert f"spawner_0 waits for child leaf_0_0 (os.waitpid)" in line
    assert f"wait4 names pid {actors['leaf_0_0']}" in line
    row = table_row(summary, actors["spawner_0"])
    assert "| do_wait |" in row and "in Actor.hang" in row


@pytest.mark.released
def test_released_tree_summary_names_the_sleeping_leaf(released_tree, tmp_path):
    tree = released_tree(depth=1, breadth=2, hang="sleep")
    actors = tree.actors()
    rc, out, err = dump_all(str(tree.root), "-o", str(tmp_path))
    assert rc == 0, err
    path = Path(out.strip())
    summary = (path / "summary.md").read_text()
    lines = verdict_lines(summary)
    assert len(lines) == 2, summary
    for name in ("leaf_0", "leaf_1"):
        line = next(ln for ln in lines if f"**sync-blocked**: {name} ({actors[name]}) is blocked "
                    "in time.sleep at released_tree.py:" in ln)
        assert "under an RPC task (tractor _invoke)" in line and "in _hang_leaf" in line
        assert "no task dumper armed" in table_row(summary, actors[name])
    meta = msgspec.json.decode((path / "meta.json").read_bytes(), type=BundleMeta)
    assert set(actors.values()) <= set(meta.pids)


def test_bundles_in_the_same_second_never_collide(spawn, tmp_path):
    proc = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)"])
    snap = snapshot_for([str(proc.root)], strays=False)
    options = StacksOptions(tasks=False)
    root = tmp_path / "bundles"
    paths = {write_bundle(snap, label="same", out_dir=str(root), options=options).path
             for _ in range(3)}
    assert len(paths) == 3
    assert sorted(p.name for p in root.iterdir()) == sorted(Path(p).name for p in paths)


def test_default_root_follows_xdg_cache_home(spawn, tmp_path):
    proc = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)"])
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "tractor_diag", "dump-all", "--no-tasks",
                          str(proc.root)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path / "cache" / "tractor" / "hung-dumps"
    assert (path / "summary.md").is_file()
    assert default_root().endswith("/tractor/hung-dumps")


def test_json_prints_meta(spawn, tmp_path):
    proc = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)"])
    rc, out, err = dump_all("--json", "-o", str(tmp_path), str(proc.root))
    assert rc == 0, err
    meta = json.loads(out)
    assert Path(meta["path"]).is_dir() and meta["pids"] == [proc.root]
    assert meta["missing"] == []


@pytest.mark.parametrize("argv, code, needle", [
    (["999999999"], 1, "no such process"),
    (["-o", "/proc/self/nope", "1"], 1, "cannot create a bundle in /proc/self/nope"),
    # an existing directory that takes no new entries answers ENOENT: not "missing"
    (["-o", "/proc", "1"], 1, "cannot create a bundle in /proc: not writable"),
    (["-o", "/etc/hostname", "1"], 1, "cannot create a bundle in /etc/hostname: not a directory"),
    (["--task-timeout", "-1", "1"], 2, "--task-timeout"),
    (["--label"], 2, "expected one argument"),
])
def test_bad_input_one_line(argv, code, needle):
    rc, out, err = dump_all(*argv)
    assert rc == code
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "No such file or directory" not in err or "nope" in err


# --- every way out leaves no partial bundle ---------------------------------------------------

_SLEEPER = "import time; print('READY', flush=True); time.sleep(600)"


def test_full_filesystem_is_one_line(spawn, tmp_path):
    """ENOSPC: a tiny tmpfs, filled up, in a mount namespace of its own."""
    proc = spawn([sys.executable, "-c", _SLEEPER])
    mnt = tmp_path / "full"
    mnt.mkdir()
    script = ('mount -t tmpfs -o size=64k tdiag "$1" && mkdir "$1/b" '
              '&& { head -c 1M /dev/zero > "$1/fill" 2>/dev/null || true; } '
              '&& shift && "$@"; echo "RC=$?"; ls -A "$0"')
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, f"{mnt}/b", str(mnt),
         sys.executable, "-m", "tractor_diag", "dump-all", "--no-tasks", "-o", f"{mnt}/b",
         str(proc.root)],
        capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], r.stderr
    rc_line, *left = r.stdout.split()
    assert rc_line == "RC=1"
    assert left == [], f"left in the bundle dir: {left}"
    assert not any(mnt.iterdir())  # the tmpfs never showed up out here


@pytest.fixture
def wedged_py_spy(tmp_path):
    """A py-spy stand-in that never answers (its sleep is in its group)."""
    marker = tmp_path / "spy.pids"
    stand_in = tmp_path / "py-spy"
    stand_in.write_text(f"#!/bin/sh\nsleep 600 &\necho $! >> {marker}\nwait\n")
    stand_in.chmod(0o755)
    since = lh.boot_ticks_now()
    yield stand_in, marker
    for pid in marker.read_text().split() if marker.exists() else ():
        lh.kill_if(int(pid), not_before=since, argv=["sleep", "600"])


def proc_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_mid_run_removes_the_partial_bundle(spawn, tmp_path, wedged_py_spy, sig):
    import signal
    import time

    stand_in, marker = wedged_py_spy
    procs = [spawn([sys.executable, "-c", _SLEEPER]) for _ in range(3)]
    out_dir = tmp_path / "bundles"
    env = dict(os.environ, TRACTOR_DIAG_PY_SPY=str(stand_in))
    run = subprocess.Popen(
        [sys.executable, "-m", "tractor_diag", "dump-all", "--no-tasks", "--timeout", "60",
         "--jobs", "1", "-o", str(out_dir), *(str(p.root) for p in procs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        assert [p.name[:9] for p in out_dir.iterdir()] == [".partial-"]
        sent = time.monotonic()
        run.send_signal(getattr(signal, sig))
        out, err = run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert time.monotonic() - sent < 5, "did not stop promptly"
    assert run.returncode == 128 + getattr(signal, sig), (run.returncode, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and f"stopped by {sig}" in err, err
    assert list(out_dir.iterdir()) == []
    spies = [int(p) for p in marker.read_text().split()]
    assert len(spies) == 1, "a dump started after the signal"
    assert not proc_alive(spies[0]), "the running py-spy was left behind"


def test_bundle_lists_a_stale_socket_among_the_verdicts(uds_socket, current_tree, tmp_path):
    """The tree's own stale socket file (its root actor's name, its binder
    dead while the tree ran) is a verdict; a ghost of an earlier run in the
    same dir is one count."""
    ghost = uds_socket(name="ghost", live=False)
    time.sleep(1.1)  # older than the tree by more than the slack
    tree = current_tree(depth=1, breadth=1, hang="none")
    stale = uds_socket(name="root", live=False)
    rc, out, err = dump_all(str(tree.root), "-o", str(tmp_path), "--no-tasks")
    assert rc == 0, err
    path = Path(out.strip())
    summary = (path / "summary.md").read_text()
    verdicts = summary.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    assert f"- **stale-socket**: stale socket file {stale.path.name} in " in verdicts
    assert ghost.path.name not in summary
    assert "- 1 stale socket file of other runs in the bindspace dir" in verdicts
    why = json.loads((path / "why.json").read_text())
    assert [v["name"] for v in why["verdicts"] if v["kind"] == "stale-socket"] == [stale.path.name]
    assert why["stale_elsewhere"] == 1
    assert why["chains"] == []
