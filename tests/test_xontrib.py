"""The xontrib inside xonsh's own test session (xonsh's pytest fixtures):
load/unload, the aliases as callables, and completion."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from tractor_diag.commands import VERBS
from test_terminal_safety import hostile  # noqa: F401 (fixture)

# xonsh's own plugin (xession, load_xontrib, check_completer) is switched off
# in addopts (-p no:xonsh): it costs every run seconds. Loaded here, it is
# imported only when this module is collected (unless `-p xonsh` already
# registered it: then it is in sys.modules before this module imports it).
_XONSH_PLUGIN = "xonsh.pytest.plugin"
pytest_plugins = [] if _XONSH_PLUGIN in sys.modules else [_XONSH_PLUGIN]
pytest.importorskip("xonsh")

MODULE = "xontrib.tractor_diag"


# Written out, not derived from VERBS: a verb that loses its alias must fail
# here. ``hung_dump`` (stacks) and ``bindspace_scan`` (bindspace) are the
# historical names of those xonsh commands, kept for muscle memory.
EXPECTED_ALIASES = {
    "acli.ptree", "acli.hung_dump", "acli.bindspace_scan", "acli.dump_all", "acli.why",
    "acli.reap", "acli.watch", "acli.dash", "acli.run",
}


def test_alias_names_follow_the_verbs():
    """``acli.<verb>`` with ``_`` for ``-``, but for the two historical names."""
    historical = {"stacks": "acli.hung_dump", "bindspace": "acli.bindspace_scan"}
    for verb, (_mod, alias) in VERBS.items():
        assert alias == historical.get(verb, "acli." + verb.replace("-", "_")), verb
    assert {alias for _mod, alias in VERBS.values()} == EXPECTED_ALIASES


@pytest.fixture
def loaded(xession, load_xontrib):
    load_xontrib("tractor_diag")
    return xession


@pytest.fixture
def loaded_unloadable(xession):
    """Like `loaded`, for tests that unload it themselves (the plugin's
    `load_xontrib` teardown expects the module still imported)."""
    from xonsh.xontribs import xontribs_load

    xontribs_load([MODULE], full_module=True)
    yield xession
    sys.modules.pop(MODULE, None)


@pytest.fixture
def sleeper():
    """A real process with a recognisable command line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "xontrib-sleeper-marker"],
        stdin=subprocess.DEVNULL,
    )
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_entry_point_is_registered():
    from xonsh.xontribs import get_xontribs

    assert get_xontribs()["tractor_diag"].module == MODULE


def test_load_defines_every_available_alias(loaded):
    names = {n for n in loaded.aliases if n.startswith("acli.")}
    assert names == EXPECTED_ALIASES
    assert {"acli.ptree", "acli.watch"} <= names
    for name in names:
        alias = loaded.aliases[name]
        owns_terminal = name in ("acli.watch", "acli.dash")
        assert alias.__xonsh_threadable__ is (not owns_terminal), name
        if owns_terminal:
            assert alias.__xonsh_capturable__ is False


def test_unload_removes_every_alias_but_not_a_users_override(loaded_unloadable):
    loaded = loaded_unloadable
    from xonsh.xontribs import xontribs_unload

    def mine(args):
        return 0

    loaded.aliases["acli.reap"] = mine
    xontribs_unload(["tractor_diag"])
    left = {n for n in loaded.aliases if n.startswith("acli.")}
    assert left == {"acli.reap"}
    assert loaded.aliases["acli.reap"].func is mine
    assert MODULE not in sys.modules


def test_reload_is_clean(loaded_unloadable):
    loaded = loaded_unloadable
    from xonsh.xontribs import xontribs_load, xontribs_unload

    xontribs_unload(["tractor_diag"])
    assert not [n for n in loaded.aliases if n.startswith("acli.")]
    xontribs_load([MODULE], full_module=True)
    assert {n for n in loaded.aliases if n.startswith("acli.")} == EXPECTED_ALIASES


def call(xession, name, args):
    out, err = io.StringIO(), io.StringIO()
    rc = xession.aliases[name](args, stdin=None, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_alias_runs_the_verb_into_the_given_stdout(loaded, sleeper):
    rc, out, err = call(loaded, "acli.ptree", [str(sleeper.pid)])
    assert rc == 0 and err == ""
    assert str(sleeper.pid) in out and "LIVE" in out
    rc, out, err = call(loaded, "acli.ptree", ["--json", str(sleeper.pid)])
    import json

    assert rc == 0 and str(sleeper.pid) in json.loads(out)["entries"]


def test_alias_failures_are_one_line_and_an_exit_code(loaded):
    rc, out, err = call(loaded, "acli.ptree", ["99999999"])
    assert (rc, out) == (1, "")
    assert err == "acli.ptree: no such process: 99999999\n"
    rc, out, err = call(loaded, "acli.ptree", ["--bogus"])
    assert rc == 2 and out == ""
    assert err == "acli.ptree: unrecognized arguments: --bogus\n"


def test_alias_help_goes_to_its_stdout(loaded):
    rc, out, err = call(loaded, "acli.ptree", ["--help"])
    assert rc == 0 and err == ""
    assert out.startswith("usage: acli.ptree") and "--tree" in out
    rc, out, err = call(loaded, "acli.watch", ["--help"])
    assert rc == 0 and out.startswith("usage: acli.watch") and "ALIAS" in out


def test_alias_description_is_the_verbs_help(loaded):
    doc = loaded.aliases.get_doc("acli.ptree")
    assert "process tree" in doc and "tractor-diag ptree" in doc


def test_watch_rejects_what_it_cannot_run(loaded):
    loaded.aliases["ll"] = ["ls", "-la"]
    for args, needle in (
        (["nosuch.alias"], "'nosuch.alias' is not an alias"),
        (["ll"], "'ll' is not a callable alias"),
        (["acli.watch", "acli.ptree"], "cannot watch itself"),
        (["-n", "0", "acli.ptree"], "at least 0.1"),
        (["acli.ptree", "--bogus"], "unrecognized arguments: --bogus"),
    ):
        rc, out, err = call(loaded, "acli.watch", args)
        assert rc == 2, (args, err)
        assert needle in err and err.count("\n") == 1, err
    if "acli.dash" in loaded.aliases:
        rc, _, err = call(loaded, "acli.watch", ["acli.dash"])
        assert rc == 2 and "interactive" in err
    # a callable alias and a StringIO stdout: everything is valid but the
    # output is no terminal
    rc, out, err = call(loaded, "acli.watch", ["acli.ptree", "1"])
    assert rc == 2 and "tty" in err


# -- completion ----------------------------------------------------------------

def test_acli_tab_lists_the_aliases(loaded, check_completer):
    assert EXPECTED_ALIASES <= check_completer("", prefix="acli.")


def test_flags_complete_with_descriptions(loaded, check_completer):
    values, raw = check_completer("acli.ptree", prefix="--", send_original=True)
    assert {"--tree", "--json", "--cpu", "--color", "--no-strays", "--help"} <= values
    described = {c.value.strip(): c.description for c in raw}
    assert "machine-readable" in described["--json"]


def test_option_choices_complete(loaded, check_completer):
    assert check_completer("acli.ptree --color", prefix="") >= {"auto", "always", "never"}


def test_processes_complete_by_pid_and_name(loaded, check_completer, sleeper):
    values, raw = check_completer("acli.ptree", prefix=str(sleeper.pid), send_original=True)
    assert str(sleeper.pid) in values
    desc = {c.value.strip(): c.description for c in raw}[str(sleeper.pid)]
    assert "xontrib-sleeper-marker" in desc
    # an interpreter running -c: its name is the interpreter's
    names = check_completer("acli.ptree", prefix="pytho")
    assert any(n.startswith("python") for n in names)


def test_watch_completes_aliases_then_their_arguments(loaded, check_completer):
    def mine(args):
        return 0

    loaded.aliases["my_status"] = mine
    loaded.aliases["ll"] = ["ls", "-la"]
    names = check_completer("acli.watch", prefix="")
    assert {"acli.ptree", "my_status"} <= names
    assert not names & {"acli.watch", "acli.dash", "ll"}
    assert "--interval" in check_completer("acli.watch", prefix="--")
    assert "--tree" in check_completer("acli.watch -n 1 acli.ptree", prefix="--")


def test_completion_is_cheap(loaded, check_completer):
    check_completer("acli.ptree", prefix="1")  # warm: the verb module, procfs
    started = time.perf_counter()
    for _ in range(5):
        check_completer("acli.ptree", prefix="1")
    assert (time.perf_counter() - started) / 5 < 0.25


def test_bindspace_names_are_the_runtime_dirs_holding_sockets(tmp_path, monkeypatch):
    import socket

    from tractor_diag.completers import bindspace_names

    # A runtime dir longer than a description's width: the counts and the
    # note must survive the clip (a long pytest basetemp cut "(the default)").
    tmp_path = tmp_path / ("d" * 40)
    tmp_path.mkdir(mode=0o700)  # platformdirs takes only a private runtime dir
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "tractor").mkdir()
    (tmp_path / "otherapp").mkdir()
    (tmp_path / "nosockets").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        monkeypatch.chdir(tmp_path / "otherapp")  # the full path is past AF_UNIX's limit
        sock.bind("leaf@123.sock")
        names = {s.value: s.description for s in bindspace_names()}
    finally:
        sock.close()
    assert set(names) == {"tractor", "otherapp"}
    assert "1 socket files" in names["otherapp"] and "default" in names["tractor"]


def test_option_values_by_kind(loaded, check_completer, sleeper, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "tractor").mkdir()
    assert str(sleeper.pid) in check_completer("acli.reap --parent", prefix=str(sleeper.pid))
    assert "tractor" in check_completer("acli.reap --bindspace", prefix="")
    assert "tractor" in check_completer("acli.bindspace_scan", prefix="")


def test_positional_kinds_pick_the_values():
    import argparse

    from tractor_diag.completers import complete_args

    p = argparse.ArgumentParser()
    p.add_argument("dir", nargs="?", metavar="DIR|NAME")
    p.add_argument("--out", metavar="PATH")
    assert complete_args(p, [], "./") is None  # a path: the shell completes it
    assert complete_args(p, ["--out"], "") is None
    assert {s.value for s in complete_args(p, [], "--")} == {"--help", "-h", "--out"}
    assert complete_args(p, ["--", "x"], "") is None


@pytest.mark.parametrize("how", ["xontrib load", "entry-point autoload"])
def test_loading_imports_nothing_heavy(how, tmp_path):
    """A real xonsh: after loading (explicitly, or as every xonsh start does
    through the entry point), none of the heavy modules, and no verb module,
    is imported."""
    from _xonsh_helpers import run_xonsh

    probe = ("import sys\n"
             "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in "
             "('trio', 'textual', 'msgspec', 'psutil', 'rich', 'platformdirs') "
             "or m.startswith(('tractor_diag.commands.', 'tractor_diag.cli', 'tractor_diag.procfs'))))\n"
             "print('ALIASES', ' '.join(sorted(a for a in aliases if a.startswith('acli.'))))\n")
    if how == "xontrib load":
        res = run_xonsh("xontrib load tractor_diag\n" + probe)
    else:
        res = run_xonsh(probe, no_rc=False, XONSHRC="/dev/null", XONSHRC_DIR=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout
    assert "acli.ptree" in res.stdout and "acli.watch" in res.stdout


def test_completions_of_a_hostile_process_are_escaped(loaded, check_completer, hostile):
    """Its pid's description shows its title escaped; its name, which holds
    control characters, is not offered as a value to type."""
    from test_terminal_safety import ACTOR_SHOWN

    def raw(text: str) -> bool:
        return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)

    values, comps = check_completer("acli.ptree", prefix=str(hostile.pid), send_original=True)
    assert str(hostile.pid) in values
    desc = {c.value.strip(): c.description for c in comps}[str(hostile.pid)]
    assert ACTOR_SHOWN in desc and not raw(desc), desc
    values, comps = check_completer("acli.ptree", prefix="ev", send_original=True)
    assert not any(raw(c.value) or raw(c.description) for c in comps), comps
