"""Actor recognition: real-shaped command lines, titles and comms.

Every argv here is the shape ``/proc/<pid>/cmdline`` really has (checked
against running released and current trees); the raw-bytes cases go through
`split_cmdline` exactly as a scan does.
"""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tractor_diag.actors import (
    REGISTRY_SENTINEL_PORT,
    is_hashed_sock_name,
    parse_actor,
    parse_addr,
    parse_sock_name,
    split_cmdline,
)
from tractor_diag.model import ActorInfo, TCPAddr, UDSAddr, to_json

UUID = "bb0cee16-8797-475c-8bb2-9b99337b1652"


def child(*interp_opts: str, uid: str = f"('name', '{UUID}')",
          addr: str | None = "('127.0.0.1', 1616)", extra: tuple[str, ...] = (),
          python: str = "python") -> list[str]:
    argv = [python, *interp_opts, "-m", "tractor._child", "--uid", uid]
    if addr is not None:
        argv += ["--parent_addr", addr]
    return argv + list(extra)


def raw(*args: str | bytes) -> bytes:
    """argv as the kernel stores it: NUL-terminated elements."""
    return b"".join((a.encode() if isinstance(a, str) else a) + b"\0" for a in args)


# --- released runtime: ``python -m tractor._child ...`` ---------------------

def test_released_full_shape():
    argv = child(extra=("--loglevel", "cancel", "--asyncio"))
    assert parse_actor(argv) == ActorInfo(
        name="name", generation="released", uuid=UUID,
        parent_addr=TCPAddr("127.0.0.1", 1616), loglevel="cancel", asyncio=True,
        how="child-argv", backend="trio",
    )


def test_released_as_recorded_from_a_real_tree():
    # /proc/<pid>/cmdline of a tractor 0.1.0a5 spawner, byte for byte
    data = raw("/work/main/.venv-tractor/bin/python", "-m", "tractor._child",
               "--uid", f"('spawner_0', '{UUID}')",
               "--parent_addr", "('127.0.0.1', 45123)", "--loglevel", "ERROR")
    info = parse_actor(split_cmdline(data), "python")
    assert info is not None
    assert (info.name, info.generation, info.uuid) == ("spawner_0", "released", UUID)
    assert info.parent_addr == TCPAddr("127.0.0.1", 45123)
    assert info.loglevel == "ERROR" and info.asyncio is False


@pytest.mark.parametrize("python", [
    "python", "python3", "python3.11", "/usr/bin/python3.13",
    "/home/u/proj/.venv/bin/python", "/opt/py/3.12.1/bin/python3.12",
])
def test_released_any_interpreter_path(python):
    info = parse_actor(child(python=python))
    assert info is not None and info.name == "name"


@pytest.mark.parametrize("opts", [
    ("-u",), ("-X", "dev"), ("-X", "dev", "-u"), ("-Xdev",), ("-W", "ignore"),
    ("-Wignore",), ("-B", "-O", "-s"), ("-I",), ("-X", "importtime", "-X", "dev"),
    ("--check-hash-based-pycs", "always"),
])
def test_released_with_interpreter_options(opts):
    info = parse_actor(child(*opts))
    assert info is not None and info.generation == "released" and info.name == "name"


@pytest.mark.parametrize("argv", [
    ["python", "-um", "tractor._child", "--uid", "('a', 'u')"],
    ["python", "-Im", "tractor._child", "--uid", "('a', 'u')"],
    ["python", "-mtractor._child", "--uid", "('a', 'u')"],
    ["python", "-uX", "dev", "-m", "tractor._child", "--uid", "('a', 'u')"],
])
def test_released_clustered_short_options(argv):
    info = parse_actor(argv)
    assert info is not None and info.name == "a"


def test_released_uds_parent():
    info = parse_actor(child(addr="('/run/user/1000/tractor', 'root@123.sock')"))
    assert info is not None
    assert info.parent_addr == UDSAddr("/run/user/1000/tractor", "root@123.sock")
    assert info.parent_addr.path == "/run/user/1000/tractor/root@123.sock"


def test_released_list_shaped_uid_and_addr():
    info = parse_actor(child(uid=f"['name', '{UUID}']", addr="['127.0.0.1', 5555]"))
    assert info is not None
    assert info.uuid == UUID and info.parent_addr == TCPAddr("127.0.0.1", 5555)


def test_released_double_quoted_and_equals_forms():
    info = parse_actor(["python", "-m", "tractor._child",
                        '--uid=("n", "u")', "--parent_addr=('::1', 1616)", "--loglevel=info"])
    assert info is not None
    assert (info.name, info.uuid, info.loglevel) == ("n", "u", "info")
    assert info.parent_addr == TCPAddr("::1", 1616)


@pytest.mark.parametrize("name", ["a.b", "my-actor", "x@y", "ns.sub-actor@2", "ünï", "with space"])
def test_released_names_with_punctuation(name):
    info = parse_actor(child(uid=repr((name, UUID))))
    assert info is not None and info.name == name


def test_released_flag_without_value_is_not_swallowed():
    # ``--loglevel`` given no value must not eat ``--asyncio``
    info = parse_actor(child(extra=("--loglevel", "--asyncio")))
    assert info is not None and info.loglevel is None and info.asyncio is True


def test_released_odd_uuid_and_addr_degrade_gracefully():
    info = parse_actor(child(uid="('n', None)", addr="garbage"))
    assert info is not None and info.uuid is None and info.parent_addr is None


@pytest.mark.parametrize("uid", [None, "('only-one',)", "(1, 'u')", "name", "('a', 'b', 'c')",
                                 "__import__('os').system('true')", "(" * 300 + ")" * 300])
def test_released_needs_a_parseable_uid(uid):
    argv = ["python", "-m", "tractor._child"]
    if uid is not None:
        argv += ["--uid", uid]
    assert parse_actor(argv) is None


# --- current runtime: ``_subactor[name@pid]`` titles --------------------------

def test_title_nul_padded_as_recorded():
    # a current-runtime leaf: title then NULs up to the old argv length
    data = b"_subactor[leaf_0_0@10543]" + b"\0" * 150
    info = parse_actor(split_cmdline(data), "_subactor[leaf_")
    assert info == ActorInfo(name="leaf_0_0", generation="current")


@pytest.mark.parametrize("data", [
    b"_subactor[udsleaf@9205]" + b" " * 40,
    b"_subactor[udsleaf@9205]" + b" " * 40 + b"\0",
    b"_subactor[udsleaf@9205]   \0  \0\0\0   \0",
    b"_subactor[udsleaf@9205]\0",
    b"_subactor[udsleaf@9205]",
])
def test_title_padding_spaces_and_nuls(data):
    info = parse_actor(split_cmdline(data), "_subactor[udsl")
    assert info is not None
    assert (info.name, info.generation, info.name_truncated) == ("udsleaf", "current", False)


@pytest.mark.parametrize("name", ["a.b.c", "my-actor", "x@y", "actor@host@2", "sp ace", "ü"])
def test_title_names_with_punctuation(name):
    info = parse_actor([f"_subactor[{name}@4242]" + " " * 8])
    assert info is not None and info.name == name


@pytest.mark.parametrize("argv", [
    ["_subactor[x@1] extra"],          # more after the closing bracket
    ["_subactor[x@]"],                 # no pid
    ["_subactor[@12]"],                # no name
    ["_subactor[x@12"],                # not closed
    ["_subactor[a]b@1]"],
    ["_subactor[x@1]", "--flag"],      # a real argv, not padding
    [" _subactor[x@1]"],
    ["subactor[x@1]"],
])
def test_title_exact_shape_only(argv):
    assert parse_actor(argv, "whatever") is None


# --- comm only: zombies (empty cmdline), 15-byte truncation ------------------

def test_zombie_comm_truncated_name():
    info = parse_actor([], "_subactor[proct")
    assert info == ActorInfo(name="proct", generation="current", name_truncated=True,
                             how="comm")


def test_comm_cut_inside_the_pid_keeps_the_name():
    info = parse_actor([], "_subactor[ab@12")
    assert info is not None and info.name == "ab" and info.name_truncated


def test_comm_whole_title_fits():
    info = parse_actor([], "_subactor[a@12]")
    assert info == ActorInfo(name="a", generation="current", how="comm")


def test_comm_recognised_only_when_cmdline_is_empty():
    # a live process has its title in cmdline; a comm that merely starts
    # that way (a renamed thread, prctl) with a normal argv is not an actor
    assert parse_actor(["python", "x.py"], "_subactor[proct") is None
    assert parse_actor(split_cmdline(b""), "_subactor[proct") is not None


@pytest.mark.parametrize("comm", ["_subactor[", "python", "", "kworker/0:1", "(sd-pam)"])
def test_comm_non_actor(comm):
    assert parse_actor([], comm) is None


# --- things that mention the markers but are not actors ----------------------

@pytest.mark.parametrize("argv", [
    ["pytest", "-k", "_subactor"],
    ["python", "-m", "pytest", "-k", "_subactor[x@1]"],
    ["python", "-c", "import tractor._child"],
    ["python", "-c", "import runpy; runpy.run_module('tractor._child')", "-m", "tractor._child",
     "--uid", "('n', 'u')"],
    ["python3", "-Ic", "pass", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["grep", "tractor._child"],
    ["grep", "-r", "_subactor[", "."],
    ["bash", "-c", "python -m tractor._child --uid ('n', 'u') --parent_addr ('127.0.0.1', 1616)"],
    ["sh", "-c", "exec python -m tractor._child --uid \"('n','u')\""],
    ["python", "script.py", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["python", "-", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["python", "--", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["python", "-m", "tractor._childish", "--uid", "('n', 'u')"],
    ["python", "-m", "tractor", "_child", "--uid", "('n', 'u')"],
    ["python", "-m", "pdb", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["vim", "_subactor[x@1]"],
    ["less", "/tmp/_subactor[x@1].log"],
    ["strace", "-f", "python", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["env", "PYTHONPATH=.", "python", "-m", "tractor._child", "--uid", "('n', 'u')"],
    ["-m", "tractor._child"],
    ["python", "-m"],
    ["python", "-X"],
    [],
    [""],
])
def test_not_actors(argv):
    assert parse_actor(argv, argv[0][:15] if argv else "") is None


# --- addresses and socket names ---------------------------------------------

@pytest.mark.parametrize("text, addr", [
    ("('127.0.0.1', 1616)", TCPAddr("127.0.0.1", 1616)),
    ("['localhost', 0]", TCPAddr("localhost", 0)),
    ("('::1', 65535)", TCPAddr("::1", 65535)),
    ("('/run/user/1000/tractor', 'root@123.sock')", UDSAddr("/run/user/1000/tractor", "root@123.sock")),
    ("('/tmp/runtime-0/tractor', 'registry@1616.sock')", UDSAddr("/tmp/runtime-0/tractor", "registry@1616.sock")),
])
def test_parse_addr(text, addr):
    assert parse_addr(text) == addr


@pytest.mark.parametrize("text", [
    None, "", "127.0.0.1:1616", "('h', 70000)", "('h', -1)", "('h', True)", "(1, 2)",
    "('h', 1, 2)", "{'h': 1}", "('h', 1.5)", "('h', " + "9" * 40 + ")",
])
def test_parse_addr_rejects(text):
    assert parse_addr(text) is None


def test_addr_json_round_trip():
    for addr in (TCPAddr("127.0.0.1", 1616), UDSAddr("/run/x", "a@1.sock")):
        info = ActorInfo(name="n", generation="released", parent_addr=addr)
        assert msgspec.json.decode(to_json(info), type=ActorInfo) == info


@pytest.mark.parametrize("fname, parsed", [
    ("root@123.sock", ("root", 123)),
    ("registry@1616.sock", ("registry", REGISTRY_SENTINEL_PORT)),
    ("a.b-c@d@42.sock", ("a.b-c@d", 42)),
    ("actor.0123456789abcdef0123456789abcdef@7.sock", ("actor.0123456789abcdef0123456789abcdef", 7)),
])
def test_parse_sock_name(fname, parsed):
    assert parse_sock_name(fname) == parsed


@pytest.mark.parametrize("fname", ["@12.sock", "x@.sock", "x@12.sock.bak", "x@12", "x.sock", "a/b@1.sock", ""])
def test_parse_sock_name_rejects(fname):
    assert parse_sock_name(fname) is None


def test_hashed_sock_names():
    assert is_hashed_sock_name("actor." + "0f" * 16)
    assert not is_hashed_sock_name("actor." + "0f" * 15)
    assert not is_hashed_sock_name("actor." + "0F" * 16)
    assert not is_hashed_sock_name("root")


# --- raw cmdline bytes -------------------------------------------------------

def test_split_cmdline_shapes():
    assert split_cmdline(b"") == []
    assert split_cmdline(b"sleep\x0030\x00") == ["sleep", "30"]
    assert split_cmdline(b"a\x00\x00b\x00") == ["a", "", "b"]
    # a title written without trailing NUL
    assert split_cmdline(b"_subactor[x@1]  ") == ["_subactor[x@1]  "]


def test_split_cmdline_non_utf8_stays_encodable():
    argv = split_cmdline(b"python\x00caf\xe9\x00\xff\xfe\x00")
    assert argv[0] == "python" and len(argv) == 3
    for arg in argv:
        arg.encode("utf-8")  # strict: JSON output and a UTF-8 stdout need this
    assert msgspec.json.decode(to_json(argv)) == argv


# --- never raises ------------------------------------------------------------

_pieces = st.sampled_from([
    b"python", b"-m", b"tractor._child", b"--uid", b"--parent_addr", b"--loglevel",
    b"--asyncio", b"-X", b"-c", b"-", b"--", b"_subactor[", b"@", b"]", b"(", b")",
    b"'", b",", b"[", b" ", b"\0", b"\xff", b"1616", b"('a', 'b')", b"('h', 99999999999999999999)",
])
_cmdline_bytes = st.one_of(st.binary(max_size=300), st.lists(_pieces, max_size=20).map(b"".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_cmdline_bytes, comm=st.binary(max_size=15))
def test_parse_actor_never_raises_on_bytes(data, comm):
    argv = split_cmdline(data)
    info = parse_actor(argv, comm.decode("utf-8", "replace"))
    assert info is None or isinstance(info, ActorInfo)
    if info is not None:
        to_json(info)  # whatever was recognised must be encodable


@settings(max_examples=300, deadline=None)
@given(argv=st.lists(st.text(max_size=40), max_size=12), comm=st.text(max_size=15))
def test_parse_actor_never_raises_on_strings(argv, comm):
    info = parse_actor(argv, comm)
    assert info is None or isinstance(info, ActorInfo)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.none(), st.text(max_size=200), _cmdline_bytes.map(lambda b: b.decode("utf-8", "replace"))))
def test_parse_addr_never_raises(text):
    addr = parse_addr(text)
    assert addr is None or isinstance(addr, (TCPAddr, UDSAddr))
    if addr is not None:
        to_json(addr)


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=120), st.binary(max_size=120).map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_parse_sock_name_never_raises(name):
    out = parse_sock_name(name)
    assert out is None or (isinstance(out[0], str) and isinstance(out[1], int))
    is_hashed_sock_name(name)


# --- actors named by their own stack (pure parsing of py-spy's locals) ----------

def _thread(frames, name="MainThread"):
    from tractor_diag.stackmodel import Thread

    return Thread(thread_id=1, os_thread_id=10, name=name, active=False,
                  owns_gil=False, frames=frames)


def _mp_thread(prep_repr: str | None, entry: str = "tractor/spawn/_entry.py"):
    from tractor_diag.stackmodel import Frame, Local

    return [_thread([
        Frame(name="<module>", filename="<string>", line=1),
        Frame(name="_main", filename="/py/lib/python3.13/multiprocessing/spawn.py", line=135,
              locals=None if prep_repr is None else [
                  Local(name="fd", repr="13", arg=True),
                  Local(name="preparation_data", repr=prep_repr)]),
        Frame(name="_mp_main", filename=f"/venv/site-packages/{entry}", line=107),
        Frame(name="subtree", filename="/app/tree.py", line=71),
    ])]


def _child_main_thread(uid_repr: str, thread: str = "main-thread-forkserver[x]"):
    from tractor_diag.stackmodel import Frame, Local

    return _thread([
        Frame(name="_worker", filename="/venv/tractor/spawn/_main_thread_forkserver.py", line=9),
        Frame(name="_actor_child_main", filename="/venv/site-packages/tractor/_child.py", line=120,
              locals=[Local(name="uid", repr=uid_repr, arg=True),
                      Local(name="spawn_method", repr='"main_thread_forkserver"', arg=True)]),
        Frame(name="subtree", filename="/app/tree.py", line=71),
    ], name=thread)


def test_mp_name_from_preparation_data():
    from tractor_diag.stacknames import name_from_stack

    auth = '"authkey": <AuthenticationString at 0x7f4ad86fde10>'
    assert name_from_stack(_mp_thread(
        '{"log_to_stderr": False, ' + auth + ', "name": "spawner_0", "sys_path": [...], ...}'
    )) == ("spawner_0", "mp-name")
    # escaped as py-spy escapes; a quote inside the name does not end it
    assert name_from_stack(_mp_thread('{"name": "a\\"b", ...}')) == ('a"b', "mp-name")
    assert name_from_stack(_mp_thread('{"log_to_stderr": False, ...}')) is None  # cut before it
    assert name_from_stack(_mp_thread(None)) is None  # no locals asked for
    # a plain multiprocessing worker: no tractor entry point under it
    assert name_from_stack(_mp_thread('{"name": "Process-1"}', entry="app/worker.py")) is None
    assert name_from_stack([]) is None


def test_name_from_the_child_mains_uid():
    from tractor_diag.stacknames import name_from_stack

    # a fork of a worker thread: its one thread is not called MainThread
    uid = '("leaf_0_0", "b6599b6e-d133-4ccf-802b-0f84ed94bae2")'
    assert name_from_stack([_child_main_thread(uid)]) == ("leaf_0_0", "child-uid")
    assert name_from_stack([_child_main_thread('<tuple at 0x7f>')]) is None
    # two threads naming two actors: nothing is sure
    assert name_from_stack([_child_main_thread(uid),
                            _child_main_thread('("other", "u")', thread="t2")]) is None
