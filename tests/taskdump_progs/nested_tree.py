"""A real trio program for tests/test_taskdump.py: arms taskdump, builds a tree.

Usage: nested_tree.py MODE [--path PATH] [--stderr]

Modes:
  tree        arm, run the tree, print READY once every task is blocked
  prerun      arm, print PRERUN, wait for a stdin line, then like ``tree``
  postrun     arm, run a short trio.run, print POSTRUN, wait on stdin forever
  busy-sleep  like ``tree``, then one task blocks the loop in time.sleep
  busy-spin   like ``tree``, then one task spins the CPU without awaiting
  thread      trio.run in a non-main thread; the main thread joins it

Lines the tests look for carry a ``# LINE:<tag>`` comment; the tests find
their numbers by reading this file.

Tree (4 nested user nurseries, 14 user tasks + ``announce``, which prints
READY and, in the busy modes, starts ``hog``):

  main                         nursery 1
    supervisor                 nursery 2
      sleeper                  sleep_forever
      event_waiter             Event().wait()
      agen_consumer            async-for over an async generator
      lock_holder              holds a Lock, sleeps
      lock_waiter              blocked acquiring that Lock
      channel_reader           blocked in a memory-channel receive
      starter                  blocked in nursery.start(...) of:
        never_started          (inside start(), never calls started())
      worker_pool              nursery 3
        proc_supervisor        nursery 4
          subproc_waiter       trio.run_process(['sleep', '600'])
        service                started with nursery.start(), then sleeps
"""

import sys
import threading
import time

import trio
import trio.testing

try:
    from tractor_diag import taskdump
except ImportError:
    # taskdump.py is stdlib-only on purpose: in a venv without the rest of
    # tractor_diag's dependencies (the released-tractor venv), load it alone.
    import importlib.util
    from pathlib import Path

    _src = Path(__file__).resolve().parents[2] / "tractor_diag" / "taskdump.py"
    _spec = importlib.util.spec_from_file_location("tractor_diag_taskdump", _src)
    taskdump = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(taskdump)


async def sleeper():
    await trio.sleep_forever()  # LINE:sleep_forever


async def event_waiter(event):
    await event.wait()  # LINE:event_wait


async def ticks():
    while True:
        await trio.sleep(3600)  # LINE:agen_sleep
        yield 1


async def agen_consumer():
    async for _ in ticks():  # LINE:agen_for
        pass


async def lock_holder(lock, held):
    async with lock:
        held.set()
        await trio.sleep_forever()  # LINE:lock_holder


async def lock_waiter(lock, held):
    await held.wait()
    async with lock:  # LINE:lock_waiter
        pass


async def channel_reader(rx):
    async for _ in rx:  # LINE:channel_reader
        pass


async def never_started(task_status=trio.TASK_STATUS_IGNORED):
    await trio.Event().wait()  # LINE:never_started


async def starter(nursery):
    await nursery.start(never_started, name="never_started")  # LINE:starter


async def subproc_waiter():
    await trio.run_process(["sleep", "600"])  # LINE:run_process


async def proc_supervisor():
    async with trio.open_nursery() as nursery:  # LINE:proc_supervisor
        nursery.start_soon(subproc_waiter, name="subproc_waiter")


async def service(task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    await trio.sleep_forever()  # LINE:service


async def worker_pool():
    async with trio.open_nursery() as nursery:  # LINE:worker_pool
        nursery.start_soon(proc_supervisor, name="proc_supervisor")
        await nursery.start(service, name="service")


async def supervisor(tx_keepalive):
    lock = trio.Lock()
    held = trio.Event()
    tx, rx = trio.open_memory_channel(0)
    tx_keepalive.append(tx)
    async with trio.open_nursery() as nursery:  # LINE:supervisor
        nursery.start_soon(sleeper, name="sleeper")
        nursery.start_soon(event_waiter, trio.Event(), name="event_waiter")
        nursery.start_soon(agen_consumer, name="agen_consumer")
        nursery.start_soon(lock_holder, lock, held, name="lock_holder")
        nursery.start_soon(lock_waiter, lock, held, name="lock_waiter")
        nursery.start_soon(channel_reader, rx, name="channel_reader")
        nursery.start_soon(starter, nursery, name="starter")
        nursery.start_soon(worker_pool, name="worker_pool")


def hog_sleep():
    time.sleep(600)  # LINE:busy_sleep


def hog_spin():
    while True:  # LINE:busy_spin
        pass


async def hog(kind):
    await trio.sleep(0)
    print("HOGGING", flush=True)
    if kind == "busy-sleep":
        hog_sleep()
    else:
        hog_spin()


async def announce(mode, nursery):
    # Runs only once main is parked in its nursery's __aexit__ (start_soon
    # does not yield), so READY means every task is at its blocking line.
    await trio.testing.wait_all_tasks_blocked(0.2)
    print("READY", flush=True)
    if mode.startswith("busy-"):
        nursery.start_soon(hog, mode, name="hog")


async def main(mode):
    keepalive = []
    async with trio.open_nursery() as nursery:  # LINE:main
        nursery.start_soon(supervisor, keepalive, name="supervisor")
        nursery.start_soon(announce, mode, nursery, name="announce")


def wait_stdin_forever():
    while sys.stdin.readline():  # LINE:postrun_stdin
        pass
    time.sleep(600)


def run_in_thread():
    thread = threading.Thread(target=trio.run, args=(main, "tree"), name="trio-thread")
    thread.start()
    thread.join()  # LINE:thread_join


def cli():
    mode = sys.argv[1]
    path = None
    if "--path" in sys.argv:
        path = sys.argv[sys.argv.index("--path") + 1]
    taskdump.arm(path, stderr="--stderr" in sys.argv)

    if mode == "prerun":
        print("PRERUN", flush=True)
        sys.stdin.readline()  # LINE:prerun_stdin
    if mode == "postrun":
        trio.run(trio.sleep, 0)
        print("POSTRUN", flush=True)
        wait_stdin_forever()
    elif mode == "thread":
        run_in_thread()
    else:
        trio.run(main, mode)


if __name__ == "__main__":
    cli()
