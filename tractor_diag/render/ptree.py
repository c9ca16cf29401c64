"""``ptree`` as text: grouped by bucket (default) or as an indented tree."""
from __future__ import annotations

from ..model import BUCKETS, Entry, Snapshot, actor_children, exit_status
from ..sockmodel import PortQuery
from ..safetext import escaped
from . import BUCKET_STYLE, STATE_STYLE, Style, age, clip, human_bytes, terminal_columns


def actor_tag(proc) -> str:
    """``[actor:current]`` and the like: what the process is to tractor,
    by which backend when known, and ``likely`` when no marker names it."""
    actor = proc.actor
    if actor.role == "root":
        tag = "root actor"
    elif actor.role == "forkserver":
        tag = "mp_forkserver sidecar"
    elif actor.role == "booting":
        tag = f"booting fork of {actor.forked_from}"
    else:
        tag = f"actor:{actor.generation}"
        if actor.backend and actor.backend != "trio":
            tag += f" {actor.backend}"
    if actor.sure != "certain":
        tag += ", likely"
    if proc.hosted:
        tag += f", hosts {len(proc.hosted)}"
    return f"[{tag}]"


def _name(entry: Entry, st: Style) -> str:
    proc = entry.proc
    actor = proc.actor
    if actor is not None:
        cut = "…" if actor.name_truncated else ""
        # unnamed: its command line, cut on a terminal so the tag stays in
        # view (a pipe gets it whole, for grep)
        name = f"{actor.name}{cut}" if actor.name else st.clip(proc.command_line(short=True), 48)
        return f"{name} {actor_tag(proc)}"
    return proc.title


def _state(entry: Entry) -> str:
    if entry.state == "exited" and entry.proc.exit_code is not None:
        return f"exited:{exit_status(entry.proc.exit_code)}"
    return entry.state


def _cpu(entry: Entry) -> str:
    return "-" if entry.cpu_percent is None else f"{entry.cpu_percent:.0f}"


def _columns(entry: Entry, st: Style) -> list[str]:
    proc = entry.proc
    return [
        str(proc.pid),
        st(entry.bucket, BUCKET_STYLE[entry.bucket]),
        st(_state(entry), STATE_STYLE.get(entry.state, "")),
        _cpu(entry),
        human_bytes(proc.rss),
        age(proc.create_time),
        proc.wchan or "-",
    ]


def _header(snap: Snapshot) -> str:
    """Counts of the given trees only: processes outside them (strays of
    other runs) are counted apart, so "2 zombie" means two in *these* trees."""
    counts = {b: 0 for b in BUCKETS}
    inside = 0
    for e in snap.entries.values():
        if e.root is not None:
            counts[e.bucket] += 1
            inside += 1
    parts = ", ".join(f"{n} {b}" for b, n in counts.items() if b != "stray")
    outside = len(snap.entries) - inside
    roots = len(snap.roots)
    sample = (
        f"CPU over {snap.window:.2f}s" if snap.samples > 1
        else "states from one sample (--cpu for CPU rates and runaways)"
    )
    extra = f"; {outside} outside them (strays)" if outside else ""
    return (f"{roots} root{'s' if roots != 1 else ''}, {inside} processes ({parts}){extra}; "
            f"{sample}")


def _table(rows: list[list[str]], names: list[str], width: int, st: Style) -> list[str]:
    """Align the fixed columns; the name column takes the rest of the line."""
    if st.color:
        import functools
        import re

        visible = functools.partial(re.compile(r"\x1b\[[0-9;]*m").sub, "")
    else:
        visible = str  # no colour codes: what is there is what shows (1000 rows: ms)
    head = ["PID", "BUCKET", "STATE", "CPU%", "RSS", "AGE", "WCHAN"]
    all_rows = [head, *rows]
    widths = [max(len(visible(r[i])) for r in all_rows) for i in range(len(head))]
    if not st.wide:
        widths[6] = min(widths[6], 22)
    out = []
    for n, (row, name) in enumerate(zip(all_rows, ["NAME", *names])):
        cells = []
        for i, cell in enumerate(row):
            plain = visible(cell)
            if len(plain) > widths[i]:
                cell = plain = clip(plain, widths[i])
            cells.append(cell + " " * (widths[i] - len(plain)))
        line = "  ".join(cells)
        used = len(visible(line)) + 2
        text = "  ".join([line, st.clip(name, max(20, width - used))])
        out.append(st(text, "bold") if n == 0 else text)
    return out


def render_grouped(snap: Snapshot, st: Style, width: int | None = None) -> str:
    width = width or terminal_columns(120)
    snap = escaped(snap)
    lines = [_header(snap)]
    lines += _problems(snap)
    by_bucket: dict[str, list[Entry]] = {b: [] for b in BUCKETS}
    for entry in snap.ordered():
        by_bucket[entry.bucket].append(entry)
    for bucket in BUCKETS:
        group = by_bucket[bucket]
        if not group:
            continue
        lines.append("")
        lines.append(st(f"{bucket.upper()} ({len(group)})", BUCKET_STYLE[bucket], "bold"))
        rows = [_columns(e, st) for e in group]
        names = [_name(e, st) + _annotation(snap, e) for e in group]
        lines += ["  " + ln for ln in _table(rows, names, width - 2, st)]
    return "\n".join(lines)


def _annotation(snap: Snapshot, entry: Entry) -> str:
    """Say where an entry's parent sits when that is not obvious."""
    parent = snap.entries.get(entry.proc.ppid)
    notes = []
    if entry.root is None and entry.bucket != "stray":
        notes.append("outside the given roots")
    if entry.note:
        notes.append(entry.note)
    if parent is not None and parent.bucket != entry.bucket:
        notes.append(f"parent {parent.proc.pid} {_short(parent)} is {parent.bucket}")
    elif entry.proc.pid in snap.roots:
        notes.append("root")
    if entry.listens:
        notes.append(listens_text(entry.listens))
    return f"  ({'; '.join(notes)})" if notes else ""


def listens_text(addrs: list[str]) -> str:
    """``listens 127.0.0.1:1616, leaf@123.sock``: a Unix socket by its file
    name (the dir is the bindspace, and it would push the rest out of the
    column; ``--json`` has the whole path)."""
    short = [a.rsplit("/", 1)[-1] if a.startswith("/") else a for a in addrs]
    return "listens " + ", ".join(short)


def _short(entry: Entry) -> str:
    proc = entry.proc
    if proc.actor is not None:
        return proc.actor.name
    return clip(proc.title, 30)


def render_tree(snap: Snapshot, st: Style, width: int | None = None,
                strays: bool = True) -> str:
    """The trees under their roots; the strays (actors of other runs outside
    every root) drawn too, or with ``strays=False`` counted in one line."""
    width = width or terminal_columns(120)
    snap = escaped(snap)
    lines = [_header(snap)]
    lines += _problems(snap)
    sections = [(f"root {r}", [r]) for r in snap.roots]
    if snap.strays and strays:
        sections.append(("strays (outside every given root)", snap.strays))
    for title, tops in sections:
        lines.append("")
        lines.append(st(title, "bold"))
        for top in tops:
            _tree_lines(snap, top, "", True, lines, st, width, is_top=True)
    if snap.strays and not strays:
        n = sum(1 for e in snap.entries.values() if e.root is None)
        lines.append("")
        lines.append(st(f"+ {n} stray process{'es' if n != 1 else ''} outside the given roots "
                        "(actors of other runs): --strays shows them", "dim"))
    return "\n".join(lines)


def _tree_lines(snap: Snapshot, pid: int, prefix: str, last: bool,
                lines: list[str], st: Style, width: int, is_top: bool = False) -> None:
    entry = snap.entries.get(pid)
    if entry is None:
        return
    branch = "" if is_top else ("└─ " if last else "├─ ")
    proc = entry.proc
    badge = st(entry.bucket, BUCKET_STYLE[entry.bucket])
    state = st(_state(entry), STATE_STYLE.get(entry.state, ""))
    extra = []
    if entry.cpu_percent is not None:
        extra.append(f"cpu {entry.cpu_percent:.0f}%")
    if proc.wchan:
        extra.append(proc.wchan)
    if entry.note:
        extra.append(entry.note)
    if entry.listens:
        extra.append(listens_text(entry.listens))
    tail = f"  ({', '.join(extra)})" if extra else ""
    text = f"{prefix}{branch}{proc.pid} {badge} {state} {_name(entry, st)}"
    lines.append(st.clip(text + tail, width + (len(text) - len(_plain(text)))))
    kids = [c for c in entry.children if c in snap.entries]
    child_prefix = prefix + ("" if is_top else ("   " if last else "│  "))
    for i, child in enumerate(kids):
        _tree_lines(snap, child, child_prefix, i == len(kids) - 1, lines, st, width)


def render_actor_tree(snap: Snapshot, st: Style, width: int | None = None) -> str:
    """Actors only, each under the actor that spawned it (`Entry.actor_parent`),
    which for ``mp_forkserver`` is not its OS parent; actors hosted inside a
    process (sub-interpreters) are listed under their host."""
    width = width or terminal_columns(120)
    snap = escaped(snap)
    lines = [_header(snap)]
    lines += _problems(snap)
    kids = actor_children(snap)
    tops = kids.get(None, [])
    if not tops:
        lines.append("no actors")

    def walk(pid: int, prefix: str, last: bool, top: bool) -> None:
        entry = snap.entries[pid]
        branch = "" if top else ("└─ " if last else "├─ ")
        badge = st(entry.bucket, BUCKET_STYLE[entry.bucket])
        state = st(_state(entry), STATE_STYLE.get(entry.state, ""))
        text = f"{prefix}{branch}{pid} {badge} {state} {_name(entry, st)}"
        lines.append(st.clip(text, width + (len(text) - len(_plain(text)))))
        below = prefix + ("" if top else ("   " if last else "│  "))
        hosted = entry.proc.hosted
        children = kids.get(pid, [])
        for i, h in enumerate(hosted):
            end = i == len(hosted) - 1 and not children
            what = h.name or h.thread or "?"
            lines.append(f"{below}{'└─ ' if end else '├─ '}{what} [hosted in {pid}]")
        for i, child in enumerate(children):
            walk(child, below, i == len(children) - 1, False)

    for top in tops:
        lines.append("")
        walk(top, "", True, True)
    return "\n".join(lines)


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _problems(snap: Snapshot) -> list[str]:
    out = []
    if snap.missing_roots:
        out.append("no such process: " + ", ".join(map(str, snap.missing_roots)))
    if snap.unmatched_patterns:
        out.append("matched nothing: " + ", ".join(repr(p) for p in snap.unmatched_patterns))
    return out


def render_port(query: PortQuery, st: Style, width: int | None = None) -> str:
    """One line per process listening on the address asked about."""
    width = width or terminal_columns(120)
    query = escaped(query)
    lines = []
    for h in query.holders:
        where = f"{h.listener.kind} {h.listener.addr}"
        if h.listener.pending:
            where += f" ({h.listener.pending} waiting to be accepted)"
        name = h.title or "(exited)"
        if h.actor:
            name += " [actor]"
        head = f"{st(str(h.pid), 'bold')}  {where}  "
        lines.append(head + st.clip(name, max(20, width - len(_plain(head)))))
    return "\n".join(lines)
