"""The PromQL parser wrapper: conversion to our AST, the binding's bugs worked around, limits."""

from __future__ import annotations

from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.promql.ast import At, VectorSelector
from watchkeeper.promql.parser import parse


def test_selector_includes_name_matcher() -> None:
    assert parse('up{job="api"}') == VectorSelector(
        "up", (Matcher(MatchOp.EQUAL, "__name__", "up"), Matcher(MatchOp.EQUAL, "job", "api"))
    )


def test_negative_at() -> None:
    expr = parse("up @ -100.5")
    assert isinstance(expr, VectorSelector)
    assert expr.at == At("time", -100_500)
