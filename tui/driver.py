"""The dashboard's terminal driver: a terminal that goes away ends the app.

When the terminal is hung up under it (a tmux window killed, an ssh link
dropped), every write to it fails with EIO. Textual's writer thread dies on
the first one, and the next writes block forever on its full queue: the
dashboard hangs with its launched tree still running. Here a failed write
is dropped instead, the writer thread lives on, and the app is told once,
so it quits the usual way (stopping the launched tree).
"""
from __future__ import annotations

from collections.abc import Callable

from textual.drivers.linux_driver import LinuxDriver


class _TerminalOut:
    """The driver's output file: writes that fail are dropped, and the first
    failure calls ``on_gone``."""

    def __init__(self, file, on_gone: Callable[[], None]):
        self._file = file
        self._on_gone = on_gone
        self.gone = False

    def _lost(self) -> None:
        if not self.gone:
            self.gone = True
            self._on_gone()

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._file.write(text)
            except (OSError, ValueError):
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self._lost()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


class DashDriver(LinuxDriver):
    def __init__(self, app, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._file = _TerminalOut(self._file, self._terminal_gone)

    def _terminal_gone(self) -> None:
        # runs on Textual's writer thread
        gone = getattr(self._app, "terminal_gone", None)
        if gone is not None:
            gone()


def guarded(driver_class: type) -> type:
    """`DashDriver` in place of Textual's own Linux driver; any other
    driver (headless for tests, one chosen with TEXTUAL_DRIVER) as is."""
    return DashDriver if driver_class is LinuxDriver else driver_class
