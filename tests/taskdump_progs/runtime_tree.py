"""A real current-runtime tractor tree for the auto-arming tests.

Usage: runtime_tree.py PORT START_METHOD MARK_DIR [--stackscope]

root -> mid -> leaf, each actor running a task named '<name>_waits' that
sleeps forever; each actor drops a file '<name>-<pid>' in MARK_DIR once
that task runs, and the root prints 'READY <root pid> <mid pid> <leaf pid>'
when all three are there. ``--stackscope`` turns on tractor's own SIGUSR1
handler (enable_stack_on_sig).
"""
import os
import sys

import trio
import tractor


async def _waits(name: str, mark_dir: str, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    with open(os.path.join(mark_dir, f"{name}-{os.getpid()}"), "w"):
        pass
    await trio.sleep_forever()


async def leaf_main(mark_dir: str):
    async with trio.open_nursery() as n:
        await n.start(_waits, "leaf", mark_dir, name="leaf_waits")


async def mid_main(mark_dir: str):
    async with tractor.open_nursery() as an:
        await an.run_in_actor(leaf_main, mark_dir=mark_dir, name="leaf")
        async with trio.open_nursery() as n:
            await n.start(_waits, "mid", mark_dir, name="mid_waits")


async def main():
    port, method, mark_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    async with tractor.open_nursery(
        registry_addrs=[("127.0.0.1", port)],
        start_method=method,
        enable_stack_on_sig="--stackscope" in sys.argv,
    ) as an:
        await an.run_in_actor(mid_main, mark_dir=mark_dir, name="mid")
        async with trio.open_nursery() as n:
            await n.start(_waits, "root", mark_dir, name="root_waits")
            pids = {}
            while len(pids) < 3:
                await trio.sleep(0.05)
                for entry in os.listdir(mark_dir):
                    name, pid = entry.rsplit("-", 1)
                    pids[name] = int(pid)
            print("READY", pids["root"], pids["mid"], pids["leaf"], flush=True)
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
