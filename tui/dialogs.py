"""Modal dialogs: confirm, choose a signal or an answer, change the sampling interval."""
from __future__ import annotations

import signal

from rich.text import Text

from tractor_diag.safetext import escape

from .safe import safe_block
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

# Signals worth sending to a hung actor, with what they mean to it.
SIGNALS: list[tuple[int, str]] = [
    (signal.SIGINT, "cancel: what Ctrl-C does (tractor cancels the actor)"),
    (signal.SIGTERM, "terminate politely"),
    (signal.SIGKILL, "kill now, no cleanup (children become orphans)"),
    (signal.SIGHUP, "hang up"),
    (signal.SIGSTOP, "freeze (stopped state)"),
    (signal.SIGCONT, "resume a stopped process"),
    (signal.SIGUSR1, "trio task-tree dump"),
]


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no with the full text of what will happen."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, title: str, body: Text | str, yes: str = "Yes") -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(Text(escape(self._title), "bold"), id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                body = self._body if isinstance(self._body, Text) else Text(self._body)
                yield Static(safe_block(body))
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self._yes} (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SignalScreen(ModalScreen[int | None]):
    """Pick a signal; SIGUSR1 is offered only when the process handles it."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, target: str, usr1_ok: bool) -> None:
        super().__init__()
        self._target = target
        self._usr1_ok = usr1_ok

    def compose(self) -> ComposeResult:
        options = []
        for signum, what in SIGNALS:
            name = signal.Signals(signum).name
            disabled = signum == signal.SIGUSR1 and not self._usr1_ok
            prompt = Text.assemble((f"{name:<8}", "bold"), f" {what}")
            if disabled:
                prompt.append(": no handler, it would die", "red")
            options.append(Option(prompt, id=name, disabled=disabled))
        with Vertical(id="dialog", classes="dialog"):
            yield Label(Text(f"Send a signal to {escape(self._target)}", "bold"), id="dialog-title")
            yield OptionList(*options, id="signals")
            yield Label(Text("↑↓ choose · Enter: send (asks first) · Esc: cancel", "dim"),
                        id="dialog-hint")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel (Esc)", variant="primary", id="cancel")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(signal.Signals[event.option.id]))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen["object | None"]):
    """A few labelled answers, each with a key, and Esc to cancel."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, body: Text | str,
                 choices: list[tuple[str, str, object]]) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._choices = choices  # (key, button label, value)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(Text(escape(self._title), "bold"), id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                body = self._body if isinstance(self._body, Text) else Text(self._body)
                yield Static(safe_block(body))
            with Horizontal(id="dialog-buttons"):
                for i, (key, label, _) in enumerate(self._choices):
                    yield Button(f"{label} ({key})", variant="primary" if i == 0 else "default",
                                 id=f"choice-{i}")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#choice-0", Button).focus()

    def on_key(self, event) -> None:
        for key, _, value in self._choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.dismiss(self._choices[int(event.button.id.split("-")[1])][2])

    def action_cancel(self) -> None:
        self.dismiss(None)


class IntervalScreen(ModalScreen[float | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: float) -> None:
        super().__init__()
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(Text("Sampling interval in seconds", "bold"), id="dialog-title")
            yield Input(value=f"{self._current:g}", id="interval", type="number")
            yield Label("", id="dialog-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = float(event.value)
        except ValueError:
            value = -1.0
        if not 0.1 <= value <= 3600:
            self.query_one("#dialog-error", Label).update(
                Text("a number of seconds between 0.1 and 3600", "red"))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
