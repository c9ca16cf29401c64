"""tractor-diag in xonsh: ``acli.*`` aliases for every verb, with completions.

``acli.ptree``, ``acli.hung_dump`` (stacks), ``acli.bindspace_scan``,
``acli.dump_all``, ``acli.reap``, ``acli.watch`` and ``acli.dash`` take the
same flags as the ``tractor-diag`` verbs, return their exit codes, and write
to xonsh's stdout, so they pipe: ``acli.ptree pytest | grep zombie``.

xonsh loads this xontrib at every start (entry point), so loading imports
only the verb table: a verb's module and parser are imported the first time
its alias runs or completes, and nothing heavy (trio, textual, msgspec)
before a verb needs it.
"""
from __future__ import annotations

import contextlib
import importlib
import sys

__all__ = ()

# alias name -> the object we installed (unload removes only those still ours)
_installed: dict[str, object] = {}

# The dashboard and watch own the terminal: they run on the main thread and
# are never captured. Every other verb runs like any threadable alias.
_OWNS_TERMINAL = {"watch", "dash"}


def _load_xontrib_(xsh, **_kwargs) -> dict:
    from tractor_diag.commands import VERBS

    for verb, (module, name) in VERBS.items():
        if verb == "watch":
            alias: object = WatchAlias(name)
        else:
            alias = VerbAlias(verb, name, module)
        xsh.aliases[name] = alias
        _installed[name] = alias
    return {}


def _unload_xontrib_(xsh, **_kwargs) -> dict:
    aliases = xsh.aliases
    for name, alias in list(_installed.items()):
        try:
            if aliases[name] is alias:
                del aliases[name]
        except KeyError:
            pass
        _installed.pop(name, None)
    return {}


# -- the aliases -------------------------------------------------------------

class VerbAlias:
    """One ``tractor-diag`` verb as a xonsh callable alias."""

    def __init__(self, verb: str, name: str, module: str):
        self.verb = verb
        self.name = name
        self.module = module
        self.__xonsh_threadable__ = verb not in _OWNS_TERMINAL
        if verb in _OWNS_TERMINAL:
            self.__xonsh_capturable__ = False

    def __repr__(self) -> str:
        return f"<tractor-diag alias {self.name} ({self.verb})>"

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        # Read at TAB time (the completion menu shows it), not at load.
        try:
            mod = importlib.import_module(self.module)
        except Exception:  # noqa: BLE001 - a description is never worth a traceback
            return f"tractor-diag {self.verb}"
        return f"{mod.HELP} (tractor-diag {self.verb})"

    def parser(self, out=None):
        """A fresh parser: help goes to ``out`` so ``--help`` pipes too."""
        from tractor_diag.invoke import verb_parser

        parser, mod = verb_parser(self.verb, prog=self.name)
        if out is not None:
            cls = type(parser)
            parser.print_help = lambda file=None: cls.print_help(parser, out)  # type: ignore[method-assign]
            parser.print_usage = lambda file=None: cls.print_usage(parser, out)  # type: ignore[method-assign]
        return parser, mod

    def __call__(self, args=None, stdin=None, stdout=None, stderr=None, spec=None):
        out = stdout if stdout is not None else sys.stdout
        err = stderr if stderr is not None else sys.stderr
        if spec is not None and _shown_on_terminal(spec, out):
            out = _Terminal(out)
        return self.invoke(list(args or ()), out, err)

    def invoke(self, argv: list[str], out, err, catch_interrupt: bool = True) -> int:
        """Parse, run, map failures to one line on ``err`` and an exit code."""
        from tractor_diag.invoke import run_mapped

        def call():
            parser, mod = self.parser(out)
            return mod.run(parser.parse_args(argv), out)

        try:
            return run_mapped(call, err, self.name, catch_interrupt=catch_interrupt)
        finally:
            try:
                out.flush()
            except (OSError, ValueError):
                pass

    def check(self, argv: list[str], out) -> None:
        """Parse only: raises UsageError (or ParserExit for --help)."""
        parser, _ = self.parser(out)
        parser.parse_args(argv)

    def xonsh_complete(self, command, alias=None, **_kwargs):
        words, prefix = _words(command)
        return _complete_verb(self, words, prefix)


class WatchAlias:
    """Re-run a callable alias in the alternate screen, repainting without flicker (tractor-diag watch)"""

    __xonsh_threadable__ = False
    __xonsh_capturable__ = False

    def __init__(self, name: str):
        self.name = name
        self.verb = "watch"

    def __repr__(self) -> str:
        return f"<tractor-diag alias {self.name} (watch)>"

    def parser(self, out=None):
        import argparse

        from tractor_diag.commands.watch import add_interval
        from tractor_diag.invoke import Parser

        parser = Parser(
            prog=self.name,
            description=_WATCH_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_interval(parser)
        parser.add_argument("alias", metavar="ALIAS", help="a callable alias: acli.ptree, acli.hung_dump, your own, ...")
        parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the alias's arguments")
        if out is not None:
            cls = type(parser)
            parser.print_help = lambda file=None: cls.print_help(parser, out)  # type: ignore[method-assign]
            parser.print_usage = lambda file=None: cls.print_usage(parser, out)  # type: ignore[method-assign]
        return parser, None

    def __call__(self, args=None, stdin=None, stdout=None, stderr=None, spec=None):
        from tractor_diag.invoke import run_mapped

        out = stdout if stdout is not None else sys.stdout
        err = stderr if stderr is not None else sys.stderr
        try:
            # Ctrl-C ends the watch itself (screen.run restores the terminal).
            return run_mapped(lambda: self._watch(list(args or ()), out), err, self.name,
                              catch_interrupt=False)
        finally:
            try:
                out.flush()
            except (OSError, ValueError):
                pass

    def _watch(self, argv: list[str], out) -> int:
        import os
        import shlex

        from tractor_diag import watch as screen
        from tractor_diag.render import want_color

        parser, _ = self.parser(out)
        ns = parser.parse_args(argv)
        interval = screen.check_interval(ns.interval)
        target = _callable_alias(ns.alias, self)
        args = list(ns.args)
        if isinstance(target, VerbAlias):
            target.check(args, out)  # bad flags: exit 2 now, not in every frame
        out_fd, in_fd = screen.terminal_fds(out)
        color = want_color("auto", out)
        # Paint on a copy of the terminal fd: while the alias runs, fds 1
        # and 2 point at the frame's capture file.
        paint_fd = os.dup(out_fd)
        try:
            return screen.run(
                lambda: _run_alias(target, args, color),
                interval=interval, command=shlex.join([ns.alias, *args]),
                out_fd=paint_fd, in_fd=in_fd, color=color,
            )
        finally:
            os.close(paint_fd)

    def xonsh_complete(self, command, alias=None, **_kwargs):
        words, prefix = _words(command)
        return _complete_watch(self, words, prefix)


_WATCH_HELP = """\
Run ALIAS with its ARGS every SEC seconds and show its output full screen,
like watch(1) without flicker: each frame is painted over the previous one.
The header shows the interval, the command, the time, and the alias's exit
code when it fails. ALIAS is any callable alias (a Python function), ours or
your own; a string alias is a command line, run it with watch(1) instead.

Keys: q or Ctrl-C quits (the terminal is restored), space runs it again now.

  acli.watch acli.ptree pytest
  acli.watch -n 0.5 acli.ptree --tree --cpu 1234
"""


# -- running another alias inside watch -------------------------------------

def _callable_alias(name: str, watch: WatchAlias):
    """The alias object ``name`` refers to, when watch can run it."""
    from tractor_diag.errors import UsageError
    from xonsh.built_ins import XSH

    try:
        target = XSH.aliases[name]
    except KeyError:
        raise UsageError(f"{name!r} is not an alias (watch runs callable aliases)") from None
    if not _is_callable_alias(target):
        raise UsageError(
            f"{name!r} is not a callable alias: it stands for a command line; "
            "watch runs Python callables (use watch(1) for commands)"
        )
    if target is watch or getattr(target, "verb", None) == "watch":
        raise UsageError("watch cannot watch itself")
    if getattr(target, "verb", None) == "dash":
        raise UsageError(f"{name} is interactive: run it directly")
    return target


def _is_callable_alias(target) -> bool:
    """A Python callable, not a command line (a list, or an ExecAlias: xonsh
    source run as a command)."""
    from xonsh.aliases import ExecAlias

    return callable(target) and not isinstance(target, (list, str, ExecAlias))


def _run_alias(target, args: list[str], color: bool):
    """One frame: the alias's output, whatever way it writes it.

    Python-level output (its ``stdout`` argument, print) is collected in
    memory; anything written to fds 1 and 2 (subprocesses it starts) goes to
    a temporary file appended after it.
    """
    from tractor_diag import watch as screen

    buf = screen.Capture(color)
    with _fd_capture() as fd_text, contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        if isinstance(target, VerbAlias):
            rc = target.invoke(args, buf, buf, catch_interrupt=False)
        else:
            from xonsh.cli_utils import run_with_partial_args

            result = run_with_partial_args(target, {
                "args": args, "stdin": None, "stdout": buf, "stderr": buf,
                "spec": None, "stack": None,
            })
            rc = _absorb_result(result, buf)
    return screen.Frame(buf.getvalue() + "".join(fd_text), rc)


def _absorb_result(result, buf) -> int:
    """xonsh's return conventions for callable aliases -> exit code."""
    if result is None:
        return 0
    if isinstance(result, bool):
        return 0 if result else 1
    if isinstance(result, int):
        return result
    if isinstance(result, str):
        buf.write(result)
        return 0
    if isinstance(result, (tuple, list)):
        out = result[0] if len(result) > 0 else None
        err = result[1] if len(result) > 1 else None
        for part in (out, err):
            if part:
                buf.write(part if isinstance(part, str) else str(part))
        return int(result[2]) if len(result) > 2 and result[2] is not None else 0
    return 0


@contextlib.contextmanager
def _fd_capture():
    """Point fds 1 and 2 at a temporary file while the alias runs; the list
    yielded receives what was written there once they are restored."""
    import os
    import tempfile

    def flush():
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass

    text: list[str] = []
    flush()
    with tempfile.TemporaryFile() as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield text
        finally:
            flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
        tmp.seek(0)
        data = tmp.read()
    if data:
        text.append(data.decode("utf-8", "replace"))


# -- output plumbing -----------------------------------------------------------

def _shown_on_terminal(spec, out) -> bool:
    """Does this alias's output end up on the user's terminal?

    xonsh hands a threaded alias a pipe even when nothing is redirected, so
    ``isatty()`` is always false there; colour would never turn on. The
    output reaches the terminal when the alias is last in its pipeline, is
    not captured into a value, and writes into xonsh's relay pipe (not a
    file a ``>`` opened) while xonsh itself is on a terminal.
    """
    import os
    import stat

    try:
        if not spec.last_in_pipeline or spec.captured not in ("hiddenobject", False):
            return False
        if not sys.__stdout__.isatty():
            return False
        mode = os.fstat(out.fileno()).st_mode
        return stat.S_ISFIFO(mode) or os.isatty(out.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class _Terminal:
    """``out`` as a verb should see it: a terminal (colour, when allowed)."""

    def __init__(self, stream):
        self._stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._stream, name)


# -- completion ------------------------------------------------------------------

def _words(command) -> tuple[list[str], str]:
    """(arguments before the one being completed, its prefix)."""
    args = command.args[1:command.arg_index]
    return [a.value for a in args], command.prefix


def _rich(suggestions):
    from tractor_diag.safetext import escape
    from xonsh.completers.tools import RichCompletion

    # The menu shows values and descriptions on the terminal, and a value
    # goes into the command line: one with control characters is not offered.
    return {
        RichCompletion(s.value, description=escape(s.description), append_space=s.append_space)
        for s in suggestions if s.value.isprintable()
    }


def _complete_verb(alias: VerbAlias, words: list[str], prefix: str):
    from tractor_diag.completers import complete_args

    try:
        parser, _ = alias.parser()
    except Exception:  # noqa: BLE001 - no completion beats a traceback at the prompt
        return None
    found = complete_args(parser, words, prefix)
    return None if found is None else _rich(found)


def _complete_watch(alias: WatchAlias, words: list[str], prefix: str):
    from tractor_diag.completers import complete_args, split_watch_words

    parser, _ = alias.parser()
    head, target, rest = split_watch_words(parser, words)
    if target is None:
        if prefix.startswith("-") or head and head[-1] in ("-n", "--interval"):
            found = complete_args(parser, head, prefix)
            return None if found is None else _rich(found)
        return _rich(_watchable_aliases())
    from xonsh.built_ins import XSH

    try:
        inner = XSH.aliases[target]
    except KeyError:
        return None
    if isinstance(inner, VerbAlias):
        return _complete_verb(inner, rest, prefix)
    return None


def _watchable_aliases():
    from tractor_diag.completers import Suggestion
    from xonsh.built_ins import XSH

    aliases = XSH.aliases
    for name in list(aliases):
        try:
            target = aliases[name]
        except KeyError:
            continue
        if not _is_callable_alias(target) or getattr(target, "verb", None) in _OWNS_TERMINAL:
            continue
        ours = isinstance(target, VerbAlias)
        if not ours and getattr(target, "__xonsh_threadable__", True) is False:
            continue
        yield Suggestion(name, aliases.get_doc(name).split("\n", 1)[0] if hasattr(aliases, "get_doc") else "")
