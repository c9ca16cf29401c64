"""A real current-runtime tractor tree (Python 3.13 venv with tractor main)
that hangs the way `why` is meant to explain: the root waits for a child's
result, and the child is blocked in a sync ``time.sleep`` inside its RPC
task, where no cancel reaches it.

Usage: why_runtime_tree.py PORT START_METHOD {sleep,none,boot,stall,lose-cancel,zombie,poll} [--stackscope] [--taskdump]

``sleep``: child ``blocker`` runs ``nap`` (``time.sleep(3600)``);
``none``: child ``idler`` runs ``idle`` (``trio.sleep_forever()``), a healthy
tree whose root waits the same way; ``boot``: child ``booter`` dies at
boot (``die_at_boot/sitecustomize.py`` on its path: trio, mp_spawn,
mp_forkserver; an at-fork hook for main_thread_forkserver), the root waits
for it to connect; ``stall``: child ``booter`` stalls at boot instead (alive, never
connecting); ``lose-cancel``: child ``deaf`` takes a
cancel request and never acts on it (its ``Actor.cancel`` swapped for one
that parks forever), and the root waits in ``Portal.cancel_actor``;
``zombie``: child ``mid`` starts ``crasher``, calls it (``Portal.run``) in a
task, then wedges its loop in ``time.sleep``: the crasher exits and stays a
zombie, mid's call to it is frozen with the loop, the root waits for mid's
result; ``poll``: child ``poller`` is healthy, though most of its time in
sync ``time.sleep(0.2)`` calls, each followed by a trip to its loop. The
root prints ``READY <root pid>``
(``lose-cancel``: ``READY <root pid> <deaf's pid>``) once the child's call
has had a second to start. ``--stackscope`` turns on
tractor's own SIGUSR1 task dumper (``enable_stack_on_sig``), ``--taskdump``
``tractor_diag.taskdump`` in every actor (stackscope loses the tasks inside
nurseries on Python 3.13).
"""
import os
import sys
import time

import tractor
import trio

if "--taskdump" in sys.argv or os.environ.get("WHY_TREE_TASKDUMP"):
    # Every actor imports this module (enable_modules): each arms the
    # repository's SIGUSR1 task dumper, imported as part of its package.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    os.environ["WHY_TREE_TASKDUMP"] = "1"
    from tractor_diag import taskdump

    taskdump.arm()


async def nap() -> None:
    time.sleep(3600)  # sync: the child's trio loop is wedged here


async def idle() -> None:
    await trio.sleep_forever()


async def deafen() -> int:
    from tractor.runtime._runtime import Actor

    async def park(self, *args, **kwargs) -> bool:
        # takes the request and never acts on it nor answers: lost
        await trio.sleep_forever()

    Actor.cancel = park
    return os.getpid()


async def poll() -> None:
    while True:
        time.sleep(0.2)  # brief sync work, then back to the loop
        await trio.sleep(0.01)


async def crash() -> None:
    await trio.sleep(0.5)
    os._exit(3)


async def wedge_over_zombie() -> None:
    async with tractor.open_nursery() as an:
        portal = await an.start_actor("crasher", enable_modules=[__name__])
        async with trio.open_nursery() as n:
            n.start_soon(portal.run, crash)
            await trio.sleep(0.2)
            time.sleep(3600)  # sync: the crasher is never reaped


def _at_boot(hang: str) -> None:
    if hang == "stall":
        time.sleep(3600)  # alive, never connecting
    os._exit(3)


async def main() -> None:
    port, method, hang = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    name, fn = {"sleep": ("blocker", nap), "boot": ("booter", idle),
                "stall": ("booter", idle),
                "zombie": ("mid", wedge_over_zombie),
                "poll": ("poller", poll)}.get(hang, ("idler", idle))
    async with tractor.open_nursery(
        registry_addrs=[("127.0.0.1", port)], start_method=method,
        enable_stack_on_sig="--stackscope" in sys.argv,
    ) as an:
        if hang == "lose-cancel":
            portal = await an.start_actor("deaf", enable_modules=[__name__])
            child = await portal.run(deafen)

            async def announce_cancel() -> None:
                await trio.sleep(1.0)
                print("READY", os.getpid(), child, flush=True)

            async with trio.open_nursery() as n:
                n.start_soon(announce_cancel)
                # waits for the child to answer the cancel: never
                await portal.cancel_actor(timeout=3600)
            return
        if hang in ("boot", "stall"):
            # only the children see it (the root's cmdline is not tractor._child)
            os.environ["WHY_TREE_DIE_AT_BOOT"] = "stall" if hang == "stall" else "1"
            if method == "main_thread_forkserver":
                # its children are forks of this process, never exec'd: the
                # fork itself dies or stalls (a death the runtime races
                # against wait_for_peer, failing the spawn: no hang)
                os.register_at_fork(after_in_child=lambda: _at_boot(hang))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [os.path.join(os.path.dirname(os.path.abspath(__file__)), "die_at_boot"),
                 *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])

            async def announce_boot() -> None:
                await trio.sleep(1.0)
                print("READY", os.getpid(), flush=True)

            async with trio.open_nursery() as n:
                n.start_soon(announce_boot)
                # never returns: the child died before it connected
                await an.start_actor(name, enable_modules=[__name__])
            return
        portal = await an.start_actor(name, enable_modules=[__name__])

        async def announce() -> None:
            await trio.sleep(1.0)
            print("READY", os.getpid(), flush=True)

        async with trio.open_nursery() as n:
            n.start_soon(announce)
            await portal.run(fn)


if __name__ == "__main__":
    trio.run(main)
