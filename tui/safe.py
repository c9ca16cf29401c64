"""Control characters in a `rich.text.Text`, made visible where a widget gets it.

Rich drops a few controls (BEL, BS, VT, FF, CR) when text is appended but
keeps ESC, the C1 range and newlines, and Textual writes what is left to
the terminal: a process title holding ``ESC ] 52 ;`` would reach the
clipboard. The dashboard escapes data fields where it builds its texts
(`tractor_diag.safetext`); the widgets that show text from processes pass
it through `safe_line` or `safe_block` as well, so a field missed there is
still shown inert. Styles are kept: each span is moved to where its text
went.
"""
from __future__ import annotations

from rich.text import Span, Text

from tractor_diag.safetext import escape, escape_block


def safe_line(text: Text) -> Text:
    """One line: every control character escaped, newlines too."""
    return _escaped(text, escape)


def safe_block(text: Text) -> Text:
    """Several lines of our own: newlines and tabs kept."""
    return _escaped(text, escape_block)


def _escaped(text: Text, esc) -> Text:
    plain = text.plain
    if plain.isprintable():
        return text
    end = len(plain)
    cuts = sorted({0, end, *(min(s.start, end) for s in text.spans),
                   *(min(s.end, end) for s in text.spans)})
    moved: dict[int, int] = {}
    pieces: list[str] = []
    pos = 0
    for a, b in zip(cuts, cuts[1:]):
        moved[a] = pos
        piece = esc(plain[a:b])
        pieces.append(piece)
        pos += len(piece)
    moved[end] = pos
    new_plain = "".join(pieces)
    if new_plain == plain:
        return text
    out = Text(new_plain, style=text.style, justify=text.justify, overflow=text.overflow,
               no_wrap=text.no_wrap, end=text.end, tab_size=text.tab_size)
    out.spans = [Span(moved[min(s.start, end)], moved[min(s.end, end)], s.style)
                 for s in text.spans]
    return out
