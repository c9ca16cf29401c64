"""The name of an actor nothing outside names, read from its own stack.

``mp_spawn`` and ``mp_forkserver`` actors carry no title and bind TCP;
without ``setproctitle`` a ``main_thread_forkserver`` actor over TCP shows
its parent's command line. Nothing in ``/proc`` or the bindspace names
them; their stacks do, with what the parent handed the child, a local of a
frame at the bottom of the thread that runs the actor for its whole life:

- tractor's child entry ``_actor_child_main`` (``tractor/_child.py``:
  the trio and fork-server backends) holds the actor's ``uid``, its
  (name, uuid);
- under tractor's ``_mp_main``, multiprocessing's ``spawn._main`` holds the
  preparation data with the name tractor gave ``multiprocessing.Process``.

A py-spy dump with locals shows both; only the name is kept (the other
locals may hold anything: the caller drops them unless asked for).
"""
from __future__ import annotations

import json
import re

from .model import How
from .stackmodel import Frame, Thread

_NAME_ITEM = re.compile(r'"name": ("(?:[^"\\]|\\.)*")(?:, |}|$)')
# py-spy's repr of a (str, str) tuple
_UID = re.compile(r'\A\(("(?:[^"\\]|\\.)*"), "(?:[^"\\]|\\.)*"\)\Z')


def _is_frame(f: Frame, name: str, suffix: str) -> bool:
    return f.name == name and f.filename.replace("\\", "/").endswith(suffix)


def _local(f: Frame, name: str) -> str | None:
    return next((v.repr for v in f.locals or () if v.name == name and v.repr), None)


def _named(pattern: re.Pattern[str], text: str | None) -> str | None:
    """The JSON string literal ``pattern`` captures in ``text``, decoded."""
    m = pattern.search(text or "")
    try:
        value = json.loads(m[1]) if m else None
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


def _from_thread(thread: Thread) -> tuple[str, How] | None:
    frames = thread.frames
    for f in frames:
        if _is_frame(f, "_actor_child_main", "tractor/_child.py"):
            name = _named(_UID, _local(f, "uid"))
            if name is not None:
                return name, "child-uid"
    if any(_is_frame(f, "_mp_main", "tractor/spawn/_entry.py") for f in frames):
        for f in frames:
            if _is_frame(f, "_main", "multiprocessing/spawn.py"):
                name = _named(_NAME_ITEM, _local(f, "preparation_data"))
                if name is not None:
                    return name, "mp-name"
    return None


def name_from_stack(threads: list[Thread]) -> tuple[str, How] | None:
    """(name, how) of the actor the process runs, from the frames above;
    ``None`` when no thread shows one, or threads disagree."""
    found = {hit for t in threads if (hit := _from_thread(t)) is not None}
    return found.pop() if len(found) == 1 else None
