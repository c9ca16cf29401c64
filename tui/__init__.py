"""The Textual dashboard (``tractor-diag dash``).

Installed as ``tractor_diag.tui``. Importing this package pulls in nothing
heavy; `DashApp` (and with it Textual) is imported on first use.
"""
from __future__ import annotations

__all__ = ["DashApp"]


def __getattr__(name: str):
    if name == "DashApp":
        from .app import DashApp

        return DashApp
    raise AttributeError(f"module 'tractor_diag.tui' has no attribute {name!r}")
