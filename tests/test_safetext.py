"""The escaper every face uses for untrusted text (pure function, unit tests)."""
from __future__ import annotations

import os
import timeit

import pytest

from tractor_diag.safetext import escape, escape_block


def _has_raw_control(s: str) -> bool:
    return any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
        for c in s
    )


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]52;c;aGk=\x07", "\\x1b]52;c;aGk=\\x07"),       # OSC 52: clipboard
    ("\x1b]0;pwned\x1b\\", "\\x1b]0;pwned\\x1b\\"),       # OSC 0: title, ST
    ("\x1b[2J", "\\x1b[2J"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x00\x7f", "\\x00\\x7f"),
    ("\x9b2J\x85", "\\x9b2J\\x85"),                      # C1 CSI, NEL
    ("x\udcff\udc1b", "x\\xff\\udc1b"),                   # surrogateescape'd 0xff, a lone one
    ("\ud800", "\\ud800"),
    ("ab\u202ecd\u2028", "ab\\u202ecd\\u2028"),           # bidi override, line separator
])
def test_escape_makes_controls_visible(raw, shown):
    assert escape(raw) == shown
    assert not _has_raw_control(escape(raw))
    escape(raw).encode("utf-8")   # strict: no surrogate survives


def test_printable_text_is_untouched_and_identical():
    for s in ("", "plain", "_subactor[db_pool@123]", "héllo wörld ✓ 日本", "a\\x1b", "a b"):
        assert escape(s) == s
        assert escape_block(s) == s
    s = "x" * 100
    assert escape(s) is s


def test_surrogateescape_bytes_show_as_the_bytes():
    name = os.fsdecode(b"sock\xff\x1b[2J.sock")
    assert escape(name) == "sock\\xff\\x1b[2J.sock"


def test_block_keeps_newlines_and_tabs_only():
    assert escape_block("a\n\tb\r\x1b[31mc\x07") == "a\n\tb\\r\\x1b[31mc\\x07"


def test_common_case_is_near_free():
    line = "  1234  python  _subactor[db_pool@1234]  idle  do_epoll_wait  2m03s  12.3M"
    per_call = min(timeit.repeat(lambda: escape(line), number=20000, repeat=3)) / 20000
    # an attribute lookup and one C-level scan: well under a microsecond
    assert per_call < 2e-6, per_call


def test_escaped_walks_structs_lists_and_dicts():
    import msgspec

    from tractor_diag.safetext import escaped
    from tractor_diag.stackmodel import TaskTree

    class Inner(msgspec.Struct, frozen=True):
        name: str
        args: list[str] = []

    class Outer(msgspec.Struct):
        inner: Inner
        by_name: dict[str, int]
        tree: TaskTree
        n: int = 0

    clean = Outer(Inner("ok", ["a", "b"]), {"k": 1}, TaskTree("collected", text="l1\nl2\n"))
    assert escaped(clean) is clean                     # nothing to do: not even a copy
    dirty = Outer(Inner("a\x1b]0;t\x07", ["x", "y\nz", "\udcff"]), {"k\x9b": 2},
                  TaskTree("collected", text="l1\n\x1b[2Jl2\n"), n=3)
    out = escaped(dirty)
    assert out.inner.name == "a\\x1b]0;t\\x07"
    assert out.inner.args == ["x", "y\\nz", "\\xff"]
    assert out.by_name == {"k\\x9b": 2}
    assert out.tree.text == "l1\n\\x1b[2Jl2\n"          # a block keeps its lines
    assert out.n == 3 and dirty.inner.name == "a\x1b]0;t\x07"  # the original is untouched
    # C1, DEL and bidi controls reach JSON raw, not as escapes: still found
    for s in ("\x7f", "\x85", "\u202e", "\u2066", "\u061c"):
        assert escaped(Inner(s)).name == escape(s) != s
