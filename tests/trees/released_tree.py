"""A real actor tree on the *released* tractor runtime (0.1.0a5).

Run it with the released-runtime venv's python (``.venv-tractor/bin/python``,
Python 3.11, trio 0.21)::

    .venv-tractor/bin/python tests/trees/released_tree.py PORT \
        [--depth N] [--breadth M] [--hang {sleep,wait-child,runaway,none}]

``PORT`` is the registry (arbiter) port on 127.0.0.1; the root actor binds it,
so every test tree uses its own registry. Sub-actors are ordinary
``tractor._child`` processes spawned by tractor's trio backend, i.e. their
command lines are exactly::

    <venv>/bin/python -m tractor._child --uid ('<name>', '<uuid4>') \
        --parent_addr ('127.0.0.1', <port>) --loglevel <LEVEL>

Tree shape (names are deterministic)::

    root                       (this script, the registry/arbiter)
      spawner_0 ... spawner_{M-1}            depth >= 2: mid-level actors
        spawner_0_0 ...                      depth >= 3
          leaf_0_0_0 ...                     the last level are leaves
    depth == 1: root -> leaf_0 ... leaf_{M-1}

Every non-leaf actor opens an actor nursery, starts its ``M`` children and
opens a context with each; a context reports ``started`` only once the
whole subtree below it is up. When every subtree under the root is up, the
root prints one line ``READY`` on stdout and then the tree hangs:

- ``sleep``: every leaf is stuck in a *sync* ``time.sleep(3600)`` inside a
  task (its trio loop is blocked; cancel requests are never served);
  every other actor idles.
- ``wait-child``: the *first* leaf (``leaf_0_0`` for depth 2) shields itself
  from cancellation and never exits; its parent (``spawner_0``) waits forever
  on that child's result. Other actors idle.
- ``runaway``: the first leaf burns CPU in a tight sync loop; others idle.
- ``none``: everyone idles in ``trio.sleep_forever()`` (a healthy tree).

``if __name__ == '__main__'`` guards ``trio.run``: tractor's children re-run
this file as ``__mp_main__`` to find the functions below.
"""
from __future__ import annotations

import argparse
import sys
import time

import tractor
import trio

HANGS = ('sleep', 'wait-child', 'runaway', 'none')


def actor_name(path: tuple[int, ...], depth: int) -> str:
    kind = 'leaf' if len(path) == depth else 'spawner'
    return kind + '_' + '_'.join(map(str, path))


def is_first(path) -> bool:
    return all(i == 0 for i in path)


async def _hang_leaf(path, hang: str) -> None:
    if hang == 'sleep':
        # a leaf stuck in sync code: the whole trio loop is blocked
        time.sleep(3600)
    elif hang == 'runaway' and is_first(path):
        n = 0
        while True:  # burn a core, never yield to the loop
            n += 1
    elif hang == 'wait-child' and is_first(path):
        # a child that never exits, not even when its parent cancels it
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()
    await trio.sleep_forever()


@tractor.context
async def subtree(
    ctx: tractor.Context,
    path: list[int],
    depth: int,
    breadth: int,
    hang: str,
) -> None:
    """The body of every non-root actor: start the subtree below, report
    `started` once it is all up, then hang as asked."""
    path = tuple(path)
    if len(path) == depth:  # a leaf
        await ctx.started(1)
        await _hang_leaf(path, hang)
        return

    async with tractor.open_nursery() as an:
        await _start_children(an, path, depth, breadth, hang, ctx.started)


async def _start_children(an, path, depth, breadth, hang, report) -> int:
    """Start ``breadth`` children of ``path`` in actor nursery ``an``, open a
    ``subtree`` context with each, call ``report(n_actors)`` once all are up,
    then wait forever on the children's contexts (until cancelled)."""
    portals = []
    for i in range(breadth):
        child = path + (i,)
        portal = await an.start_actor(
            actor_name(child, depth),
            enable_modules=[__name__],
        )
        portals.append((child, portal))

    counts: list[int] = []
    all_up = trio.Event()

    async def run_child(child, portal) -> None:
        async with portal.open_context(
            subtree, path=list(child), depth=depth, breadth=breadth,
            hang=hang,
        ) as (cctx, n):
            counts.append(n)
            if len(counts) == breadth:
                all_up.set()
            if hang == 'wait-child' and is_first(child) and len(child) == depth:
                # the parent of the never-exiting leaf waits on its result
                await cctx.result()
            await trio.sleep_forever()

    async with trio.open_nursery() as tn:
        for child, portal in portals:
            tn.start_soon(run_child, child, portal)
        await all_up.wait()
        await report(sum(counts) + 1)
    return sum(counts) + 1


async def main(port: int, depth: int, breadth: int, hang: str,
               loglevel: str) -> None:
    async def report(total: int) -> None:
        print('READY', flush=True)

    async with tractor.open_nursery(
        name='root',
        arbiter_addr=('127.0.0.1', port),
        loglevel=loglevel,
    ) as an:
        await _start_children(an, (), depth, breadth, hang, report)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('port', type=int, help='registry port on 127.0.0.1')
    p.add_argument('--depth', type=int, default=2)
    p.add_argument('--breadth', type=int, default=2)
    p.add_argument('--hang', choices=HANGS, default='sleep')
    p.add_argument('--loglevel', default='error')
    args = p.parse_args(argv)
    if args.depth < 1 or args.breadth < 1:
        p.error('--depth and --breadth must be >= 1')
    return args


if __name__ == '__main__':
    args = parse_args()
    try:
        trio.run(main, args.port, args.depth, args.breadth, args.hang,
                 args.loglevel)
    except KeyboardInterrupt:
        sys.exit(130)
