"""The footer of keys, rebuilt only when the keys it shows change.

Textual's footer recomposes (every key a new widget, styled and laid out
again) whenever the screen says its bindings may have changed: on every
focus change and every ``refresh_bindings``. Starting the dashboard says so
five times before the first frame, each time with the same keys to show,
and those rebuilds were a quarter of the CPU spent until the tree showed.
Here a rebuild happens only when what the footer would show differs from
what it shows.
"""
from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    _shown: tuple | None = None
    _pending = False

    def _wanted(self, screen: Screen) -> tuple:
        # what compose() reads: each shown binding, whether it is enabled,
        # its tooltip; and the palette key's
        palette = self.app.COMMAND_PALETTE_BINDING
        return tuple((b.key, b.action, b.description, b.group, enabled, tooltip)
                     for key, (_node, b, enabled, tooltip) in screen.active_bindings.items()
                     if b.show or key == palette)

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen and not self._pending:
            self._pending = True
            self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._pending = False
        if not self.is_attached:
            return
        wanted = self._wanted(self.screen)
        if wanted == self._shown:
            return
        self._shown = wanted
        await self.recompose()
