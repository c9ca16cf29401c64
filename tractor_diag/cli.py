"""``tractor-diag`` command line: one subcommand per verb.

Verbs live in `tractor_diag.commands`; parsing and the mapping of failures
to one line and an exit code are `invoke`'s, shared with watch and the
xontrib. Only the chosen verb's module is imported and only its
parser built: start-up is most of what a one-shot verb costs. The top-level
parser (``--help``, ``--version``, an unknown verb) imports every verb module
for its one-line summary, and builds no verb's arguments.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import TextIO

from . import invoke
from .commands import VERBS


def verb_parser(verb: str, prog: str | None = None) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one verb alone (the xonsh alias and watch use it too)."""
    return invoke.verb_parser(verb, prog)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: every verb with its summary, none of their
    arguments (a verb's own parser parses what follows it, see `run_verb`)."""
    parser = invoke.Parser(
        prog="tractor-diag",
        description="Diagnose hung tractor actor trees: who is stuck, where, and clean up safely.",
        epilog="Run 'tractor-diag VERB --help' for a verb's options.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tractor-diag {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (modname, _alias) in VERBS.items():
        mod = importlib.import_module(modname)
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


def import_msgspec_lean() -> None:
    """Import msgspec without typing_extensions. msgspec imports it when it
    is installed (Textual brings it) for what ``typing`` has had since 3.11;
    with the inspect, ast and dis it pulls in, that is ~9 ms of CPU, a
    seventh of a whole ``ptree``. Hidden only during msgspec's import and
    only when nothing imported it yet: a later import (Textual's) finds the
    real module. A msgspec that cannot do without it is imported as usual.
    Only in a process of our own (`main`): msgspec keeps what it found."""
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    try:
        import msgspec  # noqa: F401
    except ImportError:
        pass
    finally:
        if "typing_extensions" in sys.modules and sys.modules["typing_extensions"] is None:
            del sys.modules["typing_extensions"]
    if "msgspec" not in sys.modules:
        import msgspec  # noqa: F401,F811


def run_verb(argv: list[str], out: TextIO | None = None, err: TextIO | None = None,
             parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run; every expected failure is one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr

    def call():
        args, run = _parse(argv, parser, out)
        if run is None:
            if parser is not None:
                parser.print_help(out)
            return 2
        if _own_process:
            import_msgspec_lean()  # every verb's data is msgspec Structs
        return run(args, out)

    def reader_left():
        # `tractor-diag ptree | head`: nothing to report, and nothing left
        # for the interpreter to flush at exit.
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:  # noqa: BLE001
            pass

    return invoke.run_mapped(call, err, "tractor-diag", on_broken_pipe=reader_left)


#: Set by `main`: the process is ours. Only then is msgspec imported lean: in
#: someone else's process (a test, a program calling `run_verb`) a msgspec
#: that never saw typing_extensions would not know its types later.
_own_process = False


def main(argv: list[str] | None = None) -> int:
    global _own_process
    _own_process = True
    rc = run_verb(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, AttributeError, ValueError):
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
