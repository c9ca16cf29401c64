"""Waits-on marks for the tree pane: what the last `why` of a tree said each
process waits on, and which process is the bottom of each chain.

Only chains are drawn. A wait the diagnosis found with nothing stuck below
it (a healthy parent waiting on an idle child) has no verdict behind it and
gets no mark. A chain holds while every process in it is the one that was
judged (same pid, same start time, not exited since); once one of them is
gone the chain is stale and all its marks go.
"""
from __future__ import annotations

from typing import NamedTuple

from rich.text import Text

from tractor_diag.model import Snapshot
from tractor_diag.safetext import escape

from .safe import safe_line

# a pid reused by another process starts at another time
_SAME_START = 0.02


class Judged(NamedTuple):
    """One chain of a diagnosis, with what it takes to tell it still holds."""

    pids: tuple[int, ...]  # top (the first waiter) first
    names: tuple[str, ...]  # escaped, one per pid
    born: tuple[float, ...]  # create_time of each, when judged
    dead: tuple[bool, ...]  # each one already exited (a zombie) when judged
    cause: int  # the pid whose verdict explains the chain
    kinds: tuple[tuple[int, str], ...]  # (pid, verdict kind) that end the chain
    at: float  # when the judged snapshot was taken (epoch seconds)
    tree: int  # the pid whose tree was judged (``w`` on it)


class Mark(NamedTuple):
    """What one row shows: whom it waits on, the verdicts that end a chain
    on it, and the chains it is in (indices, for highlighting)."""

    waits_on: tuple[tuple[int, str], ...] = ()
    kinds: tuple[str, ...] = ()
    chains: frozenset[int] = frozenset()


def judge_chains(diag, snap: Snapshot, tree: int) -> list[Judged]:
    """The chains of ``diag`` (a `whymodel.Diagnosis` of ``snap``, the tree
    at ``tree``), each
    with the identity of its processes. Attribute verdicts (ignores
    SIGINT...) are named only on the last process, as `why` names them."""
    from tractor_diag.render.why import ATTRIBUTES

    out = []
    for chain in diag.chains:
        entries = [snap.entries.get(pid) for pid in chain.pids]
        if any(e is None for e in entries):
            continue  # judged on a process the snapshot did not hold: no claim
        kinds = [(chain.cause.pid, chain.cause.kind)]
        last = chain.pids[-1]
        if last != chain.cause.pid:
            kinds += [(last, v.kind) for v in diag.verdicts_of(last) if v.kind in ATTRIBUTES]
        out.append(Judged(
            pids=tuple(chain.pids),
            names=tuple(escape(diag.names.get(pid) or str(pid)) for pid in chain.pids),
            born=tuple(e.proc.create_time for e in entries),
            dead=tuple(e.bucket == "zombie" for e in entries),
            cause=chain.cause.pid,
            kinds=tuple(kinds),
            at=snap.taken_at,
            tree=tree,
        ))
    return out


def gone_from(chain: Judged, snap: Snapshot) -> int | None:
    """The first process of ``chain`` that is no longer the one judged
    (exited, or its pid reused), or None while the chain holds. A snapshot
    older than the judgement says nothing (it may miss a newer process)."""
    if snap.taken_at < chain.at:
        return None
    for pid, born, dead in zip(chain.pids, chain.born, chain.dead):
        entry = snap.entries.get(pid)
        if (entry is None or abs(entry.proc.create_time - born) > _SAME_START
                or (entry.bucket == "zombie" and not dead)):
            return pid
    return None


def marks_of(chains: list[Judged]) -> dict[int, Mark]:
    """pid -> its mark, over every chain."""
    waits: dict[int, list[tuple[int, str]]] = {}
    kinds: dict[int, list[str]] = {}
    member: dict[int, set[int]] = {}
    for i, chain in enumerate(chains):
        # a cycle's chain runs on from its cause through every member: the
        # last one waits on the cause again
        cycle = (chain.cause, "cycle") in chain.kinds and chain.cause in chain.pids
        for j, pid in enumerate(chain.pids):
            member.setdefault(pid, set()).add(i)
            nxt = j + 1 if j + 1 < len(chain.pids) else (
                chain.pids.index(chain.cause) if cycle else None)
            if nxt is not None:
                on = (chain.pids[nxt], chain.names[nxt])
                if on not in waits.setdefault(pid, []):
                    waits[pid].append(on)
        for pid, kind in chain.kinds:
            if kind not in kinds.setdefault(pid, []):
                kinds[pid].append(kind)
    return {pid: Mark(tuple(waits.get(pid, ())), tuple(kinds.get(pid, ())), frozenset(ids))
            for pid, ids in member.items()}


def mark_text(mark: Mark, lit: bool = False) -> Text:
    """The suffix of a row: ``⇢ waits on name[pid]`` and ``⊥ kind``; ``lit``:
    the row is in the chain of the selected process."""
    from tractor_diag.render.why import KIND_STYLE

    text = Text(no_wrap=True, overflow="ellipsis")
    # not bold: a bold glyph is wider than its cell in some fonts, and the
    # next cell's background would hide the mark's last letter
    glow = " reverse" if lit else ""
    if mark.waits_on:
        text.append("  ")
        on = ", ".join(f"{name}[{pid}]" for pid, name in mark.waits_on)
        text.append(f"⇢ waits on {on}", "yellow" + glow)
    for kind in mark.kinds:
        text.append("  ")
        text.append(f"⊥ {kind}", KIND_STYLE.get(kind, "red") + glow)
    if not mark.waits_on and not mark.kinds and lit:
        text.append("  ")
        text.append("⇠ in the chain", "yellow" + glow)
    return safe_line(text)
