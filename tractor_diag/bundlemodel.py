"""What a ``dump-all`` bundle records about itself (`meta.json`: versions,
targets, files, what is missing and why) and the sampler history it may
carry. Plain msgspec Structs, no system reads."""
from __future__ import annotations

import msgspec

from .model import Event, Snapshot


class Missing(msgspec.Struct):
    what: str  # "python stack", "task tree", "kernel stack", ...
    why: str
    pid: int | None = None


class BundleMeta(msgspec.Struct):
    path: str
    label: str | None
    started: float  # epoch seconds
    finished: float
    duration: float
    host: str
    kernel: str
    platform: str
    python: str  # the Python running tractor-diag
    tractor_diag: str
    py_spy: str | None
    py_spy_version: str | None
    argv: list[str]
    targets: list[str]
    roots: list[int]
    pids: list[int]
    stuck: list[int]  # pids the summary lists as looking stuck
    files: list[str]
    missing: list[Missing] = []
    sampler_history: bool = False


class History(msgspec.Struct):
    snapshots: list[Snapshot]
    events: list[Event]
