"""Quitting properly when the dashboard is told to go from outside.

A SIGTERM, a SIGHUP, or a terminal that went away (`driver`) all end in
the app's own quit, which stops the launched tree: that tree lives in a
session of its own, so a hangup of the dashboard would never reach it.
"""
from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable


class QuitSignals:
    """Calls ``quit_soon`` on the host loop's thread for each of them."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, quit_soon: Callable[[], None]) -> None:
        self._quit_soon = quit_soon
        self._loop: asyncio.AbstractEventLoop | None = None
        self._old: dict[int, object] = {}

    def install(self) -> None:
        """Call from the host loop. Plain handlers, not
        loop.add_signal_handler: that would fight trio over the signal
        wakeup fd. Only the main thread may set them (a test's app may run
        elsewhere; it then quits only on a lost terminal)."""
        self._old = {}
        self._loop = loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame) -> None:
            loop.call_soon_threadsafe(self._quit_soon)

        for signum in self.SIGNALS:
            try:
                self._old[signum] = signal.signal(signum, handler)
            except (ValueError, OSError):
                pass

    def terminal_gone(self) -> None:
        """From the driver's writer thread: writes to the terminal fail."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._quit_soon)

    def restore(self) -> None:
        for signum, old in self._old.items():
            try:
                signal.signal(signum, old)
            except (ValueError, OSError, TypeError):
                pass
        self._old = {}
