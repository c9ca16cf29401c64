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

TYPE_CHECKING = False  # typing costs ~3 ms at start-up: --help never needs it
if TYPE_CHECKING:
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
    """Import msgspec with less than it imports by default:

    - without typing_extensions: msgspec takes it when it is installed
      (Textual brings it) for what ``typing`` has had since 3.11; with the
      inspect, ast and dis it pulls in, ~9 ms of CPU. Hidden only during
      the import and only when nothing imported it yet: a later import
      (Textual's) finds the real module;
    - its C core alone: the package's ``__init__`` also imports
      ``msgspec.inspect``, ``json`` (with its JSON-schema code and
      textwrap), ``msgpack``, ``structs``, ``toml`` and ``yaml``, ~2.5 ms
      that a text ``ptree`` never uses. ``import msgspec.json`` works as
      ever; the first name the core lacks (``msgspec.structs`` unimported,
      ``msgspec.field``) runs the real ``__init__`` in the same module.

    A msgspec that cannot do without either is imported as usual. Only in
    a process of our own (`main`): msgspec keeps what it found."""
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    try:
        _import_msgspec_core()
    except ImportError:
        pass
    finally:
        if "typing_extensions" in sys.modules and sys.modules["typing_extensions"] is None:
            del sys.modules["typing_extensions"]
    if "msgspec" not in sys.modules:
        import msgspec  # noqa: F401


def _import_msgspec_core() -> None:
    """``msgspec`` as a package whose ``__init__`` has not run yet, with
    ``msgspec._core`` imported and its names on it; the ``__init__`` runs
    when a name is asked for that is not there."""
    import _thread
    import importlib.machinery

    spec = importlib.machinery.PathFinder.find_spec("msgspec")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError("msgspec is not a package here")
    # importlib.util's module_from_spec, without importing importlib.util
    pkg = importlib._bootstrap.module_from_spec(spec)
    lock = _thread.RLock()

    def complete(name: str):
        # the first name the core does not have: the package as installed
        with lock:
            if pkg.__dict__.get("__getattr__") is complete:
                del pkg.__getattr__
                spec.loader.exec_module(pkg)
        try:
            return pkg.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'msgspec' has no attribute {name!r}") from None

    sys.modules["msgspec"] = pkg
    try:
        import msgspec._core as core
    except BaseException:
        del sys.modules["msgspec"]
        raise
    pkg.__dict__.update((k, v) for k, v in vars(core).items() if not k.startswith("_"))
    pkg.__getattr__ = complete


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
