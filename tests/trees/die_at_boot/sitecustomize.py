"""Makes every trio-spawned sub-actor (``python -m tractor._child``) die
at boot, before it connects to its parent: its parent is left in
``wait_for_peer`` with a zombie child. The root is untouched."""
import os

try:
    with open('/proc/self/cmdline', 'rb') as f:
        _argv = f.read().split(b'\0')
except OSError:
    _argv = []
if os.environ.get('WHY_TREE_DIE_AT_BOOT') and b'tractor._child' in _argv:
    os._exit(3)
