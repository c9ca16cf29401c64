"""Which processes this program traced or signalled, and when.

A py-spy attach stops its target (ptrace) and wakes it; a task-tree
request runs a handler in it. Over a window that holds either, a busy
loop gives up the CPU (our stops count as voluntary switches) and a
sleeper runs: what the liveness rules would read there is our own
footprint. The code that touches a process marks it here, and the
sampler does not judge a runaway, or its recovery, over a window that
overlaps a mark of that process.

Marks are kept by pid in monotonic time, in this process only (another
tractor-diag's captures are not seen), thread-safe: captures run in
worker threads while the sampler samples in another.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable

#: What a mark still covers after its capture ended: the target getting
#: back to where it was (a detached tracee is woken, a handler's write
#: returns) before the next window can be judged clean.
TAIL = 0.1
#: A mark never ended (a request whose answer nobody collected) ends this
#: long after it began.
LONGEST = 60.0
#: Marks older than this are forgotten (the longest window a sampler
#: judges is far shorter).
KEEP = 300.0

_lock = threading.Lock()
# pid -> [start, end]; end is start + LONGEST while the capture runs
_marks: dict[int, list[list[float]]] = {}


class Mark:
    """One capture of some processes; `end` it when done (or use it as a
    context manager)."""

    __slots__ = ("_spans",)

    def __init__(self, spans: list[list[float]]):
        self._spans = spans

    def end(self) -> None:
        now = time.monotonic()
        with _lock:
            for span in self._spans:
                span[1] = min(span[1], now)

    def __enter__(self) -> Mark:
        return self

    def __exit__(self, *exc) -> None:
        self.end()


def begin(pids: Iterable[int], longest: float = LONGEST) -> Mark:
    """Mark ``pids`` as touched by us from now until the mark ends."""
    now = time.monotonic()
    spans = []
    with _lock:
        _forget(now)
        for pid in pids:
            span = [now, now + longest]
            _marks.setdefault(pid, []).append(span)
            spans.append(span)
    return Mark(spans)


def touched(since: float, until: float) -> set[int]:
    """The pids a capture of ours touched between ``since`` and ``until``
    (monotonic)."""
    with _lock:
        return {pid for pid, spans in _marks.items()
                if any(start <= until and end + TAIL >= since for start, end in spans)}


def _forget(now: float) -> None:
    old = now - KEEP
    for pid, spans in list(_marks.items()):
        kept = [span for span in spans if span[1] >= old]
        if kept:
            _marks[pid] = kept
        else:
            del _marks[pid]
