"""The events pane shows every event, scrolled to the newest, and a write
repaints the pane without laying out the whole screen again (the real
Textual app, headless)."""
from __future__ import annotations

import asyncio

from textual.app import App
from textual.screen import Screen

from tractor_diag.model import Event
from tractor_diag.tui.events_pane import EventsPane


class _Pane(App):
    CSS = "EventsPane { height: 10; }"

    def compose(self):
        yield EventsPane(id="events")


def test_every_event_shows_without_a_screen_layout(monkeypatch):
    layouts = []
    real = Screen._refresh_layout

    def counted(self, *args, **kwargs):
        layouts.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Screen, "_refresh_layout", counted)

    async def body() -> None:
        app = _Pane()
        async with app.run_test(size=(80, 20)) as pilot:
            pane = app.query_one(EventsPane)
            await pilot.pause()
            # the first lines: the scrollbar appears (that one lays out)
            pane.add_events([Event("spawned", 100 + i, 0.0, f"proc_{i}") for i in range(12)])
            await pilot.pause()
            assert pane.show_vertical_scrollbar
            layouts.clear()
            for tick in range(5):
                pane.add_events([Event("exited", 200 + tick, 0.0, f"gone_{tick}", exit_code=tick)])
                await pilot.pause()
            assert layouts == [], "a write laid out the screen"
            assert len(pane.lines) == 17 and len(pane.events) == 17
            assert all(f"proc_{i}" in pane.text for i in range(12))
            assert all(f"gone_{t}" in pane.text for t in range(5))
            # the thumb knows every line, and the newest is on screen
            assert pane.vertical_scrollbar.window_virtual_size == 17
            assert pane.scroll_y == pane.max_scroll_y > 0
            assert "gone_4" in "\n".join(
                "".join(seg.text for seg in pane.render_line(y)) for y in range(pane.size.height))

    asyncio.run(asyncio.wait_for(body(), 60))
