"""The tree pane: one node per process, grouped under each root.

The tree is reconciled with every snapshot by key (the pid, or a group
name): labels are updated in place, new processes are inserted where they
belong, gone ones removed. Nothing is ever cleared, so the user's cursor and
collapsed/expanded state survive every refresh.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

from rich.cells import cell_len
from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tractor_diag.model import Entry, Snapshot
from tractor_diag.render import human_bytes

from . import no_reflow
from .labels import ProcLabel, coarse_age, coarse_age_until, group_label, proc_label
from .unchanged import same_proc, same_row
from .waits import Mark, mark_text

GROUPS = ("orphans", "strays")
Key = int | str  # a pid, or "group:<name>"


class Row(NamedTuple):
    key: Key
    parent: Key | None  # None: top level
    label: Text
    has_children: bool


def _matches(entry: Entry, needle: str) -> bool:
    proc = entry.proc
    hay = [str(proc.pid), proc.comm, entry.bucket, entry.state, *proc.cmdline]
    if proc.actor is not None:
        hay.append(proc.actor.name)
    return any(needle in h.lower() for h in hay)


# What a label shows, by pid (or group key): while it is the same, the
# label (the same object) is too.
LabelMemo = dict[Key, tuple[tuple, Text]]


def _label_key(entry: Entry, now: float) -> tuple:
    proc = entry.proc
    actor = proc.actor
    cpu = entry.cpu_percent
    return (actor.name if actor is not None else None,
            actor.name_truncated if actor is not None else False,
            proc.cmdline, proc.comm, proc.create_time, entry.bucket, entry.state,
            proc.exit_code, None if cpu is None else round(cpu), human_bytes(proc.rss),
            coarse_age(now - proc.create_time), proc.wchan)


_CPU = 8  # where the CPU figure sits in a label key


def _cpu_close(shown: int | None, cpu: float | None) -> bool:
    """A label showing ``shown`` % still tells ``cpu`` truly enough to stay:
    the same side of idle (0%), and within 2 points or a tenth of it. A
    busy actor's CPU jitters by a point or two every tick: redrawing its
    row for that is most of what a steady tree costs to show."""
    if shown is None or cpu is None:
        return shown is None and cpu is None
    new = round(cpu)
    if (shown == 0) != (new == 0):
        return False
    return abs(new - shown) < max(2, shown / 10)


def _memo_label(memo: LabelMemo | None, entry: Entry, now: float) -> Text:
    if memo is None:
        return proc_label(entry, now)
    key = _label_key(entry, now)
    had = memo.get(entry.proc.pid)
    if had is not None:
        old = had[0]
        if old == key:
            return had[1]
        # only the CPU figure moved, a little: keep the label, and its key
        # (so a slow drift still shows once it adds up)
        if (old[:_CPU] == key[:_CPU] and old[_CPU + 1:] == key[_CPU + 1:]
                and _cpu_close(old[_CPU], entry.cpu_percent)):
            return had[1]
    label = proc_label(entry, now)
    memo[entry.proc.pid] = (key, label)
    return label


def _actor_tree(snap: Snapshot) -> dict[int, list[int]]:
    """Children in the actor tree, by pid: the library's map, with each
    actor that tops an actor tree hung under the group top that holds it."""
    from tractor_diag.trees import actor_children

    kids = actor_children(snap)
    tops = {*snap.roots, *snap.strays}
    out: dict[int, list[int]] = {k: v for k, v in kids.items() if k is not None}
    for pid in kids.get(None, ()):
        if pid in tops:
            continue
        seen = {pid}
        up = snap.entries[pid].proc.ppid
        while up in snap.entries and up not in tops and up not in seen:
            seen.add(up)
            up = snap.entries[up].proc.ppid
        if up in tops:
            out[up] = [*out.get(up, ()), pid]
    return out


def layout(snap: Snapshot, text: str = "", actors_only: bool = False,
           now: float | None = None, labels: LabelMemo | None = None) -> list[Row]:
    """The rows the tree should show, parents before children, in order.

    ``text`` keeps processes matching it and their ancestors (for context);
    ``actors_only`` draws the actor tree instead of the OS tree: actors
    only, each under the actor that spawned it (`trees.actor_children`,
    as ``ptree --actors``; with a fork server that is not its OS parent),
    below the tops of each group, which are shown whatever they are (a
    root actor is an ordinary process). ``labels``: labels built before,
    reused (the same object) while what they show is unchanged.
    """
    needle = text.strip().lower()
    now = snap.taken_at if now is None else now
    entries = snap.entries
    keep_memo: dict[int, bool] = {}
    logical = _actor_tree(snap) if actors_only else None

    def children(pid: int) -> list[int]:
        if logical is None:
            return entries[pid].children
        return logical.get(pid, [])

    def keep(pid: int, seen: frozenset = frozenset()) -> bool:
        if pid in keep_memo:
            return keep_memo[pid]
        entry = entries[pid]
        ok = not needle or _matches(entry, needle)
        if not ok:
            ok = any(keep(c, seen | {pid}) for c in children(pid)
                     if c in entries and c not in seen)
        keep_memo[pid] = ok
        return ok

    rows: list[tuple[Key, Key | None, Text | None]] = []
    placed: set[int] = set()

    def walk(pid: int, parent: Key | None) -> None:
        if pid in placed or pid not in entries or not keep(pid):
            return
        placed.add(pid)
        rows.append((pid, parent, _memo_label(labels, entries[pid], now)))
        for child in children(pid):
            walk(child, pid)

    for root in snap.roots:
        walk(root, None)
    for group in GROUPS:
        key = f"group:{group}"
        start = len(rows)
        rows.append((key, None, None))
        tops = 0
        for pid in snap.strays:
            entry = entries.get(pid)
            if entry is None:
                continue
            in_group = "orphans" if entry.bucket == "orphan" else "strays"
            if in_group == group:
                before = len(rows)
                walk(pid, key)
                tops += len(rows) > before
        if tops:
            had = labels.get(key) if labels is not None else None
            if had is None or had[0] != (tops,):
                had = ((tops,), group_label(group, tops))
                if labels is not None:
                    labels[key] = had
            rows[start] = (key, None, had[1])
        else:
            del rows[start]

    parents = {parent for _, parent, _ in rows}
    return [Row(key, parent, label, key in parents) for key, parent, label in rows]


class ProcTree(Tree):
    """A live, reconciled view of the watched process trees."""

    # a row come or gone repaints the tree, not the screen (see `no_reflow`);
    # nor the tree by itself: what changed the lines repaints those it must
    virtual_size = no_reflow.virtual_size(repaint=False)
    watch_virtual_size = no_reflow.watch_virtual_size

    class Selected(Message):
        """The cursor went to a row: ``pid`` is its process, or None on a
        group row. Posted for every move (the user's, or a reconcile's), so
        the app follows the selection without knowing the tree's nodes."""

        def __init__(self, pid: int | None) -> None:
            super().__init__()
            self.pid = pid

    def __init__(self, **kwargs) -> None:
        # Waits-on marks (`waits`): drawn after the label at render time, so
        # that a mark never rebuilds a label nor defeats their memo. (Set
        # first: the base class moves the cursor while it initialises.)
        self._marks: dict[int, Mark] = {}
        self._lit: frozenset[int] = frozenset()  # the chains of the selected row
        self._batching = False  # inside a reconcile: invalidations wait for its end
        self._invalidated = False
        super().__init__("processes", **kwargs)
        self.show_root = False
        self.guide_depth = 3
        self._by_key: dict[Key, TreeNode] = {}
        self._snapshot: Snapshot | None = None
        self.filter_text = ""
        self.actors_only = False
        self._labels: LabelMemo = {}
        self._shown: dict[Key, Text] = {}  # the label each node was given
        self._last_rows: list[Row] = []  # shown last (their labels kept alive)
        self._row_at: dict[Key, int] = {}  # each shown key's place in them
        self._laid: Snapshot | None = None  # what the rows show
        self._laid_view: tuple = ()  # the filter and mode they were laid out with
        # (when its coarse age may read otherwise, pid) of each shown row, a heap
        self._ages_due: list[tuple[float, int]] = []

    def _invalidate(self) -> None:
        # Every add and remove of a node asks for this, which drops every
        # drawn line: a reconcile asks once, at its end (`_settle`).
        if self._batching:
            self._invalidated = True
            return
        self._drop_lines()

    def _drop_lines(self) -> None:
        # Tree's own invalidation, but for the screen layout it asks for
        # (see `no_reflow`): the lines are built again at idle or when
        # drawn, which sets the virtual size and with it the scrollbars.
        self._clear_line_cache()
        self._updates += 1
        self.root._reset()
        self.refresh()

    def _shown_lines(self) -> list[tuple] | None:
        """What decides how each line on screen is drawn: its node and
        those above it, whether each is the last of its siblings, expanded,
        expandable (the guides and the arrow), and the tree's width. Nodes
        themselves, not ids, so that a removed node's address cannot pass
        for a new one's."""
        if not self.size.height:
            return None
        y = self.scroll_offset.y
        lines = self._tree_lines  # (re)built first: it sets the virtual width
        # a line is padded to the virtual width: a wider tree draws them anew
        return [(self.virtual_size.width,)] + [
            tuple((n, n.is_last, n._expanded, n._allow_expand) for n in line.path)
            for line in lines[y:y + self.size.height]]

    def _settle(self, before: list[tuple] | None) -> None:
        """End of a reconcile that added or removed nodes. When every change
        lies outside the lines on screen (a stray come or gone below them),
        their drawn strips still hold: only the line list and the virtual
        size are rebuilt, and nothing on screen is repainted (the pane's
        every line composed again each time a stray came or went was most
        of what the tree cost to show on a box whose strays come and go).
        A label set meanwhile bumps its own node and repaints its own line."""
        self._tree_lines_cached = None
        if before is not None and self._shown_lines() == before[1:]:
            # Every new node bumped the tree's generation (part of each
            # drawn line's key): take the one they were drawn under back,
            # and drop the lines off screen, which may now show other nodes.
            self._updates = before[0]
            top = self.scroll_offset.y
            for key in [k for k in self._line_cache.keys()
                        if not top <= k[0] < top + self.size.height]:
                self._line_cache.discard(key)
            # (the line list was rebuilt above: the virtual size and the
            # scrollbars are set, and the tree does not repaint for them)
        else:
            self._drop_lines()

    def process_label(self, label) -> Text:
        # Our labels are single-line Text already (`safe_line`): skip the
        # split the base class makes of every label it is given.
        if isinstance(label, Text) and "\n" not in label.plain:
            return label
        return super().process_label(label)

    def get_label_width(self, node: TreeNode) -> int:
        # Each rebuild of the line list (a row come or gone: a stray of the
        # box) measures every row; the base class renders each one whole for
        # that, which was most of such a tick's cost. A row is as wide as
        # its arrow, its label and its mark (`render_label`).
        width = node._label.cell_len
        if node._allow_expand:
            width += cell_len(self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE)
        if isinstance(node.data, int) and node.data in self._marks:
            width += self.mark_of(node.data).cell_len
        return width

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        # lets the base class's message bubble on as well
        self.post_message(self.Selected(self.selected_pid))

    def render_label(self, node: TreeNode, base_style, style) -> Text:
        text = super().render_label(node, base_style, style)
        mark = self._marks.get(node.data) if isinstance(node.data, int) else None
        if mark is None:
            return text
        # right after the pid (a row's end is cut off in a narrow pane):
        # the label knows where that is; the base class put it last
        tag = mark_text(mark, lit=bool(mark.chains & self._lit))
        tag.stylize(style)
        label = node.label
        if not isinstance(label, ProcLabel):
            return text.append_text(tag)
        head, tail = text.divide([len(text) - len(label) + label.pid_end])
        return Text.assemble(head, tag, tail, no_wrap=True, overflow="ellipsis")

    def watch_cursor_line(self, previous_line: int, line: int) -> None:
        super().watch_cursor_line(previous_line, line)
        self._light()

    # -- public API ---------------------------------------------------------

    @property
    def selected_pid(self) -> int | None:
        node = self.cursor_node
        if node is None or not isinstance(node.data, int):
            return None
        return node.data

    @property
    def keys(self) -> list[Key]:
        """Keys of the shown nodes, in tree order (for tests and callers)."""
        out: list[Key] = []

        def walk(node: TreeNode) -> None:
            for child in node.children:
                out.append(child.data)
                walk(child)

        walk(self.root)
        return out

    def node_for(self, key: Key) -> TreeNode | None:
        return self._by_key.get(key)

    def show_snapshot(self, snap: Snapshot) -> None:
        self._snapshot = snap
        if not self._relabel_only(snap):
            self._reconcile()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._reconcile()

    def set_actors_only(self, on: bool) -> None:
        self.actors_only = on
        self._reconcile()

    @property
    def marks(self) -> dict[int, Mark]:
        return self._marks

    def mark_of(self, pid: int) -> Text | None:
        """The mark drawn after ``pid``'s label, None for none."""
        mark = self._marks.get(pid)
        return None if mark is None else mark_text(mark, lit=bool(mark.chains & self._lit))

    def set_marks(self, marks: dict[int, Mark]) -> None:
        """Show these waits-on marks; only rows whose mark changed repaint."""
        if marks == self._marks:
            return
        changed = {pid for pid in {*marks, *self._marks}
                   if marks.get(pid) != self._marks.get(pid)}
        self._marks = marks
        self._repaint(changed)
        self._light()

    def _light(self) -> None:
        # The chains of the selected row are lit: repaint the rows that
        # gain or lose the light.
        pid = self.selected_pid
        mark = self._marks.get(pid) if pid is not None else None
        lit = mark.chains if mark is not None else frozenset()
        if lit == self._lit:
            return
        was, self._lit = self._lit, lit
        self._repaint({p for p, m in self._marks.items() if bool(m.chains & was) != bool(m.chains & lit)})

    def _repaint(self, pids) -> None:
        """Repaint the rows of ``pids`` (their marks changed), and fit the
        scroll range to the widest row again: a mark lengthens its row."""
        nodes = [node for node in map(self._by_key.get, pids) if node is not None]
        for node in nodes:
            node.refresh()
        if nodes:
            self._fit_width()

    def _fit_width(self) -> None:
        # as the base class measures it when it builds its lines (rare
        # here: only a mark change, never a tick, measures every row)
        lines = self._tree_lines
        if not lines:
            return
        depth, root = self.guide_depth, self.show_root
        width = max(self.get_label_width(line.node) + line._get_guide_width(depth, root)
                    for line in lines)
        if width != self.virtual_size.width:
            self._line_cache.clear()  # every line is padded to the tree's width
            self.virtual_size = Size(width, len(lines))
            self.refresh()

    def select_pid(self, pid: int) -> bool:
        node = self._by_key.get(pid)
        if node is None:
            return False
        _ = self.last_line  # make sure line numbers are current
        self.move_cursor(node)
        return True

    # -- reconciliation -----------------------------------------------------

    def _forget(self, node: TreeNode) -> None:
        self._by_key.pop(node.data, None)
        self._shown.pop(node.data, None)
        for child in node.children:
            self._forget(child)

    def _drop(self, node: TreeNode) -> None:
        self._forget(node)
        node.remove()

    def _relabel_only(self, snap: Snapshot) -> bool:
        """A tick that moves no row (the same processes, in the same places,
        under the same filter): give the rows whose process reads otherwise,
        or whose age is due to, a new label, touch nothing else, and say True. On a tree where
        nothing happens that is a compare per process, no layout (which
        builds every row's label key, the most of a tick's cost here)."""
        old = self._laid
        view = (self.filter_text, self.actors_only)
        if (old is None or view != self._laid_view
                or snap.roots != old.roots or snap.strays != old.strays
                or snap.entries.keys() != old.entries.keys()):
            return False
        # with a filter, or the actor tree, what a process reads may move it
        picky = bool(self.filter_text.strip()) or self.actors_only
        labels, olds = self._labels, old.entries
        stale: list[Entry] = []
        for pid, entry in snap.entries.items():
            was = olds[pid]
            if same_row(entry, was):
                continue
            if (entry.children != was.children or entry.bucket != was.bucket
                    or entry.actor_parent != was.actor_parent or entry.root != was.root):
                return False
            same = same_proc(entry.proc, was.proc)
            if picky and not (same and entry.state == was.state):
                return False
            had = labels.get(pid)
            if (not same or entry.state != was.state
                    or (had is not None and not _cpu_close(had[0][_CPU], entry.cpu_percent))):
                stale.append(entry)
        # rows whose age is due to read otherwise (each at its own second:
        # processes started apart cross their minutes apart)
        due, now = self._ages_due, snap.taken_at
        while due and due[0][0] <= now:
            pid = heapq.heappop(due)[1]
            entry = snap.entries[pid]
            stale.append(entry)
            heapq.heappush(due, (coarse_age_until(entry.proc.create_time, now), pid))
        self._laid = snap
        if stale:
            _ = self._tree_lines  # each node's line number, current
        for entry in stale:
            pid = entry.proc.pid
            node, at = self._by_key.get(pid), self._row_at.get(pid)
            if node is None or at is None:
                continue  # not shown
            label = _memo_label(labels, entry, snap.taken_at)
            if self._shown.get(pid) is not label:
                self._shown[pid] = label
                self._last_rows[at] = self._last_rows[at]._replace(label=label)
                if node.label != label:
                    self._relabel(node, label)
        return True

    def _relabel(self, node: TreeNode, label: Text) -> None:
        """Give a row a new label and repaint its line now. The base class's
        `set_label` repaints through a callback message per row, and every
        row of a tree started at once relabels at one tick when their ages
        cross a minute. (Only the row's own line shows its label.)"""
        node._label = self.process_label(label)
        node.refresh()

    def _reconcile(self) -> None:
        snap = self._snapshot
        if snap is None:
            return
        rows = layout(snap, self.filter_text, self.actors_only, labels=self._labels)
        if len(self._labels) > 2 * len(snap.entries) + 64:
            self._labels = {k: v for k, v in self._labels.items()
                            if k in snap.entries or isinstance(k, str)}
        self._laid, self._laid_view = snap, (self.filter_text, self.actors_only)
        self._ages_due = [(coarse_age_until(snap.entries[row.key].proc.create_time, snap.taken_at),
                           row.key) for row in rows if isinstance(row.key, int)]
        heapq.heapify(self._ages_due)
        # Nothing changed (the same rows, the same label objects): nothing to do.
        last = self._last_rows
        if (len(rows) == len(last) == len(self._by_key)
                and all(a.key == b.key and a.parent == b.parent and a.label is b.label
                        and a.has_children == b.has_children for a, b in zip(rows, last))):
            return
        self._last_rows = rows
        self._row_at = {row.key: i for i, row in enumerate(rows)}
        cursor = self.cursor_node
        cursor_key = cursor.data if cursor is not None and cursor is not self.root else None
        cursor_parent = None
        if cursor is not None and cursor.parent is not None:
            cursor_parent = cursor.parent.data
        had_nodes = bool(self._by_key)
        shown = self._shown_lines() if had_nodes else None
        before = None if shown is None else [self._updates, *shown]
        self._batching, self._invalidated = True, False
        try:
            self._apply(rows)
        finally:
            self._batching = False
        if self._invalidated:
            self._settle(before)

        target = None
        if cursor_key is not None:
            target = self._by_key.get(cursor_key) or self._by_key.get(cursor_parent)
        elif not had_nodes and rows:
            target = self._by_key.get(rows[0].key)
        if target is not None:
            _ = self.last_line  # rebuild line numbers before reading them
            if target.line != self.cursor_line:
                self.move_cursor(target)

    def _apply(self, rows: list[Row]) -> None:
        """Make the nodes what ``rows`` says, touching only what differs."""
        wanted = {row.key: row for row in rows}
        for key, node in list(self._by_key.items()):
            if key not in self._by_key:
                continue  # went with an ancestor already
            row = wanted.get(key)
            parent_key = node.parent.data if node.parent is not None else None
            if row is None or row.parent != parent_key:
                self._drop(node)

        placed: dict[Key | None, int] = {}
        for row in rows:
            parent = self.root if row.parent is None else self._by_key[row.parent]
            index = placed.get(row.parent, 0)
            placed[row.parent] = index + 1
            node = self._by_key.get(row.key)
            siblings = parent.children
            if node is not None and (index >= len(siblings) or siblings[index] is not node):
                self._drop(node)  # out of order (pid reuse, regrouping)
                node = None
            if node is None:
                before = index if index < len(parent.children) else None
                node = parent.add(row.label, data=row.key, before=before,
                                  expand=True, allow_expand=row.has_children)
                self._by_key[row.key] = node
                self._shown[row.key] = row.label
                continue
            if self._shown.get(row.key) is not row.label:
                self._shown[row.key] = row.label
                if node.label != row.label:
                    node.set_label(row.label)
            if node.allow_expand != row.has_children:
                node.allow_expand = row.has_children
