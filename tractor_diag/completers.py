"""Tab completion for verb arguments: flags, processes, bindspace names.

Shell-neutral (the xontrib turns `Suggestion` into xonsh completions). It
runs on every TAB, so it stays cheap: one pass over ``/proc`` (stat and
cmdline only), one ``scandir`` of the runtime dir, the verb's own parser.
``None`` means "nothing special here": the shell's own completion (paths,
commands) takes over.
"""
from __future__ import annotations

import os
from typing import NamedTuple

# Interpreters whose interesting name is the script or module they run.
_INTERPRETERS = ("python", "pypy", "pytest", "bash", "sh", "node", "perl", "ruby")
_DESC_WIDTH = 100


class Suggestion(NamedTuple):
    value: str
    description: str = ""
    append_space: bool = True


def complete_args(parser, words: list[str], prefix: str) -> list[Suggestion] | None:
    """What may come next on a command line built for ``parser``.

    ``words`` are the arguments before the one being completed, ``prefix``
    is what is typed of it so far.
    """
    if "--" in words:
        return None  # a pattern starting with '-', or a command to launch
    if prefix.startswith("-"):
        return flags(parser)
    if words:
        action = _option_action(parser, words[-1])
        if action is not None and action.nargs != 0:
            # the value of an option (``--parent PID``, ``--bindspace NAME``)
            return _values(action, prefix)
    positional = _positional(parser)
    if positional is None:
        return flags(parser)
    return _values(positional, prefix)


def _values(action, prefix: str) -> list[Suggestion] | None:
    if action.choices:
        return [Suggestion(str(c), _one_line(action.help or "")) for c in action.choices]
    kind = _kind(action)
    if kind == "processes":
        return processes()
    if kind == "bindspace":
        if "/" in prefix or prefix.startswith((".", "~")):
            return None  # a path
        return bindspace_names()
    return None  # a free value (seconds, a path): the shell knows better


def split_watch_words(parser, words: list[str]) -> tuple[list[str], str | None, list[str]]:
    """``watch`` options, the command it runs, and that command's words."""
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        action = _option_action(parser, word)
        takes_value = action is not None and action.nargs != 0 and "=" not in word
        i += 2 if takes_value else 1
    if i >= len(words):
        return words[:i], None, []
    return words[:i], words[i], words[i + 1:]


def flags(parser) -> list[Suggestion]:
    out = []
    for action in parser._actions:  # argparse keeps no public list
        if action.help == "==SUPPRESS==":
            continue
        for flag in action.option_strings:
            out.append(Suggestion(flag, _one_line(action.help or "")))
    return out


def _option_action(parser, word: str):
    return parser._option_string_actions.get(word.split("=", 1)[0])


def _positional(parser):
    for action in parser._actions:
        if not action.option_strings:
            return action
    return None


def _kind(action) -> str | None:
    """Which values a positional takes, from how verbs name it."""
    metavar = str(action.metavar or "").lower()
    if action.dest == "targets" or "pid" in metavar or "pattern" in metavar:
        return "processes"
    if "bindspace" in action.dest or "name|dir" in metavar:
        return "bindspace"
    return None


def _one_line(text: str, width: int = _DESC_WIDTH) -> str:
    """A description: one line, control characters escaped (command lines
    and names come from other people's processes)."""
    from .render import clip
    from .safetext import escape

    return clip(escape(" ".join(text.split())), width)


# -- values ------------------------------------------------------------------

def processes() -> list[Suggestion]:
    """Every process by pid, and each command name once (a pattern).

    The description is the command line. Kernel threads (no command line)
    are left out: nobody diagnoses those with a tractor tool.
    """
    from .procfs import scan

    procs = scan(detail_actors=False)
    me = os.getpid()
    by_pid: list[Suggestion] = []
    names: dict[str, list] = {}
    for pid in sorted(procs):
        proc = procs[pid]
        if not proc.cmdline or pid == me:
            continue
        line = proc.command_line(short=True)
        name = command_name(proc)
        by_pid.append(Suggestion(str(pid), _one_line(f"{name}: {line}")))
        names.setdefault(name, []).append(line)
    by_name = [
        Suggestion(name, _one_line(lines[0] if len(lines) == 1 else f"{len(lines)} processes, e.g. {lines[0]}"))
        for name, lines in sorted(names.items())
        # a name with control characters cannot be typed: its pid is offered
        if name and not name.isdigit() and name.isprintable()
    ]
    return by_name + by_pid


def command_name(proc) -> str:
    """The name a user would type to match this process as a pattern:
    the actor name, the script or ``-m`` module of an interpreter, else the
    program's base name."""
    if proc.actor is not None and proc.actor.name:
        return proc.actor.name
    argv = proc.cmdline
    prog = os.path.basename(argv[0]) if argv else proc.comm
    if prog.startswith(_INTERPRETERS):
        rest = argv[1:]
        for i, arg in enumerate(rest):
            if arg == "-m" and i + 1 < len(rest):
                return rest[i + 1]
            if arg == "-c":
                break
            if not arg.startswith("-"):
                return os.path.basename(arg)
    return prog or proc.comm


def bindspace_names() -> list[Suggestion]:
    """The UDS bindspace dirs beside the default one (the verb takes a bare
    NAME for those), each with how many socket files it holds."""
    from .bindspace import APP, default_dir

    try:
        default, _notes = default_dir()
    except Exception:  # noqa: BLE001 - no runtime dir, no names
        return []
    base = os.path.dirname(default)
    out = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        entries = []
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            socks = sum(1 for e in os.scandir(entry.path) if e.name.endswith(".sock"))
        except OSError:
            continue
        if (socks or entry.name == APP) and entry.name.isprintable():
            # The count and the note first: a long runtime dir is what the
            # clip may cut, never what tells the dirs apart.
            default_note = " (the default)" if entry.name == APP else ""
            out.append(Suggestion(entry.name,
                                  _one_line(f"{socks} socket files{default_note}: {entry.path}")))
    if not any(s.value == APP for s in out):
        out.append(Suggestion(APP, _one_line(f"the default, not created yet: {default}")))
    return out
