"""Default-mode ``reap`` (every orphaned actor of the user) for real, inside a
private PID namespace (see `_reap_helpers.NsInit`): the only processes it can
see or signal are the ones the test started there. Each test tries the
must-not cases for real and checks, from a /proc listing taken inside the
namespace, that nothing but the intended processes was signalled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _reap_helpers import (
    SYSTEM_PYTHON, THIS, NsInit, as_nobody, released_argv,
)
from trees.harness import CURRENT_SCRIPT, RELEASED_SCRIPT, free_port

PY = sys.executable
REAP = [PY, "-m", "tractor_diag", "reap"]

pytestmark = pytest.mark.timeout(120)


def title_of(p: dict) -> str:
    return p["argv"][0] if p["argv"] else ""


def actors_by_name(procs: dict[int, dict]) -> dict[str, int]:
    """Current-runtime titles ``_subactor[name@pid]`` -> pid."""
    out = {}
    for pid, p in procs.items():
        t = title_of(p).rstrip(" \0")
        if t.startswith("_subactor[") and t.endswith(f"@{pid}]"):
            out[t[len("_subactor["):-len(f"@{pid}]")]] = pid
    return out


def released_actors(procs: dict[int, dict]) -> dict[str, int]:
    import ast

    out = {}
    for pid, p in procs.items():
        argv = p["argv"]
        if argv[1:3] == ["-m", "tractor._child"]:
            out[ast.literal_eval(argv[argv.index("--uid") + 1])[0]] = pid
    return out


def reap_json(ns: NsInit, *args, via=None, env=None) -> tuple[int, dict, str]:
    argv = [*REAP, *args, "--json"]
    if via is not None:
        argv = [PY, THIS, "as-actor", via, "--", *argv]
    res = ns.run(argv, env=env)
    assert res["stdout"].strip(), f"no output (rc={res['rc']}): {res['stderr']}"
    return res["rc"], json.loads(res["stdout"]), res["stderr"]


def planned(report: dict) -> set[int]:
    return {t["pid"] for t in report["plan"]["targets"]}


def skipped(report: dict) -> dict[int, str]:
    return {s["pid"]: s["reason"] for s in report["plan"]["skipped"]}


def same(procs_before: dict[int, dict], procs_after: dict[int, dict], pids) -> list[int]:
    """Pids of ``pids`` that are no longer the same live process."""
    bad = []
    for pid in pids:
        a, b = procs_before.get(pid), procs_after.get(pid)
        if b is None or b["start"] != a["start"] or b["state"] in ("Z", "X"):
            bad.append(pid)
    return bad


# --- orphaned subtrees of real trees --------------------------------------------------------

def test_current_tree_orphans_reaped_with_uds_sweep(ns, xdg_runtime_dir, bindspace):
    env = {"XDG_RUNTIME_DIR": str(xdg_runtime_dir)}
    root = ns.spawn([PY, CURRENT_SCRIPT, "--depth", "2", "--breadth", "2", "--hang", "sleep",
                     "--registry"], env=env)["pid"]
    assert ns.wait_until(lambda ps: len(actors_by_name(ps)) == 6)
    actors = actors_by_name(ns.procs())
    # orphan the subtree of spawner_0: its leaves are re-parented to init
    ns.kill(actors["spawner_0"])
    assert ns.wait_until(lambda ps: all(ps[actors[n]]["ppid"] == 1 for n in ("leaf_0_0", "leaf_0_1")))
    orphans = {actors["leaf_0_0"], actors["leaf_0_1"]}
    before = ns.procs()

    rc, dry, _ = reap_json(ns, "--dry-run", "--uds", env=env)
    assert rc == 0
    assert planned(dry) == orphans
    assert {f["fate"] for f in dry["outcome"]["fates"]} == {"planned"}
    assert not same(before, ns.procs(), before), "a dry run signalled something"
    would = {os.path.basename(r["path"]) for r in dry["uds"]["removals"]}
    # stale now (binder SIGKILLed) + the orphans' sockets once they are reaped
    assert would == {f"spawner_0@{actors['spawner_0']}.sock",
                     *(f"{n}@{actors[n]}.sock" for n in ("leaf_0_0", "leaf_0_1"))}
    assert len(list(bindspace.iterdir())) == 8

    rc, report, _ = reap_json(ns, "--uds", "--grace", "5", env=env)
    assert rc == 0, report
    assert planned(report) == orphans
    fates = {f["pid"]: f for f in report["outcome"]["fates"]}
    assert {fates[p]["fate"] for p in orphans} == {"exited"}
    assert all(fates[p]["signals"] == ["SIGINT"] for p in orphans)
    after = ns.procs()
    assert all(p not in after or after[p]["state"] == "Z" for p in orphans)
    # everything else in the namespace is untouched: root, spawner_1, its leaves
    rest = [root, actors["spawner_1"], actors["leaf_1_0"], actors["leaf_1_1"]]
    assert not same(before, after, rest)
    # the stale socket went; live ones (and the listening registry) stayed
    left = {p.name for p in bindspace.iterdir()}
    assert f"spawner_0@{actors['spawner_0']}.sock" not in left
    assert left == {"registry@1616.sock", f"root@{root}.sock",
                    *(f"{n}@{actors[n]}.sock" for n in ("spawner_1", "leaf_1_0", "leaf_1_1"))}


def test_released_tree_orphans_reaped(ns, tractor_python):
    port = free_port()
    root = ns.spawn([tractor_python, RELEASED_SCRIPT, str(port), "--depth", "2", "--breadth", "2",
                     "--hang", "sleep"], env={"PYTHONWARNINGS": "ignore"})["pid"]
    assert ns.wait_until(lambda ps: len(released_actors(ps)) == 6, 60)
    actors = released_actors(ns.procs())
    ns.kill(actors["spawner_0"])
    orphans = {actors["leaf_0_0"], actors["leaf_0_1"]}
    assert ns.wait_until(lambda ps: all(ps[p]["ppid"] == 1 for p in orphans))
    before = ns.procs()

    rc, report, err = reap_json(ns, "--grace", "5")
    assert planned(report) == orphans
    fates = {f["pid"]: f for f in report["outcome"]["fates"]}
    assert {fates[p]["fate"] for p in orphans} <= {"exited", "killed"}
    assert rc == (1 if report["outcome"]["escalated"] else 0)
    after = ns.procs()
    assert all(p not in after or after[p]["state"] == "Z" for p in orphans)
    assert not same(before, after, [root, actors["spawner_1"], actors["leaf_1_0"], actors["leaf_1_1"]])


# --- the must-not cases -----------------------------------------------------------------------

def test_must_not_signal(ns, fake_pkg):
    """Orphans (ppid 1) of every kind that must survive a default reap, next
    to one orphaned actor that must not."""
    env = {"PYTHONPATH": fake_pkg}
    sleep = "import time; print('READY', flush=True); time.sleep(600)"
    # the one that must go: an orphaned actor of ours
    target = ns.spawn(released_argv(PY, "ours"), env=env)["pid"]
    keep = {
        # a non-actor python adopted by init
        "plain": ns.spawn([PY, "-c", sleep])["pid"],
        # `_subactor` / `tractor._child` only as arguments
        "args": ns.spawn([PY, "-c", sleep, "-k", "_subactor[ghost@1]", "-m", "tractor._child",
                          "--uid", "('ghost', 'x')"])["pid"],
        # a near-miss title: not `_subactor[<name>@<pid>]` exactly
        "near": ns.spawn(["bash", "-c", "exec -a '_subactor[ghost@1]x' sleep 600"], ready=None)["pid"],
        # an orphaned actor of another user
        "nobody": ns.spawn(as_nobody(released_argv(SYSTEM_PYTHON, "theirs")), env=env)["pid"],
    }
    assert ns.wait_until(lambda ps: ps[keep["near"]]["argv"][:1] == ["_subactor[ghost@1]x"])
    before = ns.procs()
    assert before[keep["nobody"]]["uid"] == 65534
    assert all(before[p]["ppid"] == 1 for p in [target, *keep.values()])

    # the reaper runs under an orphaned actor: its own ancestor must be spared
    rc, report, err = reap_json(ns, "--grace", "5", via="wrapper")
    assert rc == 0, report
    ancestors = [s for s in report["plan"]["skipped"] if s["reason"] == "an ancestor of the reaper"]
    assert [s["title"] for s in ancestors] == ["wrapper"]
    assert planned(report) == {target}
    assert "uid 65534" in skipped(report)[keep["nobody"]]
    assert report["outcome"]["fates"][0]["fate"] == "exited"
    after = ns.procs()
    assert target not in after or after[target]["state"] == "Z"
    assert not same(before, after, keep.values()), "a must-not process was signalled"

    # --all widens to non-actors *inside orphaned subtrees* only: these are
    # tops that are not actors, so still nothing to do
    rc, report, _ = reap_json(ns, "--all", "--dry-run")
    assert planned(report) == set()


def scenario(ns: NsInit, name: str, *args, env=None) -> dict:
    res = ns.run([PY, THIS, "scenario", name, *args], env=env)
    assert res["rc"] == 0, res["stderr"]
    return json.loads(res["stdout"])


def test_pid_reuse_between_scan_and_signal(ns, fake_pkg):
    """Make the kernel really hand a planned pid to a new actor (through
    ``ns_last_pid``, which only this namespace uses), then signal the old plan:
    the new process must receive nothing."""
    r = scenario(ns, "pid-reuse", fake_pkg)
    assert r["reused_pid"], "the kernel did not reuse the pid"
    assert r["fate"] == "gone", r  # the plan's pin held the old process
    assert r["signals"] == []
    assert r["new_alive"], "the process that took over the pid was signalled"
    assert r["pidfd"]


def test_pid_reused_within_one_clock_tick(ns):
    """The planned actor exits and its pid goes, within the same clock tick,
    to an actor with the same command line under another parent: start
    times cannot tell them apart. Pinned at plan time, the plan reaches
    nobody; the newcomer receives nothing."""
    r = scenario(ns, "tick-reuse", "reap")
    assert r.get("reproduced", True), f"no same-tick reuse in {r['attempts']} attempts"
    assert r["same_cmdline"] and r["new_ppid"] != r["old_ppid"], r
    assert r["signals"] == [], r
    assert not r["new_signalled"], r
    assert r["fate"] == "gone", r


def test_pin_never_reaches_the_next_owner_of_a_pid(ns):
    """A pin held on a process that exited: its pid reused within the same
    tick, same command line, ``send`` reaches nobody and says so."""
    r = scenario(ns, "tick-reuse", "pin-held")
    assert r.get("reproduced", True), f"no same-tick reuse in {r['attempts']} attempts"
    assert r["sent"] is False, r
    assert not r["new_signalled"], r


def test_pin_open_tells_a_same_tick_replacement_by_its_parent(ns):
    """Observed, exited, pid reused in the same tick with the same command
    line: Pin.open with the observed identity refuses (the parent differs)."""
    r = scenario(ns, "tick-reuse", "pin-open")
    assert r.get("reproduced", True), f"no same-tick reuse in {r['attempts']} attempts"
    assert r["outcome"] == "replaced", r
    assert "parent" in r["detail"], r
    assert not r["new_signalled"], r


def test_stale_socket_whose_pid_was_reused(ns, xdg_runtime_dir, bindspace):
    """A socket file left by a dead binder whose pid now belongs to a younger
    process is stale: classified orphaned-dead and swept, while the younger
    process is left alone."""
    out = scenario(ns, "socket-reuse", str(bindspace), env={"XDG_RUNTIME_DIR": str(xdg_runtime_dir)})
    assert out["old"] == out["new"], "the kernel did not reuse the pid"
    (entry,) = out["scan"]["entries"]
    assert entry["status"] == "orphaned-dead"
    assert "now belongs to" in entry["note"]
    (removal,) = out["sweep"]["uds"]["removals"]
    assert removal["removed"]
    assert out["sweep_rc"] == 0
    assert out["new_alive"]
    assert list(bindspace.iterdir()) == []


def test_default_shm_dir_sweep(ns):
    """``reap --shm-only`` on the real default ``/dev/shm`` path, which inside
    the namespace is a private tmpfs (no other session's segments)."""
    ns.call("mount-tmpfs", path="/dev/shm")
    out = scenario(ns, "shm-default")
    assert out["rc"] == 0
    assert out["left"] == ["held", "link", "mapped"]
    assert out["alive"]
    status = {f["name"]: f["status"] for f in out["report"]["shm"]["scan"]["files"]}
    assert status == {"held": "in-use", "mapped": "in-use", "unused": "unused"}
    assert out["report"]["shm"]["scan"]["dir"] == "/dev/shm"


def test_pid_2_of_a_container_and_its_child_are_reaped():
    """In a private PID namespace pid 2 is an ordinary process (kernel
    threads are not visible there): an orphaned actor at pid 2 and its actor
    child are reaped like any other; its child of another uid is not, nor
    is init. Only a kernel thread's own flag makes it one."""
    ran = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                          PY, THIS, "scenario", "pid-two"],
                         capture_output=True, text=True, timeout=100)
    assert ran.returncode == 0, ran.stderr
    r = json.loads(ran.stdout.splitlines()[-1])
    two, three, other = r["two"], r["three"], r["other"]
    assert two == 2
    dry, real = r["dry"]["report"], r["real"]["report"]
    assert r["dry"]["rc"] == 0, r["dry"]
    assert planned(dry) == {three}
    assert skipped(dry) == {other: "belongs to uid 65534"}
    assert r["dry_left_all"], "a dry run signalled something"

    assert r["real"]["rc"] == 0, r["real"]
    assert planned(real) == {two, three}
    assert skipped(real).get(other) == "belongs to uid 65534"
    assert skipped(real).get(1) is None or "init" in skipped(real)[1]
    fates = {f["pid"]: f for f in real["outcome"]["fates"]}
    assert {pid: fates[pid]["fate"] for pid in (two, three)} == {two: "exited", three: "exited"}
    assert all(fates[pid]["signals"] == ["SIGINT"] for pid in (two, three))
    assert set(fates) == {two, three}, "something else was signalled"
    assert r["alive"] == {str(two): False, str(three): False, str(other): True}
