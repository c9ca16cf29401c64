"""``reap`` as text: the plan, what was skipped and why, each pid's fate,
then the sweeps."""
from __future__ import annotations

from ..filemodel import Removal
from ..model import exit_status
from ..reapmodel import PidFate, ReapReport
from ..safetext import escaped
from . import Style
from .bindspace import dir_line

FATE_STYLE = {
    "planned": "cyan", "exited": "green", "killed": "yellow", "survived": "bright_red",
    "gone": "dim", "reused": "magenta", "skipped": "dim", "error": "bright_red",
}


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _scope(report: ReapReport) -> str:
    plan = report.plan
    assert plan is not None
    what = "processes" if plan.everything else "actors"
    if plan.mode == "parent":
        return f"{what} below pid {plan.parent}"
    if plan.mode == "subtree":
        return f"pid {plan.subtree} and the {what} below it"
    return f"orphaned actors of uid {plan.uid} and the {what} in their subtrees"


def _plan_lines(report: ReapReport, st: Style) -> list[str]:
    plan = report.plan
    assert plan is not None and report.outcome is not None
    lines = []
    n = _plural(len(plan.targets), "process", "processes")
    if not plan.targets:
        lines.append(f"nothing to reap ({_scope(report)})")
    elif report.dry_run:
        lines.append(st(f"would signal {n} ({_scope(report)}):", "bold"))
    else:
        lines.append(st(f"reaped {n} ({_scope(report)}); each one's fate:", "bold"))
    if plan.targets:
        fates = {f.pid: f for f in report.outcome.fates}
        for t in plan.targets:
            f = fates.get(t.pid)
            word = f.fate if f else "?"
            name = f"{t.actor} [actor]" if t.actor else st.clip(t.title, 50)
            extra = []
            if f and f.signals and not report.dry_run:
                extra.append("+".join(f.signals))
            if report.dry_run and t.state == "T":
                extra.append("stopped: SIGCONT will follow the SIGINT")
            if f and f.detail:
                extra.append(f.detail)
            tail = f"  ({'; '.join(extra)})" if extra else ""
            lines.append(f"  {st(f'{word:<8}', FATE_STYLE.get(word, ''))} {t.pid:>7}  "
                         f"{'  ' * t.depth}{name}{tail}")
    if plan.skipped:
        lines.append(f"left alone ({len(plan.skipped)}):")
        for s in plan.skipped:
            lines.append(f"  {s.pid:>7}  {st.clip(s.title, 50)}  ({s.reason})")
    return lines


def how_it_ended(f: PidFate) -> str:
    """A fate in a few words, with the exit status when it was seen."""
    if f.fate == "exited":
        if f.exit_code is not None and f.exit_code < 0:
            return f"exited on {exit_status(f.exit_code)}"
        if f.exit_code is not None:
            return f"exited with status {f.exit_code}"
        if f.signals:  # reaped by its parent before we saw how
            return f"exited after {f.signals[0]}"
        return "exited"
    if f.fate == "killed":
        return "killed by SIGKILL"
    return {"gone": "already gone", "reused": "pid reused: not signalled"}.get(f.fate, f.fate)


def fates_summary(fates: list[PidFate]) -> str:
    """"1 exited on SIGINT, 1 killed by SIGKILL": how each one ended, counted."""
    counts: dict[str, int] = {}
    for f in fates:
        phrase = how_it_ended(f)
        counts[phrase] = counts.get(phrase, 0) + 1
    return ", ".join(f"{n} {phrase}" for phrase, n in counts.items())


def _summary(report: ReapReport) -> str:
    out = report.outcome
    assert out is not None
    text = f"{fates_summary(out.fates)}; waited {out.waited:.1f}s of {report.grace:g}s grace; signals via pidfd"
    if out.escalated:
        text += "; SIGKILL was needed"
    return text


def _removals(title: str, removals: list[Removal], dry_run: bool, st: Style) -> list[str]:
    lines = []
    gone = [r for r in removals if r.removed]
    chosen = [r for r in removals if not r.removed and not r.reason.startswith("kept") and not r.error]
    kept = [r for r in removals if r.reason.startswith("kept")]
    failed = [r for r in removals if r.error]
    if dry_run:
        lines.append(f"{title}: would unlink {len(chosen)}")
        lines += [f"  {r.path}  ({r.reason})" for r in chosen]
    else:
        lines.append(f"{title}: unlinked {len(gone)}")
        lines += [f"  {r.path}  ({r.reason})" for r in gone]
    lines += [f"  kept {r.path}  ({r.reason.removeprefix('kept: ')})" for r in kept]
    lines += [st(f"  FAILED {r.path}: {r.error}", "bright_red") for r in failed]
    return lines


def render_reap(report: ReapReport, st: Style) -> str:
    report = escaped(report)
    lines: list[str] = []
    if report.dry_run:
        lines.append(st("dry run: nothing is signalled or unlinked", "cyan"))
    if report.plan is not None:
        lines += _plan_lines(report, st)
        if report.outcome is not None and report.plan.targets and not report.dry_run:
            lines.append(_summary(report))
    if report.appeared:
        lines.append(st(f"appeared while reaping, not signalled ({len(report.appeared)}); "
                        "run reap again:", "yellow"))
        lines += [f"  {t.pid:>7}  {t.actor or st.clip(t.title, 50)}" for t in report.appeared]
    if report.uds is not None:
        scan = report.uds.scan
        if not scan.exists:
            lines.append(f"uds: {dir_line(scan)}: does not exist, nothing to sweep")
        else:
            lines += _removals(f"uds: {dir_line(scan)}", report.uds.removals, report.dry_run, st)
    if report.shm is not None:
        sh = report.shm
        head = f"shm: {sh.scan.dir} (files of uid {sh.scan.uid})"
        lines += _removals(head, sh.removals, report.dry_run, st)
        for f in sh.scan.files:
            if f.status == "in-use":
                lines.append(f"  in use {sh.scan.dir.rstrip('/')}/{f.name}  ({f.note})")
            elif f.status == "unknown":
                lines.append(st(f"  kept (unknown) {sh.scan.dir.rstrip('/')}/{f.name}  ({f.note})",
                                "yellow"))
    for e in report.errors:
        lines.append(st(f"error: {e}", "bright_red"))
    return "\n".join(lines)
