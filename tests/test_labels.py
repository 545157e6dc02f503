from __future__ import annotations

import pytest

from watchkeeper.labels import (
    Matcher,
    MatchOp,
    format_labels,
    from_dict,
    go_to_python_regex,
    keep_only,
    metric_name,
    without,
)


@pytest.mark.parametrize(
    ("op", "pattern", "value", "expected"),
    [
        ("=", "api", "api", True),
        ("=", "", "", True),
        ("!=", "api", "web", True),
        ("=~", "a", "ab", False),  # fully anchored
        ("=~", "a.*", "ab", True),
        ("=~", "", "", True),
        ("!~", ".+", "", True),
        ("=~", "a|b", "b", True),
        ("=~", "a.c", "a\nc", True),  # '.' matches newlines, as in Prometheus
        ("=~", "((?i)PRO).*", "product", True),  # Go flag group inside a group
        ("=~", ".*((?i)DUC).*", "proDuction", True),
        ("=~", "a(?i)b", "AB", False),  # the flag applies only after it
        ("!~", "5..", "500", False),
    ],
)
def test_matcher(op: str, pattern: str, value: str, expected: bool) -> None:
    assert Matcher.parse_op(op, "l", pattern).matches(value) is expected


@pytest.mark.parametrize(
    ("go", "python"),
    [
        ("(?i)abc", "(?i:abc)"),
        ("a|(?i)b|c", "a|(?i:b|c)"),
        ("[(?i)]x", "[(?i)]x"),
        (r"\(?i)", r"\(?i)"),
        ("plain", "plain"),
    ],
)
def test_go_regex_translation(go: str, python: str) -> None:
    assert go_to_python_regex(go) == python


def test_invalid_regex_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        Matcher(MatchOp.REGEX, "l", "(")


def test_label_helpers() -> None:
    labels = from_dict({"job": "api", "__name__": "up", "empty": ""})
    assert labels == (("__name__", "up"), ("job", "api"))
    assert metric_name(labels) == "up"
    assert without(labels, ["job"]) == (("__name__", "up"),)
    assert keep_only(labels, ["job"]) == (("job", "api"),)
    assert format_labels(from_dict({"__name__": "m", "a": 'x"y'})) == 'm{a="x\\"y"}'
    assert format_labels(()) == "{}"
