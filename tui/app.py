"""The dashboard application: live actor-tree liveness, and acting on it.

Data flows one way: the trio side (`trio_side`: the sampler and the
launcher; `key_jobs`: what the keys do) produces messages (`messages`); the
handlers here apply them to the panes. `DashApp.show` is the single
entry point for a snapshot, so tests (and the snapshot tests' injected data)
feed the app exactly the way the sampler does.
"""
from __future__ import annotations

import asyncio
import shlex
import signal
import time
from collections.abc import Iterable

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Header, TabbedContent, TabPane

from tractor_diag.model import Entry, Event, Snapshot, exit_status
from tractor_diag.sockmodel import SockView

from . import key_jobs
from .bridge import TrioGuest
from .chain_watch import ChainWatch, Change
from .detail import DetailPane
from .events_pane import EventsPane
from .keys_footer import KeysFooter
from .log_pane import LogPane
from .labels import stamp
from .messages import (ActionDone, Exited, Launched, Output, ReapPlanned, RootGone, Sampled,
                       SocketsRead, Unchanged)
from .proc_tree import ProcTree
from .quit_signals import QuitSignals
from .status_bar import StatusBar, status_text
from .trio_side import TrioSide


#: Seconds between re-reads of the selected process's sockets.
SOCKETS_EVERY = 10.0
#: Seconds after the first frame when the heap the app lives on is built.
HEAP_SETTLED = 5.0
#: The sampler's last snapshots that go into a bundle written with `d`.
HISTORY_SNAPSHOTS = 30
#: The longest the first paint waits for the first sample, in seconds.
FIRST_PAINT_WAIT = 1.5


class DashApp(App):
    """``tractor-diag dash``: attach to trees, or launch and supervise one."""

    CSS_PATH = "dash.tcss"
    TITLE = "tractor-diag dash"

    BINDINGS = [
        Binding("s", "stacks", "Stacks"),
        Binding("t", "tasks", "Task tree"),
        Binding("w", "why", "Why", show=False),  # the footer is full; README and palette say it
        Binding("d", "dump", "Dump-all"),
        Binding("r", "reap", "Reap"),
        Binding("k", "signal", "Signal"),
        Binding("p", "pause", "Pause"),
        Binding("i", "interval", "Interval"),
        Binding("slash", "filter", "Filter"),
        Binding("a", "actors_only", "Actors only"),
        Binding("l", "toggle_log", "Events/Log"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    # What the tree pane shows, as the app's state: the watchers hand each
    # change to the tree (`var`: a change repaints only what the tree redraws;
    # no watcher at start, when the tree shows everything anyway).
    filter_text: var[str] = var("", init=False)
    actors_only: var[bool] = var(False, init=False)

    # -- setup ---------------------------------------------------------------

    def __init__(
        self,
        targets: Iterable[str] = (),
        *,
        launch: list[str] | None = None,
        interval: float = 1.0,
        live: bool = True,
        subreaper: bool = True,
        grace: float = 3.0,
        dump_root: str | None = None,
        strays: bool | None = None,
        cgroup: bool | None = None,
    ) -> None:
        super().__init__()
        from tractor_diag.sampler import Sampler

        self.targets = list(targets)
        self.launch_argv = list(launch) if launch else None
        self.live = live
        self.grace = grace
        self.dump_root = dump_root
        # Launching, the view is the launched tree (and orphans it made);
        # attached, the strays of the box are part of what is looked for.
        self.show_strays = (self.launch_argv is None) if strays is None else strays
        self.sampler = Sampler(self.targets, interval=interval)
        self.trio_side = TrioSide(self.post_message, self.sampler, launch=self.launch_argv,
                                  live=live, subreaper=subreaper, cgroup=cgroup, grace=grace)
        self.child_pid: int | None = None
        self.child_code: int | None = None
        self.snapshot: Snapshot | None = None
        self.guest = TrioGuest(self.trio_side.main, on_done=self._trio_done,
                               on_error=self._action_failed)
        self.first_frame_at: float | None = None
        self.heap_frozen = False  # (see `_freeze_heap`)
        self.samples_shown = 0
        self._extras: dict[int, dict[str, tuple[str, Text]]] = {}
        self.chains = ChainWatch()  # the waits-on chains drawn after w
        self._sockets: dict[int, list[SockView]] = {}
        self._sockets_read_at: dict[int, float] = {}
        self._quitting = False
        self._trio_error: str | None = None
        self.last_bundle: str | None = None
        self._shown_pids: set[int] = set()
        self.child_running_at_quit = False
        self._quit_signals = QuitSignals(self._quit_soon)
        self._paint_held = False
        self._guest_started = False
        # the collector, paused by the caller for start-up (`commands.dash`):
        # on again at the first frame, or FIRST_PAINT_WAIT after the mount
        self.collect_after_first_frame = False
        self._first_sample: asyncio.Task | None = None

    def get_default_screen(self) -> Screen:
        return _MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◈")
        with Horizontal(id="main"):
            with Vertical(id="left"):  # the filter box goes above the tree: `_filter_box`
                yield ProcTree(id="tree")
            with Vertical(id="right"):
                yield DetailPane(id="detail")
                with TabbedContent(id="bottom", initial="events-tab"):
                    with TabPane("Events", id="events-tab"):
                        yield EventsPane(id="events")
                    with TabPane("Log", id="log-tab"):
                        yield LogPane(id="log")
        yield StatusBar(id="status")
        yield KeysFooter()

    @property
    def proc_tree(self) -> ProcTree:
        return self.query_one(ProcTree)

    @property
    def detail(self) -> DetailPane:
        return self.query_one(DetailPane)

    @property
    def events_pane(self) -> EventsPane:
        return self.query_one(EventsPane)

    @property
    def log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    @property
    def status_bar(self) -> StatusBar:
        return self.query_one(StatusBar)

    def on_mount(self) -> None:
        self.proc_tree.border_title = "processes"
        self.detail.border_title = "detail"
        if self.launch_argv:
            self.sub_title = "launch: " + shlex.join(self.launch_argv)
        elif self.targets:
            self.sub_title = "attach: " + " ".join(self.targets)
        else:
            self.sub_title = "attach: every tree with tractor actors"
        self._update_status()
        self.proc_tree.focus()
        self._quit_signals.install()
        if self.live:
            self._hold_first_paint()
        self.set_timer(FIRST_PAINT_WAIT, self._collect_again)
        if self.live and self.launch_argv is None:
            self._first_sample = asyncio.create_task(self._sample_first())
        else:
            self._start_guest()

    async def _sample_first(self) -> None:
        # Attached, the first sample needs no trio: taken in a plain thread,
        # it is shown before trio is imported and its guest run started
        # (after the first frame: a fifth of the CPU spent until then).
        try:
            snap, events = await asyncio.to_thread(self.sampler.sample)
        except Exception:  # noqa: BLE001 - the sampler's own loop reports it
            self._start_guest()
            return
        self.trio_side.on_sample(snap, events)
        # started at the first frame; if that frame is not marked (the
        # screen not refreshed), sampling goes on all the same
        self.set_timer(1.0, self._start_guest)

    def _start_guest(self) -> None:
        if not self._guest_started and not self._quitting:
            self._guest_started = True
            self.guest.start()

    def _hold_first_paint(self) -> None:
        # Panes without their data are not worth a frame: laid out and drawn
        # empty, then again with the first sample, they cost as much CPU as
        # the sample itself, and the first frame that shows the tree comes
        # that much later. Held until the first sample is shown (at most
        # FIRST_PAINT_WAIT; the panes then show empty as before).
        self._begin_batch()
        self._paint_held = True
        self.set_timer(FIRST_PAINT_WAIT, self._release_first_paint)

    def _release_first_paint(self) -> None:
        if self._paint_held:
            self._paint_held = False
            self._end_batch()
            self.screen.refresh(layout=True)

    async def on_unmount(self) -> None:
        self._guest_started = True  # too late to start it now
        if self.heap_frozen:
            import gc

            gc.unfreeze()
            self.heap_frozen = False
        if self._first_sample is not None:
            self._first_sample.cancel()
        await self._stop_trio()
        self._quit_signals.restore()

    def get_driver_class(self):
        from .driver import guarded

        return guarded(super().get_driver_class())

    def terminal_gone(self) -> None:
        """The terminal is gone (writes to it fail): quit, which stops the
        launched tree. Called from the driver's writer thread."""
        self._quit_signals.terminal_gone()

    def _quit_soon(self) -> None:
        if not self._quitting:
            self.run_worker(self.action_quit(), exclusive=True)

    def _action_failed(self, exc: BaseException) -> None:
        import traceback

        from tractor_diag.safetext import escape

        what = escape("".join(traceback.format_exception_only(type(exc), exc)).strip())
        self.events_pane.note(Text(f"{stamp()} action failed: {what}", "bold red"))
        self.notify(f"action failed: {what}", severity="error", markup=False, timeout=10)

    def _trio_done(self, outcome) -> None:
        # Runs on the loop thread once trio has finished. Expected when we
        # stop it; otherwise it died (or got a SIGINT): say so and leave.
        if self._quitting:
            return
        error = getattr(outcome, "error", None)
        if error is None:
            return
        import traceback

        self._trio_error = "".join(traceback.format_exception_only(type(error), error)).strip()
        if isinstance(error, KeyboardInterrupt) or (
                isinstance(error, BaseExceptionGroup)
                and error.subgroup(KeyboardInterrupt) is not None):
            self.call_later(self.exit)
            return
        self.call_later(self.log_pane.note, f"sampler stopped: {self._trio_error}", "bold red")
        self.call_later(self.notify, f"sampler stopped: {self._trio_error}",
                        severity="error", markup=False, timeout=30)

    async def _stop_trio(self) -> None:
        await self.guest.stop(timeout=self.grace + 5.0)
        self.trio_side.stopped(trio_still_running=self.guest.running)
        if not self.guest.running:
            # its kept /proc files: a dashboard run inside xonsh must not
            # leave hundreds behind (waits for a first sample still reading)
            await asyncio.to_thread(self.sampler.close)

    @property
    def supervisor(self):
        """The launched program's `launch.Supervisor` (None when attached)."""
        return self.trio_side.supervisor

    @property
    def launch_error(self) -> str | None:
        return self.trio_side.launch_error

    # -- feeding the panes ---------------------------------------------------

    def show(self, snap: Snapshot, events: Iterable[Event] = ()) -> None:
        """Show one snapshot and its events (what every sampler tick does)."""
        events = list(events)
        if not self.show_strays:
            snap = self._only_ours(snap)
            self._shown_pids.update(snap.entries)
            events = [e for e in events if e.pid in self._shown_pids]
        self.snapshot = snap
        if self.chains:
            self._chains_changed(self.chains.check(snap))
            if self.live and not self.sampler.paused:
                for tree in self.chains.due():
                    self._start("judge", key_jobs.rejudge, tree, self.sampler.latest,
                                self.chains.evidence.get(tree), self.chains.born.get(tree))
        self.proc_tree.show_snapshot(snap)
        if events:
            self.events_pane.add_events(events)
        self.samples_shown += 1
        pid = self.proc_tree.selected_pid
        # socket tables cost a whole /proc/net read: on selection, then
        # at a slow cadence
        if pid is not None and time.monotonic() - self._sockets_read_at.get(pid, 0.0) > SOCKETS_EVERY:
            self._request_sockets(pid)
        self._refresh_detail()
        self._update_status()
        if self.first_frame_at is None:
            self.call_after_refresh(self._mark_first_frame)

    def _chains_changed(self, change: Change) -> None:
        for line in change.notes:
            self.events_pane.note(line)
        if change.redraw:
            self.proc_tree.set_marks(self.chains.marks())

    def _only_ours(self, snap: Snapshot) -> Snapshot:
        """Without the box's other strays: keep only orphans we adopted (as
        the launched tree's subreaper) or saw inside the launched tree."""
        from tractor_diag.trees import keep_strays

        ours = set(self.supervisor.seen_pids) if self.supervisor is not None else set()
        return keep_strays(snap, [pid for pid in snap.strays if pid in snap.entries and (
            pid in ours or snap.entries[pid].proc.ppid in self.sampler.subreapers)])

    def _mark_first_frame(self) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
            self.set_timer(HEAP_SETTLED, self._freeze_heap)
        self._collect_again()
        self._start_guest()

    def _freeze_heap(self) -> None:
        """Take what the app has built by now (modules, widgets, styles: most
        of the heap, and there for good) out of the garbage collector's view.
        Every tick allocates a snapshot's worth of objects, and each full
        collection walked that whole heap again: a full collection a few
        seconds apart was as much main-thread CPU as everything a quiet tick
        shows. Garbage in cycles is collected first, so nothing freed is
        kept; the app's unmount gives the heap back to the collector (an app
        run inside a longer process, as tests do, leaves nothing frozen)."""
        import gc

        if self._quitting or self.heap_frozen:
            return
        gc.collect()
        gc.freeze()
        self.heap_frozen = True

    def _collect_again(self) -> None:
        if self.collect_after_first_frame:
            self.collect_after_first_frame = False
            import gc

            gc.enable()

    def add_output(self, stream: str, lines: list[str]) -> None:
        """Lines of the launched program (what the launcher relays)."""
        self.log_pane.add_lines(stream, lines)

    def show_sockets(self, pid: int, socks: list[SockView]) -> None:
        """Sockets of ``pid`` for the detail pane (read on selection when
        live; injectable for tests)."""
        self._sockets[pid] = socks
        if self.detail.pid == pid:
            self._refresh_detail(force=True)

    def _panes_gone(self) -> bool:
        """True while the app takes its screen down: trio keeps posting
        messages after `exit()` until the guest run has stopped, and by then
        there may be no pane left to show them in."""
        # every pane a message may reach: they go one by one, not at once
        # (a Sampled handled after the status bar went raised NoMatches)
        try:
            for pane in (ProcTree, StatusBar, DetailPane, EventsPane, LogPane):
                self.query_one(pane)
        except NoMatches:
            return True
        return False

    @on(Sampled)
    def _sampled(self, message: Sampled) -> None:
        if not self._quitting and not self._panes_gone():
            self.show(message.snapshot, message.events)
        self._release_first_paint()

    @on(Output)
    def _output(self, message: Output) -> None:
        if not self._panes_gone():
            self.add_output(message.stream, message.lines)

    @on(Launched)
    def _launched(self, message: Launched) -> None:
        if message.pid is not None:
            self.child_pid = message.pid
        if self._panes_gone():
            return
        if message.pid is None:
            self.log_pane.note(message.error or "launch failed", "bold red")
            self.events_pane.note(Text(message.error or "launch failed", "bold red"))
            self.notify(message.error or "launch failed", severity="error", markup=False)
        else:
            self.log_pane.note(f"launched pid {message.pid}: {shlex.join(self.launch_argv or [])}", "bold green")
        self._update_status()

    @on(Exited)
    def _exited(self, message: Exited) -> None:
        status = exit_status(message.code)
        if self.supervisor is not None and message.pid == self.supervisor.pid:
            self.child_pid = message.pid
        if message.pid == self.child_pid:
            self.child_code = message.code
        if self._panes_gone():
            return
        if message.pid == self.child_pid:
            line = f"launched program (pid {message.pid}) exited: {status}"
            self.log_pane.note(line, "bold red" if message.code else "bold green")
            self.events_pane.note(Text(f"{stamp()} {line}", "bold"))
        else:
            self.events_pane.note(Text(f"{stamp()} reaped adopted orphan {message.pid}: {status}", "italic"))
        self._update_status()

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        if message.bundle is not None:
            self.last_bundle = message.bundle
        if self._panes_gone():
            return
        if message.section == "why":
            self._chains_changed(self.chains.judged(
                message.pid, message.judged, message.judged_over,
                quiet=message.quiet, ok=message.ok, evidence=message.evidence,
                born=message.born))
        if message.quiet:
            # a refresh: only the marks and the detail pane's section change
            if not message.ok:
                return
            self._extras.setdefault(message.pid, {})["why"] = (message.title, message.body)
            if self.detail.pid == message.pid:
                self._refresh_detail(force=True)
            return
        extras = self._extras.setdefault(message.pid, {})
        extras.pop(message.section, None)  # the newest result goes on top
        extras[message.section] = (message.title, message.body)
        self.events_pane.note(Text(f"{stamp()} {message.summary}", "italic" if message.ok else "bold red"))
        self.notify(message.summary, severity="information" if message.ok else "error",
                    markup=False, timeout=6)
        if self.detail.pid == message.pid:
            self._refresh_detail(force=True)
            self.detail.call_after_refresh(self.detail.scroll_home, animate=False)

    @on(Unchanged)
    def _unchanged(self, message: Unchanged) -> None:
        self.chains.held(message.pid)

    @on(RootGone)
    def _root_gone(self, message: RootGone) -> None:
        change = self.chains.root_gone(message.pid, message.reason)
        if not self._panes_gone():
            self._chains_changed(change)

    @on(SocketsRead)
    def _sockets_read(self, message: SocketsRead) -> None:
        if not self._panes_gone():
            self.show_sockets(message.pid, message.socks)

    @on(ProcTree.Selected)
    def _selected(self, message: ProcTree.Selected) -> None:
        if self._panes_gone():
            return
        self._refresh_detail(force=True)
        if message.pid is not None:
            self._request_sockets(message.pid)

    def _request_sockets(self, pid: int) -> None:
        # Sockets change (an actor binds after it starts): re-read them for
        # the selected process now and then, never for the whole tree.
        if not self.live:
            return  # injected snapshots: their pids are not ours to read
        self._sockets_read_at[pid] = time.monotonic()
        self.guest.spawn(self._read_sockets, pid)

    async def _read_sockets(self, pid: int) -> None:
        import trio

        from tractor_diag.socktables import sockets_of

        socks = await trio.to_thread.run_sync(sockets_of, pid)
        self.post_message(SocketsRead(pid, socks))

    def selected_entry(self) -> Entry | None:
        # The row under the cursor now, read from the tree: a key acts on
        # what the user sees, even with its Selected message still queued.
        pid = self.proc_tree.selected_pid
        if pid is None or self.snapshot is None:
            return None
        return self.snapshot.entries.get(pid)

    def _refresh_detail(self, force: bool = False) -> None:
        entry = self.selected_entry()
        pid = entry.proc.pid if entry is not None else None
        if pid is None and self.detail.pid is None and not force:
            return
        extras = self._extras.get(pid) if pid is not None else None
        tree = self.chains.tree_of(pid)
        if tree is not None and "why" not in (extras or {}) and "why" in self._extras.get(tree, {}):
            # a process drawn in a chain: the verdicts that drew it
            title, body = self._extras[tree]["why"]
            extras = {**(extras or {}), "why": (f"{title}, of the tree at {tree}", body)}
        self.detail.show(entry, self.snapshot,
                         sockets=self._sockets.get(pid) if pid is not None else None,
                         sockets_pending="reading…" if self.live else "not read",
                         extras=extras)

    def _update_status(self) -> None:
        self.status_bar.show(status_text(
            self.snapshot,
            interval=self.sampler.interval if self.live else None,
            paused=self.sampler.paused,
            launch_error=self.launch_error,
            child_pid=self.child_pid,
            child_code=self.child_code,
            held_by=self.containment if self.supervisor is not None else None))

    @property
    def containment(self) -> str:
        """How the launched tree is held, in words for the status bar."""
        return self.trio_side.containment

    # -- actions (keys, palette) ---------------------------------------------

    def _need_selection(self) -> Entry | None:
        entry = self.selected_entry()
        if entry is None:
            self.notify("select a process first", severity="warning")
        return entry

    def _start(self, what: str, job, *args, **kwargs) -> None:
        """Run a key's job on the trio side; the message it returns is
        posted here, and its handler applies it."""
        async def run() -> None:
            self.post_message(await job(*args, **kwargs))

        if not self.guest.spawn(run):
            self.notify(f"cannot {what}: the trio side is not running", severity="error")

    def action_stacks(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        self.notify(f"collecting Python stacks of {entry.proc.pid}…", timeout=3)
        self._start("collect stacks", key_jobs.stacks, entry.proc.pid, entry.proc.create_time)

    def action_tasks(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        handles = entry.proc.handles_signal(signal.SIGUSR1)
        if not handles:
            why = ("it has no SIGUSR1 handler (the signal would kill it)" if handles is False
                   else "whether it handles SIGUSR1 is unknown")
            self.post_message(ActionDone(
                "tasks", entry.proc.pid, "trio task tree",
                Text(f"not requested: {why}", "yellow"),
                f"no task tree for {entry.proc.pid}: {why}", ok=False))
            return
        self.notify(f"requesting the trio task tree of {entry.proc.pid}…", timeout=3)
        self._start("request a task tree", key_jobs.task_tree, entry.proc.pid,
                    entry.proc.create_time)

    def action_why(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        self.notify(f"judging the tree at {entry.proc.pid}…", timeout=4)
        self._start("judge", key_jobs.why, entry.proc.pid, self.sampler.latest,
                    create_time=entry.proc.create_time)

    def action_dump(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        pid = entry.proc.pid
        root = entry.root
        snap = self.snapshot
        if entry.children or root is None or root == pid or snap is None or root not in snap.entries:
            self._dump(pid)
            return
        # A leaf alone is rarely what a bug report needs: say what `d` bundles.
        from tractor_diag.safetext import escape
        from tractor_diag.trees import descendants

        kids = {p: e.children for p, e in snap.entries.items()}
        size = 1 + len(descendants(kids, [root]))
        body = Text.assemble(
            (f"{pid}", "bold"), f" ({escape(entry.proc.title)}) is a leaf: a bundle of it holds that one "
            "process.\n", "The whole tree at ", (f"{root}", "bold"),
            f" ({escape(snap.entries[root].proc.title)}) holds {size} processes.")

        def chosen(which) -> None:
            if which is not None:
                self._dump(which)

        from .dialogs import ChoiceScreen

        self.push_screen(ChoiceScreen(
            "Bundle what?", body,
            [("p", "Just this process", pid), ("w", f"Whole tree at {root}", root)]), chosen)

    def _dump(self, pid: int) -> None:
        self.notify(f"writing a snapshot bundle of the tree at {pid}…", timeout=4)
        # the history as it is now: the sampler goes on adding to it
        shown = self.snapshot.entries.get(pid) if self.snapshot is not None else None
        self._start("dump", key_jobs.dump_all, pid, out_dir=self.dump_root,
                    history_snaps=list(self.sampler.history)[-HISTORY_SNAPSHOTS:],
                    history_events=list(self.sampler.events),
                    create_time=shown.proc.create_time if shown is not None else None)

    def action_reap(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        self._start("plan a reap", key_jobs.plan_reap, entry.proc.pid, entry.proc.create_time)

    @on(ReapPlanned)
    def _confirm_reap(self, message: ReapPlanned) -> None:
        """The dry-run plan: ask, then reap for real."""
        pid, plan = message.pid, message.plan
        if self._quitting or self._panes_gone():
            plan.release()  # nobody left to ask
            return

        from .dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._start("reap", key_jobs.reap, pid, plan, self.grace)
            else:
                plan.release()  # its pidfds
                self.notify("reap cancelled", timeout=3)

        self.push_screen(ConfirmScreen(f"Reap the subtree at {pid}?", message.body, yes="Reap"),
                         answered)

    def action_signal(self) -> None:
        entry = self._need_selection()
        if entry is None:
            return
        pid = entry.proc.pid
        target = f"{entry.proc.title} ({pid})"
        create_time = entry.proc.create_time
        cmdline = list(entry.proc.cmdline)
        usr1 = bool(entry.proc.handles_signal(signal.SIGUSR1))

        from .dialogs import ConfirmScreen, SignalScreen

        def chosen(signum: int | None) -> None:
            if signum is None:
                return
            name = signal.Signals(signum).name
            body = Text.assemble("Send ", (name, "bold"), f" to {target}?\n\n",
                                 (dict((s, w) for s, w in _signal_help()).get(signum, ""), "dim"))

            def answered(yes: bool | None) -> None:
                if yes:
                    self._start("signal", key_jobs.send_signal, pid, create_time, signum,
                                cmdline=cmdline)

            self.push_screen(ConfirmScreen(f"Send {name}?", body, yes=f"Send {name}"), answered)

        self.push_screen(SignalScreen(target, usr1), chosen)

    def action_pause(self) -> None:
        paused = not self.sampler.paused
        self.sampler.pause(paused)
        self.notify("sampling paused" if paused else "sampling resumed", timeout=2)
        self._update_status()

    def action_interval(self) -> None:
        from .dialogs import IntervalScreen

        def chosen(value: float | None) -> None:
            if value is not None:
                self.set_interval_seconds(value)

        self.push_screen(IntervalScreen(self.sampler.interval), chosen)

    def set_interval_seconds(self, value: float) -> None:
        self.sampler.set_interval(value)
        self.notify(f"sampling every {value:g}s", timeout=2)
        self._update_status()

    async def action_filter(self) -> None:
        box = await self._filter_box()
        box.display = True
        box.focus()

    async def _filter_box(self):
        # Composed on first use: hidden until then, it cost the first frame
        # its import, its CSS and its mount.
        try:
            return self.query_one("#filter")
        except NoMatches:
            from textual.widgets import Input

            box = Input(placeholder="filter: name, pid, state, command…", id="filter")
            await self.query_one("#left").mount(box, before=self.proc_tree)
            return box

    def on_input_changed(self, event) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value

    def watch_filter_text(self, text: str) -> None:
        self.proc_tree.set_filter(text)

    def on_input_submitted(self, event) -> None:
        if event.input.id != "filter":
            return
        if not event.value:
            event.input.display = False
        self.proc_tree.focus()

    def on_key(self, event) -> None:
        if event.key != "escape":
            return
        try:
            box = self.query_one("#filter")
        except NoMatches:
            return
        if box.has_focus:
            box.value = ""
            box.display = False
            self.proc_tree.focus()
            event.stop()

    def action_actors_only(self) -> None:
        self.actors_only = not self.actors_only

    def watch_actors_only(self, on: bool) -> None:
        self.proc_tree.set_actors_only(on)
        self.proc_tree.border_title = "processes (actors only)" if on else "processes"

    def action_toggle_log(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "log-tab" if tabs.active == "events-tab" else "events-tab"

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        self.child_running_at_quit = self.child_pid is not None and self.child_code is None
        if self.supervisor is not None and self.child_pid is not None:
            self.notify("stopping the launched tree (SIGINT, then SIGKILL)…", timeout=10)
            self.status_bar.say(Text(" stopping the launched tree…", "bold yellow"))
        await self._stop_trio()
        self.exit()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if not binding.show or binding.action == "quit":
                continue
            help_ = _PALETTE_HELP.get(binding.action, binding.description)
            yield SystemCommand(f"{binding.description} ({binding.key})", help_,
                                _runner(self, binding.action))


class _MainScreen(Screen):
    # The tree has the focus from the start: the first focusable widget is
    # the (hidden) filter box, and focusing it first, then the tree, cost a
    # footer rebuild and a cursor for the box.
    AUTO_FOCUS = "#tree"

    def _compositor_refresh(self) -> None:
        # While the first paint is held (`DashApp._hold_first_paint`) a frame
        # rendered would be thrown away: the regions it would draw stay
        # dirty, and the whole screen is drawn when the hold ends.
        if getattr(self.app, "_paint_held", False):
            return
        super()._compositor_refresh()


def _runner(app: App, action: str):
    async def run() -> None:
        await app.run_action(action)

    return run


def _signal_help():
    from .dialogs import SIGNALS

    return SIGNALS


_PALETTE_HELP = {
    "stacks": "Python stacks (py-spy) of the selected process",
    "tasks": "trio task tree of the selected process (SIGUSR1, only with a handler)",
    "why": "the verdicts of the selected tree, root cause first, with their evidence",
    "dump": "write a dump-all snapshot bundle of the selected tree",
    "reap": "SIGINT, grace, SIGKILL the selected subtree (asks first)",
    "signal": "send a signal to the selected process (asks first)",
    "pause": "pause or resume sampling",
    "interval": "change the sampling interval",
    "filter": "show only processes matching a text",
    "actors_only": "hide or show processes that are not actors",
    "toggle_log": "switch between the events and the launched program's log",
}
