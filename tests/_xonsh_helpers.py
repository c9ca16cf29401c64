"""Helpers for the xontrib and watch tests: real xonsh runs, and a small
terminal model to read what a pty received. (Real actor trees come from the
``released_tree`` fixture of tests/conftest.py.)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
XONSH = BIN / "xonsh"
TRACTOR_DIAG = BIN / "tractor-diag"


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


def read_for(child: pexpect.spawn, seconds: float) -> bytes:
    """Everything the pty gets for ``seconds`` (after what expect() left)."""
    data = child.buffer
    child.buffer = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data += child.read_nonblocking(65536, timeout=max(0.01, end - time.monotonic()))
        except pexpect.TIMEOUT:
            pass
    return data
