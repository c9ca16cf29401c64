"""The CLI imports and builds only what the chosen verb needs, and its
help still lists every verb. Each check runs in a fresh interpreter:
`sys.modules` of the test process says nothing about a cold start."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tractor_diag.cli import verb_parser
from tractor_diag.commands import VERBS

TIMEOUT = 60


def _cold(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON line last."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@functools.cache
def _at_start() -> frozenset[str]:
    """What a bare interpreter of this venv has imported before any code of
    ours runs: an editable install's import finder (setuptools picks it over
    a plain path entry for some layouts) brings pathlib and importlib.util."""
    got = _cold("import json, sys; print(json.dumps({'mods': sorted(sys.modules)}))")
    return frozenset(got["mods"])


def _ours(mods: list[str]) -> list[str]:
    """The modules imported after start-up."""
    return [m for m in mods if m not in _at_start()]


_RUN = """
import contextlib, io, json, sys
from tractor_diag import cli
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out):  # argparse prints help there
    rc = cli.run_verb({argv!r}, out=out, err=err)
print(json.dumps({{"rc": rc, "out": out.getvalue(), "err": err.getvalue(),
                   "mods": sorted(m for m in sys.modules if m.startswith("tractor_diag")
                                  or m in ("msgspec", "trio", "textual"))}}))
"""


# verbs that take roots share ptree's, dump-all shares the stacks flags
_SHARED = {"tractor_diag.commands.ptree", "tractor_diag.commands.stacks"}


def _verb_modules(mods: list[str]) -> set[str]:
    return {m for m in mods if m.startswith("tractor_diag.commands.")}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_verb_loads_only_its_own_module(verb, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    got = _cold(_RUN.format(argv=[verb, "--help"]))
    assert got["rc"] == 0, got["err"]
    assert _verb_modules(got["mods"]) <= {VERBS[verb][0]} | _SHARED, got["mods"]
    if verb != "watch":
        assert "tractor_diag.watch" not in got["mods"]
    # the verb's help is complete: exactly its own parser's
    assert got["out"] == verb_parser(verb)[0].format_help()


def test_ptree_runs_without_the_other_verbs():
    got = _cold(_RUN.format(argv=["ptree", "--json", str(os.getpid())]))
    assert got["rc"] == 0, got["err"]
    assert _verb_modules(got["mods"]) == {"tractor_diag.commands.ptree"}
    # nothing of the dashboard, the task dumper or the stacks capture
    for mod in ("trio", "textual", "tractor_diag.stacks", "tractor_diag.sampler",
                "tractor_diag.watch", "tractor_diag.taskdump"):
        assert mod not in got["mods"]
    assert any(e["proc"]["pid"] == os.getpid() for e in json.loads(got["out"])["entries"].values())


@pytest.mark.parametrize("argv", [["--help"], []])
def test_top_level_help_lists_every_verb_and_builds_none(argv):
    got = _cold(_RUN.format(argv=argv))
    assert got["rc"] == (0 if argv else 2)
    assert "msgspec" not in got["mods"]  # no verb ran: no model, no msgspec
    help_text = " ".join(got["out"].split())
    for verb, (modname, _alias) in VERBS.items():
        mod = __import__(modname, fromlist=["HELP"])
        assert f"{verb} {mod.HELP}" in help_text, verb


def test_usage_errors_stay_one_line():
    got = _cold(_RUN.format(argv=["ptree", "--bogus"]))
    assert got["rc"] == 2 and got["err"].count("\n") <= 1
    assert "tractor-diag ptree: unrecognized arguments: --bogus" in got["err"]
    got = _cold(_RUN.format(argv=["bogus"]))
    assert got["rc"] == 2 and "invalid choice: 'bogus'" in got["err"]


def test_stacks_leaves_the_diagnosis_rules_unloaded(spawn):
    """`stacks` renders where each process waits (`diagnosis.where`); the
    `why` rules and their models are not its business."""
    proc = spawn(["sh", "-c", "echo READY; exec sleep 60"])
    got = _cold(_RUN.format(argv=["stacks", "--no-tasks", str(proc.root)]))
    assert got["rc"] == 0, got["err"]
    assert "tractor_diag.diagnosis.where" in got["mods"]
    assert "tractor_diag.diagnosis.rules" not in got["mods"]
    assert _verb_modules(got["mods"]) <= {"tractor_diag.commands.stacks"} | _SHARED


def test_recognition_leaves_platformdirs_alone_when_no_socket_file_names_ours(tmp_path):
    """Asking platformdirs for the runtime dir costs more than a small
    scan: a pass looks first in every dir it could answer."""
    code = """
    import json, os, sys
    from tractor_diag import procfs
    procs = procfs.scan(only=[os.getpid()])
    print(json.dumps({"mods": sorted(sys.modules), "seen": os.getpid() in procs}))
    """
    got = _cold(code)
    assert got["seen"]
    assert "platformdirs" not in got["mods"]


@pytest.mark.parametrize("argv", [["ptree", "--no-strays"], ["stacks", "--no-tasks"]])
def test_start_up_imports_no_socket_or_shutil_and_compiles_no_escaping_pattern(argv):
    """What a ptree or stacks start-up need not pay for: socket.py (the
    socket tables are read with its C half), shutil (argparse and the
    renderer read the terminal's width themselves, py-spy is found next to
    the interpreter), typing_extensions with inspect (msgspec's, for what
    typing has), the escaping patterns (compiled only for text that needs
    escaping)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
        import contextlib, io, json, sys
        from tractor_diag import cli, safetext
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main({[*argv, str(sleeper.pid)]!r})
        print(json.dumps({{"rc": rc, "out": out.getvalue(), "err": err.getvalue(),
                           "mods": sorted(sys.modules),
                           "compiled": len(getattr(safetext, "_compiled", "?"))}}))
        """
        got = _cold(code)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=TIMEOUT)
    assert got["rc"] == 0, got["err"]
    assert f"{sleeper.pid} " in got["out"]
    for mod in ("socket", "shutil", "typing_extensions", "inspect"):
        assert mod not in _ours(got["mods"]), mod
    assert got["compiled"] == 0


def test_run_verb_in_someone_elses_process_leaves_msgspec_as_it_is():
    """Only the CLI's own process imports msgspec lean: a program (or test)
    calling run_verb keeps a msgspec that knows typing_extensions."""
    plain = _cold("""
    import json
    import msgspec._utils
    print(json.dumps(msgspec._utils._get_type_hints.__module__))
    """)
    got = _cold("""
    import io, json, os
    from tractor_diag import cli
    rc = cli.run_verb(["ptree", "--no-strays", str(os.getpid())], out=io.StringIO(),
                      err=io.StringIO())
    import msgspec._utils
    print(json.dumps({"rc": rc, "hints": msgspec._utils._get_type_hints.__module__}))
    """)
    # where typing_extensions is installed (Textual's dependency, 3.11)
    # msgspec takes its get_type_hints, else typing's: as a plain import does
    assert got == {"rc": 0, "hints": plain}


def test_typing_extensions_hidden_from_msgspec_only():
    """Textual, imported after the CLI imported msgspec, gets the real
    typing_extensions; the Structs still decode what they encode."""
    got = _cold("""
    import json, sys
    from tractor_diag import cli
    cli.import_msgspec_lean()
    hidden = "typing_extensions" not in sys.modules
    import typing_extensions
    from tractor_diag import procfs
    from tractor_diag.model import Proc, to_json
    import msgspec
    proc = procfs.scan(only=[__import__("os").getpid()])[__import__("os").getpid()]
    same = msgspec.json.decode(to_json(proc), type=Proc) == proc
    print(json.dumps({"hidden": hidden, "real": typing_extensions.__file__ is not None,
                      "same": same}))
    """)
    assert got == {"hidden": True, "real": True, "same": True}


# What a text `ptree` has no use for, each once a measurable part of its
# start-up: msgspec's package extras (its C core is the data model; the
# JSON half comes from the core too), the JSON-schema code's textwrap, and
# modules nothing on the path needs (pathlib brings urllib.parse and fnmatch).
_PTREE_UNNEEDED = (
    "msgspec.inspect", "msgspec._json_schema", "msgspec.json", "msgspec.msgpack",
    "msgspec.structs", "msgspec.toml", "msgspec.yaml", "textwrap",
    "pathlib", "urllib.parse", "fnmatch", "importlib.util",
    "typing_extensions", "inspect", "socket", "shutil",
)


@pytest.mark.parametrize("argv", [["ptree"], ["ptree", "--no-strays"], ["ptree", "--tree"]])
def test_ptree_start_up_leaves_the_heavy_modules_unimported(argv):
    """The whole console-script path of a text `ptree` (the installed
    script's own code, `cli.main`, the snapshot, the socket join, the
    renderer): none of the modules above get imported."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
        import json, sys
        from tractor_diag.cli import main
        rc = main({[*argv, str(sleeper.pid)]!r})
        print(json.dumps({{"rc": rc, "mods": sorted(sys.modules)}}))
        """
        got = _cold(code)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=TIMEOUT)
    assert got["rc"] == 0
    assert "msgspec._core" in got["mods"]  # the data model is there, as Structs
    assert [m for m in _PTREE_UNNEEDED if m in _ours(got["mods"])] == []
    if argv[1:] == ["--no-strays"]:
        # only the sleeper's tree was read: no released-runtime command line
        # whose literals need ast
        assert "ast" not in got["mods"]


def test_help_imports_no_typing():
    got = _cold("""
    import contextlib, io, json, sys
    from tractor_diag import cli
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["--help"])
    print(json.dumps({"rc": rc, "mods": sorted(sys.modules)}))
    """)
    assert got["rc"] == 0
    assert "typing" not in _ours(got["mods"])


def test_lean_msgspec_is_the_whole_package_when_asked():
    """After the core-only import every public name of msgspec is still
    there: the first one the core lacks runs the package's own __init__,
    and submodules import as ever."""
    got = _cold("""
    import json, os, sys
    from tractor_diag import cli
    cli.import_msgspec_lean()
    import msgspec
    core_only = "msgspec.inspect" not in sys.modules
    from tractor_diag import procfs
    from tractor_diag.model import Proc, to_json
    proc = procfs.scan(only=[os.getpid()])[os.getpid()]
    still_core_only = "msgspec.inspect" not in sys.modules
    from msgspec import field
    import msgspec.yaml
    got = {
        "core_only": core_only and still_core_only,
        "field": callable(field),
        "version": msgspec.__version__,
        "fields": [f.name for f in msgspec.structs.fields(Proc)][:2],
        "same": msgspec.json.decode(to_json(proc), type=Proc) == proc,
        "info": type(msgspec.inspect.type_info(Proc)).__name__,
        "yaml": hasattr(msgspec.yaml, "encode"),
    }
    print(json.dumps(got))
    """)
    import msgspec

    assert got == {"core_only": True, "field": True, "version": msgspec.__version__,
                   "fields": ["pid", "ppid"], "same": True, "info": "StructType",
                   "yaml": True}


_LISTENER = r"""
import os, socket, sys, time
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, f"alpha@{os.getpid()}.sock"))
s.listen()
# a stale file of the same pid: no socket listens there
open(os.path.join(d, f"beta@{os.getpid()}.sock"), "w").close()
print("READY", flush=True)
time.sleep(60)
"""


def test_socket_file_names_a_process_without_platformdirs(tmp_path, spawn):
    """A live actor's socket file in the runtime dir names it, and no
    platformdirs (with pathlib) is imported to say which dir that is: a
    file counts only where the kernel has its pid listening."""
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    proc = spawn([sys.executable, "-c", _LISTENER, str(xdg / "tractor")])
    env = {**os.environ, "XDG_RUNTIME_DIR": str(xdg)}
    code = f"""
    import contextlib, io, json, sys
    from tractor_diag.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["ptree", "--json", "--no-strays", "{proc.root}"])
    snap = json.loads(out.getvalue())
    proc = snap["entries"]["{proc.root}"]["proc"]
    print(json.dumps({{"rc": rc, "actor": proc["actor"], "hosted": proc.get("hosted"),
                       "mods": sorted(sys.modules)}}))
    """
    got = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=TIMEOUT, env=env)
    assert got.returncode == 0, got.stderr
    got = json.loads(got.stdout.splitlines()[-1])
    assert got["rc"] == 0
    assert (got["actor"]["name"], got["actor"]["how"]) == ("alpha", "bindspace")
    assert not got["hosted"]  # beta@pid.sock: nothing listens there
    for mod in ("platformdirs", "pathlib", "urllib.parse", "fnmatch"):
        assert mod not in _ours(got["mods"]), mod
