"""No process can forge the terminal of whoever diagnoses it.

A real hostile process (``trees/hostile.py``, run from a file whose name
holds control characters) puts OSC 52, OSC 0, CSI 2J, a C1 CSI and line
breaks in its title, a zombie child's comm, its frames' file and function
names, a thread name, a trio task name and a socket file name. The real CLI
must print all of it escaped: no control byte in the output but the
newlines between lines and, with colour, the renderer's own SGR codes. JSON
stays exact.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

HOSTILE = Path(__file__).parent / "trees" / "hostile.py"
FILE_NAME = "ev\x1b]0;file\x07\x1b[2J\nil.py"
EVIL = "\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x9b2J\r\nFORGED"
SHOWN = "\\x1b]52;c;cHduZWQ=\\x07\\x1b]0;owned\\x07\\x1b[2J\\x9b2J\\r\\nFORGED"
ACTOR = "ev\x1b[2J\x1b[8m\x9b2J\x07\r\nFORGEDil"
ACTOR_SHOWN = "ev\\x1b[2J\\x1b[8m\\x9b2J\\x07\\r\\nFORGEDil"

_SGR = re.compile(rb"\x1b\[[0-9;]*m")


def assert_inert(data: bytes, color: bool = False) -> str:
    """The bytes a terminal would get hold no control character of anyone
    else's: newlines only, and (with colour) our SGR codes; and none of its
    lines was forged by a newline in a name."""
    if color:
        data = _SGR.sub(b"", data)
    text = data.decode("utf-8")  # strict: no lone surrogate smuggled through either
    bad = sorted({hex(ord(c)) for c in text
                  if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F})
    assert not bad, (bad, text[:2000])
    assert not any(line.startswith("FORGED") for line in text.splitlines()), text
    return text


def cli(*args: str, color: str = "never", timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("NO_COLOR", None)
    if color == "never":
        env["NO_COLOR"] = "1"
    r = subprocess.run([sys.executable, "-m", "tractor_diag", *args, f"--color={color}"],
                       capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    return r


@pytest.fixture
def hostile(spawn, tmp_path, bindspace):
    script = tmp_path / FILE_NAME
    shutil.copy(HOSTILE, script)
    h = spawn([sys.executable, str(script), str(bindspace)], timeout=30, label="hostile")
    _, pid, zombie, hexpath = h.ready_line.split()
    sock = Path(bytes.fromhex(hexpath).decode())
    h.files.add(sock)
    return SimpleNamespace(pid=int(pid), zombie=int(zombie), sock=sock, bindspace=bindspace)


@pytest.mark.parametrize("color", ["never", "always"])
@pytest.mark.parametrize("shape", [[], ["--tree"]])
def test_ptree_escapes_titles_and_zombie_comm(hostile, shape, color):
    r = cli("ptree", *shape, str(hostile.pid), color=color)
    assert r.returncode == 0, r.stderr
    text = assert_inert(r.stdout, color=color == "always")
    assert ACTOR_SHOWN in text                     # the actor name, from the title
    assert "[\\x1b[2J\\x1b]0;z\\x07]" in text          # the zombie, by its comm
    assert str(hostile.zombie) in text


def test_ptree_json_stays_exact(hostile):
    r = cli("ptree", "--json", str(hostile.pid))
    assert r.returncode == 0
    snap = json.loads(r.stdout)
    entries = snap["entries"]
    assert entries[str(hostile.pid)]["proc"]["actor"]["name"] == ACTOR
    assert entries[str(hostile.zombie)]["proc"]["comm"] == "\x1b[2J\x1b]0;z\x07"


@pytest.mark.parametrize("color", ["never", "always"])
def test_stacks_escapes_frames_threads_and_tasks(hostile, color):
    r = cli("stacks", "--task-timeout", "5", str(hostile.pid), color=color, timeout=90)
    assert r.returncode == 0, r.stderr
    text = assert_inert(r.stdout, color=color == "always")
    assert f"{ACTOR_SHOWN} [actor]" in text
    if "python: ok" not in text and " in fn" not in text:
        # py-spy could not attach here: the frame checks need it
        assert "python:" in text
    else:
        assert "ev\\x1b]0;file\\x07\\x1b[2J\\nil.py" in text  # frame file name
        assert f"fn{SHOWN}" in text                           # frame function name
    assert f"task{SHOWN}" in text                              # trio task name


def test_bindspace_escapes_socket_names(hostile):
    r = cli("bindspace", str(hostile.bindspace))
    assert r.returncode == 0, r.stderr
    text = assert_inert(r.stdout)
    assert f"so\\x1b[2J\\nck live-active@{hostile.pid}.sock" in text
    r = cli("bindspace", "--json", str(hostile.bindspace))
    names = [e["name"] for e in json.loads(r.stdout)["entries"]]
    assert hostile.sock.name in names


def test_dump_all_text_files_are_inert(hostile, tmp_path):
    out = tmp_path / "bundles"
    r = cli("dump-all", "--task-timeout", "5", "-o", str(out), str(hostile.pid), timeout=120)
    assert r.returncode == 0, r.stderr
    bundle = Path(assert_inert(r.stdout).strip())
    texts = [p for p in bundle.rglob("*") if p.suffix in (".txt", ".md")]
    assert {"summary.md", "tree.txt", "stacks.txt", "bindspace.txt"} <= {p.name for p in texts}
    for p in texts:
        # tasks/<pid>.txt too: the dumper writes each frame (file name,
        # function, source line) on one line, escaped
        assert_inert(p.read_bytes())
    summary = (bundle / "summary.md").read_text()
    assert ACTOR_SHOWN in summary
    tasks = (bundle / "tasks" / f"{hostile.pid}.txt").read_text()
    assert f"task{SHOWN}" in tasks
    # the JSON keeps every byte
    tree = json.loads((bundle / "tree.json").read_text())
    assert tree["entries"][str(hostile.pid)]["proc"]["actor"]["name"] == ACTOR


def test_error_lines_are_inert(hostile):
    r = cli("ptree", f"nothing{EVIL}here")
    assert r.returncode == 1
    assert_inert(r.stderr)
    assert r.stderr.count(b"\n") == 1


def test_watch_in_a_pty_paints_names_escaped(hostile):
    """`watch` repaints with escape sequences of its own; none of the
    hostile process's reaches the pty."""
    import pexpect

    from _xonsh_helpers import TRACTOR_DIAG, read_for

    env = {**os.environ, "TERM": "xterm"}
    for key in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(key, None)
    child = pexpect.spawn(str(TRACTOR_DIAG), ["watch", "-n", "0.3", "ptree", str(hostile.pid)],
                          dimensions=(30, 200), env=env, timeout=20)
    try:
        child.expect_exact(b"\x1b[?1049h")
        data = read_for(child, 1.5)
        child.sendintr()
        child.expect(pexpect.EOF)
        data += child.before
    finally:
        child.close(force=True)
    assert b"Every 0.3s" in data
    assert b"\x1b]" not in data                    # no OSC at all (title, clipboard)
    assert b"\xc2\x9b" not in data and b"\x9b" not in data  # no C1 CSI
    assert b"\x1b[8m" not in data and b"ev\x1b" not in data  # the name's own CSIs
    assert b"ev\\x1b[2J\\x1b[8m\\x9b2J" in data    # shown escaped instead
