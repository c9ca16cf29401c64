"""Real trees on today's tractor (repo main and the main_thread_forkserver
branch), with every spawn backend over TCP and UDS: ptree names every
actor and places it under the actor that spawned it, reap plans them, a
SIGKILLed root leaves orphans that the orphan sweep finds, and a leftover
registrar is an actor that holds the registry while a new root fails.

Each tree is root -> spawner_0 -> leaf_0_0: the leaf is stuck in a sync
``time.sleep`` and its parent waits on its result. The trees are shared by
the tests of one backend/transport (module scope); the last test of each
kills the root. Every verb runs as the real CLI in a subprocess, with the
tree's own ``XDG_RUNTIME_DIR``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from trees.harness import RUNTIME_SCRIPT, _wait_until, proc_stat, read_cmdline

BACKENDS = ["trio", "mp_spawn", "mp_forkserver", "main_thread_forkserver"]
CASES = [(b, t) for b in BACKENDS for t in ("tcp", "uds")]


def diag(tree, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tree.xdg), NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "tractor_diag", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def diag_json(tree, *args: str) -> dict:
    r = diag(tree, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def names_visible(tree) -> bool:
    """Whether anything outside the process names its actors: titles (trio,
    main_thread_forkserver) or bindspace sockets. mp children bind TCP
    whatever the root's transport, and carry no title."""
    return tree.backend in ("trio", "main_thread_forkserver")


@pytest.fixture(scope="module", params=CASES, ids=[f"{b}-{t}" for b, t in CASES])
def tree(request, runtime_trees):
    backend, transport = request.param
    return runtime_trees.start(backend, transport)


def test_ptree_names_every_actor_under_its_parent(tree):
    a = tree.actors
    snap = diag_json(tree, "ptree", str(tree.root))
    entries = {int(k): v for k, v in snap["entries"].items()}
    for name, pid in a.items():
        actor = entries[pid]["proc"]["actor"]
        assert actor is not None, f"{name} ({pid}) not recognised: {entries[pid]['proc']['cmdline']}"
        if name != "root" and names_visible(tree):
            assert actor["name"] == name
        if tree.backend.startswith("mp_") and name != "root":
            # a title does not say which backend forked it; the mp shapes do
            assert actor["backend"] == tree.backend
    assert entries[a["root"]]["proc"]["actor"]["role"] == "root"
    assert entries[a["spawner_0"]]["actor_parent"] == a["root"]
    assert entries[a["leaf_0_0"]]["actor_parent"] == a["spawner_0"]
    if tree.backend == "mp_forkserver":
        # both forked by the root's sidecar: the spawner of each is the
        # other holder of its parent-sentinel pipe, not its OS parent
        sidecar = entries[a["spawner_0"]]["proc"]["ppid"]
        assert entries[sidecar]["proc"]["actor"]["role"] == "forkserver"
        assert entries[sidecar]["proc"]["ppid"] == a["root"]
        assert entries[a["leaf_0_0"]]["proc"]["ppid"] == sidecar
        for name, parent in (("spawner_0", "root"), ("leaf_0_0", "spawner_0")):
            actor = entries[a[name]]["proc"]["actor"]
            assert (actor["logical_parent"], actor["parent_by"]) == (a[parent], "sentinel-pipe")
    # stuck in time.sleep, its loop wedged: blocked, not idle
    assert entries[a["leaf_0_0"]]["state"] == "blocked"
    # who holds the leaf's own listening address: the leaf, named when
    # anything names it, else by its command line (never "exited")
    addr = entries[a["leaf_0_0"]]["listens"][0]  # TCP, or its socket file
    held = diag(tree, "ptree", "--port", addr).stdout
    assert held.startswith(f"{a['leaf_0_0']} ") and "(exited)" not in held, held
    assert ("leaf_0_0" if names_visible(tree) else "python") in held, held

    text = diag(tree, "ptree", "--actors", str(tree.root)).stdout
    lines = text.splitlines()
    row = {name: next(ln for ln in lines if ln.lstrip("│├└─ ").startswith(f"{pid} "))
           for name, pid in a.items()}
    indent = {name: len(ln) - len(ln.lstrip("│├└─ ")) for name, ln in row.items()}
    assert indent["root"] < indent["spawner_0"] < indent["leaf_0_0"]
    assert "[root actor" in row["root"]
    # --names: the actors nothing outside names, named from their stacks
    named = diag_json(tree, "ptree", "--names", str(tree.root))["entries"]
    for name in ("spawner_0", "leaf_0_0"):
        assert named[str(a[name])]["proc"]["actor"]["name"] == name
    if not names_visible(tree):
        assert named[str(a["leaf_0_0"])]["proc"]["actor"]["how"] == "mp-name"
        text = diag(tree, "ptree", "--actors", "--names", str(tree.root)).stdout
        assert f"{a['leaf_0_0']} live blocked leaf_0_0 [actor:current {tree.backend}]" in text, text
    # --tree keeps the OS tree: the sidecar sits between root and actors
    os_tree = diag(tree, "ptree", "--tree", str(tree.root)).stdout
    if tree.backend == "mp_forkserver":
        assert "mp_forkserver sidecar" in os_tree


def test_reap_parent_plans_every_actor(tree):
    plan = diag_json(tree, "reap", "--parent", str(tree.root), "--dry-run")["plan"]
    planned = {t["pid"] for t in plan["targets"]}
    assert {tree.actors["spawner_0"], tree.actors["leaf_0_0"]} <= planned
    # only tractor processes: the multiprocessing resource tracker is not one
    for t in plan["targets"]:
        assert t["pid"] in tree.tracked()
    # below spawner_0: its leaf, even when the fork-server sidecar forked it
    below = diag_json(tree, "reap", "--parent", str(tree.actors["spawner_0"]), "--dry-run")["plan"]
    assert [t["pid"] for t in below["targets"]] == [tree.actors["leaf_0_0"]]


def test_stacks_names_every_actor(tree):
    """mp actors carry no title and bind TCP: their own stack names them
    (multiprocessing's preparation data under tractor's _mp_main), read
    with py-spy's locals, which are then dropped (not asked for)."""
    a = tree.actors
    procs = {p["pid"]: p for p in diag_json(tree, "stacks", "--no-tasks", str(tree.root))}
    for name, pid in a.items():
        if name != "root":
            assert procs[pid]["actor"] == name, procs[pid]["title"]
            assert procs[pid]["title"] == name
    frames = [f for p in procs.values() for t in p["python"]["threads"] for f in t["frames"]]
    assert frames and all(f["locals"] is None for f in frames)
    if tree.backend.startswith("mp_"):
        # the verdicts and the bundle's tree use the same names
        r = diag(tree, "why", str(tree.root))
        assert f"leaf_0_0 ({a['leaf_0_0']}) is blocked in time.sleep" in r.stdout, r.stdout
        # what it proposes reaches the leaf and not the whole tree (for
        # mp_forkserver, not the sidecar whose children are every actor)
        assert f"tractor-diag reap --parent {a['spawner_0']} --dry-run" in r.stdout, r.stdout


@pytest.mark.parametrize("backend", ["mp_spawn", "mp_forkserver"])  # named from their stacks
def test_a_name_read_from_a_stack_stays_for_later_scans(backend, runtime_trees, monkeypatch):
    """The dashboard scans again every tick: an mp actor named by a capture
    keeps its name (same pid and start time) in this program's later scans."""
    from tractor_diag import recognise, stacks, trees
    from tractor_diag.stackmodel import StacksOptions

    tree = runtime_trees.start(backend, "tcp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tree.xdg))
    # what earlier tests of this pytest learned is forgotten: named here
    monkeypatch.setattr(recognise, "_LEARNED", {})
    leaf = tree.actors["leaf_0_0"]
    snap = trees.snapshot_for([str(tree.root)])
    assert snap.entries[leaf].proc.actor.name == ""
    stacks.capture(snap, StacksOptions(tasks=False))
    assert snap.entries[leaf].proc.actor.name == "leaf_0_0"
    again = trees.snapshot_for([str(tree.root)]).entries[leaf].proc.actor
    assert (again.name, again.how, again.sure) == ("leaf_0_0", "mp-name", "certain")


def test_sigkilled_root_leaves_orphans_the_sweep_finds(tree):
    # last test of each tree: it kills the root
    a = tree.actors
    tree.kill_pid(a["root"], signal.SIGKILL)
    tree.popen.wait(10)

    def adopted() -> bool:
        return not any((st := proc_stat(p)) and st[1] == a["root"] for p in tree.tracked())
    assert _wait_until(adopted, 10)
    orphan_sweep = diag_json(tree, "reap", "--dry-run")["plan"]
    planned = {t["pid"]: t for t in orphan_sweep["targets"]}
    assert a["spawner_0"] in planned and a["leaf_0_0"] in planned
    if tree.backend == "mp_forkserver":
        # the sidecar is what the root left behind; the actors hang below it
        sidecar = proc_stat(a["spawner_0"])[1]
        assert planned[sidecar]["why"] == "orphaned actor"
        assert planned[a["spawner_0"]]["why"] == f"in the orphaned subtree of {sidecar}"
    else:
        assert planned[a["spawner_0"]]["why"] == "orphaned actor"
    # the orphaned top of the tree: the sidecar for mp_forkserver (both
    # actors are its children), else spawner_0
    top = proc_stat(a["spawner_0"])[1] if tree.backend == "mp_forkserver" else a["spawner_0"]
    under = diag_json(tree, "reap", "--parent", str(top), "--dry-run")["plan"]
    assert a["leaf_0_0"] in {t["pid"] for t in under["targets"]}
    snap = diag_json(tree, "ptree", str(top))
    assert snap["entries"][str(top)]["bucket"] == "orphan"
    # a real reap, scoped to our own orphan's subtree: every target is
    # re-recognised (one pid read with its kin) right before its signal
    r = diag(tree, "reap", "--parent", str(top), "--grace", "3", "--json")
    report = json.loads(r.stdout)
    fates = {f["pid"]: f["fate"] for f in report["outcome"]["fates"]}
    assert fates[a["leaf_0_0"]] in ("exited", "killed"), fates
    assert _wait_until(lambda: (st := proc_stat(a["leaf_0_0"])) is None or st[0] == "Z", 10)


# --- without setproctitle: names from the bindspace sockets ---------------------

@pytest.fixture(scope="module", params=["trio", "main_thread_forkserver"])
def untitled(request, runtime_trees):
    return runtime_trees.start(request.param, "uds", titles=False)


def test_without_setproctitle_names_come_from_sockets(untitled):
    a = untitled.actors
    snap = diag_json(untitled, "ptree", str(untitled.root))
    entries = {int(k): v for k, v in snap["entries"].items()}
    for name in ("spawner_0", "leaf_0_0"):
        proc = entries[a[name]]["proc"]
        assert not proc["cmdline"][0].startswith("_subactor["), "titles were not blocked"
        assert proc["actor"]["name"] == name
    assert entries[a["leaf_0_0"]]["actor_parent"] == a["spawner_0"]
    root = entries[a["root"]]["proc"]["actor"]
    assert root["role"] == "root" and root["how"] == "registry"
    if untitled.backend == "main_thread_forkserver":
        # forked, never exec'd: the root's own command line
        assert entries[a["leaf_0_0"]]["proc"]["cmdline"] == entries[a["root"]]["proc"]["cmdline"]
        assert entries[a["leaf_0_0"]]["proc"]["actor"]["how"] == "fork-thread"


def test_untitled_fork_server_actors_over_tcp_are_named_from_their_stacks(runtime_trees):
    """Without setproctitle and over TCP a main_thread_forkserver actor
    shows its parent's command line and binds no socket file: nothing
    outside names it. Its stack does: tractor's _actor_child_main holds
    its uid."""
    tree = runtime_trees.start("main_thread_forkserver", "tcp", titles=False)
    a = tree.actors
    plain = diag_json(tree, "ptree", str(tree.root))["entries"]
    assert plain[str(a["leaf_0_0"])]["proc"]["actor"]["name"] == ""
    named = diag_json(tree, "ptree", "--names", str(tree.root))["entries"]
    procs = {p["pid"]: p for p in diag_json(tree, "stacks", "--no-tasks", str(tree.root))}
    for name in ("spawner_0", "leaf_0_0"):
        actor = named[str(a[name])]["proc"]["actor"]
        assert (actor["name"], actor["how"], actor["sure"]) == (name, "child-uid", "certain")
        assert procs[a[name]]["actor"] == name
    assert named[str(a["leaf_0_0"])]["actor_parent"] == a["spawner_0"]


# --- a leftover registrar ---------------------------------------------------------

def test_leftover_registrar_is_an_actor_and_blocks_a_new_root(runtime_trees):
    """Over UDS: the registrar holds <bindspace>/registry@1616.sock (over TCP,
    see the default-port test below)."""
    transport = "uds"
    # a registrar alone (no children) whose loop is wedged: it holds the
    # registry address and never answers on it
    old = runtime_trees.start("trio", transport, depth=0, wedge_root=True)
    py = runtime_trees.python("trio")
    argv = [str(py), str(RUNTIME_SCRIPT), "--start-method", "trio",
            "--transport", transport, "--depth", "1"]
    if transport == "tcp":
        argv += ["--port", str(old.port)]
    new = subprocess.run(argv, capture_output=True, text=True, env=old.env, timeout=60)
    assert new.returncode != 0
    assert "Registry address(es) are occupied" in new.stderr

    # what holds <bindspace>/registry@1616.sock runs a tractor runtime
    snap = diag_json(old, "ptree", str(old.root))
    actor = snap["entries"][str(old.root)]["proc"]["actor"]
    assert actor["role"] == "root" and actor["how"] == "registry"
    found = diag_json(old, "ptree")  # discovery: no root given
    assert old.root in found["roots"]
    plan = diag_json(old, "reap", "--parent", str(os.getpid()), "--dry-run")["plan"]
    assert old.root in {t["pid"] for t in plan["targets"]}


def test_leftover_registrar_on_the_default_port(runtime_trees):
    """Holding 127.0.0.1:1616 (tractor's default registry) is what marks a
    root without children over TCP. In a network namespace of its own, so
    no other registry on the box is touched."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "--net", "true"],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs unshare --net (root) for a private 127.0.0.1:1616")
    old = runtime_trees.start("trio", "tcp", depth=0, wedge_root=True, port=1616, netns=True)
    enter = ["nsenter", f"--net=/proc/{old.root}/ns/net"]
    py = runtime_trees.python("trio")
    new = subprocess.run([*enter, str(py), str(RUNTIME_SCRIPT), "--transport", "tcp",
                          "--port", "1616", "--depth", "1"],
                         capture_output=True, text=True, env=old.env, timeout=60)
    assert new.returncode != 0 and "Registry address(es) are occupied" in new.stderr
    env = dict(os.environ, XDG_RUNTIME_DIR=str(old.xdg))
    r = subprocess.run([*enter, sys.executable, "-m", "tractor_diag", "ptree", str(old.root), "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    actor = json.loads(r.stdout)["entries"][str(old.root)]["proc"]["actor"]
    assert actor["role"] == "root" and actor["how"] == "registry"


# --- the boot window ----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["trio", "main_thread_forkserver"])
def test_leaf_in_its_boot_window(backend, runtime_trees):
    """A leaf held before it sets its title (the moment every spawn passes
    through, here made to last): with trio it is ``python -m tractor._child
    --uid ...``; forked by main_thread_forkserver it still shows its
    parent's title, which names the parent's pid, not its own."""
    tree = runtime_trees.start(backend, "uds", stall_leaves=True, wait=False)
    spawner: dict[str, int] = {}

    def booting_leaf() -> int | None:
        for pid in tree.tracked():
            raw = read_cmdline(pid) or b""
            # the booting leaf carries this same title: the pid in it tells
            if raw.startswith(f"_subactor[spawner_0@{pid}]".encode()):
                spawner["pid"] = pid
            elif pid != tree.root and (st := proc_stat(pid)) and st[1] == spawner.get("pid"):
                return pid
        return None
    assert _wait_until(lambda: booting_leaf() is not None, 60), tree.stderr_text()[-2000:]
    leaf = booting_leaf()
    snap = diag_json(tree, "ptree", str(tree.root))
    actor = snap["entries"][str(leaf)]["proc"]["actor"]
    if backend == "trio":
        assert (actor["name"], actor["how"], actor["generation"]) == ("leaf_0_0", "child-argv", "current")
    else:
        assert actor["role"] == "booting" and actor["forked_from"] == spawner["pid"]
        assert actor["how"] == "parent-title" and actor["name"] == ""
        assert snap["entries"][str(leaf)]["actor_parent"] == spawner["pid"]
        assert f"booting fork of {spawner['pid']}" in diag(tree, "ptree", "--actors", str(tree.root)).stdout


# --- task trees on Python 3.13 / trio 0.35 ------------------------------------------

@pytest.mark.parametrize("backend", ["trio", "mp_spawn"])
def test_task_tree_of_a_real_actor_holds_its_nested_nurseries(backend, runtime_trees):
    """Our dumper on today's runtime (Python 3.13, trio 0.35): spawner_0's
    RPC task ``subtree`` opened an actor nursery and, inside it, a trio
    nursery running ``run_child``; both show, nested under that task, with
    the leaf's sync-blocked task running (stackscope shows nothing below
    the main nursery there)."""
    tree = runtime_trees.start(backend, "uds", armed=True)
    a = tree.actors
    procs = {p["pid"]: p for p in diag_json(tree, "stacks", "--task-timeout", "10",
                                            str(tree.root))}
    for name, pid in a.items():
        tasks = procs[pid]["tasks"]
        assert tasks["status"] == "collected" and tasks["format"] == "tractor-diag", (name, tasks)
        assert tasks["complete"]
        assert "python=3.13." in tasks["text"] and "trio=0.35." in tasks["text"]
        # the dump names the actor its runtime runs: the root too, which
        # nothing outside names
        assert tasks["actor"] == name, tasks["text"][:400]
        assert procs[pid]["actor"] == name
    text = procs[a["spawner_0"]]["tasks"]["text"].splitlines()
    at = next(i for i, ln in enumerate(text) if ln.lstrip().startswith("task 'subtree' "))
    depth = len(text[at]) - len(text[at].lstrip())
    below = []
    for ln in text[at + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= depth:
            break
        below.append(ln)
    nurseries = [ln for ln in below if ln.lstrip().startswith("nursery ")]
    assert len(nurseries) >= 2, below
    kids = [ln.strip().split("'")[1] for ln in below if ln.lstrip().startswith("task '")]
    assert "tractor.spawn._spawn.new_proc" in kids
    assert any(k.endswith("start_children.<locals>.run_child") for k in kids), kids
    leaf = procs[a["leaf_0_0"]]["tasks"]["tasks"]
    assert any(t["name"] == "subtree" and t["state"] == "running" for t in leaf), leaf
