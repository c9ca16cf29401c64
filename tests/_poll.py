"""The one poll loop of the suite's helpers.

Stdlib only: the canary, the programs the helpers start (some as another
uid) and the inner pytest runs import it too.
"""
from __future__ import annotations

import time


def poll(pred, timeout: float = 10.0, interval: float = 0.05):
    """Call ``pred`` until it returns something truthy or ``timeout``
    seconds have passed (it is called once more at the deadline): -> that
    value, else the last falsy one."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
