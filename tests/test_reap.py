"""``reap`` in the host PID namespace, always scoped with ``--parent`` (or a
dry run): other sessions' processes share this machine and this uid.

Every test starts real processes, runs the real CLI (or the library), and
checks from ``/proc`` (start times included) that exactly the intended
processes were signalled and nothing else.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from _reap_helpers import (
    SYSTEM_PYTHON, THIS, alive, as_nobody, build_leader_exits, kill_pinned,
    leader_exits_argv, orphans_go_to_init, proc_info, released_argv, wait_for,
)

PY = sys.executable
CLI = [PY, "-m", "tractor_diag"]

pytestmark = pytest.mark.timeout(120)


def cli(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def reap_json(*args) -> tuple[int, dict]:
    r = cli("reap", *args, "--json")
    assert r.stdout.strip(), f"rc={r.returncode} stderr={r.stderr}"
    return r.returncode, json.loads(r.stdout)


def planned(report: dict) -> set[int]:
    return {t["pid"] for t in report["plan"]["targets"]}


def skipped(report: dict) -> dict[int, str]:
    return {s["pid"]: s["reason"] for s in report["plan"]["skipped"]}


def starts(pids) -> dict[int, int]:
    return {p: proc_info(p)["start"] for p in pids}


def untouched(start_of: dict[int, int]) -> list[int]:
    """Pids that are no longer the same live process."""
    return [p for p, s in start_of.items() if not alive(p, s)]


def fake_actor(fake_pkg: str, name: str) -> dict:
    """A spawner entry: a released-runtime-shaped actor, reported once it runs."""
    return {"argv": ["env", f"PYTHONPATH={fake_pkg}", PY, *released_argv(PY, name)[1:]],
            "ready": "READY"}


@pytest.fixture
def family(spawn, fake_pkg):
    """A parent (the --parent scope) with one child of each kind.

    -> (parent pid, {kind: pid})"""
    envpy = ["env", f"PYTHONPATH={fake_pkg}"]
    sleep = "import time; time.sleep(600)"
    kinds = {
        "ours": {"argv": [*envpy, PY, *released_argv(PY, "ours")[1:]], "ready": "READY"},
        "nobody": {"argv": as_nobody([*envpy, SYSTEM_PYTHON, *released_argv(SYSTEM_PYTHON, "theirs")[1:]]),
                   "ready": "READY"},
        "plain": ["sleep", "600"],
        "args": [PY, "-c", sleep, "-k", "_subactor[ghost@1]", "tractor._child"],
        "near": ["bash", "-c", "exec -a '_subactor[ghost@1]x' sleep 600"],
    }
    h = spawn([PY, THIS, "spawner", json.dumps(list(kinds.values()))], label="family")
    pids = dict(zip(kinds, map(int, h.ready_line.split()[1:])))

    def settled() -> bool:
        try:
            return (Path(f"/proc/{pids['nobody']}/status").read_text().count("65534") >= 4
                    and Path(f"/proc/{pids['near']}/cmdline").read_bytes().startswith(b"_subactor[ghost@1]x"))
        except OSError:
            return False

    assert wait_for(settled, 10), "family did not settle"
    return h.root, pids


# --- real trees ----------------------------------------------------------------------------

def test_released_tree_dry_run_is_exactly_what_gets_signalled(released_tree):
    tree = released_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    root = actors.pop("root")
    sub = set(actors.values())
    rc, dry = reap_json("--parent", root, "--dry-run")
    assert rc == 0
    assert planned(dry) == sub
    assert all(alive(p) for p in sub), "the dry run signalled something"

    rc, report = reap_json("--parent", root, "--grace", "3")
    assert planned(report) == planned(dry)
    fates = {f["pid"]: f for f in report["outcome"]["fates"]}
    assert set(fates) == sub
    assert {f["fate"] for f in fates.values()} <= {"exited", "killed"}
    assert all(f["signals"][0] == "SIGINT" for f in fates.values())
    assert rc == (1 if report["outcome"]["escalated"] else 0)
    assert wait_for(lambda: not any(alive(p) for p in sub), 5)
    assert root not in planned(report)


def test_current_tree_escalation_and_progress(current_tree):
    """``leaf_0_0`` ignores SIGINT: the ladder must end in SIGKILL, exit 1,
    with progress lines on stderr while the grace runs."""
    tree = current_tree(depth=2, breadth=2, hang="wait-child")
    actors = tree.actors()
    root = actors.pop("root")
    r = cli("reap", "--parent", root, "--grace", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sent SIGINT to 6 processes" in r.stderr
    assert "still running after 1." in r.stderr
    assert "SIGKILL" in r.stderr
    leaf = actors["leaf_0_0"]
    line = next(ln for ln in r.stdout.splitlines() if f" {leaf} " in ln)
    assert line.split()[0] == "killed" and "SIGINT+SIGKILL" in line
    assert "SIGKILL was needed" in r.stdout
    assert wait_for(lambda: not any(alive(p) for p in actors.values()), 5)


def test_json_and_quiet_have_no_progress(spawn, fake_pkg):
    h = spawn([PY, THIS, "spawner", json.dumps([fake_actor(fake_pkg, "a")])])
    r = cli("reap", "--parent", h.root, "--grace", "3", "--json")
    assert r.returncode == 0
    assert r.stderr == ""
    report = json.loads(r.stdout)
    assert report["clean"] is True
    assert [f["fate"] for f in report["outcome"]["fates"]] == ["exited"]


# An actor that, asked to stop, first starts its successor (a supervisor's
# restart, say) and waits until it runs.
_SUCCESSION = """\
import os, subprocess, sys, time
print('READY', flush=True)
try:
    time.sleep(3600)
except KeyboardInterrupt:
    if not os.environ.get('TDIAG_SUCCESSOR'):
        argv = [sys.executable, '-m', 'tractor._child', '--uid', repr(('successor', '0' * 32)),
                '--parent_addr', repr(('127.0.0.1', 1)), '--loglevel', 'error']
        kid = subprocess.Popen(argv, env=dict(os.environ, TDIAG_SUCCESSOR='1'),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        kid.stdout.readline()
        with open(os.environ['TDIAG_SUCCESSOR_FILE'], 'w') as f:
            f.write(str(kid.pid))
    raise SystemExit(130)
"""


def test_an_actor_that_appears_while_reaping_is_reported_not_signalled(spawn, tmp_path):
    """The parent is a child subreaper, so the successor the reaped actor
    starts on SIGINT stays under ``--parent``: the report names it as
    appeared, it is not signalled, and the run is not clean (exit 1)."""
    pkg = Path(tempfile.mkdtemp(prefix="tdiag-succession-", dir="/tmp"))
    try:
        (pkg / "tractor").mkdir()
        (pkg / "tractor" / "__init__.py").write_text("")
        (pkg / "tractor" / "_child.py").write_text(_SUCCESSION)
        record = tmp_path / "successor"
        actor = {"argv": ["env", f"PYTHONPATH={pkg}", f"TDIAG_SUCCESSOR_FILE={record}",
                          PY, *released_argv(PY, "first")[1:]], "ready": "READY"}
        subreaper = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
                     "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
        h = spawn([PY, "-c", subreaper, THIS, "spawner", json.dumps([actor])])
        (first,) = map(int, h.ready_line.split()[1:])
        rc, report = reap_json("--parent", h.root, "--grace", "3")
        successor = int(record.read_text())
        start = proc_info(successor)["start"]
        try:
            assert planned(report) == {first}
            assert [(f["pid"], f["fate"]) for f in report["outcome"]["fates"]] == [(first, "exited")]
            assert [t["pid"] for t in report["appeared"]] == [successor]
            assert rc == 1 and report["clean"] is False
            assert alive(successor, start), "the successor was signalled"
        finally:
            kill_pinned(successor, start)
    finally:
        shutil.rmtree(pkg, ignore_errors=True)


# --- must-not cases, scoped with --parent ------------------------------------------------------

def test_only_own_actors_without_all(family):
    parent, pids = family
    keep = starts([parent, *(p for k, p in pids.items() if k != "ours")])
    rc, report = reap_json("--parent", parent, "--grace", "3")
    assert rc == 0, report
    assert planned(report) == {pids["ours"]}
    why = skipped(report)
    assert why[pids["nobody"]] == "belongs to uid 65534"
    for kind in ("plain", "args", "near"):
        assert why[pids[kind]] == "not an actor (--all to include)"
    assert not untouched(keep), "a must-not process was signalled"
    assert wait_for(lambda: not alive(pids["ours"]), 5)


def test_all_widens_to_non_actors_but_never_another_uid(family):
    parent, pids = family
    keep = starts([parent, pids["nobody"]])
    rc, dry = reap_json("--parent", parent, "--all", "--dry-run")
    expected = {pids[k] for k in ("ours", "plain", "args", "near")}
    assert planned(dry) == expected
    text = cli("reap", "--parent", parent, "--all", "--dry-run", "--color", "never").stdout
    listed = {int(ln.split()[1]) for ln in text.splitlines() if ln.strip().startswith("planned")}
    assert listed == expected
    assert f"{pids['nobody']}" in text and "belongs to uid 65534" in text
    rc, report = reap_json("--parent", parent, "--all", "--grace", "3")
    assert planned(report) == expected
    assert skipped(report)[pids["nobody"]] == "belongs to uid 65534"
    assert {f["fate"] for f in report["outcome"]["fates"]} == {"exited"}
    assert not untouched(keep), "another user's process (or the parent) was signalled"
    assert wait_for(lambda: not any(alive(p) for p in expected), 5)


def test_never_the_reaper_or_its_ancestors(spawn, tmp_path, fake_pkg):
    """The reaper runs below an actor-looking wrapper, itself a child of the
    --parent pid: with --all every other descendant goes, never the chain
    reaper -> sh -> wrapper."""
    out = tmp_path / "report.json"
    script = (f"P=$(cut -d' ' -f4 /proc/$PPID/stat); "
              f"{PY} -m tractor_diag reap --parent $P --all --grace 3 --json > {out}; "
              f"echo done >> {out}.done; exec sleep 600")
    wrapper = [PY, THIS, "as-actor", "wrapper", "--", "sh", "-c", script]
    sibling_actor = fake_actor(fake_pkg, "sib")
    h = spawn([PY, THIS, "spawner", json.dumps([["sleep", "600"], sibling_actor, wrapper])])
    sleeper, sib, wrap = map(int, h.ready_line.split()[1:])
    assert wait_for(lambda: Path(f"{out}.done").exists(), 30), "the reaper did not finish"
    report = json.loads(out.read_text())
    assert planned(report) == {sleeper, sib}
    why = skipped(report)
    assert why[wrap] == "an ancestor of the reaper"
    reaper = [p for p, r in why.items() if r == "the reaper itself"]
    shell = [p for p, r in why.items() if r == "an ancestor of the reaper" and p != wrap]
    assert len(reaper) == 1 and len(shell) == 1
    assert alive(wrap) and alive(shell[0]), "an ancestor of the reaper was signalled"
    assert proc_info(shell[0])["ppid"] == wrap
    assert not alive(sleeper) and not alive(sib)


def test_changed_create_time_aborts_the_signal(spawn, fake_pkg):
    """A plan whose create time no longer matches the live process (what a
    reused pid looks like: start time, parent or command line) signals nothing."""
    from tractor_diag import reap

    h = spawn([PY, THIS, "spawner", json.dumps([fake_actor(fake_pkg, "victim")])])
    child = int(h.ready_line.split()[1])
    plan = reap.make_plan(parent=h.root)
    assert plan.pids() == [child]
    start = proc_info(child)["start"]
    (target,) = plan.targets
    tick = 1 / os.sysconf("SC_CLK_TCK")
    for change in (dict(create_time=target.create_time - 10.0),
                   dict(create_time=target.create_time + tick),  # one clock tick apart
                   dict(ppid=1), dict(cmdline=["python", "other"])):
        # a copy of the plan holds no pins: execute pins it against the forged identity
        forged = msgspec.structs.replace(plan, targets=[msgspec.structs.replace(target, **change)])
        outcome = reap.execute(forged, grace=0.5)
        (fate,) = outcome.fates
        assert fate.fate == "reused", (change, fate)
        assert fate.signals == []
        assert alive(child, start)
    # the genuine plan still works
    status = Path(f"/proc/{child}/status").read_text()
    outcome = reap.execute(plan, grace=3)
    assert outcome.fates[0].fate == "exited", (outcome, status)
    assert outcome.fates[0].signals == ["SIGINT"]


def test_gone_before_signal(spawn, fake_pkg):
    from tractor_diag import reap

    h = spawn([PY, THIS, "spawner", json.dumps([fake_actor(fake_pkg, "brief")])])
    child = int(h.ready_line.split()[1])
    start = proc_info(child)["start"]
    plan = reap.make_plan(parent=h.root)
    assert plan.pids() == [child], (plan, Path(f"/proc/{child}/status").read_text())
    kill_pinned(child, start)
    assert wait_for(lambda: not alive(child), 5)
    outcome = reap.execute(plan, grace=1)
    assert outcome.fates[0].fate == "gone"
    assert outcome.fates[0].signals == []


def test_default_mode_dry_run_sees_host_orphans(current_tree):
    """Default mode on the host only as a dry run: our orphans are planned,
    our live actors and the root are not."""
    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    with orphans_go_to_init():
        orphans = set(tree.orphan("spawner_0"))
    assert len(orphans) == 2
    before = starts(orphans)
    rc, report = reap_json("--dry-run")
    assert rc == 0
    assert orphans <= planned(report)
    mine = set(actors.values()) - orphans - {actors["spawner_0"]}
    assert len(mine) == 4  # root, spawner_1 and its two leaves
    assert not (planned(report) & mine), "a non-orphaned actor of the tree was planned"
    assert not untouched(before), "a dry run signalled"


def test_subtree_plan_takes_the_selected_process_and_its_actors(current_tree):
    """``make_plan(subtree=PID)`` (the dashboard's selection): the process
    itself and the actors below it, pinned; nothing else of the tree."""
    from tractor_diag import reap

    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    sub = {actors[n] for n in ("spawner_0", "leaf_0_0", "leaf_0_1")}
    rest = starts([actors[n] for n in ("root", "spawner_1", "leaf_1_0", "leaf_1_1")])
    plan = reap.make_plan(subtree=actors["spawner_0"])
    assert plan.mode == "subtree" and plan.tops == [actors["spawner_0"]]
    assert plan.targets[0].pid == actors["spawner_0"] and plan.targets[0].depth == 0
    assert set(plan.pids()) == sub
    assert set(plan.pins()) == sub
    outcome = reap.execute(plan, grace=3)
    assert {f.fate for f in outcome.fates} <= {"exited", "killed"}, outcome
    assert not plan.pins()  # released
    assert wait_for(lambda: not any(alive(p) for p in sub), 5)
    assert not untouched(rest), "a process outside the subtree was signalled"


def test_stopped_actor_gets_sigcont_after_sigint(spawn, fake_pkg):
    """A stopped actor (state T) cannot act on SIGINT: SIGCONT follows, it
    exits politely within the grace (no SIGKILL), and the report says it was
    stopped."""
    h = spawn([PY, THIS, "spawner", json.dumps([fake_actor(fake_pkg, "frozen"),
                                                fake_actor(fake_pkg, "awake")])])
    frozen, awake = map(int, h.ready_line.split()[1:])
    assert kill_pinned(frozen, proc_info(frozen)["start"], signal.SIGSTOP)
    assert wait_for(lambda: proc_info(frozen)["state"] == "T", 5)
    rc, dry = reap_json("--parent", h.root, "--dry-run")
    assert {t["pid"]: t["state"] for t in dry["plan"]["targets"]}[frozen] == "T"
    rc, report = reap_json("--parent", h.root, "--grace", "5")
    fates = {f["pid"]: f for f in report["outcome"]["fates"]}
    assert fates[frozen]["fate"] == "exited", fates
    assert fates[frozen]["signals"] == ["SIGINT", "SIGCONT"]
    assert fates[frozen]["stopped"] is True
    assert "was stopped" in fates[frozen]["detail"]
    assert fates[awake]["signals"] == ["SIGINT"] and fates[awake]["stopped"] is False
    assert rc == 0 and not report["outcome"]["escalated"], report
    assert not alive(frozen) and not alive(awake)


def test_stopped_actor_report_in_text(spawn, fake_pkg):
    h = spawn([PY, THIS, "spawner", json.dumps([fake_actor(fake_pkg, "frozen")])])
    frozen = int(h.ready_line.split()[1])
    assert kill_pinned(frozen, proc_info(frozen)["start"], signal.SIGSTOP)
    assert wait_for(lambda: proc_info(frozen)["state"] == "T", 5)
    dry = cli("reap", "--parent", h.root, "--dry-run", "--color", "never").stdout
    line = next(ln for ln in dry.splitlines() if f" {frozen} " in ln)
    assert "stopped" in line, dry
    r = cli("reap", "--parent", h.root, "--grace", "5", "-q", "--color", "never")
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if f" {frozen} " in ln)
    assert line.split()[0] == "exited" and "SIGINT+SIGCONT" in line and "was stopped" in line


def test_main_thread_exited_actor_is_live_and_reaped(spawn, tmp_path):
    """An actor whose main thread exited while another thread runs: its
    leader is a zombie in /proc/<pid>/stat, the process is alive. ptree
    shows it live with its threads; reap signals it like any live actor."""
    exe = build_leader_exits(str(tmp_path))
    h = spawn([PY, THIS, "spawner", json.dumps([
        {"argv": leader_exits_argv(exe, "_subactor[halfdead@1]"), "ready": "READY"}])])
    pid = int(h.ready_line.split()[1])
    assert wait_for(lambda: proc_info(pid)["state"] == "Z", 5)  # the leader thread's own state
    snap = json.loads(cli("ptree", h.root, "--json").stdout)
    entry = snap["entries"][str(pid)]
    assert entry["bucket"] == "live" and entry["state"] == "blocked", entry
    assert entry["proc"]["leader_exited"] and entry["proc"]["num_threads"] == 2
    assert entry["proc"]["actor"]["name"] == "halfdead"
    assert entry["note"] == "main thread exited, 1 other thread running"
    rc, report = reap_json("--parent", h.root, "--grace", "3")
    assert planned(report) == {pid}, report
    (fate,) = report["outcome"]["fates"]
    assert fate["fate"] == "exited" and fate["signals"] == ["SIGINT"], fate
    assert rc == 0
    assert wait_for(lambda: proc_info(pid) is None or proc_info(pid)["state"] == "Z", 5)


def test_parent_init_or_subreaper_is_refused_without_all(spawn, tmp_path):
    """``--parent 1`` (or a subreaper) would plan every orphan on the box,
    live trees included: refused with one line, exit 2, unless --all. (Dry
    runs only: this is the host namespace.)"""
    for args in (["--parent", "1", "--dry-run"], ["--parent", "1", "--dry-run", "--json"]):
        r = cli("reap", *args)
        assert r.returncode == 2, r.stdout[-500:]
        assert r.stdout == ""
        assert r.stderr.strip() == ("tractor-diag: refusing --parent 1: it is init, whose "
                                    "children are every orphan it adopted, live trees included "
                                    "(add --all to mean it)")
    tini = tmp_path / "tini"  # a subreaper by name
    shutil.copy("/bin/sleep", tini)
    h = spawn(["bash", "-c", f"echo READY; exec {tini} 600"])
    assert wait_for(lambda: Path(f"/proc/{h.root}/comm").read_text().strip() == "tini", 5)
    r = cli("reap", "--parent", h.root, "--dry-run")
    assert r.returncode == 2 and "it is a subreaper (tini)" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("reap", "--parent", h.root, "--dry-run", "--all", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["targets"] == []


# --- usage ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--parent", "abc"],
    ["--grace", "-1"],
    ["--grace", "nan"],
    ["--uds-only", "--parent", "1"],
    ["--shm-only", "--all"],
    ["--uds", "--uds-only"],
    ["--shm-dir", "/tmp"],
    ["--bindspace", "x"],
])
def test_usage_errors(args):
    r = cli("reap", *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_unknown_parent_is_one_line():
    r = cli("reap", "--parent", "4194304")  # above any pid_max
    assert r.returncode == 1
    assert r.stderr.strip() == "tractor-diag: no such process: 4194304"


def test_help_mentions_the_rules():
    r = cli("reap", "--help")
    assert r.returncode == 0
    for word in ("--dry-run", "--uds-only", "--shm-only", "--grace", "another user", "ancestors"):
        assert word in r.stdout


def test_bad_bindspace_fails_before_signalling(family):
    parent, pids = family
    before = starts([pids["ours"]])
    r = cli("reap", "--parent", parent, "--uds", "--bindspace", "/nonexistent/tdx")
    assert r.returncode == 1
    assert r.stderr.strip() == "tractor-diag: no such bindspace dir: /nonexistent/tdx"
    assert not untouched(before)
