"""``bindspace`` and the UDS sweep (``reap --uds-only``) on real sockets in
an isolated ``XDG_RUNTIME_DIR`` (conftest ``xdg_runtime_dir``)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from _reap_helpers import alive, orphans_go_to_init
from tractor_diag.bindspace import resolve_dir
from tractor_diag.socktables import UnixTable, parse_proc_unix

PY = sys.executable
CLI = [PY, "-m", "tractor_diag"]

pytestmark = pytest.mark.timeout(120)


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=60)


def scan_json(*args, env=None) -> dict:
    r = cli("bindspace", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_name(scan: dict) -> dict[str, dict]:
    return {e["name"]: e for e in scan["entries"]}


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on (bound, then closed)."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


# --- classification ----------------------------------------------------------------------

def test_classifies_every_kind_of_entry(current_tree, uds_socket, bindspace):
    tree = current_tree(depth=2, breadth=1, hang="sleep", registry=True)
    actors = tree.actors()
    with orphans_go_to_init():
        orphans = tree.orphan("spawner_0")  # spawner_0 SIGKILLed, leaf_0_0 re-parented
    assert orphans == [actors["leaf_0_0"]]
    dead = uds_socket("ghost", live=False)
    (bindspace / "notes.txt").write_text("x")
    (bindspace / "subdir").mkdir()
    os.mkfifo(bindspace / "pipe@1.sock")
    stale_socket(bindspace / "weird.sock")
    os.symlink("/etc/hostname", bindspace / "link@1.sock")

    scan = scan_json()
    assert scan["dir"] == str(bindspace)
    assert scan["source"] == "default"
    e = by_name(scan)
    root = actors["root"]
    assert e[f"root@{root}.sock"]["status"] == "live-active"
    assert e[f"spawner_0@{actors['spawner_0']}.sock"]["status"] == "orphaned-dead"
    leaf = e[f"leaf_0_0@{actors['leaf_0_0']}.sock"]
    assert leaf["status"] == "orphaned-alive"
    assert leaf["actor"] == "leaf_0_0" and leaf["binder"] == "leaf_0_0" and leaf["listening"]
    assert e[dead.path.name]["status"] == "orphaned-dead"
    assert e[dead.path.name]["pid"] == dead.pid
    reg = e["registry@1616.sock"]
    assert reg["status"] == "live-active" and reg["kind"] == "registry"
    assert reg["pid"] is None  # 1616 is a sentinel, never a pid
    assert reg["holders"] == [root]
    for name, ftype in [("notes.txt", "regular"), ("subdir", "directory"), ("pipe@1.sock", "fifo"),
                        ("weird.sock", "socket"), ("link@1.sock", "symlink")]:
        assert e[name]["status"] == "non-tractor", name
        assert e[name]["file_type"] == ftype

    text = cli("bindspace", "--color", "never").stdout
    assert text.splitlines()[0] == (f"bindspace {bindspace} "
                                    "(platformdirs.user_runtime_dir('tractor'))")
    for word in ("live-active", "orphaned-alive", "orphaned-dead", "non-tractor", "reap --uds-only"):
        assert word in text


def test_hashed_names(current_tree, monkeypatch):
    """A path over the 108-byte limit makes the runtime bind
    ``actor.<hex>@<pid>.sock`` instead (here: the root's long name)."""
    base = Path(tempfile.mkdtemp(prefix="tdx-long-", dir="/tmp"))
    xdg = base / ("x" * 20)
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    try:
        tree = current_tree(depth=1, breadth=1, hang="none", root_name="r" * 50)
        root = tree.root
        scan = scan_json()
        assert scan["dir"] == str(xdg / "tractor")
        e = by_name(scan)
        (hashed,) = [x for x in scan["entries"] if x["hashed"]]
        assert hashed["name"].startswith("actor.") and hashed["name"].endswith(f"@{root}.sock")
        assert hashed["actor"] is None and hashed["pid"] == root
        assert hashed["status"] == "live-active" and hashed["kind"] == "actor"
        leaf = tree.actors()["leaf_0"]
        assert e[f"leaf_0@{leaf}.sock"]["status"] == "live-active"
        tree.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stale_registry_is_dead_and_swept(uds_socket, bindspace):
    reg = uds_socket(live=False, filename="registry@1616.sock")
    e = by_name(scan_json())["registry@1616.sock"]
    assert e["status"] == "orphaned-dead" and e["pid"] is None and not e["listening"]
    rc = cli("reap", "--uds-only")
    assert rc.returncode == 0, rc.stderr
    assert not reg.path.exists()


# --- where ----------------------------------------------------------------------------------

def test_name_and_path_resolution(xdg_runtime_dir, tmp_path):
    other = xdg_runtime_dir / "otherapp"
    other.mkdir()
    stale_socket(other / "a@1.sock")
    scan = scan_json("otherapp")
    assert scan["dir"] == str(other) and scan["source"] == "name"
    assert [e["name"] for e in scan["entries"]] == ["a@1.sock"]
    scan = scan_json(str(other))
    assert scan["source"] == "path"
    assert resolve_dir("./rel")[1] == "path"
    r = cli("bindspace", "nosuchapp")
    assert r.returncode == 1
    assert r.stderr.strip() == f"tractor-diag: no such bindspace dir: {xdg_runtime_dir / 'nosuchapp'}"


def test_default_dir_without_xdg_runtime_dir():
    """The same dir platformdirs gives the runtime, with the fallback said."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    expect = subprocess.run(
        [PY, "-W", "ignore", "-c", "import platformdirs; print(platformdirs.user_runtime_dir('tractor'))"],
        capture_output=True, text=True, env=env).stdout.strip()
    scan = scan_json(env=env)
    assert scan["dir"] == expect
    assert any("XDG_RUNTIME_DIR is not set" in n for n in scan["notes"])
    r = cli("bindspace", env=env)
    assert r.returncode == 0 and r.stderr == ""  # platformdirs' warning is not leaked


_ASK = """
import json, warnings
warnings.simplefilter("ignore")
import platformdirs
from tractor_diag.runtimedir import possible_dirs
print(json.dumps([platformdirs.user_runtime_dir("tractor"), possible_dirs()]))
"""


def _runtime_dirs(env: dict, cwd: str) -> tuple[str, list[str]]:
    out = subprocess.run([PY, "-c", _ASK], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=60, check=True).stdout
    return tuple(json.loads(out))


def test_possible_dirs_hold_platformdirs_answer(tmp_path):
    """Recognition skips platformdirs' import unless one of these dirs
    names a process: its answer must be among them, whichever case it takes."""
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    base = {k: v for k, v in os.environ.items()
            if k not in ("XDG_RUNTIME_DIR", "TMPDIR", "TEMP", "TMP")}
    cases = [
        {"XDG_RUNTIME_DIR": str(xdg)},             # the usual: an owned 0700 dir
        {},                                        # unset: /run/user/<uid> or a temp dir
        {"XDG_RUNTIME_DIR": str(loose)},           # fails platformdirs' mode check
        {"XDG_RUNTIME_DIR": "relative/dir"},       # not absolute: ignored
        {"TMPDIR": str(tmpdir)},                   # the temp fallback follows TMPDIR
        {"XDG_RUNTIME_DIR": str(loose), "TMP": "rel-tmp"},
    ]
    for extra in cases:
        answer, possible = _runtime_dirs({**base, **extra}, str(tmp_path))
        assert answer in possible, (extra, answer, possible)


def test_unix_table_parsing():
    text = (
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 101 /run/a b.sock\n"
        "0000000000000000: 00000002 00000000 00000000 0001 03 102 /run/c.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 103 @abstract\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 104\n"
        "garbage\n"
    )
    t = UnixTable(parse_proc_unix(text))
    assert t.listening == {"/run/a b.sock": [101]}


# --- the UDS sweep ----------------------------------------------------------------------------

def test_sweep_keeps_a_live_registrar(current_tree, uds_socket, bindspace):
    tree = current_tree(depth=1, breadth=1, hang="none", registry=True)
    actors = tree.actors()
    dead = uds_socket("ghost", live=False)
    before = {p.name for p in bindspace.iterdir()}
    assert "registry@1616.sock" in before
    r = cli("reap", "--uds-only", "--json")
    assert r.returncode == 0, r.stderr
    removals = json.loads(r.stdout)["uds"]["removals"]
    assert [(Path(x["path"]).name, x["removed"]) for x in removals] == [(dead.path.name, True)]
    assert {p.name for p in bindspace.iterdir()} == before - {dead.path.name}
    assert all(alive(p) for p in actors.values())


def test_sweep_never_follows_symlinks_or_leaves_the_dir(uds_socket, bindspace, tmp_path):
    dead = uds_socket("ghost", live=False)  # the control: a real stale socket in the dir
    outside = Path(tempfile.mkdtemp(prefix="tdx-out-", dir="/tmp"))
    try:
        victim = outside / f"victim@{dead.pid}.sock"
        stale_socket(victim)
        stale_socket(outside / "reg.sock")
        os.symlink(victim, bindspace / f"victim@{dead.pid}.sock")
        os.symlink(outside / "reg.sock", bindspace / "registry@1616.sock")
        os.symlink(outside, bindspace / f"dir@{dead.pid}.sock")
        (bindspace / "sub").mkdir()
        stale_socket(bindspace / "sub" / f"deep@{dead.pid}.sock")
        other_owner = bindspace / f"theirs@{dead.pid}.sock"
        stale_socket(other_owner)
        os.chown(other_owner, 65534, 65534, follow_symlinks=False)

        r = cli("reap", "--uds-only", "--json")
        assert r.returncode == 0, r.stderr
        removed = [Path(x["path"]).name for x in json.loads(r.stdout)["uds"]["removals"] if x["removed"]]
        assert removed == [dead.path.name]
        assert victim.exists() and (outside / "reg.sock").exists()
        for name in (f"victim@{dead.pid}.sock", "registry@1616.sock", f"dir@{dead.pid}.sock"):
            assert (bindspace / name).is_symlink(), name
        assert (bindspace / "sub" / f"deep@{dead.pid}.sock").exists()
        assert other_owner.exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_sweep_dry_run_touches_nothing(uds_socket, bindspace):
    dead = uds_socket("ghost", live=False)
    r = cli("reap", "--uds-only", "--dry-run")
    assert r.returncode == 0
    assert "would unlink 1" in r.stdout and dead.path.name in r.stdout
    assert dead.path.exists()


def test_sweep_keeps_a_socket_that_started_listening(uds_socket, bindspace):
    """Between scan and unlink the binder-name pid is dead, but something now
    listens on the path: the last-moment check keeps it."""
    from tractor_diag import bindspace as bs

    dead = uds_socket("ghost", live=False)
    scan = bs.scan()
    os.unlink(dead.path)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(dead.path))
        s.listen()
        removals = bs.sweep(scan)
        assert [r.removed for r in removals] == [False]
        assert "kept" in removals[0].reason
        assert dead.path.exists()
    finally:
        s.close()
        os.unlink(dead.path)


# --- binders in another network namespace ------------------------------------------------------
# /proc/net/unix lists only our namespace's sockets: a container sharing the
# dir listens where our table cannot show it.

_NETNS_LISTENER = ("import os, socket, sys, time\n"
                   "s = socket.socket(socket.AF_UNIX)\n"
                   "s.bind(sys.argv[1].replace('PID', str(os.getpid())))\n"
                   "s.listen()\n"
                   "print('READY', os.getpid(), os.readlink('/proc/self/ns/net'), flush=True)\n"
                   "time.sleep(600)\n")


@pytest.fixture
def netns_listener():
    """Start ``unshare --net python`` listening on a path ('PID' -> its pid)."""
    started: list[subprocess.Popen] = []

    def start(path: str) -> tuple[int, str]:
        p = subprocess.Popen(["unshare", "--net", PY, "-c", _NETNS_LISTENER, path],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        started.append(p)
        line = p.stdout.readline().split()
        assert line[:1] == ["READY"], f"listener did not start (rc={p.poll()})"
        assert int(line[1]) == p.pid  # unshare execs: the pid is the listener's
        return p.pid, line[2]

    yield start
    for p in started:
        p.kill()
        p.wait(10)


def test_sweep_keeps_listeners_in_another_network_namespace(bindspace, netns_listener):
    assert os.readlink("/proc/self/ns/net") != ""
    binder, ns = netns_listener(str(bindspace / "svc@PID.sock"))
    _, ns2 = netns_listener(str(bindspace / "registry@1616.sock"))
    # a socket whose name claims a pid gone from our PID namespace (say, a
    # container's own), listened on in another network namespace
    gone = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    netns_listener(str(bindspace / f"boxed@{gone}.sock"))
    dead = bindspace / f"ghost@{gone}.sock"
    stale_socket(dead)  # the control: truly stale
    assert ns != os.readlink("/proc/self/ns/net") and ns2 != os.readlink("/proc/self/ns/net")

    entries = by_name(scan_json(bindspace))
    svc = entries[f"svc@{binder}.sock"]
    assert svc["status"] == "live-active" and svc["listening"]
    assert f"another network namespace ({ns})" in svc["note"] and "nothing listens" not in svc["note"]
    reg = entries["registry@1616.sock"]
    assert reg["status"] == "live-active" and reg["listening"]
    assert "another network namespace" in reg["note"]
    assert entries[f"boxed@{gone}.sock"]["status"] == "live-active"
    assert entries[dead.name]["status"] == "orphaned-dead"

    r = cli("reap", "--uds-only", "--bindspace", bindspace, "--json")
    assert r.returncode == 0, r.stderr
    removals = json.loads(r.stdout)["uds"]["removals"]
    assert [(Path(x["path"]).name, x["removed"]) for x in removals] == [(dead.name, True)]
    assert {p.name for p in bindspace.iterdir()} == {
        f"svc@{binder}.sock", "registry@1616.sock", f"boxed@{gone}.sock"}
