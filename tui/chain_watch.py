"""The waits-on chains the dashboard draws, kept true: which chains of
which tree's last why are shown, when each tree was judged, and what makes
a chain go.

A chain goes when one of its processes is no longer the one judged
(checked every tick against the snapshot: `waits.gone_from`), and when a
new why of its tree no longer finds it. A tree with chains drawn is due
for a quiet new why every ``refresh`` seconds (a chain also ends when
nothing died: a sleep returns, a stopped process is continued); that why
is skipped while no process of its chains has run since they were judged
(`key_jobs.rejudge`), since then nothing it would read of them changed. The app
only feeds this object (snapshots, why results) and shows what it says:
the marks, and one events line per chain that went.
"""
from __future__ import annotations

import time
from typing import NamedTuple

from rich.text import Text

from tractor_diag.model import Snapshot

from .labels import stamp
from .waits import Judged, Mark, gone_from, marks_of

#: Seconds between quiet re-judgements of a tree whose chains are drawn: a
#: why pass runs py-spy on the whole tree, so not every tick (and not at
#: all while nothing in its chains ran).
WHY_REFRESH = 30.0


class Change(NamedTuple):
    """What a step did: the events lines to show, and whether the marks
    changed (the tree pane is given `ChainWatch.marks` again)."""

    notes: tuple[Text, ...] = ()
    redraw: bool = False


NOTHING = Change()


def _note(chain: Judged, why: str) -> Text:
    name = chain.names[chain.pids.index(chain.cause)]  # escaped already
    return Text(f"{stamp()} why: the chain down to {name} ({chain.cause}) no longer holds: {why}",
                "italic dim")


class ChainWatch:
    """The chains drawn, by the tree whose why found them."""

    def __init__(self, refresh: float = WHY_REFRESH) -> None:
        self.refresh = refresh
        self.chains: list[Judged] = []  # of the last why of each tree
        self.judged_when: dict[int, float] = {}  # tree pid -> monotonic time of its last why
        self.rejudging: set[int] = set()  # trees with a quiet why running
        # tree -> what its chains' processes looked like when judged
        # (`kstate.activity`), None when that cannot vouch for them
        self.evidence: dict[int, dict | None] = {}
        # tree -> start time of its root when judged: a refresh judges that
        # process's tree or none (`key_jobs.rejudge`)
        self.born: dict[int, float | None] = {}

    def __bool__(self) -> bool:
        return bool(self.chains)

    def marks(self) -> dict[int, Mark]:
        return marks_of(self.chains)

    def tree_of(self, pid: int | None) -> int | None:
        """The tree whose why drew a chain through ``pid``, if one did."""
        if pid is None:
            return None
        return next((c.tree for c in self.chains if pid in c.pids), None)

    def check(self, snap: Snapshot) -> Change:
        """Drop the chains one of whose processes is not the one judged any
        more (exited, or its pid reused). What is alive is not judged here:
        that takes py-spy (`due`)."""
        if not self.chains:
            return NOTHING
        kept, notes = [], []
        for chain in self.chains:
            gone = gone_from(chain, snap)
            if gone is None:
                kept.append(chain)
            else:
                notes.append(_note(chain, f"{gone} exited (w judges again)"))
        if not notes:
            return NOTHING
        self.chains = kept
        return Change(tuple(notes), True)

    def due(self, now: float | None = None) -> list[int]:
        """The trees with chains drawn whose last why is older than
        ``refresh`` and none running: the caller starts a quiet why of
        each (they count as running from now)."""
        now = time.monotonic() if now is None else now
        out = []
        for tree in sorted({c.tree for c in self.chains}):
            if tree in self.rejudging or now - self.judged_when.get(tree, now) < self.refresh:
                continue
            self.rejudging.add(tree)
            out.append(tree)
        return out

    def held(self, tree: int, now: float | None = None) -> None:
        """A quiet refresh found nothing of the tree's chains ran since its
        evidence was read: its chains stand, as good as judged now."""
        self.rejudging.discard(tree)
        self.judged_when[tree] = time.monotonic() if now is None else now

    def judged(self, tree: int, chains: list[Judged] | None, over: frozenset[int], *,
               quiet: bool, ok: bool, evidence: dict | None = None,
               born: float | None = None, now: float | None = None) -> Change:
        """A why of the tree at ``tree`` is done: ``chains`` (None when it
        failed) replace what an earlier why said of the processes ``over``;
        ``evidence``: what their processes looked like after it; ``born``:
        the start time of the root it judged. A quiet one's failure drops
        the tree's chains: unjudged, a chain is no claim."""
        self.held(tree, now)
        self.evidence[tree] = evidence if chains is not None else None
        if chains is not None:
            self.born[tree] = born
        notes: list[Text] = []
        redraw = False
        if chains is not None:
            old = [c for c in self.chains if over.intersection(c.pids)]
            self.chains = [c for c in self.chains if c not in old] + chains
            if quiet:
                held = {c.cause for c in chains}
                notes += [_note(c, "judged again") for c in old if c.cause not in held]
            redraw = True
        if quiet and not ok:
            notes += [_note(c, "it could not be judged again") for c in self.chains if c.tree == tree]
            self.chains = [c for c in self.chains if c.tree != tree]
            redraw = True
        return Change(tuple(notes), redraw)

    def root_gone(self, tree: int, reason: str) -> Change:
        """The root of ``tree`` is not the process judged any more
        (``reason``): its chains go, unjudged, and it is not judged again."""
        self.rejudging.discard(tree)
        self.evidence.pop(tree, None)
        self.born.pop(tree, None)
        gone = [c for c in self.chains if c.tree == tree]
        self.chains = [c for c in self.chains if c.tree != tree]
        notes = tuple(_note(c, f"the root of its tree ({tree}) {reason} (w judges again)")
                      for c in gone)
        return Change(notes, bool(gone))
