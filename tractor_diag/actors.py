"""Who is a tractor actor: parsing command lines and process titles.

Two runtime generations look different from outside:

- released runtimes run ``python -m tractor._child --uid ('name', 'uuid')
  --parent_addr (...) [--loglevel L] [--asyncio]``;
- current runtimes overwrite argv with the title ``_subactor[name@pid]``
  (padded with spaces/NULs to the old argv length); the kernel ``comm`` is that
  title cut to 15 bytes.

What each spawn backend of current tractor shows (measured on real trees):

- ``trio``: ``python -m tractor._child --uid ...`` until the child sets its
  title ``_subactor[name@pid]`` (never, without ``setproctitle``);
- ``main_thread_forkserver``: fork without exec from a worker thread, so
  until the title is set the child carries its parent's command line (and
  its parent's title, whose pid is then not its own) and the worker
  thread's name as ``comm`` (``None from tract`` with trio's naming on
  3.13, ``main-thread-for`` where Python names OS threads);
- ``mp_forkserver``: ``python -B -c 'from tractor.spawn._forkserver_override
  import main; main(...)'`` for the fork-server sidecar and every actor it
  forks, no title;
- ``mp_spawn``: the plain multiprocessing child ``python -B -c 'from
  multiprocessing.spawn import spawn_main; spawn_main(...)'
  --multiprocessing-fork``, no title: generic, so `recognise` needs more
  evidence than this module can see.

Only those exact shapes count: ``pytest -k _subactor`` mentions the word but is
not an actor. Every function here takes untrusted bytes and never raises.
"""
from __future__ import annotations

import re

from .model import ActorInfo, Addr, TCPAddr, UDSAddr

_CHILD_MODULE = "tractor._child"
_COMM_PREFIX = "_subactor["
# CPython's short options that take a value (``-X dev`` or ``-Xdev``); ``-c``
# and ``-m`` end the interpreter's own options.
_SHORT_WITH_VALUE = frozenset("cmWX")
_LONG_WITH_VALUE = frozenset({"--check-hash-based-pycs"})


def split_cmdline(raw: bytes) -> list[str]:
    """``/proc/<pid>/cmdline`` bytes -> argv (NUL separated, trailing NUL)."""
    if not raw:
        return []
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    # Not surrogateescape: lone surrogates cannot be encoded to JSON or to a
    # UTF-8 stdout, and one odd argv byte must not break a whole snapshot.
    return raw.decode("utf-8", "backslashreplace").split("\0")


# ``comm`` of a child forked by ``main_thread_forkserver`` before it sets a
# title: the forking worker thread's OS name. Python >= 3.14 names it after
# the thread (``main-thread-forkserver[name]``); before that it inherits the
# name trio gave its ``to_thread`` worker (``None from tractor.spawn...``).
FORK_THREAD_COMMS = ("main-thread-for", "None from tract")
# Threads that each run one ``subint`` actor (cut to 15 bytes in ``comm``).
SUBINT_THREAD_PREFIX = "subint-driver["
_FORKSERVER_CODE = "from tractor.spawn._forkserver_override import main;"
_MP_SPAWN_CODE = "from multiprocessing.spawn import spawn_main;"


def parse_actor(argv: list[str], comm: str = "", pid: int | None = None,
                ppid: int | None = None) -> ActorInfo | None:
    """Return the actor a process is, or ``None`` when it is not one.

    ``pid`` and ``ppid`` (the process's own and its parent's) tell a title
    carrying the parent's pid apart: that is a child forked without exec
    and still booting, not the titled actor. (A title with any other pid is
    believed: inside a PID namespace the title holds the pid the actor sees,
    not ours.)
    """
    try:
        return (
            _parse_title(argv, comm, pid, ppid)
            or _parse_child_argv(argv)
            or (_parse_comm(comm) if not any(argv) else None)
            or _parse_forkserver(argv)
            or _parse_fork_thread(comm)
        )
    except Exception:  # noqa: BLE001 - untrusted input must never crash a scan
        return None


def _parse_title(argv: list[str], comm: str = "", pid: int | None = None,
                 ppid: int | None = None) -> ActorInfo | None:
    if not argv or not argv[0].startswith(_COMM_PREFIX):
        return None
    # setproctitle writes the title over the old argv area and pads it; the
    # padding may be spaces, NULs or both, so it can span argv "elements".
    title = "\0".join(argv).rstrip(" \0")
    # ``_subactor[NAME@PID]``, by str methods: a pattern compiled at import
    # costs every start-up, most of which see no title at all
    name, at, digits = title[len(_COMM_PREFIX):-1].rpartition("@")
    if not (title.endswith("]") and at and name and digits.isdecimal()):
        return None
    if "\0" in name or "]" in name:
        return None
    title_pid = int(digits)
    if title_pid != pid and title_pid == ppid:
        # Forked without exec from the titled actor and not titled yet (or
        # it died before it could be): its parent's title, not its own.
        return ActorInfo(
            name="", generation="current", how="parent-title", sure="likely",
            role="booting", forked_from=title_pid,
            backend="main_thread_forkserver" if comm.startswith(FORK_THREAD_COMMS) else None,
        )
    return ActorInfo(name=name, generation="current")


def _c_code(argv: list[str]) -> str | None:
    """The code of ``python [opts] -c CODE ...``, else ``None``."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-c":
            return argv[i + 1] if i + 1 < len(argv) else None
        if not arg.startswith("-") or arg in ("-", "--") or arg == "-m":
            return None
        i += 1
    return None


def _parse_forkserver(argv: list[str]) -> ActorInfo | None:
    """Sidecar and actors of ``mp_forkserver`` share this command line; which
    is which needs the parent (see `recognise`)."""
    code = _c_code(argv)
    if code is None or not code.startswith(_FORKSERVER_CODE):
        return None
    return ActorInfo(name="", generation="current", how="mp-forkserver",
                     sure="likely", backend="mp_forkserver")


def is_mp_spawn_child(argv: list[str]) -> bool:
    """A ``multiprocessing`` spawn child: ``mp_spawn`` actors run as one,
    and so does any other multiprocessing program's worker."""
    if not argv or argv[-1] != "--multiprocessing-fork":
        return False
    code = _c_code(argv)
    return code is not None and code.startswith(_MP_SPAWN_CODE)


def _parse_fork_thread(comm: str) -> ActorInfo | None:
    if not comm.startswith(FORK_THREAD_COMMS):
        return None
    return ActorInfo(name="", generation="current", how="fork-thread",
                     sure="likely", backend="main_thread_forkserver")


def _parse_comm(comm: str) -> ActorInfo | None:
    if not comm.startswith(_COMM_PREFIX):
        return None
    rest = comm[len(_COMM_PREFIX):]
    m = re.match(r"(?P<name>.+)@(?P<pid>\d+)\]\Z", rest)
    if m is not None:
        return ActorInfo(name=m["name"], generation="current", how="comm")
    # The cut may fall inside the pid (``_subactor[ab@12``): drop that tail.
    # The name before it is most likely whole, but nothing proves it.
    m = re.match(r"(?P<name>.+)@\d*\Z", rest)
    if m is not None:
        rest = m["name"]
    if not rest:
        return None
    return ActorInfo(name=rest, generation="current", name_truncated=True, how="comm")


def _child_module_index(argv: list[str]) -> int | None:
    """Index just after ``-m tractor._child`` when argv runs that module as
    the interpreter's main module (not merely mentions it).

    Walks the interpreter's options the way CPython parses them: short flags
    cluster (``-um``, ``-IX dev``), a value may be attached (``-Xdev``,
    ``-mtractor._child``), and a script path, ``-``, ``--`` or ``-c`` end
    the options without running a module.
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-", "--") or not arg.startswith("-"):
            return None
        if arg.startswith("--"):
            i += 2 if arg in _LONG_WITH_VALUE else 1
            continue
        for j in range(1, len(arg)):
            flag = arg[j]
            if flag not in _SHORT_WITH_VALUE:
                continue
            value: str | None = arg[j + 1:]
            if not value:
                i += 1
                value = argv[i] if i < len(argv) else None
            if flag == "m":
                return i + 1 if value == _CHILD_MODULE else None
            if flag == "c":
                return None
            break
        i += 1
    return None


def _parse_child_argv(argv: list[str]) -> ActorInfo | None:
    start = _child_module_index(argv)
    if start is None:
        return None
    opts: dict[str, str | None] = {}
    rest = argv[start:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("--"):
            key, eq, val = arg[2:].partition("=")
            if eq:
                opts[key] = val
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                opts[key] = rest[i + 1]
                i += 1
            else:
                opts[key] = None
        i += 1
    uid = _literal(opts.get("uid"))
    if not (isinstance(uid, (tuple, list)) and len(uid) == 2 and isinstance(uid[0], str)):
        return None
    name, uuid = uid
    return ActorInfo(
        name=name,
        # The current runtime's trio backend starts children the same way;
        # `recognise` tells the two apart by the interpreter.
        generation="released",
        how="child-argv",
        backend="trio",
        uuid=uuid if isinstance(uuid, str) else None,
        parent_addr=parse_addr(opts.get("parent_addr")),
        loglevel=opts.get("loglevel"),
        asyncio="asyncio" in opts,
    )


# text -> value of the immutable literals seen: a tree's command lines are
# parsed on every /proc pass (and again per process by `stacks`), and
# literal_eval compiles each time.
_LITERALS: dict[str, object] = {}
_LITERALS_MAX = 4096


def _immutable(value: object) -> bool:
    if value is None or isinstance(value, (str, int, float)):
        return True
    return isinstance(value, tuple) and all(_immutable(v) for v in value)


def _literal(text: str | None) -> object:
    if not text or len(text) > 4096:
        return None
    try:
        return _LITERALS[text]
    except KeyError:
        pass
    import ast  # only released-runtime command lines carry literals

    try:
        value = ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - literal_eval raises many kinds
        value = None
    if _immutable(value):
        if len(_LITERALS) >= _LITERALS_MAX:
            _LITERALS.clear()
        _LITERALS[text] = value
    return value


def parse_addr(text: str | None) -> Addr | None:
    """``('127.0.0.1', 1616)`` -> TCP, ``('/run/..', 'x@1.sock')`` -> UDS."""
    value = _literal(text)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return None
    a, b = value
    if isinstance(a, str) and isinstance(b, int) and not isinstance(b, bool):
        if not 0 <= b <= 65535:
            return None
        return TCPAddr(host=a, port=b)
    if isinstance(a, str) and isinstance(b, str):
        return UDSAddr(dir=a, name=b)
    return None


# Socket file names in the UDS bindspace dir (compiled at first use, by
# `re`'s own cache: only a look at that dir needs them).
_SOCK_RE = r"(?P<name>[^/\0]+)@(?P<pid>\d+)\.sock\Z"
_HASHED_RE = r"actor\.[0-9a-f]{32}\Z"
REGISTRY_SENTINEL_PORT = 1616


def parse_sock_name(filename: str) -> tuple[str, int] | None:
    """``name@pid.sock`` -> (name, pid); ``None`` for other names."""
    m = re.match(_SOCK_RE, filename)
    if m is None:
        return None
    return m["name"], int(m["pid"])


def is_hashed_sock_name(name: str) -> bool:
    """Names too long for the 108-byte path limit become ``actor.<hex>``."""
    return bool(re.match(_HASHED_RE, name))
