"""Whether a tick changed what a pane shows, without building it again.

The sampler hands the app a whole new snapshot every tick; on a tree where
nothing happens, every process in it reads as it did. The panes ask here
first, and build their texts only for what differs.
"""
from __future__ import annotations

from msgspec.structs import astuple

from tractor_diag.model import Entry, Proc

# The schedstat reading changes every time it is taken, and no pane shows it.
_UNSHOWN = {"sched_run", "sched_wait", "sched_at"}
_FIELDS = Proc.__struct_fields__
_CUT = [i for i, name in enumerate(_FIELDS) if name in _UNSHOWN]
assert _CUT == list(range(_CUT[0], _CUT[-1] + 1)), "the unshown fields lie together"
_HEAD, _TAIL = slice(0, _CUT[0]), slice(_CUT[-1] + 1, None)


def same_proc(a: Proc, b: Proc) -> bool:
    """``a`` and ``b`` read the same in every field a pane may show (the same
    object when the sampler kept it)."""
    if a is b or a == b:  # (equality in C: the quick answer, when it is yes)
        return True
    ta, tb = astuple(a), astuple(b)
    return ta[_HEAD] == tb[_HEAD] and ta[_TAIL] == tb[_TAIL]


# An entry's fields but the process and the clock of its stuck time (which an
# idle process's moves every tick; the tree does not show it).
_ENTRY = Entry.__struct_fields__
assert _ENTRY[0] == "proc" and "stuck_for" in _ENTRY
_STUCK = _ENTRY.index("stuck_for")
_BEFORE, _AFTER = slice(1, _STUCK), slice(_STUCK + 1, None)


def same_row(a: Entry, b: Entry) -> bool:
    """``a`` and ``b`` read the same in every field a tree row shows or is
    placed by (all but how long it has been stuck, exactly), their process
    included. The test of every process of every tick: tuples compared,
    not fields one by one."""
    if a is b:
        return True
    ta, tb = astuple(a), astuple(b)
    return ta[_BEFORE] == tb[_BEFORE] and ta[_AFTER] == tb[_AFTER] and same_proc(ta[0], tb[0])
