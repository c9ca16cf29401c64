"""Holds every leaf actor in its boot window: the title ``_subactor[leaf…]``
is never set, the leaf blocks where it would set it (tractor calls
``setproctitle.setproctitle`` early in the child's boot). A forked child
keeps showing its parent's title meanwhile; an exec'd one its argv."""
import time

try:
    import setproctitle as _stp
except ImportError:
    _stp = None

if _stp is not None:
    _real = _stp.setproctitle

    def _stalled(title, *args, **kwargs):
        if title.startswith('_subactor[leaf'):
            time.sleep(3600)
        return _real(title, *args, **kwargs)

    _stp.setproctitle = _stalled
