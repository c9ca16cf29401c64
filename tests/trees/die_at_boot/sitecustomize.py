"""Makes every sub-actor die at boot, before it connects to its parent: its
parent is left waiting for it in ``wait_for_peer``. The root is untouched.

- trio: the child is ``python -m tractor._child``: it exits here.
- mp_spawn: the child is ``python -c 'from multiprocessing.spawn import
  spawn_main; ...' --multiprocessing-fork``: it exits here (a zombie of the
  root, which reaps mp children only when it joins them).
- mp_forkserver: the children are forked by the fork server, which is
  exec'd (``-c 'from tractor.spawn._forkserver_override import main ...'``):
  an at-fork hook makes each of its forks exit at once, and the fork
  server reaps it (its SIGCHLD handler), so no zombie is left.

``WHY_TREE_DIE_AT_BOOT=stall``: the child stalls there instead (alive,
never connecting).
"""
import os
import time

try:
    with open('/proc/self/cmdline', 'rb') as f:
        _argv = f.read().split(b'\0')
except OSError:
    _argv = []


def _at_boot() -> None:
    if os.environ.get('WHY_TREE_DIE_AT_BOOT') == 'stall':
        time.sleep(3600)
    os._exit(3)


if os.environ.get('WHY_TREE_DIE_AT_BOOT'):
    _line = b' '.join(_argv)
    if b'tractor._child' in _argv or (b'--multiprocessing-fork' in _argv
                                      and b'spawn_main' in _line):
        _at_boot()
    if b'forkserver' in _line and b'import main' in _line:
        os.register_at_fork(after_in_child=_at_boot)
