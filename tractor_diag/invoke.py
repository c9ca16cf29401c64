"""How every face parses and runs a verb: one parser class, one error mapping.

The CLI (`cli`), `watch` (each frame) and the xonsh aliases all parse with
`Parser` and turn what a verb raises into an exit code with `run_mapped`, so
a failure reads and exits the same way whichever face ran it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

TYPE_CHECKING = False  # the faces import this at start-up: typing costs ~3 ms
if TYPE_CHECKING:
    from typing import Callable, TextIO

from .errors import DiagError, UsageError


class ParserExit(Exception):
    """argparse wanted to exit (``--help``, ``--version``): the status to return."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: a xonsh alias or a watch frame
    must not end the shell or the watch."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """A verb's help as argparse lays it out, at the terminal's width."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None, **kw):
        if width is None:
            # argparse asks shutil, and imports it (with zlib, bz2, lzma)
            # for every argument added
            from .render import terminal_columns

            width = terminal_columns() - 2  # argparse's own margin
        super().__init__(prog, indent_increment, max_help_position, width, **kw)


def verb_parser(verb: str, prog: str | None = None) -> tuple[argparse.ArgumentParser, object]:
    """-> (the parser of one verb alone, the verb's module)."""
    from .commands import VERBS

    mod = importlib.import_module(VERBS[verb][0])
    parser = Parser(
        prog=prog or f"tractor-diag {verb}",
        description=getattr(mod, "DESCRIPTION", mod.HELP),
        formatter_class=HelpFormatter,
    )
    mod.add_arguments(parser)
    return parser, mod


def one_line(err: TextIO, prog: str, msg: str) -> None:
    """A failure as one escaped line (it may quote a process title or a file
    name), prefixed with ``prog`` unless it already names it."""
    from .safetext import escape

    msg = escape(msg.strip()) or "failed"
    try:
        err.write((msg if msg.startswith(prog) else f"{prog}: {msg}") + "\n")
        err.flush()
    except (OSError, ValueError):
        pass


def run_mapped(call: Callable[[], int | None], err: TextIO, prog: str,
               catch_interrupt: bool = True,
               on_broken_pipe: Callable[[], None] | None = None) -> int:
    """Run ``call`` (parse and run a verb) -> its exit code; every expected
    failure is one line on ``err``: `DiagError` its code (2 for usage),
    Ctrl-C 130 (or raised, when the caller handles it: watch ends on it), a
    reader that left (``| head``) 0."""
    try:
        return int(call() or 0)
    except ParserExit as exc:
        return exc.status
    except DiagError as exc:
        one_line(err, prog, str(exc))
        return exc.code
    except KeyboardInterrupt:
        if not catch_interrupt:
            raise
        one_line(err, prog, "interrupted")
        return 130
    except BrokenPipeError:
        if on_broken_pipe is not None:
            on_broken_pipe()
        return 0
