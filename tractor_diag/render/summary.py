"""``summary.md`` of a dump-all bundle: the verdicts first (the same chains
``why`` prints), then where every process waits."""
from __future__ import annotations

import time

from ..model import Snapshot
from ..stackmodel import ProcStacks, StacksReport, Whereabouts
from ..whymodel import Diagnosis
from . import clip
from .why import chain_evidence, chain_hints, chain_sentence, elsewhere_text, hint_command


def _name(p: ProcStacks) -> str:
    return p.shown_actor if p.actor else clip(p.title, 50)


def _md(text: str) -> str:
    from ..safetext import escape

    return escape(text).replace("|", "\\|").replace("`", "'")


def render_summary(report: StacksReport, wheres: dict[int, Whereabouts], snap: Snapshot, meta,
                   diag: Diagnosis) -> str:
    """``wheres``: each process's whereabouts by pid
    (`diagnosis.where.whereabouts_of`), quoted in the table of processes."""
    from ..safetext import escaped

    report, snap, meta = escaped(report), escaped(snap), escaped(meta)
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(meta.started))
    title = f"Hung-dump summary: {meta.label}" if meta.label else "Hung-dump summary"
    roots = ", ".join(f"{r} ({_md(_name(p))})" for r in snap.roots
                      for p in report.procs if p.pid == r) or "none"
    stuck = {v.pid for v in diag.verdicts if v.kind not in ("stale-socket", "ignores-signals")}
    lines = [
        f"# {_md(title)}", "",
        f"Taken {taken} on {meta.host}; roots: {roots}; {len(report.procs)} processes, "
        f"{len(stuck)} with a verdict.", "",
        "## Verdicts", "",
    ]
    if not diag.chains:
        lines.append("None: no process is stuck by kernel state, Python stacks or task trees. "
                     "See the table below for where each one waits.")
    for i, chain in enumerate(diag.chains, 1):
        lines.append(f"{i}. **{chain.cause.kind}**: {_md(chain.cause.text)}")
        sentence = chain_sentence(diag, chain)
        if len(chain.pids) > 1 and sentence != chain.cause.text:  # a bare cycle says it all
            lines.append(f"   - chain: {_md(sentence)}")
        for ev in chain_evidence(diag, chain):
            lines.append(f"   - evidence: {_md(ev)}")
        for hint in chain_hints(diag, chain, share=False):  # this is the bundle
            cmd, why = hint_command(hint)
            if cmd is None:
                lines.append(f"   - to do: {_md(why)}")
            else:
                lines.append(f"   - to do: `{_md(cmd)}`" + (f" ({_md(why)})" if why else ""))
    in_chains = {pid for ch in diag.chains for pid in ch.pids}
    for v in diag.verdicts:
        if v.kind == "stale-socket" or (v.kind in ("ignores-signals", "orphan", "port-holder")
                                        and v.pid not in in_chains):
            lines.append(f"- **{v.kind}**: {_md(v.text)}")
    if diag.stale_elsewhere:
        lines.append(f"- {_md(elsewhere_text(diag.stale_elsewhere))}")
    if diag.notes:
        lines += ["", "Not judged:", ""] + [f"- {_md(n)}" for n in diag.notes]
    lines += ["", "## All processes", "",
              "| pid | name | bucket/state | wchan | python (innermost user frame) | trio |",
              "|---|---|---|---|---|---|"]
    for p in report.procs:
        where = wheres[p.pid]  # escaped by `_md`
        lines.append(
            f"| {p.pid} | {'  ' * p.depth}{_md(_name(p))} | {p.bucket}/{p.state} | "
            f"{_md(p.kernel.wchan or '-')} | {_md(where.python)} | {_md(where.trio)} |"
        )
    empty = [p for p in report.procs if p.tasks.empty]
    if empty:
        lines += ["", "## Empty task dumps", "",
                  f"{len(empty)} process(es) answered with a stackscope dump that shows no "
                  f"task below trio's main nursery (pid {', '.join(str(p.pid) for p in empty)}): "
                  f"{_md(empty[0].tasks.reason or '')}."]
    noted = [p for p in report.procs if p.tasks.note]
    if noted:
        lines += ["", "## What asking for task trees may have changed", ""]
        lines += [f"- pid {p.pid}: {_md(p.tasks.note or '')}" for p in noted]
    if meta.missing:
        lines += ["", "## Not collected", ""]
        for m in meta.missing:
            who = f"pid {m.pid}: " if m.pid is not None else ""
            lines.append(f"- {who}{_md(m.what)}: {_md(m.why)}")
    lines += ["", "## Files", "", "- `tree.txt`, `tree.json`: the process tree",
              "- `why.json`: wait-for edges and verdicts, each with its evidence",
              "- `stacks.txt`, `stacks.json`, `stacks/<pid>.{txt,json}`: kernel side, "
              "Python stacks, task trees",
              "- `tasks/<pid>.txt`: each collected task-tree dump, whole",
              "- `bindspace.txt`, `bindspace.json`, `shm.json`: the UDS socket dir and "
              "/dev/shm, each entry classified by whether its owner lives",
              "- `meta.json`: versions, host, argv, timings, what is missing and why"]
    if meta.sampler_history:
        lines.append("- `history.json`: the sampler's recent snapshots and events")
    return "\n".join(lines) + "\n"
