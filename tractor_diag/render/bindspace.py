"""``bindspace`` as text: the dir that was scanned, then one row per entry."""
from __future__ import annotations

import re

from ..filemodel import SOCK_STATUSES, BindspaceScan, SockEntry
from ..safetext import escaped
from . import Style, age

STATUS_STYLE = {
    "live-active": "green", "orphaned-alive": "yellow",
    "orphaned-dead": "red", "non-tractor": "dim",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def dir_line(result: BindspaceScan) -> str:
    how = {"default": "platformdirs.user_runtime_dir('tractor')",
           "name": "an app dir beside the default one",
           "path": "given path"}[result.source]
    line = f"bindspace {result.dir} ({how})"
    if result.resolved:
        line += f" -> {result.resolved}"
    return line


def _binder(e: SockEntry, st: Style) -> str:
    if e.kind == "registry":
        if e.holders:
            return "held by pid " + ", ".join(map(str, e.holders))
        return "listening" if e.listening else "-"
    if e.binder is None:
        return "-"
    return st.clip(e.binder, 40)


def render_bindspace(result: BindspaceScan, st: Style) -> str:
    result = escaped(result)
    lines = [dir_line(result)]
    lines += [f"  note: {n}" for n in result.notes]
    if not result.exists:
        return "\n".join(lines)
    if not result.entries:
        lines.append("empty: no socket files")
        return "\n".join(lines)
    rows = [["STATUS", "PID", "AGE", "FILE", "BINDER", "NOTE"]]
    for e in result.entries:
        rows.append([
            st(e.status, STATUS_STYLE[e.status]),
            str(e.pid) if e.pid is not None else "-",
            age(e.mtime),
            e.name,
            _binder(e, st),
            e.note,
        ])
    widths = [max(len(_ANSI.sub("", r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        cells = [c + " " * (w - len(_ANSI.sub("", c))) for c, w in zip(row, widths)]
        text = "  ".join([*cells, row[-1]]).rstrip()
        lines.append(st(text, "bold") if n == 0 else text)
    counts = result.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in SOCK_STATUSES if counts[s])
    lines.append(f"{len(result.entries)} entr{'ies' if len(result.entries) != 1 else 'y'}: {summary}")
    if counts["orphaned-dead"]:
        lines.append("remove the stale ones with: tractor-diag reap --uds-only"
                     + (f" --bindspace {result.dir}" if result.source != "default" else ""))
    return "\n".join(lines)
