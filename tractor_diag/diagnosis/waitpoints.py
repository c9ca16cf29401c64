"""The places where a tractor actor waits for another process, by name.

One table for both runtime generations, read from their sources: the
released 0.1.0a5 (flat modules: ``tractor/_portal.py``, ``_spawn.py``,
``_actor.py``, ``_debug.py``) and current tractor (``tractor/runtime/``,
``spawn/``, ``ipc/``, ``devx/debug/``). A frame matches an entry when its
function's qualified name ends with the entry's name and its file lies
under the entry's package: py-spy and our task dumps both print qualified
names (``Portal.wait_for_result``).

``target`` says whom the waiter waits for: ``child`` (a process it spawned),
``peer`` (the other end of a channel: a child, or the parent), ``parent``,
``registrar``, or ``debugger`` (the root's debug lock).
"""
from __future__ import annotations

from ..whymodel import WaitPoint

WAIT_POINTS: tuple[WaitPoint, ...] = (
    # results and streams: the other end of a channel
    WaitPoint("Context.wait_for_result", "/tractor/", "peer", "Context.wait_for_result"),
    WaitPoint("Context.result", "/tractor/", "peer", "Context.result"),
    WaitPoint("Portal.wait_for_result", "/tractor/", "peer", "Portal.wait_for_result"),
    WaitPoint("Portal.result", "/tractor/", "peer", "Portal.result"),
    WaitPoint("Portal._return_once", "/tractor/", "peer", "Portal.result"),
    WaitPoint("Portal.run", "/tractor/", "peer", "Portal.run"),
    WaitPoint("Portal.run_from_ns", "/tractor/", "peer", "Portal.run_from_ns"),
    WaitPoint("MsgStream.receive", "/tractor/", "peer", "MsgStream.receive"),
    WaitPoint("ReceiveMsgStream.receive", "/tractor/", "peer", "MsgStream.receive"),
    WaitPoint("Portal.cancel_actor", "/tractor/", "peer", "Portal.cancel_actor", cancels=True),
    # children: spawning, supervising, reaping
    WaitPoint("_open_and_supervise_one_cancels_all_nursery", "/tractor/", "child",
              "ActorNursery exit"),
    WaitPoint("ActorNursery.cancel", "/tractor/", "child", "ActorNursery.cancel", cancels=True),
    WaitPoint("_try_cancel_then_kill", "/tractor/", "child", "ActorNursery cancel", cancels=True),
    WaitPoint("soft_kill", "/tractor/", "child", "soft_kill", cancels=True),
    WaitPoint("soft_wait", "/tractor/_spawn.py", "child", "soft_wait", cancels=True),
    WaitPoint("hard_kill", "/tractor/", "child", "hard_kill", cancels=True),
    WaitPoint("do_hard_kill", "/tractor/_spawn.py", "child", "do_hard_kill", cancels=True),
    WaitPoint("proc_waiter", "/tractor/", "child", "proc_waiter"),
    WaitPoint("cancel_on_completion", "/tractor/", "child", "cancel_on_completion"),
    WaitPoint("exhaust_portal", "/tractor/", "child", "exhaust_portal"),
    # a child that has not connected back yet: boot
    WaitPoint("Server.wait_for_peer", "/tractor/", "child", "Server.wait_for_peer"),
    WaitPoint("Actor.wait_for_peer", "/tractor/", "child", "Actor.wait_for_peer"),
    WaitPoint("wait_for_peer_or_proc_death", "/tractor/", "child", "wait_for_peer_or_proc_death"),
    # the registrar and the debugger lock
    WaitPoint("wait_for_actor", "/tractor/", "registrar", "wait_for_actor"),
    WaitPoint("maybe_wait_for_debugger", "/tractor/", "debugger", "maybe_wait_for_debugger"),
    WaitPoint("acquire_debug_lock", "/tractor/", "debugger", "acquire_debug_lock"),
    # the processes underneath: multiprocessing, trio, subprocess
    WaitPoint("BaseProcess.join", "/multiprocessing/", "child", "multiprocessing Process.join",
              sync=True),
    WaitPoint("Popen.wait", "/multiprocessing/", "child", "multiprocessing Process.join",
              sync=True),
    WaitPoint("Process.wait", "/trio/", "child", "trio Process.wait"),
    WaitPoint("Popen.wait", "/subprocess.py", "child", "subprocess.Popen.wait", sync=True),
)


def _matches(point: WaitPoint, name: str, filename: str) -> bool:
    return (name == point.name or name.endswith("." + point.name)) and point.where in filename


def match(name: str, filename: str) -> WaitPoint | None:
    for point in WAIT_POINTS:
        if _matches(point, name, filename):
            return point
    return None


def innermost(frames: list) -> tuple[WaitPoint, object] | None:
    """The innermost of tractor's waiting points in a chain of frames
    (innermost last): the most specific one (``soft_kill`` under the
    nursery's exit, not the ``Process.wait`` under ``soft_kill``); the
    innermost of the others when tractor has none. A sync wait
    (``Process.join``) found first wins: nothing above it runs."""
    other = None
    for f in reversed(frames):
        if getattr(f, "native", False):
            continue
        point = match(f.name, f.filename)
        if point is None:
            continue
        if point.where.startswith("/tractor") or point.sync:
            # a sync wait holds the whole thread: it is what it waits in
            return _enclosing_cancel(frames, f) or (point, f)
        if other is None:
            other = (point, f)
    return other


def _enclosing_cancel(frames: list, inner) -> tuple[WaitPoint, object] | None:
    """A wait made on the way to cancelling its target (the request
    ``Portal.cancel_actor`` sends through ``run_from_ns``) is a cancel:
    the nearest cancelling point around ``inner``, if any."""
    i = frames.index(inner)
    for f in reversed(frames[:i]):
        if getattr(f, "native", False):
            continue
        point = match(f.name, f.filename)
        if point is not None and point.cancels:
            return point, f
    return None


def in_text(text: str) -> list[WaitPoint]:
    """Waiting points named in a task dump we cannot parse (tractor's own
    stackscope handler writes free text): by qualified name, once each."""
    found: list[WaitPoint] = []
    seen: set[str] = set()
    for point in WAIT_POINTS:
        if point.where.startswith("/tractor") and point.name in text and point.label not in seen:
            seen.add(point.label)
            found.append(point)
    return found
