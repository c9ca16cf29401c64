"""Make untrusted text safe to show on a terminal.

Process titles, command lines, file and socket names, Python frames, trio
task names and a launched program's output are all chosen by whoever runs
those processes. Written raw, an ``ESC ] 52 ;`` sets root's clipboard, an
``ESC ] 0 ;`` retitles the window, ``ESC [ 2 J`` wipes the screen and a
newline or carriage return forges a line of our own output. Every face
passes such text through ``escape`` (one field) or ``escape_block`` (a
multi-line block) where it turns data into text. JSON output is never
escaped: it stays exact.

What is rewritten, always to a visible backslash form:

- C0 controls and DEL: ``\\n``, ``\\r``, ``\\t`` by name, the rest ``\\xNN``
  (ESC is ``\\x1b``);
- C1 controls U+0080..U+009F: ``\\xNN`` (a terminal may read U+009B as CSI);
- undecodable bytes smuggled in by ``surrogateescape`` (U+DC80..U+DCFF):
  ``\\xNN`` of the original byte; any other lone surrogate ``\\uXXXX``
  (it cannot even be encoded to UTF-8);
- line and paragraph separators (U+2028, U+2029) and the bidirectional
  overrides and isolates (U+061C, U+200E, U+200F, U+202A..U+202E,
  U+2066..U+2069), which reorder or split what the reader sees: ``\\uXXXX``.

A backslash itself is left alone: the escapes are for the eye, not meant to
be parsed back, and paths stay readable.

``escape_block`` keeps newlines and tabs (a block of lines, such as a
relayed log or a stack listing, is meant to span lines) and rewrites
everything else like ``escape``.

Text that is already all printable (the usual case) is returned as is after
one C-level ``str.isprintable`` check.
"""
from __future__ import annotations

import re

__all__ = ["escape", "escape_block", "UNSAFE"]

# Everything ``escape`` rewrites. Each of these is non-printable for
# ``str.isprintable``, which is what makes the fast path sound.
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff"
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_UNSAFE_IN_BLOCK = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff"
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one(match: re.Match) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0x9F:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape(text: str) -> str:
    """One field: every control character visible and inert, newlines too."""
    if text.isprintable():
        return text
    return UNSAFE.sub(_one, text)


def escape_block(text: str) -> str:
    """A multi-line block: like ``escape`` but newlines and tabs are kept."""
    if text.isprintable():
        return text
    return _UNSAFE_IN_BLOCK.sub(_one, text)
