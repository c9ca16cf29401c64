"""A real tractor tree deadlocked in a wait-for cycle across two processes,
on either runtime generation (the released 0.1.0a5 on Python 3.11, or
tractor main on 3.13): the same script, the API picked by what tractor has.

Usage: why_cycle_tree.py PORT {cycle,siblings,none} [--taskdump]

The root (actor ``root``, the registrar) starts child ``pinger`` and opens
context ``ping`` on it, then waits for its result. In ``cycle`` mode
``ping`` finds the root through the registry (``wait_for_actor``), opens
context ``pong`` back on it and waits for *that* result; the root's
``pong`` answers only once its own first context has returned. Neither
side can move first. In ``none`` mode ``ping`` just sleeps (a healthy tree
whose root waits the same way on an idle child). ``siblings``: the cycle
runs between two children: the root starts ``alpha`` and ``beta`` and
waits on ``ping`` in alpha; alpha opens ``relay`` on beta and waits for
it, beta opens ``pong`` back on alpha and waits for that, and alpha's
``pong`` answers only once its ``ping`` is done.

The root prints ``READY <root pid> <pinger or alpha pid> [<beta pid>]``
a second after ``ping`` has started. ``--taskdump`` arms ``tractor_diag.taskdump`` in every actor.
"""
import os
import sys

import tractor
import trio

if "--taskdump" in sys.argv or os.environ.get("WHY_TREE_TASKDUMP"):
    # every actor imports this module (enable_modules): each arms the dumper
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    os.environ["WHY_TREE_TASKDUMP"] = "1"
    from tractor_diag import taskdump

    taskdump.arm()

# the root's first context has returned: only then may `pong` answer
_first_done: trio.Event | None = None


async def _result(ctx):
    # tractor main renamed Context.result to wait_for_result
    wait = getattr(ctx, "wait_for_result", None) or ctx.result
    return await wait()


@tractor.context
async def pong(ctx: tractor.Context) -> str:
    """Runs in the root: it cannot answer before the root's own wait on
    ``ping`` is over."""
    await ctx.started(os.getpid())
    await _done().wait()
    return "pong"


def _done() -> trio.Event:
    global _first_done
    if _first_done is None:
        _first_done = trio.Event()
    return _first_done


@tractor.context
async def ping(ctx: tractor.Context, mode: str) -> str:
    await ctx.started(os.getpid())
    if mode == "none":
        await trio.sleep_forever()
    # cycle: back to the root; siblings: on to the other child, which
    # comes back here (`relay`)
    other, fn = ("root", pong) if mode == "cycle" else ("beta", relay)
    async with tractor.wait_for_actor(other) as portal:
        async with portal.open_context(fn) as (back, _):
            # waits for the one that waits for us
            result = await _result(back)
    _done().set()
    return result


@tractor.context
async def relay(ctx: tractor.Context) -> str:
    """Runs in ``beta``: opens ``pong`` on ``alpha``, which answers only
    once alpha's own wait on beta is over."""
    await ctx.started(os.getpid())
    async with tractor.wait_for_actor("alpha") as portal:
        async with portal.open_context(pong) as (back, _):
            return await _result(back)


async def main() -> None:
    global _first_done
    _first_done = trio.Event()
    port, mode = int(sys.argv[1]), sys.argv[2]
    new = hasattr(tractor.Context, "wait_for_result")
    addr = ("127.0.0.1", port)
    kw = dict(registry_addrs=[addr]) if new else dict(arbiter_addr=addr)
    async with tractor.open_nursery(name="root", enable_modules=[__name__], **kw) as an:
        portal = await an.start_actor("alpha" if mode == "siblings" else "pinger",
                                      enable_modules=[__name__])
        others = []
        if mode == "siblings":
            beta = await an.start_actor("beta", enable_modules=[__name__])
            others.append(await beta.run(_pid))
        async with portal.open_context(ping, mode=mode) as (ctx, child):

            async def announce() -> None:
                await trio.sleep(1.0)
                print("READY", os.getpid(), child, *others, flush=True)

            async with trio.open_nursery() as n:
                n.start_soon(announce)
                await _result(ctx)  # never returns in `cycle` mode
        _first_done.set()
        await an.cancel()


async def _pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    trio.run(main)
