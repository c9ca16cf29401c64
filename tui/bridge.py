"""trio as a guest on Textual's asyncio loop.

Textual owns the loop; trio runs inside it in guest mode
(`trio.lowlevel.start_guest_run`), so the sampler, the launcher and every
action that shells out are ordinary trio code and the UI never blocks. Both
run on the same thread: trio code talks to widgets with ``post_message``
(``call_from_thread`` would raise), and asyncio code hands work to trio with
`TrioGuest.spawn`, which schedules it into the guest's root nursery.

Stopping cancels the root nursery and waits for trio's done callback: a
guest run that is merely abandoned never runs its ``finally`` blocks, and
those are what stop a launched tree.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio


class TrioGuest:
    def __init__(self, main: Callable[[trio.Nursery], Awaitable[Any]] | None = None,
                 on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        self._main = main
        self._on_done = on_done
        self._on_error = on_error
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._done: asyncio.Future | None = None
        self._ready: asyncio.Future | None = None
        self.outcome = None  # trio's outcome of the run, once done
        # what was spawned before the run started: run as soon as it has
        self._queued: list[tuple[Callable[..., Awaitable[Any]], tuple]] | None = []

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def start(self) -> None:
        """Start the guest run; call from a coroutine on the host loop."""
        import trio

        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._ready = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._root,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=self._finished,
            host_uses_signal_set_wakeup_fd=False,
        )

    async def wait_ready(self) -> None:
        assert self._ready is not None, "start() first"
        await asyncio.shield(self._ready)

    async def _root(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            queued, self._queued = self._queued or [], None
            for async_fn, args in queued:
                nursery.start_soon(self._guarded, async_fn, args)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            if self._main is not None:
                await self._main(nursery)
            await trio.sleep_forever()

    def _finished(self, outcome) -> None:
        self.outcome = outcome
        self._nursery = None
        self._queued = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        if self._done is not None and not self._done.done():
            self._done.set_result(outcome)
        if self._on_done is not None:
            self._on_done(outcome)

    def spawn(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``async_fn(*args)`` as a trio task (once the run has started,
        if it has not yet); False if trio is not up and will not be."""
        if self._queued is not None:
            self._queued.append((async_fn, args))
            return True
        nursery, token = self._nursery, self._token
        if nursery is None or token is None:
            return False
        import trio

        try:
            token.run_sync_soon(nursery.start_soon, self._guarded, async_fn, args)
        except trio.RunFinishedError:
            return False
        return True

    async def _guarded(self, async_fn, args) -> None:
        # A failing action must never take the sampler (the whole guest
        # run) down with it: report it and carry on.
        try:
            await async_fn(*args)
        except Exception as exc:  # noqa: BLE001
            if self._on_error is None:
                raise
            self._on_error(exc)

    async def stop(self, timeout: float | None = None) -> None:
        """Cancel everything in the guest and wait until trio has finished."""
        if self._done is None:
            return
        nursery, token = self._nursery, self._token
        if nursery is not None and token is not None:
            import trio

            try:
                token.run_sync_soon(nursery.cancel_scope.cancel)
            except trio.RunFinishedError:
                pass
        if timeout is None:
            await asyncio.shield(self._done)
        else:
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except asyncio.TimeoutError:
                pass
