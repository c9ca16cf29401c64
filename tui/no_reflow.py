"""Scrolling panes that grow without laying out the whole screen again.

Textual lays out the screen whenever a scrolling widget's virtual size
changes: a line written to the events pane, a row come or gone in the
tree. The panes sit in a layout of fixed size, so nothing but their own
scrollbars depends on that size; the layout and the full repaint after it
cost tens of milliseconds a time at 160x50 with a 200-row tree (measured:
most of the dashboard's main thread on a box whose strays come and go).
A widget that takes these repaints only its content and its scrollbars; a
scrollbar shown or hidden still lays out (its own reactive says so).
"""
from __future__ import annotations

from textual.geometry import Size
from textual.reactive import Reactive


def virtual_size(repaint: bool = True) -> Reactive[Size]:
    """The class attribute that replaces the widget's ``virtual_size``;
    ``repaint=False`` for a widget that repaints itself whatever changes
    its lines (a size changed by lines off screen then costs no repaint)."""
    return Reactive(Size(0, 0), layout=False, repaint=repaint)


def watch_virtual_size(widget, size: Size) -> None:
    """What the layout would have done for the scrollbars: show or hide
    them, and size their thumbs."""
    widget._refresh_scrollbars()
    if widget.show_vertical_scrollbar:
        widget.vertical_scrollbar.window_virtual_size = size.height
    if widget.show_horizontal_scrollbar:
        widget.horizontal_scrollbar.window_virtual_size = size.width
