"""The import picture matches the layer table of docs/ARCHITECTURE.md.

Every import of the package (those inside functions too: a lazy import is
still a dependency) is read with `ast`, nothing is executed. An import from
a lower layer to a higher one, or a cycle, fails, unless it is one of the
known ones written out below; a known one that is gone fails too, so the
lists only shrink.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "tractor_diag"

# Upward imports still to be redesigned away, each (importer, imported).
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Import cycles still to be broken, each the set of modules that reach each
# other (the last one, the dashboard's app and its key actions, is gone).
KNOWN_CYCLES: set[frozenset[str]] = set()


def layer_table() -> dict[str, int]:
    """{module or ``pkg.*`` pattern: layer index} from ARCHITECTURE's table."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "`" in ln]
    assert [r.split("|")[1].strip() for r in rows] == [
        "data", "readers", "domain", "renderers", "bundle", "faces"]
    return {name: i for i, row in enumerate(rows) for name in re.findall(r"`([^`]+)`", row)}


def modules() -> dict[str, Path]:
    """{name relative to the package: file}; the package itself is
    ``tractor_diag``, the xontrib ``xontrib``. ``_startup`` is left out: it
    runs in the target program's interpreter, loaded by path."""
    out: dict[str, Path] = {}
    for base, prefix in ((PKG, []), (REPO / "tui", ["tui"])):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[0] in ("_startup", "tui") and base == PKG:
                continue  # tractor_diag/tui is a symlink to tui/
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(prefix + parts) or "tractor_diag"] = path
    out["xontrib"] = REPO / "xontrib" / "tractor_diag.py"
    return out


def _absolute(name: str) -> str:
    return "tractor_diag" if name == "tractor_diag" else f"tractor_diag.{name}"


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules (of ``known``) that module ``name`` imports."""
    by_abs = {_absolute(n): n for n in known}
    package = _absolute(name) if is_package else _absolute(name).rpartition(".")[0]
    wanted: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            wanted.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names]
            named_modules = [m for m in subs if m in by_abs]
            wanted.update(named_modules)
            if len(named_modules) < len(subs):  # names defined in ``mod`` itself
                wanted.add(mod)
    out = set()
    for w in wanted:
        while w and w not in by_abs:
            w = w.rpartition(".")[0]
        if w and by_abs[w] != name:
            out.add(by_abs[w])
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path.read_text(), path.name == "__init__.py", set(known))
            for name, path in known.items()}


def layer_of(name: str, table: dict[str, int]) -> int | None:
    if name in table:
        return table[name]
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        pattern = ".".join(parts[:i]) + ".*"
        if pattern in table:
            return table[pattern]
    return None


def cycles(g: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.add(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    table = layer_table()
    assert sorted(n for n in modules() if layer_of(n, table) is None) == []


def test_the_table_names_only_modules_that_exist():
    names = set(modules())
    for entry in layer_table():
        if entry.endswith(".*"):
            assert any(n.startswith(entry[:-1]) for n in names), entry
        else:
            assert entry in names, entry


def test_imports_point_down():
    table = layer_table()
    upward = {(a, b) for a, deps in graph().items() for b in deps
              if layer_of(b, table) > layer_of(a, table)}
    assert upward - KNOWN_UPWARD == set(), "imports from a lower layer to a higher one"
    assert KNOWN_UPWARD - upward == set(), "fixed: remove them from KNOWN_UPWARD"


def test_no_import_cycles():
    found = cycles(graph())
    assert found - KNOWN_CYCLES == set(), "new import cycles"
    assert KNOWN_CYCLES - found == set(), "fixed: remove them from KNOWN_CYCLES"


def test_nothing_in_the_dashboard_imports_its_app():
    """The dashboard's jobs, trio side and widgets hand results to the app
    as messages; only the package's lazy `DashApp` names the app."""
    importers = {name for name, deps in graph().items()
                 if "tui.app" in deps and name.startswith("tui")}
    assert importers == {"tui"}, importers


def test_the_checker_sees_what_it_must():
    """The reader of imports itself, on the forms the package uses."""
    known = {"tractor_diag", "render", "render.ptree", "model", "errors", "commands",
             "commands.ptree", "tui", "tui.app"}
    src = ("from . import VERBS\nfrom .. import model\nfrom ..render import ptree\n"
           "from ..errors import DiagError\n"
           "def f():\n    import tractor_diag.render\n    from tractor_diag import __version__\n"
           "    from tractor_diag.tui.app import DashApp\n    import os\n")
    assert imports_of("commands.ptree", src, False, known) == {
        "commands", "model", "render", "render.ptree", "errors", "tractor_diag", "tui.app"}
    assert imports_of("commands", "from . import ptree\n", True, known) == {"commands.ptree"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def public_structs() -> dict[str, list[str]]:
    """{module: the public msgspec Structs it defines}. A class counts when
    one of its bases is spelled ``Struct`` or ``msgspec.Struct``."""
    out: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = [ast.unparse(b) for b in node.bases]
            if any(b in ("Struct", "msgspec.Struct") for b in bases):
                out.setdefault(name, []).append(node.name)
    return out


def test_structs_live_in_the_data_layer():
    """What a verb returns is data: its Struct is defined in a model module,
    whatever module computes it (private working values may stay put)."""
    table = layer_table()
    data = table["model"]
    elsewhere = {m: names for m, names in public_structs().items()
                 if layer_of(m, table) != data}
    assert elsewhere == {}


def test_renderers_import_only_data():
    """A renderer turns a computed value into text: it imports the data
    layer and other renderers, nothing that reads or decides (a judgement
    it quotes, such as where a process waits, reaches it as a value)."""
    table = layer_table()
    data, renderers = table["model"], table["render"]
    found = {(a, b) for a, deps in graph().items() if layer_of(a, table) == renderers
             for b in deps if layer_of(b, table) not in (data, renderers)}
    assert found == set(), "a renderer imports more than data"
