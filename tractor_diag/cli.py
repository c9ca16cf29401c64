"""``tractor-diag`` command line: one subcommand per verb.

Verbs live in `tractor_diag.commands`; a verb whose module is not there yet
is simply not offered. Only the chosen verb's module is imported and only its
parser built: start-up is most of what a one-shot verb costs. The top-level
parser (``--help``, ``--version``, an unknown verb) imports every verb module
for its one-line summary, and builds no verb's arguments.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import TextIO

from .commands import VERBS
from .errors import DiagError, UsageError
from .safetext import escape


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so the xontrib can reuse it."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


def available_verbs() -> dict[str, object]:
    mods = {}
    for verb, (modname, _alias) in VERBS.items():
        try:
            mods[verb] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
    return mods


def verb_parser(verb: str, prog: str | None = None) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one verb alone (the xonsh alias uses this)."""
    mod = importlib.import_module(VERBS[verb][0])
    parser = _Parser(
        prog=prog or f"tractor-diag {verb}",
        description=getattr(mod, "DESCRIPTION", mod.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(parser)
    return parser, mod


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: every verb with its summary, none of their
    arguments (a verb's own parser parses what follows it, see `run_verb`)."""
    parser = _Parser(
        prog="tractor-diag",
        description="Diagnose hung tractor actor trees: who is stuck, where, and clean up safely.",
        epilog="Run 'tractor-diag VERB --help' for a verb's options.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tractor-diag {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, mod in available_verbs().items():
        p = sub.add_parser(verb, help=mod.HELP, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _parse(argv: list[str], parser: argparse.ArgumentParser | None, out: TextIO):
    """-> (namespace, run) or (None, None) when no verb was given."""
    if parser is not None:  # a caller's own full parser
        args = parser.parse_args(argv)
        return args, getattr(args, "_run", None)
    if argv and argv[0] in VERBS:
        verb, rest = argv[0], argv[1:]
    else:
        top = build_parser()
        args = top.parse_args(argv)
        if args.verb is None:
            top.print_help(out)
            return None, None
        verb, rest = args.verb, args.rest
    vparser, mod = verb_parser(verb)
    return vparser.parse_args(rest), mod.run


def run_verb(argv: list[str], out: TextIO | None = None, err: TextIO | None = None,
             parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run; every expected failure is one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args, run = _parse(argv, parser, out)
        if run is None:
            if parser is not None:
                parser.print_help(out)
            return 2
        return int(run(args, out) or 0)
    except _Exit as exc:
        return exc.status
    except DiagError as exc:
        msg = escape(str(exc))  # it may quote a process title or a file name
        if not msg.startswith("tractor-diag"):
            msg = f"tractor-diag: {msg}"
        print(msg, file=err)
        return exc.code
    except KeyboardInterrupt:
        print("tractor-diag: interrupted", file=err)
        return 130
    except BrokenPipeError:
        # `tractor-diag ptree | head`: the reader left, nothing to report.
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:  # noqa: BLE001
            pass
        return 0


def main(argv: list[str] | None = None) -> int:
    rc = run_verb(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, AttributeError, ValueError):
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
