"""What the dashboard runs on the trio side: the sampler and, in launch
mode, the supervised program.

It runs in the trio guest (`bridge`), where no widget may be touched: it
reaches the app only through ``post``, with the messages of `messages` (a
`Sampled` per tick, the program's `Output`, `Launched`, `Exited`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from textual.message import Message

from tractor_diag.model import Event, Snapshot

from .messages import Exited, Launched, Output, Sampled


class TrioSide:
    def __init__(self, post: Callable[[Message], object], sampler, *,
                 launch: list[str] | None, live: bool, subreaper: bool,
                 cgroup: bool | None, grace: float) -> None:
        self.post = post
        self.sampler = sampler
        self.launch_argv = launch
        self.live = live
        self.use_subreaper = subreaper
        self.use_cgroup = cgroup
        self.grace = grace
        self.supervisor = None  # `launch.Supervisor`, once launching
        self.launch_error: str | None = None
        self.subreaper_set = False

    async def main(self, nursery) -> None:
        """The guest's main: launch first, then sample."""
        if self.launch_argv:
            await self._start_launch(nursery)
            if self.launch_error:
                return  # with no root, the sampler would watch every tree on the box
        if self.live:
            nursery.start_soon(self._sample)

    async def _sample(self) -> None:
        import trio

        latest = self.sampler.latest
        if latest is not None:
            # the first sample was taken before trio started: the next one
            # is due an interval after it
            await trio.sleep(max(0.0, latest.monotonic + self.sampler.interval - time.monotonic()))
        await self.sampler.run(self.on_sample)

    async def _start_launch(self, nursery) -> None:
        from tractor_diag.launch import Supervisor, set_child_subreaper
        from tractor_diag.trees import Targets

        if self.use_subreaper and set_child_subreaper(True):
            self.subreaper_set = True
            self.sampler.subreapers.add(os.getpid())

        def started(pid: int) -> None:
            # Posted before the child can be waited for: its Exited message
            # always comes after this one.
            self.sampler.targets = Targets([pid])
            self.post(Launched(pid))

        self.supervisor = Supervisor(
            self.launch_argv,
            on_output=lambda stream, lines: self.post(Output(stream, lines)),
            on_exit=self._on_exit,
            on_start=started,
            grace=self.grace,
            cgroup=self.use_cgroup,
        )
        try:
            await nursery.start(self.supervisor.run)
        except OSError as exc:
            from tractor_diag.safetext import escape

            self.launch_error = escape(f"cannot launch {self.launch_argv[0]}: {exc.strerror or exc}")
            self.post(Launched(None, self.launch_error))

    def _on_exit(self, pid: int, code: int) -> None:
        self.sampler.known_exit_codes[pid] = code
        self.post(Exited(pid, code))

    def on_sample(self, snap: Snapshot, events: list[Event]) -> None:
        sup = self.supervisor
        root = snap.entries.get(sup.pid) if sup is not None and sup.pid is not None else None
        # Only under the launched child itself: once it is reaped, its pid
        # may root a stranger's tree.
        if root is not None and sup.is_launched_child(root.proc.pid, root.proc.create_time):
            sup.note_members((pid, e.proc.create_time) for pid, e in snap.entries.items()
                             if e.root == sup.pid)
        self.post(Sampled(snap, events))

    def stopped(self, trio_still_running: bool) -> None:
        """After the guest was asked to stop: kill the launched tree at once
        if trio could not finish in time, and stop being a subreaper."""
        if self.supervisor is not None and trio_still_running:
            self.supervisor.kill_now()
        if self.subreaper_set:
            from tractor_diag.launch import set_child_subreaper

            set_child_subreaper(False)
            self.subreaper_set = False

    @property
    def containment(self) -> str:
        """How the launched tree is held, in words for the status bar."""
        sup = self.supervisor
        if sup is None:
            return "nothing"
        if sup.containment == "cgroup":
            return "cgroup"
        return "process tree + subreaper" if self.subreaper_set else "process tree"
