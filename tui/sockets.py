"""Sockets of ONE process, for the detail pane, read on demand.

The library reads them (`tractor_diag.socktables.sockets_of`: the fd links
of the process and the socket tables of its own network namespace). Only
the selected process is looked at, and only when it is selected: a
box-wide join on every tick would be wasted work.
"""
from __future__ import annotations

from tractor_diag.sockmodel import SockView as Sock
from tractor_diag.socktables import sockets_of

__all__ = ["Sock", "sockets_of"]
