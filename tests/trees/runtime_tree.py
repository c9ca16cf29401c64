"""A real actor tree on a *current* tractor runtime (repo main or the
fork-server branch), with a chosen spawn method and transport.

Run it with that runtime venv's python (Python 3.13, trio 0.35)::

    .venv-tractor-main/bin/python tests/trees/runtime_tree.py \
        --start-method {trio,mp_spawn,mp_forkserver,main_thread_forkserver} \
        --transport {tcp,uds} [--port PORT] [--depth N] [--breadth M] \
        [--hang {sleep,none}] [--wedge-root]

Tree shape (names are deterministic, as in ``released_tree.py``)::

    root                         this script: the registrar root actor
      spawner_0 .. spawner_{M-1}   depth >= 2
        leaf_0_0 ..                the last level
    depth == 0: the root alone (a registrar with no children)

Every non-leaf actor starts its children with ``start_actor`` and opens a
``subtree`` context with each; that context reports ``started`` with the
``{name: pid}`` of its whole subtree once it is up. The root then prints one
line ``READY <json>`` where the json maps every actor name (root included)
to its pid, so tests know the truth without reading ``/proc``.

Hangs after READY:

- ``sleep``: every leaf is stuck in a sync ``time.sleep(3600)``, and each
  parent waits on its leaves' results (``ctx.wait_for_result()``).
- ``none``: everybody idles.

``--wedge-root``: after READY the root itself blocks in a sync
``time.sleep`` too, so it keeps holding the registry address without ever
answering on it (the "leftover registrar" a new root trips over).

``--transport tcp`` puts the registry on ``127.0.0.1:PORT`` (a free port
per tree, required); ``uds`` on ``<bindspace>/registry@1616.sock`` (the
bindspace follows ``$XDG_RUNTIME_DIR``; tests give each tree its own).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tractor
import trio

HANGS = ('sleep', 'none')
START_METHODS = ('trio', 'mp_spawn', 'mp_forkserver', 'main_thread_forkserver')


def actor_name(path: tuple[int, ...], depth: int) -> str:
    kind = 'leaf' if len(path) == depth else 'spawner'
    return kind + '_' + '_'.join(map(str, path))


@tractor.context
async def subtree(
    ctx: tractor.Context,
    path: list[int],
    depth: int,
    breadth: int,
    hang: str,
) -> None:
    path = tuple(path)
    me = {actor_name(path, depth): os.getpid()}
    if len(path) == depth:
        await ctx.started(me)
        if hang == 'sleep':
            time.sleep(3600)  # the whole trio loop is blocked
        await trio.sleep_forever()
        return
    async with tractor.open_nursery() as an:
        await start_children(an, path, depth, breadth, hang, me, ctx.started)


async def start_children(an, path, depth, breadth, hang, found, report) -> None:
    """Start ``breadth`` children of ``path``, report every pid below once
    all are up, then wait on the children (forever)."""
    portals = []
    for i in range(breadth):
        child = path + (i,)
        portal = await an.start_actor(
            actor_name(child, depth), enable_modules=[__name__])
        portals.append((child, portal))

    up = 0
    all_up = trio.Event()

    async def run_child(child, portal) -> None:
        nonlocal up
        async with portal.open_context(
            subtree, path=list(child), depth=depth, breadth=breadth,
            hang=hang,
        ) as (cctx, pids):
            found.update(pids)
            up += 1
            if up == breadth:
                all_up.set()
            # the parent waits on its child's result: it never comes
            await cctx.wait_for_result()

    async with trio.open_nursery() as tn:
        for child, portal in portals:
            tn.start_soon(run_child, child, portal)
        await all_up.wait()
        await report(found)


async def main(args: argparse.Namespace) -> None:
    if args.transport == 'tcp':
        kw = dict(registry_addrs=[('127.0.0.1', args.port)])
    else:
        kw = dict(enable_transports=['uds'])

    async def report(found: dict) -> None:
        print('READY ' + json.dumps(found), flush=True)
        if args.wedge_root:
            time.sleep(3600)

    async with tractor.open_nursery(
        name='root',
        start_method=args.start_method,
        loglevel=args.loglevel,
        **kw,
    ) as an:
        if args.depth == 0:  # a registrar alone
            await report({'root': os.getpid()})
            await trio.sleep_forever()
        await start_children(an, (), args.depth, args.breadth, args.hang,
                             {'root': os.getpid()}, report)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--start-method', choices=START_METHODS, default='trio')
    p.add_argument('--transport', choices=('tcp', 'uds'), default='tcp')
    p.add_argument('--port', type=int, default=None)
    p.add_argument('--depth', type=int, default=2)
    p.add_argument('--breadth', type=int, default=1)
    p.add_argument('--hang', choices=HANGS, default='sleep')
    p.add_argument('--wedge-root', action='store_true')
    p.add_argument('--loglevel', default='error')
    args = p.parse_args(argv)
    if args.transport == 'tcp' and args.port is None:
        p.error('--transport tcp needs --port')
    return args


if __name__ == '__main__':
    try:
        trio.run(main, parse_args())
    except KeyboardInterrupt:
        sys.exit(130)
