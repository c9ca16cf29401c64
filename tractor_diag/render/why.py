"""``why`` as text: each chain root cause first, then the chain as one
sentence, the evidence, and what to do.

::

    1. leaf_0_0 (4242) is blocked in time.sleep at app.py:23 for 41 s — a sync
       call that a cancel cannot interrupt
       chain: root waits for child spawner_0 (trio Process.wait); spawner_0 ...
       evidence:
         kernel: wchan hrtimer_nanosleep, state S
       what to do:
         tractor-diag stacks 4242
"""
from __future__ import annotations

from ..safetext import escape
from ..whymodel import Chain, Diagnosis, Verdict
from . import Style

KIND_STYLE = {
    "sync-blocked": "yellow", "runaway": "magenta", "blocked": "yellow", "stopped": "cyan",
    "traced": "cyan", "zombie": "bright_red", "orphan": "red", "boot-hang": "red",
    "lost-cancel": "red", "ignores-signals": "yellow", "stale-socket": "yellow",
    "cycle": "red", "loop-held": "magenta", "cancel-outlived": "yellow", "port-holder": "red",
}


# Properties rather than causes: listed apart unless a chain ends in them.
ATTRIBUTES = ("ignores-signals", "orphan", "stale-socket", "port-holder")


def _edge(diag: Diagnosis, waiter: int, on: int):
    return next((e for e in diag.edges if e.waiter == waiter and e.on == on), None)


def _span(chain: Chain) -> list[int]:
    """The chain's pids down to its cause when it is a cycle (the cycle's
    own sentence names its members and their waits), else all of them."""
    if chain.cause.kind == "cycle" and chain.cause.pid in chain.pids:
        return chain.pids[:chain.pids.index(chain.cause.pid) + 1]
    return chain.pids


def chain_sentence(diag: Diagnosis, chain: Chain) -> str:
    """``root waits for child a (point); a (pid) is blocked in ...; a waits
    for child b (os.waitpid); b (pid) ignores SIGINT ...``: top to bottom.
    A cycle: its waiters, then the cycle's sentence."""
    parts = []
    pids = _span(chain)
    last = len(pids) - 1
    for i, pid in enumerate(pids):
        if chain.cause.kind == "cycle" and pid == chain.cause.pid:
            parts.append(chain.cause.text)
            break
        for v in diag.verdicts_of(pid):
            if v.kind not in ATTRIBUTES or (i == last and pid != chain.cause.pid):
                parts.append(v.text)
        if i < last:
            nxt = pids[i + 1]
            e = _edge(diag, pid, nxt)
            if e is not None:
                parts.append(f"{diag.names.get(pid, pid)} waits for {e.relation} "
                             f"{diag.names.get(nxt, nxt)} ({e.point})")
    return "; ".join(parts)


def chain_verdicts(diag: Diagnosis, chain: Chain) -> list[Verdict]:
    """Every verdict on the chain's processes, the cause first."""
    out = [chain.cause]
    for pid in reversed(chain.pids):
        out += [v for v in diag.verdicts_of(pid) if v is not chain.cause]
    return out


def chain_evidence(diag: Diagnosis, chain: Chain) -> list[str]:
    lines = []
    for v in chain_verdicts(diag, chain):
        for ev in v.evidence:
            lines.append(f"{v.name} ({v.pid}) {v.kind}: {ev.source}: {ev.text}")
    pids = _span(chain)  # a cycle's own waits are its verdict's evidence
    for a, b in zip(pids, pids[1:]):
        e = _edge(diag, a, b)
        for ev in (e.evidence if e else ()):
            lines.append(f"{diag.names.get(a, a)} waits for {diag.names.get(b, b)}: "
                         f"{ev.source}: {ev.text}")
    return lines


def hint_command(hint: str) -> tuple[str | None, str]:
    """(the command, the comment after its ``  # ``) of a hint, or (None,
    the hint) for advice that is no command. A command hint stays one line
    a shell takes as it is, its comment included."""
    cmd, _, why = hint.partition("  # ")
    if cmd.startswith(("tractor-diag ", "kill ")):
        return cmd, why
    return None, hint


def chain_hints(diag: Diagnosis, chain: Chain, *, share: bool = True) -> list[str]:
    """What to run next, each command once (the one with a comment kept).
    ``share``: add the dump-all of the chain's top (not inside a bundle)."""
    seen: list[str] = []
    for v in chain_verdicts(diag, chain):
        for h in v.hints:
            cmd = hint_command(h)[0]
            same = next((i for i, s in enumerate(seen)
                         if s == h or (cmd is not None and hint_command(s)[0] == cmd)), None)
            if same is None:
                seen.append(h)
            elif len(h) > len(seen[same]):
                seen[same] = h
    if share and chain.pids[0] != chain.cause.pid and chain.cause.kind != "stale-socket":
        more = f"tractor-diag dump-all {chain.pids[0]}  # keep it all, to share"
        if more not in seen:
            seen.append(more)
    return seen


def elsewhere_text(n: int) -> str:
    """The one line for the stale socket files of other runs."""
    files = "file" if n == 1 else "files"
    return (f"{n} stale socket {files} of other runs in the bindspace dir "
            "(`tractor-diag bindspace` lists them)")


def render_why(diag: Diagnosis, st: Style) -> str:
    lines: list[str] = []
    if not diag.chains:
        n = len(diag.names)
        # nothing stuck (properties such as an ignored SIGINT follow under "also")
        lines.append(st(f"no verdict: none of the {n} process{'es' if n != 1 else ''} is stuck "
                        "by kernel state, Python stacks or task trees", "green"))
    for i, chain in enumerate(diag.chains, 1):
        cause = chain.cause
        head = f"{i}. [{cause.kind}] {cause.text}"
        lines.append(st(escape(head), "bold", KIND_STYLE.get(cause.kind, "")))
        sentence = chain_sentence(diag, chain)
        if len(chain.pids) > 1 and sentence != cause.text:  # a bare cycle says it all
            lines.append("   chain: " + escape(sentence))
        lines.append("   evidence:")
        lines += ["     " + escape(e) for e in chain_evidence(diag, chain)]
        hints = chain_hints(diag, chain)
        if hints:
            lines.append("   what to do:")
            lines += ["     " + escape(h) for h in hints]
    in_chains = {pid for ch in diag.chains for pid in ch.pids}
    also = [v for v in diag.verdicts if v.kind in ATTRIBUTES
            and not (v.kind != "stale-socket" and v.pid in in_chains)]
    if also or diag.stale_elsewhere:
        lines.append(st("also:", "bold"))
        for v in also:
            lines.append(st(escape(f"  - [{v.kind}] {v.text}"), KIND_STYLE.get(v.kind, "")))
        if diag.stale_elsewhere:
            lines.append(st(f"  - {elsewhere_text(diag.stale_elsewhere)}", "dim"))
    if diag.notes:
        lines.append(st("not judged:", "dim"))
        lines += [st("  - " + escape(n), "dim") for n in diag.notes]
    return "\n".join(lines)
