"""``ptree`` against REAL trees: the released runtime, current-runtime
traits, zombies, orphans, runaways, strays of an earlier tree and a plain
``sleep`` tree; plus the CLI end to end (both entry points) and its error
paths. Assertions are scoped to the processes each test started: other
trees run on this machine at the same time."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import psutil
import pytest

from _ptree_helpers import cpu_boost, proc_state, wait_for  # noqa: F401 (fixture)
from _proc import wait_past_boot
from tractor_diag.classify import BOOT_GRACE
from tractor_diag.model import Snapshot, TCPAddr, snapshot_from_json, to_json
from tractor_diag.trees import Targets, take_snapshot

BIN = Path(sys.executable).parent
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def cli(*args: str, script: bool = False, timeout: float = 60, env: dict | None = None,
        check_stderr: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: ``python -m tractor_diag`` or the
    ``tractor-diag`` console script."""
    cmd = [str(BIN / "tractor-diag")] if script else [sys.executable, "-m", "tractor_diag"]
    # wide lines: the text renderer clips to the terminal width
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "400", **(env or {})}
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                       env=full_env, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def cli_json(*args: str, **kw) -> Snapshot:
    r = cli("ptree", "--json", *args, **kw)
    assert r.returncode == 0, r.stderr
    snap = snapshot_from_json(r.stdout)
    # a full round trip: what we decoded encodes back to the same document
    assert msgspec.json.decode(to_json(snap)) == msgspec.json.decode(r.stdout)
    return snap


def one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert r.stdout == ""
    return lines[0]


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


# --- released runtime ----------------------------------------------------------

def test_released_tree(released_tree):
    tree = released_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    root = tree.root
    snap = take_snapshot(Targets([root]))
    assert snap.roots == [root] and snap.samples == 1

    # an ordinary python program, recognised as the root actor by its children
    root_actor = snap.entries[root].proc.actor
    assert (root_actor.role, root_actor.how, root_actor.generation) == (
        "root", "parent-of-actors", "released")
    assert snap.entries[root].depth == 0
    for name, pid in actors.items():
        entry = snap.entries[pid]
        assert entry.root == root and entry.bucket == "live"
        if name == "root":
            continue
        actor = entry.proc.actor
        assert actor is not None and actor.name == name
        assert actor.generation == "released" and UUID4.match(actor.uuid)
        assert actor.loglevel.lower() == "error" and actor.asyncio is False
        assert isinstance(actor.parent_addr, TCPAddr) and actor.parent_addr.host == "127.0.0.1"

    for i in range(2):
        spawner = snap.entries[actors[f"spawner_{i}"]]
        assert spawner.proc.ppid == root and spawner.depth == 1
        # the first level dials the root's registry address
        assert spawner.proc.actor.parent_addr.port == tree.port
        leaves = [snap.entries[actors[f"leaf_{i}_{j}"]] for j in range(2)]
        assert sorted(spawner.children) == sorted(e.proc.pid for e in leaves)
        for leaf in leaves:
            assert leaf.proc.ppid == spawner.proc.pid and leaf.depth == 2
            # ... and a leaf its spawner's own listening address
            assert leaf.proc.actor.parent_addr.port in listening_ports(spawner.proc.pid)
            # stuck in a sync time.sleep: not the event loop
            assert leaf.state == "blocked" and leaf.proc.wchan
    assert port_of(snap, actors["spawner_0"]) != port_of(snap, actors["spawner_1"])

    order = [e.proc.pid for e in snap.ordered()]
    assert order[0] == root
    assert order.index(actors["spawner_0"]) < order.index(actors["leaf_0_0"]) < order.index(actors["spawner_1"])

    # the CLI, both entry points, all three outputs
    text = cli("ptree", str(root))
    assert text.returncode == 0 and text.stderr == ""
    assert "1 root, " in text.stdout and "LIVE (" in text.stdout
    assert "states from one sample" in text.stdout
    for name in actors:
        if name != "root":
            assert f"{name} [actor:released]" in text.stdout

    tree_out = cli("ptree", "--tree", str(root), script=True)
    assert tree_out.returncode == 0
    lines = tree_out.stdout.splitlines()
    at = {name: next(i for i, ln in enumerate(lines) if f" {name} [actor:" in ln)
          for name in actors if name != "root"}
    assert at["spawner_0"] < at["leaf_0_0"] < at["spawner_1"] < at["leaf_1_1"]
    indent = {n: len(re.match(r"[ │├└─]*", lines[i][0:]).group()) for n, i in at.items()}
    assert indent["leaf_0_0"] > indent["spawner_0"] and indent["leaf_1_1"] > indent["spawner_1"]

    snap_json = cli_json(str(root), script=True)
    leaf = snap_json.entries[actors["leaf_1_0"]]
    assert leaf.proc.actor.name == "leaf_1_0" and isinstance(leaf.proc.actor.parent_addr, TCPAddr)
    assert leaf.proc.vol_ctx is not None and leaf.proc.cgroup is not None  # --json is complete


def port_of(snap: Snapshot, spawner: int) -> int:
    kids = snap.entries[spawner].children
    return snap.entries[kids[0]].proc.actor.parent_addr.port


def test_orphaned_subtree(released_tree):
    tree = released_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    orphans = tree.orphan("spawner_0")
    assert sorted(orphans) == sorted([actors["leaf_0_0"], actors["leaf_0_1"]])

    snap = take_snapshot(Targets([tree.root]))
    for pid in orphans:
        entry = snap.entries[pid]
        assert entry.bucket == "orphan" and entry.root is None and pid in snap.strays
        assert entry.note  # where it went: init or a subreaper
    dead = snap.entries.get(actors["spawner_0"])
    assert dead is None or (dead.bucket == "zombie" and dead.proc.exit_code == -signal.SIGKILL)
    for name in ("spawner_1", "leaf_1_0", "leaf_1_1"):
        assert snap.entries[actors[name]].bucket == "live"
        assert snap.entries[actors[name]].root == tree.root

    grouped = cli("ptree", str(tree.root)).stdout
    orphan_section = grouped.split("ORPHAN (", 1)[1].split("\n\n", 1)[0]
    assert "leaf_0_0 [actor:released]" in orphan_section and "leaf_0_1" in orphan_section
    assert grouped.index("ORPHAN (") < grouped.index("LIVE (")  # most severe first
    # --tree draws the given tree; the strays it was not asked about are one line
    as_tree = cli("ptree", "--tree", str(tree.root)).stdout
    assert "strays (outside every given root)" not in as_tree and "leaf_0_0" not in as_tree
    (line,) = [ln for ln in as_tree.splitlines() if "outside the given roots" in ln]
    assert line.startswith("+ ") and "--strays shows them" in line, line
    assert int(line.split()[1]) >= len(orphans)  # other runs' strays on this box count too
    as_tree = cli("ptree", "--tree", "--strays", str(tree.root)).stdout
    strays = as_tree.split("strays (outside every given root)", 1)[1]
    assert "leaf_0_0" in strays and "leaf_0_0" not in as_tree.split("strays (", 1)[0]
    without = cli_json("--no-strays", str(tree.root))
    assert not set(orphans) & set(without.entries) and without.strays == []


def test_strays_from_an_earlier_tree(released_tree, current_tree):
    old = released_tree(depth=2, breadth=1, hang="sleep")
    old_actors = old.actors()
    old.kill_pid(old.root, signal.SIGKILL)
    spawner, leaf = old_actors["spawner_0"], old_actors["leaf_0_0"]
    wait_for(lambda: psutil.Process(spawner).ppid() != old.root)

    new = current_tree(depth=1, breadth=1, hang="none")
    snap = cli_json(str(new.root))
    assert snap.roots == [new.root]
    assert spawner in snap.strays
    assert snap.entries[spawner].bucket == "orphan" and snap.entries[spawner].root is None
    # below the orphan, the old leaf rides along as a stray
    assert snap.entries[leaf].bucket == "stray" and leaf in snap.entries[spawner].children
    assert old.root not in snap.entries  # the old root is nobody's actor
    for name, pid in new.actors().items():
        assert snap.entries[pid].bucket == "live" and snap.entries[pid].root == new.root

    text = cli("ptree", str(new.root)).stdout
    assert "ORPHAN (" in text and "STRAY (" in text
    stray_lines = [ln for ln in text.splitlines() if f"{leaf} " in ln]
    assert stray_lines and "parent " in stray_lines[0] and "is orphan" in stray_lines[0]


# --- current runtime traits --------------------------------------------------------

def test_current_tree_traits(current_tree):
    marker = f"tdroot{uuid.uuid4().hex[:10]}"
    tree = current_tree(depth=2, breadth=2, hang="none", root_name=marker)
    actors = tree.actors()
    # the root found by a pattern in its command line
    snap = cli_json(marker)
    assert snap.roots == [tree.root] and snap.patterns == [marker]
    for name, pid in actors.items():
        entry = snap.entries[pid]
        assert entry.bucket == "live" and entry.root == tree.root
        if name == marker:
            continue
        title = f"_subactor[{name}@{pid}]"
        actor = entry.proc.actor
        assert actor.name == name and actor.generation == "current"
        assert actor.uuid is None and actor.parent_addr is None and not actor.name_truncated
        assert entry.proc.comm == title[:15] and len(entry.proc.comm.encode()) == 15
        assert entry.proc.cmdline[0].startswith(title)
        # everyone idles in trio's epoll wait; the SIGUSR1 dump handler is armed
        assert entry.state in ("idle", "running")
        assert entry.proc.handles_signal(signal.SIGUSR1) is True
    assert any(snap.entries[pid].state == "idle" for pid in actors.values())

    # a title matches as a pattern; only the topmost match is a root
    spawner = actors["spawner_1"]
    sub = cli_json(f"[spawner_1@{spawner}]")
    assert sub.roots == [spawner]
    assert {actors["leaf_1_0"], actors["leaf_1_1"]} <= set(sub.entries)
    assert actors["spawner_0"] not in sub.entries

    text = cli("ptree", "--tree", marker, script=True).stdout
    assert "leaf_0_1 [actor:current]" in text


def test_zombies_show_their_exit_code(zombie_maker):
    maker = zombie_maker(count=2, code=3)
    titled = zombie_maker(count=1, code=7, title="zq")
    snap = take_snapshot(Targets([maker.root, titled.root]))
    for pid in maker.zombies:
        entry = snap.entries[pid]
        assert entry.bucket == "zombie" and entry.state == "exited"
        assert entry.proc.exit_code == 3 and entry.proc.cmdline == []
    (ghost,) = titled.zombies
    entry = snap.entries[ghost]
    assert entry.bucket == "zombie" and entry.proc.exit_code == 7
    # a zombie has no cmdline left: the actor is known by its 15-byte comm
    assert entry.proc.actor.name == "zq_0" and entry.proc.actor.name_truncated

    text = cli("ptree", str(maker.root), str(titled.root)).stdout
    assert text.startswith("2 roots") and "ZOMBIE (" in text
    zombie_section = text.split("ZOMBIE (", 1)[1].split("\n\n", 1)[0]
    line_of = {int(ln.split()[0]): ln for ln in zombie_section.splitlines()[2:]}
    for pid in maker.zombies:
        assert "exited:3" in line_of[pid] and f"parent {maker.root} " in line_of[pid]
    assert "exited:7" in line_of[ghost] and "zq_0… [actor:current]" in line_of[ghost]


def test_runaway_needs_cpu(released_tree, cpu_boost):
    tree = released_tree(depth=1, breadth=2, hang="runaway")
    actors = tree.actors()
    burner, calm = actors["leaf_0"], actors["leaf_1"]
    wait_for(lambda: proc_state(burner) == "R")
    cpu_boost(burner)
    wait_past_boot(burner, BOOT_GRACE)

    one = cli_json(str(tree.root))
    assert one.samples == 1 and one.entries[burner].cpu_percent is None
    assert one.entries[burner].state == "running"

    # two samples: a core's worth of CPU makes it a runaway (retried: the
    # box is shared, a window may be starved)
    for _ in range(6):
        two = cli_json("--cpu-window", "0.5", str(tree.root))
        if two.entries[burner].state == "runaway":
            break
    assert two.samples == 2 and 0.4 < two.window < 2.0
    assert two.entries[burner].state == "runaway" and two.entries[burner].cpu_percent >= 90
    assert two.entries[calm].state != "runaway" and two.entries[calm].cpu_percent < 50

    text = cli("ptree", "--cpu", "--tree", str(tree.root), script=True).stdout
    assert re.search(r"CPU over \d\.\d+s", text) and re.search(r"cpu \d+%", text)


# --- not actors ----------------------------------------------------------------

def test_sleep_tree_is_live_and_not_actors(sleep_tree):
    h = sleep_tree()
    sh = h.root

    def settled():  # both children have exec'd sleep and sleep in it
        snap = take_snapshot(Targets([sh]))
        kids = [snap.entries[p] for p in snap.entries[sh].children]
        ok = len(kids) == 2 and all(k.proc.comm == "sleep" and k.proc.wchan for k in kids)
        return snap if ok else None

    snap = wait_for(settled)
    assert set(snap.entries) >= set(h.pids()) and len(h.pids()) == 3
    for pid in h.pids():
        entry = snap.entries[pid]
        assert entry.proc.actor is None and entry.bucket == "live" and entry.root == sh
    sleeps = [snap.entries[p] for p in snap.entries[sh].children]
    assert [e.proc.cmdline for e in sleeps] == [["sleep", "600"]] * 2
    assert all(e.state == "blocked" for e in sleeps)  # nanosleep is not an event loop

    # --no-strays: other runs' ghosts on this box would add to the counts
    text = cli("ptree", "--no-strays", str(sh)).stdout
    assert len(re.findall(r"  sleep 600$", text, re.M)) == 2
    assert "0 zombie, 0 orphan, 3 live" in text
    # discovery (no root given) finds actor trees only: the sleep tree is no
    # root of its own (it shows up only if an ancestor of ours - this pytest,
    # say, when it adopted orphaned actors as a subreaper - is one)
    everything = cli_json()
    assert sh not in everything.roots
    if sh in everything.entries:
        assert everything.entries[sh].root in trees_above(sh)


def trees_above(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).parents()}


def test_non_utf8_command_line(spawn):
    # surrogate escapes: subprocess passes them on as the raw bytes caf\xe9-\xff
    h = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)",
               "caf\udce9-\udcff"])
    with open(f"/proc/{h.root}/cmdline", "rb") as f:
        assert f.read().endswith(b"caf\xe9-\xff\0")
    snap = cli_json(str(h.root))
    assert snap.entries[h.root].proc.cmdline[-1].startswith("caf")
    text = cli("ptree", str(h.root))
    assert text.returncode == 0 and "caf" in text.stdout


# --- CLI contract ----------------------------------------------------------------

def test_pattern_starting_with_dash(spawn):
    mark = f"--tdiag-mark-{uuid.uuid4().hex[:12]}"
    h = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)", mark])
    snap = cli_json("--", mark)
    assert snap.roots == [h.root] and snap.patterns == [mark]
    r = cli("ptree", "--tree", "--", mark, script=True)
    assert r.returncode == 0 and str(h.root) in r.stdout
    # without the separator it is (rightly) an unknown option
    assert "unrecognized arguments" in one_line_error(cli("ptree", mark), 2)


def test_no_match_and_bad_pid(tmp_path):
    pattern = f"no-such-thing-{uuid.uuid4().hex}"
    line = one_line_error(cli("ptree", pattern), 1)
    assert line.startswith("tractor-diag:") and pattern in line
    one_line_error(cli("ptree", "--json", pattern, script=True), 1)

    gone = subprocess.Popen(["true"])
    gone.wait()
    line = one_line_error(cli("ptree", str(gone.pid)), 1)
    assert f"no such process: {gone.pid}" in line
    # one good root and one bad: shown, with the bad one mentioned
    r = cli("ptree", str(os.getpid()), str(gone.pid))
    assert r.returncode == 0 and f"no such process: {gone.pid}" in r.stdout


@pytest.mark.parametrize("args", [
    ["ptree", "--bogus"],
    ["ptree", "--cpu-window", "abc", "1"],
    ["ptree", "--cpu-window", "-1", "1"],
    ["ptree", "--color", "purple", "1"],
    ["no-such-verb"],
])
def test_usage_errors_exit_2(args):
    line = one_line_error(cli(*args), 2)
    assert line.startswith("tractor-diag")


def test_help_and_color():
    r = cli("ptree", "--help", script=True)
    assert r.returncode == 0 and "tractor-diag ptree -- -k" in r.stdout and "--cpu" in r.stdout
    plain = cli("ptree", str(os.getpid()))
    assert "\x1b[" not in plain.stdout
    colored = cli("ptree", "--color", "always", str(os.getpid()))
    assert "\x1b[" in colored.stdout
    auto = cli("ptree", str(os.getpid()), env={"NO_COLOR": "1"})
    assert "\x1b[" not in auto.stdout


def test_counts_are_of_the_given_trees_only(zombie_maker):
    """A zombie outside the given roots (another run's, seen as a stray) is
    marked as outside and counted apart, never in the trees' own counts."""
    from tractor_diag.render import Style
    from tractor_diag.render.ptree import render_grouped

    ours = zombie_maker(count=1, code=3)
    theirs = zombie_maker(count=2, code=4)
    snap = take_snapshot(Targets([ours.root, theirs.root]))
    for pid in [p for p, e in snap.entries.items() if e.root is None]:
        del snap.entries[pid]  # the box's own strays: not this test's to count
    # render the second tree as if it were outside the roots the user gave
    for pid, e in snap.entries.items():
        if e.root == theirs.root:
            e.root = None
    snap.roots = [r for r in snap.roots if r != theirs.root]
    snap.strays = [theirs.root]
    text = render_grouped(snap, Style(color=False), width=200)
    header = text.splitlines()[0]
    assert header.startswith("1 root, 2 processes (1 zombie, 0 orphan, 1 live); "
                             "3 outside them (strays);"), header
    lines = {int(ln.split()[0]): ln for ln in text.splitlines()[1:] if ln.startswith("  ") and ln.split()[0].isdigit()}
    for pid in theirs.zombies:
        assert "outside the given roots" in lines[pid], lines[pid]
    assert "outside the given roots" not in lines[ours.zombies[0]]


def test_unnamed_actors_whole_in_a_pipe(spawn):
    """Real tractor main, mp_spawn: the root and its actor have no name
    outside their command lines. In a pipe every view prints those whole
    (``ptree R | grep 'mp_spawn none'`` finds the root), whatever COLUMNS
    says. Before, an unnamed actor's command line was cut at 48 characters
    in every view, and ``--actors`` cut each row at the width even in a
    pipe."""
    from trees.harness import free_port, runtime_python

    py = runtime_python("main")
    if py is None:
        pytest.skip("no current tractor runtime venv: set TRACTOR_DIAG_TRACTOR_MAIN_VENV")
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    tree = spawn([str(py), script, str(free_port()), "mp_spawn", "none"], timeout=60)
    wait_for(lambda: len(tree.pids()) >= 3)
    for view in ((), ("--tree",), ("--actors",)):
        r = cli("ptree", *view, str(tree.root), env={"COLUMNS": "60"})
        assert r.returncode == 0, r.stderr
        assert " mp_spawn none [root actor" in r.stdout, (view, r.stdout)
        assert "from multiprocessing.spawn import spawn_main; spawn_main(" in r.stdout, \
            (view, r.stdout)
