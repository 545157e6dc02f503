"""Where a query stops being PromQL, for the binding's one message that says nothing else.

The ``promql-parser`` binding answers every grammar error with ``invalid promql query``, no position
and no token. Prometheus says ``1:5: parse error: unexpected identifier "bar"``. This module finds
that token: the first one after which no continuation of the query can parse any more.

>>> first_unexpected("foo bar", parses)  # parses(text): does the binding accept it  # doctest: +SKIP
(4, 'identifier "bar"')

A prefix of tokens is *viable* when some continuation parses: the prefix, one of a few filler
fragments (an operand, a label matcher, a duration, grouping labels …), the brackets it leaves
open closed in order, and possibly an operand after them. Viability shrinks as the prefix grows,
so the first token that makes the prefix non-viable is found by bisection, in a few dozen binding
calls (a few milliseconds, on the error path only; at most ``SEARCH_BUDGET_S``, as the binding
is slow on long operator chains). When every prefix is viable, the query ended too early:
``unexpected end of input`` at its end. Token descriptions follow Prometheus' lexer
(``Item.desc``): ``identifier "x"``, ``number "5"``, ``duration "5m"``, ``string "\\"a\\""``,
``<op:*>``, ``<aggr:sum>``, ``<by>``, ``","``. Prometheus' grammar adds a context to some of
these (``… in label matching, expected string``); this module does not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

#: Longest query (characters) that is searched; longer ones keep the bare message.
MAX_SEARCHED_LENGTH = 4096
#: Most time spent searching (the binding's parse time grows with operator chains); a search that
#: runs out keeps the bare message.
SEARCH_BUDGET_S = 0.05

_AGGREGATORS = frozenset({
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "count_values", "quantile", "limitk", "limit_ratio",
})  # fmt: skip
_KEYWORDS = frozenset({"offset", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"})
_WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[a-zA-Z_:][\w:]*)
  | (?P<operator>==|!=|>=|<=|=~|!~|[-+*/%^<>=])
  | (?P<punct>[()\[\]{},:@])
    """,
    re.VERBOSE,
)
_FILLERS = ("", " x", " 1", ' "a"', " 5m", ' a="a"', ' ="a"', " (a)", " (a) (x)", " x)")
_AFTER_CLOSING = ("", " x", " (x)")
_CLOSER = {"(": ")", "[": "]", "{": "}"}


def first_unexpected(
    text: str, parses: Callable[[str], bool], *, budget_s: float = SEARCH_BUDGET_S
) -> tuple[int, str] | None:
    """``(index, description)`` of the first token of ``text`` that cannot continue what comes
    before it (index ``len(text)`` and ``end of input`` when the query is merely cut short), or
    None when the text is too long, cannot be split into tokens or the search takes longer than
    ``budget_s``. ``parses(candidate)`` says whether the binding accepts a candidate text as
    syntax (semantic errors count as accepted)."""
    if len(text) > MAX_SEARCHED_LENGTH:
        return None
    tokens = _tokens(text)
    if tokens is None:
        return None
    deadline = time.monotonic() + budget_s

    def viable(count: int) -> bool:
        head = text[: tokens[count - 1][1]] if count else ""
        closing = "".join(_CLOSER[c] for c in reversed(_open_brackets(tokens[:count], text)))
        for filler in _FILLERS:
            for after in _AFTER_CLOSING:
                if time.monotonic() > deadline:
                    raise TimeoutError
                if parses(head + filler + closing + after):
                    return True
        return False

    low, high = 0, len(tokens)  # viable(low) holds; find the least non-viable count in (low, high]
    try:
        if viable(high):
            return len(text), "end of input"
        while high - low > 1:
            middle = (low + high) // 2
            if viable(middle):
                low = middle
            else:
                high = middle
    except TimeoutError:
        return None
    start, end, kind = tokens[high - 1]
    return start, _describe(text[start:end], kind)


def _tokens(text: str) -> list[tuple[int, int, str]] | None:
    out: list[tuple[int, int, str]] = []
    at = 0
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None or m.lastgroup is None:
            return None
        if m.lastgroup != "space":
            out.append((at, m.end(), m.lastgroup))
        at = m.end()
    return out


def _open_brackets(tokens: list[tuple[int, int, str]], text: str) -> list[str]:
    stack: list[str] = []
    for start, end, kind in tokens:
        c = text[start:end]
        if kind != "punct":
            continue
        if c in _CLOSER:
            stack.append(c)
        elif c in ")]}" and stack and _CLOSER[stack[-1]] == c:
            stack.pop()
    return stack


def _describe(token: str, kind: str) -> str:
    """Prometheus' ``Item.desc()`` of a token."""
    if kind == "word":
        lower = token.lower()
        if lower in _WORD_OPERATORS:
            return f"<op:{lower}>"
        if lower in _AGGREGATORS:
            return f"<aggr:{lower}>"
        if lower in _KEYWORDS:
            return f"<{lower}>"
        return f'{"metric identifier" if ":" in token else "identifier"} {_go_quote(token)}'
    if kind == "operator":
        return f"<op:{token}>"
    if kind == "punct":
        return _go_quote(token)
    quoted = _go_quote(token)
    if len(token) > 10:  # Go's %.10q: the first ten characters, quoted, then "..."
        quoted = _go_quote(token[:10]) + "..."
    return f"{kind} {quoted}"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
