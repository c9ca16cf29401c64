"""One module per verb. Each exposes:

- ``HELP``: one line for ``tractor-diag --help``;
- ``DESCRIPTION`` (optional): the verb's ``--help`` body;
- ``add_arguments(parser)``: its flags (shared with the xonsh alias);
- ``run(args, out) -> int``: compute, render to ``out`` (`write_answer`:
  JSON or text), return the exit code.

Heavy imports (trio, textual) happen inside ``run``: building the parser
must stay cheap because xonsh builds it for completion and ``--help``.
"""
from __future__ import annotations

# verb -> (module, xonsh alias)
VERBS: dict[str, tuple[str, str]] = {
    "ptree": ("tractor_diag.commands.ptree", "acli.ptree"),
    "stacks": ("tractor_diag.commands.stacks", "acli.hung_dump"),
    "bindspace": ("tractor_diag.commands.bindspace", "acli.bindspace_scan"),
    "dump-all": ("tractor_diag.commands.dump_all", "acli.dump_all"),
    "why": ("tractor_diag.commands.why", "acli.why"),
    "reap": ("tractor_diag.commands.reap", "acli.reap"),
    "watch": ("tractor_diag.commands.watch", "acli.watch"),
    "dash": ("tractor_diag.commands.dash", "acli.dash"),
    "run": ("tractor_diag.commands.run", "acli.run"),
}


def write_answer(args, out, value, text) -> None:
    """A verb's answer on ``out``: ``value`` as JSON with ``--json``, else
    the text ``text(style)`` renders in the style ``--color`` and ``out``
    call for."""
    if args.json:
        from ..model import to_json

        out.write(to_json(value).decode() + "\n")
    else:
        from ..render import Style

        out.write(text(Style.for_output(args.color, out)) + "\n")


def add_common(parser) -> None:
    """Flags every data verb shares."""
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto",
        help="colour the text output (auto: on a terminal, unless NO_COLOR is set)",
    )
