"""Label sets and label matchers, shared by the store, the query engine, rules and alerting.

A label set is a tuple of ``(name, value)`` pairs sorted by name, hashable and cheap to compare:

>>> labels = from_dict({"job": "api", "__name__": "up"})
>>> labels
(('__name__', 'up'), ('job', 'api'))
>>> Matcher.parse_op("=~", "job", "a.*").matches("api")
True
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def from_dict(d: Mapping[str, str]) -> Labels:
    """Labels from a mapping; empty values are dropped, as Prometheus does."""
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def from_pairs(pairs: Iterable[tuple[str, str]]) -> Labels:
    return tuple(sorted(p for p in pairs if p[1] != ""))


def get(labels: Labels, name: str, default: str = "") -> str:
    for k, v in labels:
        if k == name:
            return v
    return default


def metric_name(labels: Labels) -> str:
    return get(labels, METRIC_NAME)


def without(labels: Labels, names: Iterable[str]) -> Labels:
    drop = set(names)
    return tuple(p for p in labels if p[0] not in drop)


def keep_only(labels: Labels, names: Iterable[str]) -> Labels:
    keep = set(names)
    return tuple(p for p in labels if p[0] in keep)


def format_labels(labels: Labels) -> str:
    """Prometheus' text form: ``up{job="api"}``."""
    name = metric_name(labels)
    rest = ", ".join(f'{k}="{_escape(v)}"' for k, v in labels if k != METRIC_NAME)
    if not rest:
        return name or "{}"
    return f"{name}{{{rest}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MatchOp(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> re.Pattern[str]:
    """A Prometheus regex: fully anchored, ``.`` matches newlines."""
    return re.compile(f"(?s:{go_to_python_regex(pattern)})\\Z")


_INLINE_FLAGS = re.compile(r"\(\?([imsU]+)\)")


def go_to_python_regex(pattern: str) -> str:
    """Translate the RE2 (Go) syntax Python's ``re`` reads differently.

    Go allows flag groups such as ``(?i)`` anywhere; they apply to the end of the enclosing group.
    Python accepts global flags only at the very start, so ``a((?i)b)c`` becomes ``a((?i:b))c``.
    """
    if "(?" not in pattern:
        return pattern
    out: list[str] = []
    closers = [0]  # per open group (the bottom one is the whole pattern): scoped-flag groups to close
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            if pattern[i + 1 : i + 2] == "]":  # a leading ']' is literal
                out.append("]")
                i += 1
        elif (m := _INLINE_FLAGS.match(pattern, i)) is not None:
            flags = m.group(1).replace("U", "")
            if flags:
                out.append(f"(?{flags}:")
                closers[-1] += 1
            i = m.end()
            continue
        elif c == "(":
            closers.append(0)
            out.append(c)
        elif c == ")":
            out.append(")" * (closers.pop() if len(closers) > 1 else 0) + ")")
        else:
            out.append(c)
        i += 1
    out.append(")" * sum(closers))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher (``name op "value"``).

    >>> Matcher(MatchOp.NOT_REGEX, "status", "5..").matches("500")
    False
    """

    op: MatchOp
    name: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            try:
                object.__setattr__(self, "_regex", compile_anchored(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from exc

    @classmethod
    def parse_op(cls, op: str, name: str, value: str) -> Matcher:
        return cls(MatchOp(op), name, value)

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` when the label is absent) satisfies the matcher."""
        if self.op is MatchOp.EQUAL:
            return value == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return value != self.value
        assert self._regex is not None  # set in __post_init__ for regex ops
        hit = self._regex.match(value) is not None
        return hit if self.op is MatchOp.REGEX else not hit

    def matches_empty(self) -> bool:
        return self.matches("")

    def __str__(self) -> str:
        return f'{self.name}{self.op.value}"{_escape(self.value)}"'
