"""Errors a verb reports as one line; the faces map them to exit codes."""
from __future__ import annotations


class DiagError(Exception):
    """Expected failure: print ``str(self)`` as one line, exit ``code``."""

    code = 1


class UsageError(DiagError):
    code = 2


class NotFound(DiagError):
    """No process matched, an unknown pid, a missing file."""

    code = 1


class Unsupported(DiagError):
    """The verb needs Linux' /proc (or another missing facility)."""

    code = 1
