"""A process that tries to forge the terminal of whoever diagnoses it.

    python <copy of this file under a hostile name> BINDSPACE_DIR

Every string it controls carries escape sequences: its process title
(``_subactor[<name>@<pid>]``, so it is an actor), a zombie child's comm,
the file name of its own source (copy it under a name with control
characters), a thread's function and thread name, a trio task's name, and
a listening socket file in BINDSPACE_DIR whose name holds a newline. It
arms the tractor-diag task dumper, prints ``READY <pid> <zombie pid>
<socket path>`` and idles in trio.

``EVIL`` is what every other field carries: OSC 52 (set the clipboard), OSC 0
(window title), CSI 2J (clear screen), a C1 CSI, a bare newline and CR.
"""
from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time

EVIL = "\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x9b2J\r\nFORGED"
# An actor's name holds no ']' (it ends the title), so no OSC: CSI, C1 and
# line breaks still fit.
ACTOR_EVIL = "\x1b[2J\x1b[8m\x9b2J\x07\r\nFORGED"


def _zombie() -> int:
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, b"\x1b[2J\x1b]0;z\x07", 0, 0, 0)  # PR_SET_NAME
        os._exit(3)
    while True:  # never reaped: wait until it is a zombie
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        if data[data.rindex(b")") + 2:].split()[0] == b"Z":
            return pid
        time.sleep(0.01)


def _blocked_forever() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    import setproctitle
    import trio

    import tractor_diag.taskdump

    bindspace = sys.argv[1]
    zombie = _zombie()
    setproctitle.setproctitle(f"_subactor[ev{ACTOR_EVIL}il@{os.getpid()}]")

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(bindspace, f"so\x1b[2J\nck live-active@{os.getpid()}.sock")
    sock.bind(path)
    sock.listen()

    # py-spy reads a frame's function name from its code object
    code = _blocked_forever.__code__
    name = f"fn{EVIL}"
    replace = {"co_name": name}
    if sys.version_info >= (3, 11):
        replace["co_qualname"] = name
    _blocked_forever.__code__ = code.replace(**replace)
    threading.Thread(target=_blocked_forever, name=f"th{EVIL}", daemon=True).start()

    tractor_diag.taskdump.arm()

    async def waiter() -> None:
        await trio.sleep_forever()

    async def root() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, name=f"task{EVIL}")
            await trio.sleep(0.05)
            print("READY", os.getpid(), zombie, path.encode().hex(), flush=True)

    trio.run(root)


if __name__ == "__main__":
    main()
