"""`why` on real trees: one tree per verdict, the exact chain, and a healthy
sibling tree that gets none."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from _proc import wait_past_boot
from tractor_diag.classify import BOOT_GRACE
from tractor_diag.cli import run_verb
from tractor_diag.whymodel import Diagnosis

pytestmark = pytest.mark.timeout(180)


def why(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["why", *argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def why_json(*roots: int) -> Diagnosis:
    rc, out, err = why("--json", *map(str, roots))
    assert rc == 0, err
    return msgspec.json.decode(out, type=Diagnosis)


def chain_text(diag: Diagnosis, cause_pid: int) -> str:
    from tractor_diag.render.why import chain_sentence

    (chain,) = [c for c in diag.chains if c.cause.pid == cause_pid]
    return chain_sentence(diag, chain)


def verdict_pids(diag: Diagnosis) -> set[int]:
    return {v.pid for v in diag.verdicts}


def test_sync_blocked_leaves_and_a_healthy_sibling(current_tree):
    sick = current_tree(depth=2, breadth=1, hang="sleep")
    healthy = current_tree(depth=2, breadth=1, hang="none", root_name="healthy")
    actors = sick.actors()
    leaf, spawner = actors["leaf_0_0"], actors["spawner_0"]
    diag = why_json(sick.root, healthy.root)

    assert [c.cause.pid for c in diag.chains] == [leaf]
    (chain,) = diag.chains
    assert chain.pids == [sick.root, spawner, leaf]
    assert chain.cause.kind == "sync-blocked"
    text = chain_text(diag, leaf)
    root_name = diag.names[sick.root]
    assert text.startswith(
        f"{root_name} waits for child spawner_0 (trio Process.wait); "
        f"spawner_0 waits for child leaf_0_0 (trio Process.wait); "
        f"leaf_0_0 ({leaf}) is blocked in time.sleep at current_tree.py:")
    assert text.endswith("— a sync call that a cancel cannot interrupt")
    sources = {e.source for e in chain.cause.evidence}
    assert sources == {"kernel", "python", "tasks"}
    # the healthy tree: no verdict on any of its processes, no edge leading anywhere stuck
    assert not verdict_pids(diag) & set(healthy.pids())
    assert not verdict_pids(diag) - {leaf}

    rc, out, err = why(str(sick.root))
    assert rc == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"1. [sync-blocked] leaf_0_0 ({leaf}) is blocked in time.sleep at "
                            "current_tree.py:")
    assert "   chain: " in out and "   evidence:" in out and "   what to do:" in out
    assert f"tractor-diag stacks {leaf}" in out


def test_parent_in_a_sync_waitpid_on_a_child_that_ignores_signals(current_tree):
    tree = current_tree(depth=2, breadth=2, hang="wait-child-sync")
    actors = tree.actors()
    spawner, leaf = actors["spawner_0"], actors["leaf_0_0"]
    diag = why_json(tree.root)
    (chain,) = diag.chains
    assert chain.cause.kind == "sync-blocked" and chain.cause.pid == spawner
    # the root waits on spawner_0 (its task), spawner_0 on leaf_0_0 (the kernel says which)
    assert chain.pids == [tree.root, spawner, leaf]
    text = chain_text(diag, spawner)
    assert f"; spawner_0 ({spawner}) is blocked in os.waitpid at current_tree.py:" in text
    assert text.endswith(
        f"; spawner_0 waits for child leaf_0_0 (os.waitpid); leaf_0_0 ({leaf}) ignores SIGINT and "
        "SIGTERM: a cancel by SIGINT and SIGTERM never reaches it, only SIGKILL ends it")
    edge = next(e for e in diag.edges if e.waiter == spawner and e.on == leaf)
    assert any(ev.source == "kernel" and f"wait4 names pid {leaf}" in ev.text
               for ev in edge.evidence)
    # only the two processes the chain is about have a verdict
    assert verdict_pids(diag) == {spawner, leaf}


def test_ignores_signals_alone_is_no_chain(current_tree):
    tree = current_tree(depth=2, breadth=1, hang="wait-child")
    leaf = tree.actors()["leaf_0_0"]
    diag = why_json(tree.root)
    assert diag.chains == []
    (v,) = diag.verdicts
    assert (v.kind, v.pid) == ("ignores-signals", leaf)
    assert v.text == (f"leaf_0_0 ({leaf}) ignores SIGINT and SIGTERM: a cancel by SIGINT and "
                      "SIGTERM never reaches it, only SIGKILL ends it")
    rc, out, _ = why(str(tree.root))
    assert out.startswith("no verdict: none of the")
    assert f"  - [ignores-signals] leaf_0_0 ({leaf}) ignores SIGINT and SIGTERM" in out


@pytest.mark.released
def test_released_tree_sync_blocked_under_invoke(released_tree):
    tree = released_tree(depth=1, breadth=2, hang="sleep")
    actors = tree.actors()
    diag = why_json(tree.root)
    assert sorted(c.cause.pid for c in diag.chains) == sorted([actors["leaf_0"], actors["leaf_1"]])
    for chain in diag.chains:
        # no task dumper in the released runtime: nothing says who waits on the leaf
        assert chain.pids == [chain.cause.pid]
        name = diag.names[chain.cause.pid]
        assert chain.cause.text.startswith(
            f"{name} ({chain.cause.pid}) is blocked in time.sleep at released_tree.py:")
        assert any("under an RPC task (tractor _invoke)" in e.text for e in chain.cause.evidence)
    assert verdict_pids(diag) == {actors["leaf_0"], actors["leaf_1"]}
    assert any("no process had a task dumper armed" in n for n in diag.notes)


@pytest.mark.released
def test_released_healthy_tree_gets_no_verdict(released_tree):
    tree = released_tree(depth=2, breadth=2, hang="none")
    diag = why_json(tree.root)
    assert diag.verdicts == [] and diag.chains == []
    assert set(diag.names) >= set(tree.pids())


def _spin(spawn, cpu: int):
    proc = spawn([sys.executable, "-c", "import os\nprint('READY', flush=True)\nwhile True: pass"],
                 label="spinner")
    os.sched_setaffinity(proc.root, {cpu})
    return proc


def test_runaway_judged_by_the_kernel_on_a_saturated_cpu(runaway, spawn, current_tree):
    """Three spinners share one CPU: each gets a third of it (CPU% ~33, which
    the old rule called 'running'); each is on the CPU or queued for it the
    whole window and never yields: runaway."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hog = runaway(title="hog")
    os.sched_setaffinity(hog.root, {cpu})
    others = [_spin(spawn, cpu), _spin(spawn, cpu)]
    healthy = current_tree(depth=1, breadth=1, hang="none", root_name="healthy")
    wait_past_boot(hog.root, BOOT_GRACE)

    rc, out, err = run_verb_out(["ptree", "--cpu-window", "0.5", "--json", str(hog.root)])
    assert rc == 0, err
    entry = json.loads(out)["entries"][str(hog.root)]
    assert entry["cpu_percent"] < 75  # the share CPU% sees on a crowded core
    assert entry["state"] == "runaway"

    diag = why_json(hog.root, healthy.root)
    (chain,) = diag.chains
    assert chain.cause.kind == "runaway" and chain.cause.pid == hog.root
    assert chain.cause.text.startswith(f"hog ({hog.root}) burns a CPU: on one or queued for one ")
    assert not verdict_pids(diag) & set(healthy.pids())
    for p in others:
        assert p.root not in diag.names  # not in the given trees


def test_a_busy_process_in_its_first_seconds_is_booting_not_a_runaway(runaway):
    """A process importing at start never sleeps either: on a loaded box a
    just-started healthy actor was judged a runaway. Inside the boot grace
    the spinner gets a note, no verdict; past it, the verdict."""
    hog = runaway(title="young")
    diag = why_json(hog.root)
    assert diag.verdicts == [] and diag.chains == []
    assert any("young" in n and "its boot, not judged a runaway yet" in n for n in diag.notes)
    rc, out, err = run_verb_out(["ptree", "--cpu-window", "0.3", "--json", str(hog.root)])
    assert rc == 0, err
    assert json.loads(out)["entries"][str(hog.root)]["state"] != "runaway"

    wait_past_boot(hog.root, BOOT_GRACE)
    diag = why_json(hog.root)
    assert [v.kind for v in diag.verdicts] == ["runaway"]


def run_verb_out(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(argv, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_zombie_not_reaped_names_the_parent_and_where_it_is(zombie_maker):
    maker = zombie_maker(count=1, code=3, title="ghost")  # comm: _subactor[ghost_ (cut)
    (zombie,) = maker.zombies
    diag = why_json(maker.root)
    (chain,) = diag.chains
    assert chain.cause.kind == "zombie" and chain.pids == [zombie]
    parent = diag.names[maker.root]
    assert chain.cause.text.startswith(
        f"ghost… ({zombie}) exited (exit status 3) and its parent {parent} ({maker.root}) has "
        f"not reaped it; {parent} is at helpers.py:")
    assert verdict_pids(diag) == {zombie}


def test_stopped_process(spawn):
    proc = spawn([sys.executable, "-c", "import time\nprint('READY', flush=True)\ntime.sleep(600)"])
    os.kill(proc.root, signal.SIGSTOP)
    try:
        # the stop is delivered when the sleeper next runs: on a loaded box
        # that can be after why's first look
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{proc.root}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        diag = why_json(proc.root)
    finally:
        os.kill(proc.root, signal.SIGCONT)
    (chain,) = diag.chains
    assert chain.cause.kind == "stopped"
    assert chain.cause.text.endswith("is stopped (SIGSTOP or job control): it runs nothing until "
                                     "it gets SIGCONT")
    assert f"kill -CONT {proc.root}" in chain.cause.hints


def stale_of(diag: Diagnosis) -> list[str]:
    return sorted(v.name for v in diag.verdicts if v.kind == "stale-socket")


def test_stale_sockets_are_listed_under_their_own_tree_and_counted_elsewhere(
        uds_socket, current_tree):
    """One bindspace dir, two trees and three stale socket files: a ghost
    of an earlier run (bound and dead before either tree started), one
    named after the first tree's root actor and one after the second's,
    both left by binders that died while the trees ran (a root restarted
    leaves such a file). Each
    tree lists its own, and the rest once as a count."""
    ghost = uds_socket(name="ghost", live=False)
    time.sleep(1.1)  # the ghost's file predates both trees by more than the slack
    mine = current_tree(depth=1, breadth=1, hang="none")
    theirs = current_tree(depth=1, breadth=1, hang="none", root_name="other")
    left = uds_socket(name="root", live=False)
    other = uds_socket(name="other", live=False)

    diag = why_json(mine.root)
    assert stale_of(diag) == [left.path.name]
    assert diag.stale_elsewhere == 2
    (v,) = [v for v in diag.verdicts if v.kind == "stale-socket"]
    assert v.pid == left.pid and "Address already in use" in v.text
    assert diag.chains == []
    rc, out, _ = why(str(mine.root))
    assert rc == 0
    assert left.path.name in out and ghost.path.name not in out and other.path.name not in out
    assert out.count("2 stale socket files of other runs in the bindspace dir") == 1

    diag = why_json(theirs.root)
    assert stale_of(diag) == [other.path.name] and diag.stale_elsewhere == 2
    # both trees at once: each file once, the ghost counted
    diag = why_json(mine.root, theirs.root)
    assert stale_of(diag) == sorted([left.path.name, other.path.name])
    assert diag.stale_elsewhere == 1


def test_a_process_that_is_no_actor_is_named_by_program_and_script(zombie_maker):
    """The zombie's parent is a plain Python program: named
    ``python helpers.py`` (program, script), not by its command line cut
    at a width (``python /long/venv/path/tests/trees/helpers.py zo…``)."""
    maker = zombie_maker(count=1, code=3, title="ghost")
    (zombie,) = maker.zombies
    diag = why_json(maker.root)
    program = os.path.basename(sys.executable)
    assert diag.names[maker.root] == f"{program} helpers.py"
    (chain,) = diag.chains
    assert f"its parent {program} helpers.py ({maker.root})" in chain.cause.text
    rc, out, _ = why(str(maker.root))
    assert f"{program} helpers.py ({maker.root})" in out and "…" not in out.replace("ghost…", "")


def test_a_zombie_under_pid_1_gets_no_hint_to_dump_pid_1(tmp_path):
    """In a PID namespace whose pid 1 never reaps (a container whose first
    process is a plain program): a crashed actor stays a zombie under pid 1.
    `why` inside it says what holds the zombie and names nothing a user
    cannot act on: no ``stacks 1`` (not a tree of the user's to dump), no
    ``kill`` (a zombie takes no signal)."""
    from trees.harness import HELPERS_SCRIPT

    helper = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, str(HELPERS_SCRIPT), "zombie", "--count", "1", "--title", "crash"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        ready = helper.stdout.readline()
        assert ready.startswith("READY"), ready
        (zombie,) = [int(p) for p in ready.split()[1:]]  # its pid inside the namespace
        init = int(open(f"/proc/{helper.pid}/task/{helper.pid}/children").read().split()[0])
        inside = ["nsenter", f"--target={init}", "--pid", "--mount", "--",
                  sys.executable, "-m", "tractor_diag", "why"]
        r = subprocess.run([*inside, "--json", "1"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, NO_COLOR="1"))
        assert r.returncode == 0, r.stderr
        diag = msgspec.json.decode(r.stdout, type=Diagnosis)
        (v,) = [v for v in diag.verdicts if v.kind == "zombie"]
        assert v.pid == zombie
        assert not any(h.startswith(("tractor-diag", "kill")) for h in v.hints), v.hints
        assert "is pid 1" in v.hints[0]
        r = subprocess.run([*inside, "1"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, NO_COLOR="1"))
        assert r.returncode == 0, r.stderr
        assert "stacks 1" not in r.stdout and "reap --parent 1" not in r.stdout
        assert "docker run --init" in r.stdout
    finally:
        helper.kill()  # our own child: --kill-child takes the namespace with it
        helper.wait(10)


def test_bad_input_is_one_line():
    rc, out, err = why("99999999")
    assert rc == 1 and err == "tractor-diag: no such process: 99999999\n"
    rc, out, err = why("--bogus")
    assert rc == 2 and err.count("\n") == 1


def _runtime_python():
    """The current tractor runtime's venv (Python 3.13, tractor main):
    ``$TRACTOR_DIAG_TRACTOR_MAIN_VENV`` or ``<repo>/.venv-tractor-main``."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    venv = Path(os.environ.get("TRACTOR_DIAG_TRACTOR_MAIN_VENV") or repo / ".venv-tractor-main")
    py = venv / "bin" / "python"
    if not py.exists():
        pytest.skip("no current tractor runtime venv: set TRACTOR_DIAG_TRACTOR_MAIN_VENV "
                    "(or build .venv-tractor-main)")
    return str(py)


@pytest.mark.parametrize("method", ["trio", "mp_spawn"])
def test_current_runtime_root_waits_on_a_blocked_child(spawn, free_port, method):
    """Real tractor main: the root waits for its child's result (Portal.run),
    the child is blocked in time.sleep in its RPC task; a healthy tree whose
    root waits the same way on an idle child gets no verdict. With mp_spawn
    the root also has multiprocessing's resource tracker, which it does not
    wait for."""
    from pathlib import Path

    from tractor_diag.render.why import chain_sentence

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    sick = spawn([py, script, str(free_port), method, "sleep", "--taskdump"], timeout=60)
    healthy = spawn([py, script, str(_other_port(free_port)), method, "none", "--taskdump"],
                    timeout=60)
    diag = why_json(sick.root, healthy.root)
    (chain,) = diag.chains
    (child,) = [p for p in chain.pids if p != sick.root]
    assert chain.pids == [sick.root, child] and chain.cause.pid == child
    assert chain.cause.kind == "sync-blocked"
    text = chain_sentence(diag, chain)
    name = diag.names[child]
    assert text.startswith(
        f"{diag.names[sick.root]} waits for child {name} (Portal.run); {name} ({child}) is "
        "blocked in time.sleep at why_runtime_tree.py:")
    assert text.endswith("— a sync call that a cancel cannot interrupt")
    edge = next(e for e in diag.edges if e.waiter == sick.root)
    assert {ev.source for ev in edge.evidence} == {"tasks", "ipc"}
    assert any("under an RPC task (tractor _invoke)" in ev.text for ev in chain.cause.evidence)
    assert verdict_pids(diag) == {child}
    # the healthy root waits too (evidence, an edge), but nothing is stuck
    assert any(e.waiter == healthy.root for e in diag.edges)
    if method == "mp_spawn":
        tracker = [p for p in diag.names
                   if b"multiprocessing.resource_tracker" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert tracker and not any(e.on in tracker for e in diag.edges)


def _other_port(port: int) -> int:
    from trees.harness import free_port

    while (other := free_port()) == port:
        pass
    return other


def test_traced_process_names_its_tracer(spawn):
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    proc = spawn([sys.executable, "-c", "import time\nprint('READY', flush=True)\ntime.sleep(600)"])
    tracer = spawn([strace, "-p", str(proc.root), "-o", "/dev/null"], ready=None, label="strace")

    def tracer_pid() -> int:
        status = open(f"/proc/{proc.root}/status").read()
        return int(status.split("TracerPid:")[1].split()[0])

    deadline = time.monotonic() + 10
    while tracer_pid() != tracer.root:
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.05)
    diag = why_json(proc.root)
    (chain,) = diag.chains
    assert chain.cause.kind == "traced" and chain.cause.pid == proc.root
    assert chain.cause.text.endswith(f"is traced by strace ({tracer.root}): it stops at every "
                                     "signal until the tracer lets it go")
    assert any(e.text == f"TracerPid {tracer.root} in /proc/{proc.root}/status"
               for e in chain.cause.evidence)


@pytest.mark.parametrize("backend", ["trio", "mp_spawn", "mp_forkserver",
                                     "main_thread_forkserver"])
def test_every_backend_of_todays_tractor(runtime_trees, backend):
    """Real trees on today's tractor, each spawn backend: the sleeping leaf
    is the only cause (its parent's wait is inside trio, with no task dumper
    armed: not shown, and not guessed); the helpers the backend starts (the
    resource tracker, the fork server) and a healthy tree get nothing."""
    sick = runtime_trees.start(backend, "tcp", depth=2, breadth=1, hang="sleep")
    healthy = runtime_trees.start(backend, "tcp", depth=2, breadth=1, hang="none")
    leaf = sick.actors["leaf_0_0"]
    diag = why_json(sick.actors["root"], healthy.actors["root"])
    assert [(c.cause.kind, c.cause.pid) for c in diag.chains] == [("sync-blocked", leaf)]
    # mp_spawn and mp_forkserver children show no name: their command line
    assert diag.chains[0].cause.text.startswith(
        f"{diag.names[leaf]} ({leaf}) is blocked in time.sleep at runtime_tree.py:")
    if backend == "trio":
        assert diag.names[leaf] == "leaf_0_0"
    assert verdict_pids(diag) == {leaf}
    assert not diag.edges  # no evidence of who waits on whom: none claimed


@pytest.mark.released
def test_released_runaway_leaf(released_tree):
    tree = released_tree(depth=1, breadth=2, hang="runaway")
    actors = tree.actors()
    hog, calm = actors["leaf_0"], actors["leaf_1"]
    wait_past_boot(hog, BOOT_GRACE)
    diag = why_json(tree.root)
    (chain,) = diag.chains
    assert (chain.cause.kind, chain.cause.pid) == ("runaway", hog)
    assert chain.cause.text.startswith(f"leaf_0 ({hog}) burns a CPU: on one or queued for one ")
    assert "at released_tree.py:" in chain.cause.text and "in _hang_leaf" in chain.cause.text
    assert verdict_pids(diag) == {hog} and calm not in verdict_pids(diag)


def test_leftover_registrar_is_the_port_holder(runtime_trees):
    """A real current-runtime registrar alone, its loop wedged, holding
    <bindspace>/registry@1616.sock: a new root fails ("Registry address(es)
    are occupied") and `why` names the holder with its pid. A healthy tree
    (a root with its actors) holds its own registry address too: no
    verdict."""
    import subprocess

    from trees.harness import RUNTIME_SCRIPT

    old = runtime_trees.start("trio", "uds", depth=0, wedge_root=True)
    healthy = runtime_trees.start("trio", "uds", depth=1, breadth=1, hang="none")
    py = runtime_trees.python("trio")
    new = subprocess.run([str(py), str(RUNTIME_SCRIPT), "--start-method", "trio",
                          "--transport", "uds", "--depth", "1"],
                         capture_output=True, text=True, env=old.env, timeout=60)
    assert new.returncode != 0 and "Registry address(es) are occupied" in new.stderr

    diag = why_json(old.root, healthy.actors["root"])
    holders = [v for v in diag.verdicts if v.kind == "port-holder"]
    (v,) = holders
    sock = old.xdg / "tractor" / "registry@1616.sock"
    assert v.pid == old.root and v.text == (
        f"{diag.names[old.root]} ({old.root}) (a registrar with no actors of its own) holds the "
        f"registry address {sock}: a new root that wants to be the registrar there cannot "
        "bind it")
    assert not verdict_pids(diag) & set(healthy.actors.values())
    # the wedged loop is the chain; the port is a property listed apart
    assert [c.cause.pid for c in diag.chains] == [old.root]


def test_current_runtime_boot_hang_on_a_child_that_died_at_boot(spawn, free_port):
    """Real tractor main (trio backend): the child dies at boot, before it
    connects (exit status 3); the root waits for it in wait_for_peer
    forever, the child a zombie it never reaps. A healthy tree whose root
    waits on an idle child gets no verdict."""
    from pathlib import Path

    from tractor_diag.render.why import chain_sentence

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    sick = spawn([py, script, str(free_port), "trio", "boot", "--taskdump"], timeout=60)
    healthy = spawn([py, script, str(_other_port(free_port)), "trio", "none", "--taskdump"],
                    timeout=60)
    (child,) = [p for p in sick.pids() if p != sick.root]
    diag = why_json(sick.root, healthy.root)
    boot = [v for v in diag.verdicts if v.kind == "boot-hang"]
    (v,) = boot
    assert v.pid == sick.root and [e.evidence for e in diag.edges if e.waiter == sick.root]
    name = diag.names[child]
    assert v.text == (f"{diag.names[sick.root]} ({sick.root}) waits for child {name} to connect "
                      f"(Server.wait_for_peer), but {name} died at boot (exit status 3)")
    assert any(e.source == "kernel" and e.text == f"{child} is a zombie" for e in v.evidence)
    assert any(e.source == "tasks" for e in v.evidence)
    # the hang is the wait, not the unreaped zombie it leaves
    (chain,) = diag.chains
    assert chain.pids == [sick.root, child] and chain.cause is not None
    assert (chain.cause.kind, chain.cause.pid) == ("boot-hang", sick.root)
    assert chain_sentence(diag, chain).startswith(v.text + "; ")
    rc, out, err = why(str(sick.root))
    assert rc == 0, err
    assert out.splitlines()[0] == f"1. [boot-hang] {v.text}"
    assert verdict_pids(diag) == {sick.root, child}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_current_runtime_lost_cancel(spawn, free_port):
    """Real tractor main (trio backend): the root waits in
    Portal.cancel_actor (no timeout) on child ``deaf``, whose Actor.cancel
    takes the request and never acts on it; ``deaf`` idles in its loop, no
    task of it cancelling: lost cancel, on the root. A healthy root waiting
    in Portal.run on an idle child gets no verdict."""
    from pathlib import Path

    from tractor_diag.render.why import chain_sentence

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    sick = spawn([py, script, str(free_port), "trio", "lose-cancel", "--taskdump"], timeout=60)
    healthy = spawn([py, script, str(_other_port(free_port)), "trio", "none", "--taskdump"],
                    timeout=60)
    (child,) = [p for p in sick.pids() if p != sick.root]
    diag = why_json(sick.root, healthy.root)
    (chain,) = diag.chains
    assert chain.pids == [sick.root, child]
    assert (chain.cause.kind, chain.cause.pid) == ("lost-cancel", sick.root)
    root = diag.names[sick.root]
    assert diag.names[child] == "deaf"
    assert chain.cause.text == (
        f"{root} ({sick.root}) is cancelling deaf (Portal.cancel_actor), but deaf idles in its "
        "loop with no cancel in progress: the request was lost")
    assert chain_sentence(diag, chain).startswith(chain.cause.text + "; ")
    sources = {e.source for e in chain.cause.evidence}
    assert {"tasks", "kernel"} <= sources
    assert verdict_pids(diag) == {sick.root}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_current_runtime_frozen_task_waits_are_no_cycle(spawn, free_port):
    """Real tractor main (trio backend): mid calls its child crasher
    (Portal.run) in a task and then wedges its own loop in time.sleep; the
    crasher exits, a zombie mid never reaps. Mid's call is frozen with its
    loop: it waits for nothing, and with the crasher gone its only channel
    leads to the root. Before, that frozen call was read as mid waiting for
    the root, and root and mid were called a wait-for cycle that "none of
    them can move first"; mid is sync-blocked, the bottom of the root's
    chain, and the zombie its own."""
    from pathlib import Path

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    sick = spawn([py, script, str(free_port), "trio", "zombie", "--taskdump"], timeout=60)
    deadline = time.monotonic() + 20
    while True:
        zombies = [p for p in sick.pids() if _stat_state(p) == "Z"]
        if zombies or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (crasher,) = zombies
    (mid,) = [p for p in sick.pids() if p not in (sick.root, crasher)]
    time.sleep(0.5)  # mid's SIGCHLD handler back in time.sleep
    diag = why_json(sick.root)
    assert not [v for v in diag.verdicts if v.kind == "cycle"]
    assert not [e for e in diag.edges if e.waiter == mid and e.on == sick.root]
    causes = {(c.cause.kind, c.cause.pid): c.pids for c in diag.chains}
    assert causes == {("sync-blocked", mid): [sick.root, mid], ("zombie", crasher): [crasher]}
    assert verdict_pids(diag) == {mid, crasher}


def test_current_runtime_what_to_do_is_commands_a_shell_takes(spawn, free_port, tmp_path):
    """The same tree: every line of ``what to do`` that names a command is
    one a shell runs as printed (its reason after ``#``), in ``why`` and in
    the bundle's summary; the zombie's points at a reap that plans its
    parent. Before, reasons sat inside the commands in parentheses
    (``dump-all 41 (keep it all, to share)``: a shell syntax error), the
    zombie's ``reap --dry-run`` planned only orphans (its parent is none),
    and the summary told a bundle's reader to take the bundle."""
    import shlex
    from pathlib import Path

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    sick = spawn([py, script, str(free_port), "trio", "zombie", "--taskdump"], timeout=60)
    deadline = time.monotonic() + 20
    while not (zombies := [p for p in sick.pids() if _stat_state(p) == "Z"]):
        assert time.monotonic() < deadline, "the crasher never exited"
        time.sleep(0.2)
    (crasher,) = zombies
    (mid,) = [p for p in sick.pids() if p not in (sick.root, crasher)]
    time.sleep(0.5)  # mid's SIGCHLD handler back in time.sleep
    rc, out, err = why(str(sick.root))
    assert rc == 0, err
    todo, on = [], False
    for line in out.splitlines():
        if line.startswith("   ") and not line.startswith("    "):
            on = line.strip() == "what to do:"
        elif on and line.startswith("     "):
            todo.append(line.strip())
    assert todo
    for hint in todo:
        words = shlex.split(hint, comments=True)
        assert words[0] == "tractor-diag" and not any("(" in w for w in words), hint
    assert f"tractor-diag dump-all {sick.root}  # keep it all, to share" in todo
    reap = next(h for h in todo if "the zombie goes" in h)
    assert reap == (f"tractor-diag reap --parent {sick.root} --dry-run  # the zombie goes "
                           f"when mid ({mid}) reaps it or exits")
    rc, planned, err = _verb("reap", *shlex.split(reap, comments=True)[2:])
    assert rc == 0, err
    assert f" {mid} " in planned
    rc, bundle, err = _verb("dump-all", "--out-dir", str(tmp_path), str(sick.root))
    assert rc == 0, err
    summary = (Path(bundle.strip()) / "summary.md").read_text()
    todo = [line.split("to do: ", 1)[1] for line in summary.splitlines() if "- to do: " in line]
    assert todo and not any("dump-all" in t for t in todo)
    for t in todo:
        assert t.startswith("`tractor-diag ") and "(" not in t.split("`")[1], t


def test_current_runtime_brief_sync_calls_are_not_blocked(spawn, free_port):
    """Real tractor main (trio backend): child ``poller`` spends most of its
    time in time.sleep(0.2), returning to its loop between calls: healthy,
    and no verdict. Beside it a child that has been in time.sleep for good:
    sync-blocked, for as long as it has slept (on this kind of VM the
    scheduler's clock runs seconds behind CLOCK_MONOTONIC). Before, the
    poller was called sync-blocked "for at least 9 s" (the clocks' offset)."""
    from pathlib import Path

    py = _runtime_python()
    script = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")
    healthy = spawn([py, script, str(free_port), "trio", "poll", "--taskdump"], timeout=60)
    sick = spawn([py, script, str(_other_port(free_port)), "trio", "sleep", "--taskdump"],
                 timeout=60)
    asleep = time.monotonic()  # the call began at least 1 s before READY
    time.sleep(1.0)
    diag = why_json(healthy.root, sick.root)
    took = time.monotonic() - asleep
    assert not verdict_pids(diag) & set(healthy.pids())
    (v,) = diag.verdicts
    assert v.kind == "sync-blocked" and v.pid in sick.pids()
    secs = int(v.text.split("for at least ")[1].split(" s")[0])
    assert 1 <= secs <= took + 1.5, v.text


def _verb(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(list(argv), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _stat_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
