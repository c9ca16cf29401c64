"""``tractor-diag`` command line: one subcommand per verb.

Verbs live in `tractor_diag.commands`; a verb whose module is not there yet
is simply not offered.
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
    parser = _Parser(
        prog="tractor-diag",
        description="Diagnose hung tractor actor trees: who is stuck, where, and clean up safely.",
        epilog="Run 'tractor-diag VERB --help' for a verb's options.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tractor-diag {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, mod in available_verbs().items():
        p = sub.add_parser(
            verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def run_verb(argv: list[str], out: TextIO | None = None, err: TextIO | None = None,
             parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run; every expected failure is one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        parser = parser or build_parser()
        args = parser.parse_args(argv)
        run = getattr(args, "_run", None)
        if run is None:
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
