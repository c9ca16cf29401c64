"""Small real programs for the hangs that are not actor trees: zombies,
runaways, listeners that outlive their tree, stale socket files.

Run with any python of the project (stdlib only, plus ``setproctitle`` for
``--title``). Each prints one line starting with ``READY`` on stdout once the
OS-visible fact it promises holds, then sleeps until signalled::

    helpers.py zombie [--count N] [--code C] [--title NAME]
        spawn N children that exit with code C and never reap them;
        READY <pid> <pid> ... once every child is in state Z.
        --title: each child first sets the title _subactor[NAME_i@pid] so the
        zombie's comm looks like a current-runtime actor's.
    helpers.py runaway [--title NAME]
        READY <pid>, then burn a core in a tight loop.
    helpers.py listen-tcp PORT [--host H] [--title NAME]
        bind + listen on H:PORT (default 127.0.0.1); READY <pid>.
    helpers.py listen-uds DIR NAME [--title] [--file FILE]
        bind + listen on DIR/NAME@<pid>.sock (or DIR/FILE, e.g.
        registry@1616.sock); READY <path>.
        --title: also set the title _subactor[NAME@pid].

A stale UDS socket is made by killing a ``listen-uds`` binder with SIGKILL:
the socket file stays behind with no binder (see conftest ``uds_socket``).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def set_title(name: str) -> None:
    import setproctitle
    setproctitle.setproctitle(f'_subactor[{name}@{os.getpid()}]')


def ready(*parts) -> None:
    print(' '.join(['READY', *map(str, parts)]), flush=True)


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def proc_state(pid: int) -> str:
    with open(f'/proc/{pid}/stat', 'rb') as f:
        data = f.read()
    return data[data.rindex(b')') + 2:].split()[0].decode()


def cmd_zombie(args) -> None:
    kids = []
    for i in range(args.count):
        code = f'import sys; sys.exit({args.code})'
        if args.title:
            code = (f'import os, setproctitle, sys; setproctitle.setproctitle('
                    f'"_subactor[{args.title}_{i}@%d]" % os.getpid()); '
                    f'sys.exit({args.code})')
        # keep the Popen objects alive and never wait(): nothing reaps them
        kids.append(subprocess.Popen([sys.executable, '-c', code],
                                     stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    while not all(proc_state(k.pid) == 'Z' for k in kids):
        if time.monotonic() > deadline:
            sys.exit('children did not exit')
        time.sleep(0.02)
    ready(*(k.pid for k in kids))
    sleep_forever()


def cmd_runaway(args) -> None:
    if args.title:
        set_title(args.title)
    ready(os.getpid())
    n = 0
    while True:
        n += 1


def cmd_listen_tcp(args) -> None:
    if args.title:
        set_title(args.title)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((args.host, args.port))
    s.listen(16)
    ready(os.getpid())
    sleep_forever()


def cmd_listen_uds(args) -> None:
    if args.title:
        set_title(args.name)
    os.makedirs(args.dir, mode=0o700, exist_ok=True)
    path = os.path.join(args.dir,
                        args.file or f'{args.name}@{os.getpid()}.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    ready(path)
    try:
        sleep_forever()
    finally:
        os.unlink(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    z = sub.add_parser('zombie')
    z.add_argument('--count', type=int, default=1)
    z.add_argument('--code', type=int, default=3)
    z.add_argument('--title', default=None)
    z.set_defaults(func=cmd_zombie)
    r = sub.add_parser('runaway')
    r.add_argument('--title', default=None)
    r.set_defaults(func=cmd_runaway)
    t = sub.add_parser('listen-tcp')
    t.add_argument('port', type=int)
    t.add_argument('--host', default='127.0.0.1')
    t.add_argument('--title', default=None)
    t.set_defaults(func=cmd_listen_tcp)
    u = sub.add_parser('listen-uds')
    u.add_argument('dir')
    u.add_argument('name')
    u.add_argument('--title', action='store_true')
    u.add_argument('--file', default=None)
    u.set_defaults(func=cmd_listen_uds)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == '__main__':
    main()
