"""The sampler: periodic snapshots of the watched trees, deltas and events.

Each tick is one `/proc` pass (run in a worker thread so the event loop never
blocks), classified against the previous tick: that gives CPU rates,
runaways, "stuck for N s" and the events (spawned, exited, zombied,
orphaned, runaway, recovered). History and events are bounded deques; the
history is bounded in bytes as well as in samples (a sample of a large tree
weighs hundreds of KB: 120 of them on a 200-process tree grew a dashboard
by 60 MB).

The sampling itself (`Sampler.sample`) is synchronous and trio-free so it
can be driven by hand in tests and by one-shot verbs; `Sampler.run` is the
trio loop around it.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

import msgspec

from . import captures
from .classify import state_of
from .model import Entry, Event, Snapshot, replace
from .trees import MIN_RATE_WINDOW, Targets, take_snapshot

# (pid, create time) names a process across ticks even if the pid is reused.
_Key = tuple[int, float]


def _key(entry: Entry) -> _Key:
    return entry.proc.pid, round(entry.proc.create_time, 2)


#: Default bound on the memory the history holds.
HISTORY_BYTES = 8 << 20
# A sample's size is measured by walking it every this many samples (or when
# the tree's size changes much), and scaled by the entry count in between:
# the walk costs milliseconds on a large tree.
_MEASURE_EVERY = 30
_LEAVES = (str, bytes, int, float, bool, type(None))


def deep_size(root: object) -> int:
    """Bytes held by ``root`` and everything it reaches through Structs,
    dicts, lists, tuples and sets (each object counted once)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    size = sys.getsizeof
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += size(obj)
        kind = type(obj)
        if kind in _LEAVES:
            continue
        if kind is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif kind in (list, tuple, set, frozenset):
            stack.extend(obj)
        elif isinstance(obj, msgspec.Struct):
            stack.extend(getattr(obj, f) for f in obj.__struct_fields__)
    return total


# Judgements of a process that did not run (`Sampler._again`).
_STILL = ("idle", "blocked", "stopped", "exited")
#: A still tree is read by a whole pass at least every this many ticks (`Sampler._again`).
WHOLE_EVERY = 30


def _still_running(entry: Entry) -> bool:
    from .procfs import read_proc

    now = read_proc(entry.proc.pid, detail=False)
    return (
        now is not None
        and now.state not in ("Z", "X", "x")
        and abs(now.create_time - entry.proc.create_time) < 0.02
    )


class Sampler:
    def __init__(
        self,
        targets: Targets | list[str] | None = None,
        *,
        interval: float = 1.0,
        history: int = 120,
        history_bytes: int = HISTORY_BYTES,
        max_events: int = 1000,
        subreapers: set[int] | None = None,
    ):
        if not isinstance(targets, Targets):
            targets = Targets(targets or [])
        self.targets = targets
        self.interval = interval
        self.history: deque[Snapshot] = deque(maxlen=history)
        # At least the latest two samples stay, whatever they weigh (the
        # CPU rates and the diffs need them).
        self.history_bytes = history_bytes
        self.history_size = 0  # bytes the history holds, as estimated
        self._sizes: deque[int] = deque()  # per sample, alongside ``history``
        self._per_entry: float | None = None  # bytes per entry, last measured
        self._measured: tuple[int, int] = (0, 0)  # (entries then, samples since)
        self.events: deque[Event] = deque(maxlen=max_events)
        self.subreapers: set[int] = set(subreapers or ())
        self.paused = False
        # Exit codes learnt elsewhere (the launcher's wait()), by pid.
        self.known_exit_codes: dict[int, int] = {}
        self._progress: dict[_Key, tuple[float, float]] = {}  # cpu time, when it last grew
        self._keys: dict[_Key, Entry] = {}  # the latest snapshot's entries by key
        # what the next pass need not read again (command lines, detail)
        from .procfs import ProcCache

        self._cache = ProcCache()
        self._lock = threading.Lock()  # a tick against `close`
        self._quiet = 0  # ticks in a row that took the last snapshot again (`_again`)
        self._read_as: tuple[Targets, frozenset[int]] | None = None  # the last whole pass's
        self._wake: Callable[[], None] | None = None
        self._token = None
        # when each remembered sample's pass began, by its ``monotonic``
        self._opened: dict[float, float] = {}

    @property
    def latest(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    # -- one tick ---------------------------------------------------------

    def _rate_base(self) -> Snapshot | None:
        """The newest snapshot old enough for a CPU rate (see
        `trees.MIN_RATE_WINDOW`): at short intervals, a few samples back."""
        now = time.monotonic()
        for snap in reversed(self.history):
            if now - snap.monotonic >= MIN_RATE_WINDOW:
                return snap
        return None

    def close(self, timeout: float = 2.0) -> bool:
        """Close the ``/proc`` files the sampler keeps open between ticks
        (hundreds on a busy box): a dashboard run in-process (the xontrib)
        must not leave them behind. Waits for a tick in progress in another
        thread (up to ``timeout``); False when it could not: then nothing is
        closed under it (its descriptor numbers could go to new files while
        it reads them). A later tick opens what it needs again."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._cache.close()
        finally:
            self._lock.release()
        return True

    def sample(self) -> tuple[Snapshot, list[Event]]:
        """Take one snapshot now; returns it with the events it implies."""
        with self._lock:
            return self._sample()

    def _sample(self) -> tuple[Snapshot, list[Event]]:
        prev = self.latest
        base = self._rate_base()
        opened = time.monotonic()
        snap = self._again(prev, base)
        if snap is not None:
            self._opened[snap.monotonic] = opened
            keys = {key: snap.entries[key[0]] for key in self._keys}
            self._keys = keys
            self._track_progress(keys, snap.monotonic)
            self._remember(snap)
            return snap, []
        self._quiet = 0
        self._read_as = (self.targets, frozenset(self.subreapers))
        # full detail: context-switch deltas and the dashboard's detail pane
        snap = take_snapshot(self.targets, prev=prev, rate_base=base,
                             subreapers=self.subreapers, full=True, cache=self._cache)
        self._opened[snap.monotonic] = opened
        self._unjudge_captured(prev, base or prev, snap)
        # what is shown is read every tick; the rest of the box less often
        self._cache.watch = set(snap.entries)
        # each entry's key once a tick; the last tick's are kept for the next diff
        keys = {_key(e): e for e in snap.entries.values()}
        events = self._diff(self._keys if prev is not None else None, keys, snap.taken_at)
        self._keys = keys
        self._track_progress(keys, snap.monotonic)
        self._remember(snap)
        self.events.extend(events)
        return snap, events

    def _again(self, prev: Snapshot | None, base: Snapshot | None) -> Snapshot | None:
        """The last snapshot again, stamped now, when nothing it shows can
        have changed since (`procfs.ProcCache.still`: none of them ran, no
        process that matters came or went on the box; each one's ``stat``
        read in turn for what changes without it running) and every
        process in it was judged still then (0 % CPU: the same judgement
        holds); ``None`` when a whole pass must be read. A whole pass is
        read at least every `WHOLE_EVERY` ticks all the same: what others
        change (the socket tables recognition reads, the rest of the box's
        records) is seen then. Each entry and record is a copy (the sampler
        writes the "stuck for" clock; an earlier snapshot never changes)."""
        if (prev is None or base is None or self._quiet >= WHOLE_EVERY - 1
                or self._read_as != (self.targets, frozenset(self.subreapers))
                or time.monotonic() - base.monotonic < MIN_RATE_WINDOW):
            return None
        entries = prev.entries
        for entry in entries.values():
            if entry.cpu_percent != 0.0 or entry.state not in _STILL:
                return None
        if not self._cache.still({pid: e.proc for pid, e in entries.items()}, self._matters):
            return None
        self._quiet += 1
        now = time.monotonic()
        return replace(prev, taken_at=time.time(), monotonic=now, window=now - prev.monotonic,
                       samples=2, entries={pid: replace(e, proc=e.proc.__copy__())
                                           for pid, e in entries.items()})

    def _matters(self, pid: int, ppid: int) -> bool:
        """Whether a process new since the last pass may change what is
        shown: one under a shown process, one adopted (init's, a
        subreaper's, its parent gone), any when roots are found by pattern
        or every actor tree is watched (it may be one)."""
        shown = self.latest.entries if self.latest is not None else {}
        return (ppid in shown or ppid <= 1 or ppid in self.subreapers
                or self.targets.empty or bool(self.targets.patterns)
                or not os.path.isdir(f"/proc/{ppid}"))

    def _unjudge_captured(self, prev: Snapshot | None, base: Snapshot | None,
                          snap: Snapshot) -> None:
        """No runaway judged, nor its recovery, over a window in which we
        traced or signalled the process (`captures`): our ptrace stops read
        as a busy loop yielding, our wake-ups as a sleeper running. Such a
        process keeps the runaway verdict it had before (or gets none) until
        a window of its own, after the capture, judges it again."""
        if base is None:
            return
        # the window opened when the base's pass began reading
        ours = captures.touched(self._opened.get(base.monotonic, base.monotonic), snap.monotonic)
        if not ours:
            return
        for pid in ours & snap.entries.keys():
            entry = snap.entries[pid]
            before = prev.entries.get(pid) if prev is not None else None
            if before is not None and _key(before) != _key(entry):
                before = None
            if entry.state == "exited":
                continue
            if before is not None and before.state == "runaway":
                entry.state = "runaway"
            elif entry.state == "runaway":
                entry.state = state_of(entry.proc)  # one record judges no runaway
            elif entry.proc.state == "t" and before is not None:
                entry.state = before.state  # our ptrace stop, not a debugger's

    def _remember(self, snap: Snapshot) -> None:
        size = self._size_of(snap)
        if len(self.history) == self.history.maxlen:
            self._forget_oldest()
        self.history.append(snap)
        self._sizes.append(size)
        self.history_size += size
        while self.history_size > self.history_bytes and len(self.history) > 2:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        gone = self.history.popleft()
        self.history_size -= self._sizes.popleft()
        self._opened.pop(gone.monotonic, None)

    def _size_of(self, snap: Snapshot) -> int:
        n = len(snap.entries)
        then, since = self._measured
        if self._per_entry is None or since >= _MEASURE_EVERY or not 0.8 * then <= n <= 1.25 * then:
            size = deep_size(snap)
            self._per_entry = size / max(1, n)
            self._measured = (n, 1)
            return size
        self._measured = (then, since + 1)
        return int(self._per_entry * max(1, n))

    def _track_progress(self, keys: dict[_Key, Entry], now: float) -> None:
        for key, entry in keys.items():
            cpu = entry.proc.cpu_time
            last = self._progress.get(key)
            if last is None or cpu > last[0] + 1e-9:
                self._progress[key] = (cpu, now)
                entry.stuck_for = 0.0 if last is not None else None
            else:
                entry.stuck_for = now - last[1]
        for key in [k for k in self._progress if k not in keys]:
            del self._progress[key]

    def _diff(self, old: dict[_Key, Entry] | None, new: dict[_Key, Entry],
              at: float) -> list[Event]:
        """Events between the last tick's entries and this one's, by key."""
        events: list[Event] = []
        if old is None:
            return events
        for key, entry in new.items():
            before = old.get(key)
            if before is not None and entry.bucket == before.bucket and (
                    entry.state == before.state or "runaway" not in (entry.state, before.state)):
                continue  # nothing an event is made of changed (the common case)
            title = entry.proc.title
            if before is None:
                events.append(Event("spawned", entry.proc.pid, at, title))
                # born and died between two ticks: still say it became a zombie
                if entry.bucket == "zombie":
                    events.append(Event("zombied", entry.proc.pid, at, title,
                                        exit_code=entry.proc.exit_code))
                if entry.bucket == "orphan":
                    events.append(Event("orphaned", entry.proc.pid, at, title, detail=entry.note or ""))
                continue
            if entry.bucket == "zombie" and before.bucket != "zombie":
                events.append(Event("zombied", entry.proc.pid, at, title, exit_code=entry.proc.exit_code))
            if entry.bucket == "orphan" and before.bucket != "orphan":
                events.append(Event("orphaned", entry.proc.pid, at, title, detail=entry.note or ""))
            if entry.state == "runaway" and before.state != "runaway":
                events.append(Event("runaway", entry.proc.pid, at, title,
                                    detail=f"{entry.cpu_percent or 0:.0f}% CPU"))
            elif before.state == "runaway" and entry.state != "runaway":
                events.append(Event("recovered", entry.proc.pid, at, title))
        for key, entry in old.items():
            if key not in new:
                if _still_running(entry):
                    # left the watched trees alive (a non-actor re-parented
                    # to init is nobody's tree member): not an exit
                    continue
                code = self.known_exit_codes.get(entry.proc.pid, entry.proc.exit_code)
                events.append(Event("exited", entry.proc.pid, at, entry.proc.title, exit_code=code))
        return events

    # -- the trio loop ----------------------------------------------------

    def set_interval(self, seconds: float) -> None:
        self.interval = max(0.05, float(seconds))
        self._poke()

    def pause(self, paused: bool = True) -> None:
        self.paused = paused
        self._poke()

    def _poke(self) -> None:
        # Callers may be outside trio's context (a Textual handler while trio
        # runs as a guest, or another thread): go through the run's token.
        wake, token = self._wake, self._token
        if wake is not None and token is not None:
            try:
                token.run_sync_soon(wake)
            except RuntimeError:  # the run has finished
                pass

    async def run(self, on_sample: Callable[[Snapshot, list[Event]], None] | None = None) -> None:
        """Sample forever (until cancelled), calling ``on_sample`` each tick."""
        import trio

        self._token = trio.lowlevel.current_trio_token()
        while True:
            if not self.paused:
                snap, events = await trio.to_thread.run_sync(self.sample)
                if on_sample is not None:
                    on_sample(snap, events)
            started = time.monotonic()
            # Sleep until the next tick, or earlier if the interval changed or
            # sampling was paused/resumed.
            while True:
                wake = trio.Event()
                self._wake = wake.set
                remaining = self.interval - (time.monotonic() - started)
                if remaining <= 0 and not self.paused:
                    break
                with trio.move_on_after(remaining if not self.paused else float("inf")):
                    await wake.wait()
                    continue
                if not self.paused:
                    break
            self._wake = None
