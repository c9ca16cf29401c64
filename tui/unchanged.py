"""Whether a tick changed what a pane shows, without building it again.

The sampler hands the app a whole new snapshot every tick; on a tree where
nothing happens, every process in it reads as it did. The panes ask here
first, and build their texts only for what differs.
"""
from __future__ import annotations

from msgspec.structs import astuple

from tractor_diag.model import Proc

# The schedstat reading changes every time it is taken, and no pane shows it.
_UNSHOWN = {"sched_run", "sched_wait", "sched_at"}
_FIELDS = Proc.__struct_fields__
_CUT = [i for i, name in enumerate(_FIELDS) if name in _UNSHOWN]
assert _CUT == list(range(_CUT[0], _CUT[-1] + 1)), "the unshown fields lie together"
_HEAD, _TAIL = slice(0, _CUT[0]), slice(_CUT[-1] + 1, None)


def same_proc(a: Proc, b: Proc) -> bool:
    """``a`` and ``b`` read the same in every field a pane may show (the same
    object when the sampler kept it)."""
    if a is b:
        return True
    ta, tb = astuple(a), astuple(b)
    return ta[_HEAD] == tb[_HEAD] and ta[_TAIL] == tb[_TAIL]
