"""Command-line literals (``--uid ('name', 'uuid')``) are parsed once per
distinct text: every /proc pass re-reads the same actors."""
from __future__ import annotations

import ast

from tractor_diag import actors


def test_a_literal_is_evaluated_once(monkeypatch):
    calls = []
    real = ast.literal_eval

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(ast, "literal_eval", counting)  # actors imports ast at first use
    monkeypatch.setattr(actors, "_LITERALS", {})
    text = "('leaf_0', 'b0b1c2d3-0000-4000-8000-000000000000')"
    first = actors._literal(text)
    assert actors._literal(text) == first == ("leaf_0", "b0b1c2d3-0000-4000-8000-000000000000")
    assert calls == [text]


def test_a_mutable_literal_is_never_shared(monkeypatch):
    monkeypatch.setattr(actors, "_LITERALS", {})
    one = actors._literal("['127.0.0.1', 1616]")
    one.append("changed")
    assert actors._literal("['127.0.0.1', 1616]") == ["127.0.0.1", 1616]
    assert actors._literal("not a literal (") is None


def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(actors, "_LITERALS", {})
    monkeypatch.setattr(actors, "_LITERALS_MAX", 8)
    for i in range(50):
        assert actors._literal(f"('a{i}', {i})") == (f"a{i}", i)
        assert len(actors._LITERALS) <= 8
