"""The CI canary (tests/canary.py, run by ``./dev test``): real decoys, real
harm done to them by the test (they are the test's own: started here, in a
state dir of its own), and the verdict.

The ``./dev test`` runs use an inner test file in a temp dir that finds its
run's decoys through ``TRACTOR_DIAG_CANARY_DIR`` only, and signals the
actor decoy pinned by pidfd + start tick.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _reap_helpers import kill_pinned, proc_info, wait_for

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
CANARY = HERE / "canary.py"
DEV = HERE.parent / "dev"


def canary(verb: str, state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CANARY), verb, str(state_dir)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def decoys(tmp_path, xdg_runtime_dir):
    state_dir = tmp_path / "canary"
    r = canary("start", state_dir)
    assert r.returncode == 0, r.stderr
    state = json.loads((state_dir / "state.json").read_text())
    yield state_dir, state
    canary("stop", state_dir)


def test_untouched_decoys_pass_and_look_real(decoys, xdg_runtime_dir):
    state_dir, state = decoys
    r = canary("check", state_dir)
    assert r.returncode == 0, r.stderr
    assert "no decoy was signalled" in r.stderr
    actor = state["actor"]
    # an orphaned current-runtime actor, to the library too
    assert actor["title"] == f"_subactor[canary@{actor['pid']}]"
    from tractor_diag import procfs
    from tractor_diag.classify import is_reparented

    procs = procfs.scan()
    p = procs[actor["pid"]]
    assert p.actor is not None and p.actor.name == "canary"
    assert is_reparented(p, procs.get(p.ppid))
    # a listening socket in the bindspace dir the library resolves
    from tractor_diag.bindspace import scan

    entries = {e.name: e for e in scan(must_exist=True).entries}
    sock = entries[f"canary@{state['socket']['pid']}.sock"]
    assert sock.status == "live-active", sock
    assert Path(state["socket"]["path"]).parent == xdg_runtime_dir / "tractor"
    # a /dev/shm file the shm sweep sees held
    from tractor_diag import shm

    files = {f.name: f for f in shm.scan(shm.DEFAULT_DIR).files}
    assert files[os.path.basename(state["shm"]["path"])].status == "in-use"


def test_every_harm_is_named(decoys):
    state_dir, state = decoys
    a, s, h = state["actor"], state["socket"], state["shm"]
    assert kill_pinned(a["pid"], a["start"], signal.SIGINT)
    assert kill_pinned(a["pid"], a["start"], signal.SIGUSR1)
    assert kill_pinned(h["pid"], h["start"], signal.SIGSTOP)
    os.unlink(s["path"])
    assert wait_for(lambda: (state_dir / "actor.signals").exists()
                    and len((state_dir / "actor.signals").read_text().splitlines()) == 2)
    r = canary("check", state_dir)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == "canary: FAILED: the test run touched 4 things it did not start:"
    me = os.getpid()
    assert any(f"orphaned actor (pid {a['pid']}) received SIGINT from pid {me} " in ln
               for ln in lines), lines
    assert any(f"received SIGUSR1 from pid {me} " in ln for ln in lines), lines
    assert f"canary:   {s['path']} was unlinked" in lines
    assert f"canary:   the /dev/shm file's holder (pid {h['pid']}) was stopped (state T)" in lines
    # the decoys took the signals and are still there (SIGINT ends nothing)
    assert proc_info(a["pid"])["start"] == a["start"]

    # stop: the decoys go (pinned SIGKILL) with their files and the state dir
    r = canary("stop", state_dir)
    assert r.returncode == 0
    for d in (a, s, h):
        assert wait_for(lambda: (proc_info(d["pid"]) or {}).get("start") != d["start"]
                        or proc_info(d["pid"])["state"] == "Z")
    assert not Path(h["path"]).exists()
    assert not state_dir.exists()


def test_killed_decoy_is_named(decoys):
    state_dir, state = decoys
    a = state["actor"]
    assert kill_pinned(a["pid"], a["start"], signal.SIGKILL)
    assert wait_for(lambda: (proc_info(a["pid"]) or {}).get("state", "Z") == "Z"
                    or proc_info(a["pid"])["start"] != a["start"])
    r = canary("check", state_dir)
    assert r.returncode == 1
    assert (f"the orphaned actor (pid {a['pid']}) is gone: killed" in r.stderr
            or f"the orphaned actor (pid {a['pid']}) was killed" in r.stderr), r.stderr


def test_decoy_leaves_when_its_state_dir_goes(tmp_path, xdg_runtime_dir):
    """An interrupted run (no ``stop``) leaves nothing behind for long."""
    state_dir = tmp_path / "canary"
    assert canary("start", state_dir).returncode == 0
    state = json.loads((state_dir / "state.json").read_text())
    import shutil

    shutil.rmtree(state_dir)
    for d in state.values():
        assert wait_for(lambda: (proc_info(d["pid"]) or {}).get("start") != d["start"]
                        or proc_info(d["pid"])["state"] == "Z", 10)
    assert not os.path.exists(state["shm"]["path"])
    assert not os.path.exists(state["socket"]["path"])


INNER_BAD = """
import json, os, signal

def test_touches_a_decoy():
    state = json.load(open(os.path.join(os.environ["TRACTOR_DIAG_CANARY_DIR"], "state.json")))
    a = state["actor"]
    fd = os.pidfd_open(a["pid"])
    with open(f"/proc/{a['pid']}/stat", "rb") as f:
        start = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert start == a["start"]
    signal.pidfd_send_signal(fd, signal.SIGTERM)
    os.close(fd)
"""

INNER_OK = """
def test_fine():
    pass
"""


def dev_test(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "inner").mkdir()
    test = tmp_path / "inner" / "test_inner.py"
    test.write_text(textwrap.dedent(body))
    env = dict(os.environ, TRACTOR_DIAG_PYTHONS="3.11", TMPDIR=str(tmp_path))
    for name in ("PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS", "TRACTOR_DIAG_CANARY",
                 "TRACTOR_DIAG_CANARY_DIR"):
        env.pop(name, None)
    return subprocess.run([str(DEV), "test", str(test), "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, env=env, timeout=150)


def test_dev_test_fails_when_the_suite_signals_a_decoy(tmp_path, xdg_runtime_dir):
    r = dev_test(tmp_path, INNER_BAD)
    assert "1 passed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 1, r.stderr
    assert "canary: FAILED: the test run touched 1 thing it did not start:" in r.stderr
    assert "received SIGTERM from pid" in r.stderr
    # cleaned up after itself: no state dir left
    assert not list(tmp_path.glob("tractor-diag-canary.*"))


def test_dev_test_passes_an_untouched_canary(tmp_path, xdg_runtime_dir):
    r = dev_test(tmp_path, INNER_OK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "canary: decoys up" in r.stderr
    assert "canary: no decoy was signalled, killed or unlinked" in r.stderr
    assert not list(tmp_path.glob("tractor-diag-canary.*"))
