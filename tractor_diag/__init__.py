"""tractor-diag: see what a hung tractor actor tree is doing, and clean up.

Importing the package is cheap on purpose (xonsh loads our xontrib at every
start): submodules are imported when a name is first used.
"""
from __future__ import annotations

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "Proc": "model", "Entry": "model", "Snapshot": "model", "Event": "model",
    "ActorInfo": "model", "TCPAddr": "model", "UDSAddr": "model",
    "parse_actor": "actors", "parse_addr": "actors",
    "Targets": "trees", "take_snapshot": "trees", "take_two": "trees",
    "scan": "procfs",
    "Sampler": "sampler",
    "format_task_tree": "taskdump", "write_dump": "taskdump",
    "parse_dumps": "taskdump", "DumpBlock": "taskdump",
    "capture": "stacks", "dump_all": "bundle", "write_bundle": "bundle",
    "diagnose": "diagnosis", "examine": "diagnosis",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'tractor_diag' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
