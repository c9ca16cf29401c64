"""``ptree --port`` (who holds this port / socket) and the listening
addresses ``ptree`` shows, on real listeners."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import psutil
import pytest

PY = sys.executable
pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "400"}
    r = subprocess.run([PY, "-m", "tractor_diag", *map(str, args)], capture_output=True,
                       text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.released
def test_port_names_the_registrar_of_a_released_tree(released_tree):
    tree = released_tree(depth=2, breadth=1, hang="sleep")
    root = tree.root
    for arg in (tree.port, f"127.0.0.1:{tree.port}"):
        r = cli("ptree", "--port", arg)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{root}  tcp 127.0.0.1:{tree.port}  "), r.stdout
    r = cli("ptree", "--port", tree.port, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(h["pid"], h["listener"]["addr"], h["actor"]) for h in doc["holders"]] == [
        (root, f"127.0.0.1:{tree.port}", True)]  # a root actor: it holds the registry


@pytest.mark.released
def test_ptree_shows_each_actors_listening_address(released_tree):
    tree = released_tree(depth=2, breadth=1, hang="sleep")
    pids = {"root": tree.root, **tree.actors()}
    r = cli("ptree", "--json", tree.root)
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)["entries"]
    for name, pid in pids.items():
        want = sorted(f"127.0.0.1:{c.laddr.port}" for c in psutil.Process(pid).net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN)
        assert want and entries[str(pid)]["listens"] == want, name
    text = cli("ptree", tree.root)
    assert text.returncode == 0, text.stderr
    root_line = next(ln for ln in text.stdout.splitlines() if ln.lstrip().startswith(f"{tree.root} "))
    assert f"listens 127.0.0.1:{tree.port}" in root_line
    for tree_flag in ([], ["--tree"]):
        out = cli("ptree", *tree_flag, tree.root).stdout
        for pid in pids.values():
            line = next(ln for ln in out.splitlines() if f"{pid} " in ln)
            assert "listens 127.0.0.1:" in line, line


def test_port_names_the_holder_of_a_uds_registry(current_tree, bindspace):
    tree = current_tree(depth=1, breadth=1, hang="sleep", registry=True)
    reg = bindspace / "registry@1616.sock"
    for arg in (reg, "registry@1616.sock"):
        r = cli("ptree", "--port", arg, "--json")
        assert r.returncode == 0, r.stderr
        holders = json.loads(r.stdout)["holders"]
        assert [(h["pid"], h["listener"]["kind"], h["listener"]["addr"]) for h in holders] == [
            (tree.root, "uds", str(reg))]
    text = cli("ptree", tree.root).stdout
    leaf = tree.actors()["leaf_0"]
    assert f"listens leaf_0@{leaf}.sock" in next(ln for ln in text.splitlines() if f"{leaf} " in ln)


def test_port_nothing_listens_and_bad_arguments(free_port):
    assert one_line_error(cli("ptree", "--port", free_port), 1) == \
        f"tractor-diag: nothing listens on {free_port}"
    assert one_line_error(cli("ptree", "--port", free_port, "--json"), 1).endswith(
        f"nothing listens on {free_port}")
    assert "--port" in one_line_error(cli("ptree", "--port", "no-such-thing"), 2)
    assert "--port" in one_line_error(cli("ptree", "--port", "70000"), 2)
    assert "--port" in one_line_error(cli("ptree", "--port", "1616", "12345"), 2)


def test_port_escapes_a_hostile_socket_path_but_json_is_exact(tmp_path):
    path = str(tmp_path / "evil\x1b]0;owned\x07\nforged.sock")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(path)
        s.listen()
        r = cli("ptree", "--port", path)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout
        assert len(r.stdout.splitlines()) == 1 and "\\x1b]0;owned\\x07\\nforged.sock" in r.stdout
        assert r.stdout.startswith(f"{os.getpid()}  uds ")
        doc = json.loads(cli("ptree", "--port", path, "--json").stdout)
        assert doc["holders"][0]["listener"]["addr"] == path
    finally:
        s.close()
