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
  U+2066..U+2069), which reorder or split what the reader sees: ``\\uXXXX``;
- everything else ``str.isprintable`` calls unprintable: characters that
  show as nothing or as a plain space (zero-width space and joiners, the
  byte-order mark, soft hyphen, tag characters, no-break and other
  spaces), private-use and unassigned code points. A name holding one
  reads as another name than it is (``regis<U+200B>try``): ``\\xNN``,
  ``\\uXXXX`` or ``\\UXXXXXXXX``.

A backslash itself is left alone: the escapes are for the eye, not meant to
be parsed back, and paths stay readable.

``escape_block`` keeps newlines and tabs (a block of lines, such as a
relayed log or a stack listing, is meant to span lines) and rewrites
everything else like ``escape``.

Text that is already all printable (the usual case) is returned as is after
one C-level ``str.isprintable`` check.

``escaped(value)`` does this to every string inside a computed value (msgspec
Structs, lists, dicts), so a renderer that escapes its input once covers
every field, future ones included. A Struct names its multi-line fields in a
``TEXT_BLOCKS`` class variable; those get ``escape_block``.
"""
from __future__ import annotations

import re

__all__ = ["escape", "escape_block", "escaped"]

# Everything ``escape`` rewrites. Each of these is non-printable for
# ``str.isprintable``, which is what makes the fast path sound. Compiled at
# first use (`_pattern`): most runs print only printable text, and the
# compile is a measurable part of a one-shot verb's start-up.
_UNSAFE = (
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff"
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_UNSAFE_IN_BLOCK = (
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff"
    "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_compiled: dict = {}


def _pattern(source):
    """``source`` compiled, once per process."""
    pat = _compiled.get(source)
    if pat is None:
        pat = _compiled[source] = re.compile(source)
    return pat


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _one(match: re.Match) -> str:
    return _char(match.group())


def _rest(text: str, keep: str = "") -> str:
    # what the patterns leave that still shows as nothing (rare: one pass
    # per character)
    return "".join(ch if ch.isprintable() or ch in keep else _char(ch) for ch in text)


def escape(text: str) -> str:
    """One field: every control character visible and inert, newlines too."""
    if text.isprintable():
        return text
    out = _pattern(_UNSAFE).sub(_one, text)
    return out if out.isprintable() else _rest(out)


def escape_block(text: str) -> str:
    """A multi-line block: like ``escape`` but newlines and tabs are kept."""
    if text.isprintable():
        return text
    out = _pattern(_UNSAFE_IN_BLOCK).sub(_one, text)
    if out.replace("\n", "").replace("\t", "").isprintable():
        return out
    return _rest(out, "\n\t")


_ATOMS = (int, float, bool, type(None), bytes)

# What any character ``escape`` rewrites looks like in msgspec's JSON: C0 as
# ``\\n``-style or ``\\u00XX`` escapes, the rest as raw UTF-8 (a lone
# surrogate cannot be encoded at all). Keyed by lead byte: a memchr-fast
# ``in`` finds whether a lead is there at all, and one single-prefix pattern
# (fast, unlike one alternation) confirms it. An escaped backslash followed
# by one of those letters also matches: a false alarm costs only the walk.
_DIRTY_JSON = (
    (b"\\", rb"\\[bfnrtu]"),
    (b"\x7f", None),
    (b"\xc2", rb"\xc2[\x80-\x9f]"),
    (b"\xd8", rb"\xd8\x9c"),
    (b"\xe2", rb"\xe2(?:\x80[\x8e\x8f\xa8-\xae]|\x81[\xa6-\xa9])"),
)
_encode = None


def _clean(value) -> bool:
    """No string anywhere in ``value`` needs escaping: one C-level encode
    and scan instead of a Python walk over every field."""
    global _encode
    if _encode is None:
        from .model import to_json

        _encode = to_json
    try:
        data = _encode(value)
    except Exception:  # noqa: BLE001 - a surrogate, or a type JSON lacks: walk
        return False
    for lead, confirm in _DIRTY_JSON:
        if lead in data and (confirm is None or _pattern(confirm).search(data)):
            return False
    # anything else unprintable is raw UTF-8 in the compact JSON (which has
    # no whitespace of its own)
    return data.isascii() or data.decode("utf-8", "replace").isprintable()


def escaped(value, block: bool = False):
    """A copy of ``value`` with every string in it escaped (dict keys too).

    Parts that need no change are returned as they are, not copied; a part
    is checked as a whole first (`_clean`), so only the path down to a
    string that needs escaping is walked.
    """
    kind = type(value)
    if kind is str:
        return escape_block(value) if block else escape(value)
    if kind in _ATOMS:
        return value
    if _clean(value):
        return value
    if kind is list or kind is tuple:
        new = [escaped(v, block) for v in value]
        if all(a is b for a, b in zip(new, value)):
            return value
        return new if kind is list else tuple(new)
    if kind is dict:
        changed = False
        out = {}
        for k, v in value.items():
            k2, v2 = escaped(k, block), escaped(v, block)
            changed = changed or k2 is not k or v2 is not v
            out[k2] = v2
        return out if changed else value
    fields = getattr(kind, "__struct_fields__", None)
    if fields is None:
        return value
    blocks = getattr(kind, "TEXT_BLOCKS", ())
    changes = {}
    for name in fields:
        old = getattr(value, name)
        new = escaped(old, name in blocks)
        if new is not old:
            changes[name] = new
    if not changes:
        return value
    from .model import replace

    return replace(value, **changes)
