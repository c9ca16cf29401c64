"""Helpers for the xontrib and watch tests: a real released tractor tree,
real xonsh runs, and a small terminal model to read what a pty received.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
XONSH = BIN / "xonsh"
TRACTOR_DIAG = BIN / "tractor-diag"


def tractor_python() -> Path | None:
    venv = Path(os.environ.get("TRACTOR_DIAG_TRACTOR_VENV", REPO / ".venv-tractor"))
    py = venv / "bin" / "python"
    return py if py.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2:].split()[1]) == pid:
            out.append(int(name))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


class ReleasedTree:
    """root -> leaf_0 .. leaf_{n-1} on the released tractor runtime
    (``python -m tractor._child`` sub-actors), idling until stopped."""

    def __init__(self, breadth: int = 2, hang: str = "none"):
        py = tractor_python()
        if py is None:
            raise RuntimeError("no released tractor venv (.venv-tractor): run ./dev test")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(py), str(REPO / "tests/trees/released_tree.py"), str(self.port),
             "--depth", "1", "--breadth", str(breadth), "--hang", hang],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.root = self.proc.pid
        self._wait_ready(breadth)

    def _wait_ready(self, breadth: int) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        line = b""
        while b"READY" not in line:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                err = self.proc.stderr.read1(4000) if self.proc.poll() is not None else b""
                self.stop()
                raise RuntimeError(f"released tree did not come up: {err!r}")
            if sel.select(0.2):
                line = self.proc.stdout.readline()
        sel.close()
        if len(self.actors()) < breadth:
            self.stop()
            raise RuntimeError("released tree: actors missing")

    def actors(self) -> dict[str, int]:
        found = {}
        for pid in children(self.root):
            argv = cmdline(pid)
            if "tractor._child" in argv and "--uid" in argv:
                uid = argv[argv.index("--uid") + 1]
                found[re.match(r"\('([^']+)'", uid).group(1)] = pid
        return found

    def stop(self) -> None:
        """SIGINT the whole tree, bounded wait, then SIGKILL what is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.root, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.root, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def xonsh_env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TERM", "xterm")
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def run_xonsh(code: str, timeout: float = 60, no_rc: bool = True, **env) -> subprocess.CompletedProcess:
    """A real xonsh running ``code``; errors of commands do not raise, so a
    test can read their return codes."""
    prelude = "$XONSH_SUBPROC_RAISE_ERROR = False\n"
    args = [str(XONSH), *(["--no-rc"] if no_rc else []), "-c", prelude + code]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=xonsh_env(**env), stdin=subprocess.DEVNULL, cwd=str(REPO))


# -- a terminal model -------------------------------------------------------------

_SEQ = re.compile(rb"\x1b\[([?0-9;]*)([A-Za-z])|\x1b.|\r|\n|[^\x1b\r\n]+", re.S)


class Screen:
    """Just enough of a VT100 to read what the watch engine paints: cursor
    home, CR/LF, erase line / down / screen, the alternate screen, auto-wrap.
    Colours are dropped. ``lines()`` is what a person would see."""

    def __init__(self, cols: int, rows: int):
        self.cols, self.rows = cols, rows
        self.main = self._blank()
        self.alt = self._blank()
        self.in_alt = False
        self.cursor_visible = True
        self.wrap = True
        self.y = self.x = 0
        self._pending_wrap = False

    def _blank(self):
        return [[" "] * self.cols for _ in range(self.rows)]

    @property
    def grid(self):
        return self.alt if self.in_alt else self.main

    def resize(self, cols: int, rows: int) -> None:
        def fit(grid):
            grid = [row[:cols] + [" "] * (cols - len(row)) for row in grid[:rows]]
            return grid + [[" "] * cols for _ in range(rows - len(grid))]
        self.main, self.alt = fit(self.main), fit(self.alt)
        self.cols, self.rows = cols, rows
        self.y, self.x = min(self.y, rows - 1), min(self.x, cols - 1)

    def feed(self, data: bytes) -> None:
        for m in _SEQ.finditer(data):
            tok = m.group()
            if tok.startswith(b"\x1b["):
                self._csi(m.group(1).decode(), m.group(2).decode())
            elif tok.startswith(b"\x1b"):
                continue
            elif tok == b"\r":
                self.x, self._pending_wrap = 0, False
            elif tok == b"\n":
                self._linefeed()
            else:
                for ch in tok.decode("utf-8", "replace"):
                    self._put(ch)

    def _linefeed(self) -> None:
        self._pending_wrap = False
        if self.y == self.rows - 1:
            self.grid.pop(0)
            self.grid.append([" "] * self.cols)
        else:
            self.y += 1

    def _put(self, ch: str) -> None:
        if self._pending_wrap and self.wrap:
            self.x = 0
            self._linefeed()
        self._pending_wrap = False
        self.grid[self.y][self.x] = ch
        if self.x == self.cols - 1:
            self._pending_wrap = True
        else:
            self.x += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            on = final == "h"
            for p in params[1:].split(";"):
                if p == "1049":
                    self.in_alt = on
                    if on:
                        self.alt = self._blank()
                elif p == "25":
                    self.cursor_visible = on
                elif p == "7":
                    self.wrap = on
            return
        self._pending_wrap = False
        if final == "H":
            parts = [int(p) if p else 1 for p in params.split(";")] if params else [1, 1]
            self.y, self.x = parts[0] - 1, (parts[1] - 1 if len(parts) > 1 else 0)
        elif final == "K":
            for i in range(self.x, self.cols):
                self.grid[self.y][i] = " "
        elif final == "J":
            if params == "2":
                for row in self.grid:
                    row[:] = [" "] * self.cols
            else:
                for i in range(self.x, self.cols):
                    self.grid[self.y][i] = " "
                for row in self.grid[self.y + 1:]:
                    row[:] = [" "] * self.cols

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.grid]

    def text(self) -> str:
        return "\n".join(self.lines()).rstrip("\n")
