"""The name of a multiprocessing-spawned actor, read from its own stack.

``mp_spawn`` and ``mp_forkserver`` actors carry no title and bind TCP, so
nothing in ``/proc`` or the bindspace names them. What does: tractor hands
``multiprocessing.Process`` the actor's name, and multiprocessing sends it
to the child in its preparation data, which stays a local of
``multiprocessing.spawn._main`` at the bottom of the child's main thread
for its whole life, under tractor's ``_mp_main`` (which runs trio). A
py-spy dump with locals of that thread shows both; only the name is kept
(the other locals may hold anything: the caller drops them unless asked
for).
"""
from __future__ import annotations

import json
import re

from .stackmodel import Thread

_NAME_ITEM = re.compile(r'"name": ("(?:[^"\\]|\\.)*")(?:, |}|$)')


def _is_frame(filename: str, suffix: str) -> bool:
    return filename.replace("\\", "/").endswith(suffix)


def name_from_stack(threads: list[Thread]) -> str | None:
    """The name multiprocessing gave the process, when its main thread runs
    tractor's ``_mp_main`` over ``multiprocessing.spawn._main`` and py-spy
    showed the latter's ``preparation_data``; else ``None``."""
    for thread in threads:
        if thread.name != "MainThread":
            continue
        names = {f.name for f in thread.frames}
        if "_mp_main" not in names or not any(
                f.name == "_mp_main" and _is_frame(f.filename, "tractor/spawn/_entry.py")
                for f in thread.frames):
            return None
        for f in thread.frames:
            if f.name != "_main" or not _is_frame(f.filename, "multiprocessing/spawn.py"):
                continue
            for local in f.locals or ():
                if local.name == "preparation_data" and local.repr:
                    m = _NAME_ITEM.search(local.repr)
                    if m is None:
                        return None
                    try:
                        name = json.loads(m[1])
                    except ValueError:
                        return None
                    return name if isinstance(name, str) and name else None
        return None
    return None
