"""PromQL text -> watchkeeper's AST, through the ``promql-parser`` wheel (Rust, PyO3).

>>> expr = parse('sum by (job) (rate(http_requests_total{code=~"5.."}[5m]))')
>>> expr.op, expr.grouping
('sum', ('job',))
>>> value_type(expr)
'vector'

The binding's tree is converted at once into the frozen dataclasses of ``ast.py``; nothing of the
binding leaks out. Around it, this module works around the binding's known defects (see
``notes/promql.md`` §5):

- a pre-lexer rewrites backtick raw strings (which the binding unescapes) into escaped
  double-quoted strings, and caps query length, bracket nesting and operator count *before* the
  binding runs: deep nesting or long operator chains make it slow and then segfault the process;
- negative ``@`` timestamps make the binding panic when read, so the pre-lexer drops the minus
  sign and the converter negates the value again;
- every failure, including ``pyo3_runtime.PanicException`` (a ``BaseException``), becomes
  :class:`~watchkeeper.errors.ParseError`.

Parsed expressions are cached (LRU): ASTs are immutable, and dashboards repeat their queries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import promql_parser as _pp

from watchkeeper.errors import ParseError
from watchkeeper.labels import METRIC_NAME, Matcher, MatchOp
from watchkeeper.promql.ast import (
    SET_OPS,
    AggregateExpr,
    At,
    BinaryExpr,
    Call,
    Cardinality,
    Expr,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
)
from watchkeeper.promql.syntax_errors import first_unexpected

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LENGTH_BYTES",
    "DEFAULT_MAX_OPERATORS",
    "FUNCTION_RETURN_TYPES",
    "NAN",
    "parse",
    "value_type",
]

DEFAULT_MAX_LENGTH_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 256
"""Nesting of ``( [ {`` (checked before the binding runs: it recurses per level and segfaults near
12,000), and depth of the resulting AST (``a + b + …`` is as deep as it is long). Python's own
recursion limit makes ``==``, ``hash`` and ``repr`` of dataclass trees fail from ~300 levels."""
DEFAULT_MAX_OPERATORS = 1024
"""Binary and unary operators per query. A chain of 6,000 ``a+a+…`` segfaults the binding, and
1,000 already takes ~0.5 s (its parse time is quadratic in chain length)."""

NAN = float("nan")
"""The one NaN every ``NaN`` literal holds, so that equal ASTs compare equal (``nan != nan``, but
tuple comparison tries identity first)."""

_CACHE_MAX_TEXT = 8192  # longer queries are parsed every time, so the cache stays small
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Functions that return a scalar; every other function returns an instant vector.
_SCALAR_FUNCTIONS = frozenset({"pi", "scalar", "time", "start", "end", "range", "step"})

FUNCTION_RETURN_TYPES: dict[str, ValueType] = {name: "scalar" for name in _SCALAR_FUNCTIONS}
"""Return types of the functions that do not return an instant vector."""

_OPERATOR_WORDS = frozenset({"and", "or", "unless", "atan2"})


def parse(
    text: str,
    *,
    max_length_bytes: int = DEFAULT_MAX_LENGTH_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_operators: int = DEFAULT_MAX_OPERATORS,
) -> Expr:
    """Parse a PromQL expression into watchkeeper's AST, or raise :class:`ParseError`.

    Limits: ``max_length_bytes`` of UTF-8 text, ``max_depth`` for both bracket nesting and AST
    depth, ``max_operators`` binary/unary operators (the binding's cost is quadratic in them).
    Results are cached per ``(text, limits)``.

    >>> parse('up{job="api"} offset 5m')
    VectorSelector(name='up', matchers=(...), offset_ms=300000, at=None)
    """
    if len(text) > _CACHE_MAX_TEXT:
        return _parse(text, max_length_bytes, max_depth, max_operators)
    return _parse_cached(text, max_length_bytes, max_depth, max_operators)


def value_type(expr: Expr) -> ValueType:
    """The Prometheus value type an expression evaluates to.

    >>> value_type(parse("rate(x[5m])")), value_type(parse("x[5m]")), value_type(parse("1 + 2"))
    ('vector', 'matrix', 'scalar')
    """
    expr = _unwrap(expr)
    if not isinstance(expr, BinaryExpr):
        return _leaf_type(expr)
    # Scalar only if every operand is; walked with a stack, as chains can be long.
    operands: list[Expr] = [expr.lhs, expr.rhs]
    while operands:
        operand = _unwrap(operands.pop())
        if isinstance(operand, BinaryExpr):
            operands += (operand.lhs, operand.rhs)
        elif _leaf_type(operand) != "scalar":
            return "vector"
    return "scalar"


def _unwrap(expr: Expr) -> Expr:
    while isinstance(expr, ParenExpr | UnaryExpr):
        expr = expr.expr
    return expr


def _leaf_type(expr: Expr) -> ValueType:
    match expr:
        case NumberLiteral():
            return "scalar"
        case StringLiteral():
            return "string"
        case VectorSelector() | AggregateExpr() | BinaryExpr():
            return "vector"
        case MatrixSelector() | SubqueryExpr():
            return "matrix"
        case Call(func=func):
            return FUNCTION_RETURN_TYPES.get(func, "vector")
        case _:
            raise TypeError(f"not a PromQL expression: {expr!r}")


def _parse(text: str, max_length_bytes: int, max_depth: int, max_operators: int) -> Expr:
    if len(text) > max_length_bytes or len(text.encode("utf-8", "surrogatepass")) > max_length_bytes:
        raise ParseError(f"parse error: query is longer than the limit of {max_length_bytes} bytes")
    lexed = _prelex(text, max_depth=max_depth, max_operators=max_operators)
    try:
        tree = _pp.parse(lexed.text)
    except ValueError as exc:
        message = str(exc)
        at = _locate(text, message)
        if at is None and message == _GENERIC_ERROR and (found := first_unexpected(text, _is_syntax)):
            at, token = found
            message = f"unexpected {token}"
        prefix = "" if at is None else f"{_position(text, at)}: "
        raise ParseError(f"{prefix}parse error: {message}") from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pyo3_runtime.PanicException derives from BaseException
        raise ParseError(f"parse error: {exc}") from exc
    converter = _Converter(lexed.negative_at, max_depth, raw_bytes=lexed.raw_bytes)
    try:
        expr = converter.convert(tree)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        message = str(exc) if isinstance(exc, ParseError) else f"parse error: {exc}"
    else:
        message = ""
    finally:
        # Errors are raised afresh, with no frame holding the binding's tree: its repr() is
        # quadratic in depth, and tracebacks that show arguments or locals (pytest, Sentry) call it.
        del tree
    if message:
        raise ParseError(message)
    if converter.at_index != len(lexed.negative_at):
        # Every `@` token must be matched by one modifier in the tree, or negations would land on
        # the wrong selector.
        raise ParseError("parse error: unexpected '@' modifier")
    return expr


_parse_cached = lru_cache(maxsize=1024)(_parse)

_GENERIC_ERROR = "invalid promql query"
"""The binding's message for every grammar error: no position, no token."""
_SYNTAX_MESSAGES = (_GENERIC_ERROR, "unexpected", "unclosed", "unterminated", "bad ", "invalid")


def _is_syntax(text: str) -> bool:
    """Whether the binding accepts ``text`` as PromQL syntax (a semantic error, such as a wrong
    argument type, still means it parsed)."""
    try:
        _pp.parse(_prelex(text, max_depth=DEFAULT_MAX_DEPTH, max_operators=DEFAULT_MAX_OPERATORS).text)
    except ParseError:
        return False
    except ValueError as exc:
        return not str(exc).startswith(_SYNTAX_MESSAGES)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # a panic of the binding
        return False
    return True


# --- pre-lexer ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lexed:
    text: str
    negative_at: tuple[bool, ...]
    """One entry per ``@`` token, in text order: whether its (numeric) timestamp was negative."""
    raw_bytes: bool = False
    """Whether a string held bytes that are not UTF-8 (``"\\xff"``), passed to the binding as
    private-use characters to be turned back into ``surrogateescape`` code points."""


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{col}"


def _code(text: str) -> list[tuple[int, str, bool]]:
    """``(index, char, inside braces)`` of every character outside string literals and comments."""
    out: list[tuple[int, str, bool]] = []
    braces = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if c != "`" and text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        braces += c == "{"
        out.append((i, c, braces > 0))
        braces -= c == "}" and braces > 0
        i += 1
    return out


_CLOSERS = {"parenthesis": ("(", ")"), "bracket": ("[", "]"), "brace": ("{", "}")}


def _locate(text: str, message: str) -> int | None:
    """Where in ``text`` the binding's error ``message`` (which has no position) is, when the
    message says enough to find it: end of input, an unmatched closing bracket, an unexpected
    character, identifier, function name or duration. Index ``len(text)`` is the end."""
    if message.startswith(("unexpected end of input", "unclosed left ")):
        return len(text)
    code = _code(text)
    if m := re.fullmatch(r"unexpected right (parenthesis|bracket|brace) '.'", message):
        opener, closer = _CLOSERS[m.group(1)]
        depth = 0
        for i, c, _ in code:
            depth += (c == opener) - (c == closer)
            if depth < 0:
                return i + 1 if closer == ")" else i  # Prometheus reports a ')' one column on
        return None
    if m := re.fullmatch(r"unexpected character( inside braces)?: '(.)'", message):
        return next((i for i, c, braced in code if c == m.group(2) and (braced or not m.group(1))), None)
    if m := re.fullmatch(r"unexpected character after '!' inside braces: '(.)'", message):
        after = m.group(1)
        return next((i for i, c, inb in code if c == "!" and inb and text[i + 1 : i + 2] == after), None)
    patterns = {
        r"unknown function with name '(\w+)'": r"(?<![\w:])({})\s*\(",
        r"bad number or duration syntax: (\S+)": r"(?<![\w.])({})",
        r"unexpected identifier '(\w+)' in label matching.*": r"[=~]\s*({})\b",
    }
    for message_re, text_re in patterns.items():
        if m := re.fullmatch(message_re, message):
            kept = "".join(" " if i is None else c for i, c in _with_gaps(text, code))  # strings blanked
            found = re.search(text_re.format(re.escape(m.group(1))), kept)
            return None if found is None else found.start(1)
    return None


def _with_gaps(text: str, code: list[tuple[int, str, bool]]) -> list[tuple[int | None, str]]:
    """Every character of ``text``, with ``None`` for those inside strings and comments."""
    out: list[tuple[int | None, str]] = [(None, c) for c in text]
    for i, c, _ in code:
        out[i] = (i, c)
    return out


def _escape_double_quoted(raw: str) -> str:
    out = raw.replace("\\", "\\\\").replace('"', '\\"')
    return out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


_GO_SIMPLE_ESCAPES = {
    "a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v",
    "\\": b"\\", "'": b"'", '"': b'"',
}  # fmt: skip
_HEX = frozenset("0123456789abcdefABCDEF")
_BYTE_ESCAPE = re.compile(r"\\(?:x|[0-7])")
# Bytes 0x80-0xFF that are not UTF-8: Python holds them as U+DC80-U+DCFF ("surrogateescape"),
# which cannot cross into Rust, so they travel through the binding as U+F780-U+F7FF.
_SURROGATE_TO_PRIVATE = {0xDC80 + b: 0xF780 + b for b in range(128)}
_PRIVATE_TO_SURROGATE = {v: k for k, v in _SURROGATE_TO_PRIVATE.items()}


def _go_unquote(body: str) -> str | None:
    """A quoted string's body decoded as Go does: ``\\xNN`` and ``\\NNN`` are *bytes*, so
    ``"\\xc3\\xa9"`` is ``é`` and ``"\\xff"`` is not UTF-8 (kept as ``"\\udcff"``). None when an
    escape is invalid: the binding then reports it."""
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        e = body[i + 1 : i + 2]
        if e in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[e]
            i += 2
        elif e == "x":
            digits = body[i + 2 : i + 4]
            if len(digits) != 2 or not set(digits) <= _HEX:
                return None
            out.append(int(digits, 16))
            i += 4
        elif e and e in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not set(digits) <= set("01234567") or int(digits, 8) > 255:
                return None
            out.append(int(digits, 8))
            i += 4
        elif e in ("u", "U"):
            width = 4 if e == "u" else 8
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not set(digits) <= _HEX:
                return None
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None
            out += chr(code).encode("utf-8")
            i += 2 + width
        else:
            return None
    return out.decode("utf-8", "surrogateescape")


def _requote(value: str) -> str:
    """A double-quoted literal the binding reads back as ``value`` (surrogates as private use)."""
    out = []
    for ch in value.translate(_SURROGATE_TO_PRIVATE):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _prelex(text: str, *, max_depth: int, max_operators: int) -> _Lexed:
    """Rewrite backticks and negative ``@``, enforce nesting and operator limits."""
    out: list[str] = []
    negative_at: list[bool] = []
    depth = 0
    operators = 0
    raw_bytes = False
    i = 0
    n = len(text)
    start = 0  # text[start:i] is copied unchanged on the next flush
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    break
                j += 1
            if j >= n or text[j] != c:
                raise ParseError(f"{_position(text, i)}: parse error: unterminated quoted string")
            body = text[i + 1 : j]
            if "\\" in body and _BYTE_ESCAPE.search(body):
                decoded = _go_unquote(body)
                if decoded is not None:
                    raw_bytes = raw_bytes or decoded != decoded.translate(_SURROGATE_TO_PRIVATE)
                    out.append(text[start:i])
                    out.append(_requote(decoded))
                    start = j + 1
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ParseError(f"{_position(text, i)}: parse error: unterminated raw string")
            out.append(text[start:i])
            out.append('"' + _escape_double_quoted(text[i + 1 : j]) + '"')
            i = start = j + 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "([{":
            depth += 1
            if depth > max_depth:
                raise ParseError(
                    f"{_position(text, i)}: parse error: query nests brackets deeper than "
                    f"the limit of {max_depth}"
                )
            i += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
            i += 1
        elif c in "+-*/%^<>=!":
            if c in "+-*/%^" or (c in "<>" and text[i + 1 : i + 2] != "=") or text[i + 1 : i + 2] == "=":
                operators += 1
                if operators > max_operators:
                    raise ParseError(
                        f"{_position(text, i)}: parse error: query has more than {max_operators} operators"
                    )
            i += 1
            if c in "<>=!" and i < n and text[i] in "=~":
                i += 1
        elif c == "@":
            negative_at.append(False)
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] == "-":
                k = j + 1
                while k < n and text[k] in " \t\r\n":
                    k += 1
                if k < n and (text[k].isdigit() or text[k] == "."):
                    negative_at[-1] = True
                    out.append(text[start:j])
                    out.append(" ")
                    start = j + 1
                    i = j + 1
                    continue
            i += 1
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_:"):
                j += 1
            if text[i:j].lower() in _OPERATOR_WORDS:
                operators += 1
            i = j
        else:
            i += 1
    if raw_bytes and any(0xF780 <= ord(ch) <= 0xF7FF for ch in text):
        raise ParseError(
            "parse error: a query with both bytes that are not UTF-8 and U+F780-U+F7FF is not supported"
        )
    if start == 0:
        return _Lexed(text, tuple(negative_at))
    out.append(text[start:])
    return _Lexed("".join(out), tuple(negative_at), raw_bytes)


# --- conversion --------------------------------------------------------------------------------

_T = TypeVar("_T")

# The binding's enums are not hashable: look them up by comparison.
_MATCH_OPS: tuple[tuple[Any, MatchOp], ...] = (
    (_pp.MatchOp.Equal, MatchOp.EQUAL),
    (_pp.MatchOp.NotEqual, MatchOp.NOT_EQUAL),
    (_pp.MatchOp.Re, MatchOp.REGEX),
    (_pp.MatchOp.NotRe, MatchOp.NOT_REGEX),
)

_CARDINALITIES: tuple[tuple[Any, Cardinality], ...] = (
    (_pp.VectorMatchCardinality.OneToOne, "one-to-one"),
    (_pp.VectorMatchCardinality.ManyToOne, "many-to-one"),
    (_pp.VectorMatchCardinality.OneToMany, "one-to-many"),
    (_pp.VectorMatchCardinality.ManyToMany, "many-to-many"),
)


def _lookup(table: tuple[tuple[Any, _T], ...], key: Any) -> _T:
    for candidate, value in table:
        if candidate == key:
            return value
    raise ParseError(f"parse error: unsupported {key}")


def _children(node: Any) -> list[Any]:
    """The binding node's sub-expressions, in text order."""
    if isinstance(node, _pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, _pp.Call):
        return list(node.args)
    if isinstance(node, _pp.AggregateExpr):
        param = node.param
        return [node.expr] if param is None else [param, node.expr]
    if isinstance(node, _pp.ParenExpr | _pp.UnaryExpr | _pp.SubqueryExpr):
        return [node.expr]
    return []


_MAX_DURATION_MS = (2**63 - 1) // 1_000_000  # Go's time.Duration, which Prometheus enforces


def _duration_ms(td: timedelta) -> int:
    # timedelta normalises to days/seconds/microseconds with 0 <= seconds, microseconds; exact.
    ms = (td.days * 86_400 + td.seconds) * 1000 + td.microseconds // 1000
    if abs(ms) > _MAX_DURATION_MS:
        raise ParseError(f"parse error: duration out of range: {td}")
    return ms


class _Converter:
    """Binding tree -> our AST without recursion (a 1,000-term ``a + b + …`` is 1,000 deep).

    Nodes are built in post-order, left to right, so ``@`` modifiers are met in the order of the
    ``@`` tokens of the text; children are read once and their results taken from a stack.
    """

    def __init__(self, negative_at: tuple[bool, ...], max_depth: int, *, raw_bytes: bool = False) -> None:
        self.negative_at = negative_at
        self.max_depth = max_depth
        self.raw_bytes = raw_bytes
        self.at_index = 0

    def _str(self, value: Any) -> str:
        text = str(value)
        return text.translate(_PRIVATE_TO_SURROGATE) if self.raw_bytes else text

    def convert(self, root: Any) -> Expr:
        todo: list[tuple[Any, list[Any] | None, int]] = [(root, None, 1)]
        done: list[Expr] = []
        while todo:
            node, children, depth = todo.pop()
            if children is None:
                if depth > self.max_depth:
                    raise ParseError(
                        f"parse error: query nests expressions deeper than the limit of {self.max_depth}"
                    )
                children = _children(node)
                todo.append((node, children, depth))
                todo.extend((child, None, depth + 1) for child in reversed(children))
                continue
            if children:
                args = done[-len(children) :]
                del done[-len(children) :]
            else:
                args = []
            done.append(self._build(node, args))
        (expr,) = done
        return expr

    def _build(self, node: Any, args: list[Expr]) -> Expr:
        if isinstance(node, _pp.VectorSelector):
            return self._selector(node)
        if isinstance(node, _pp.MatrixSelector):
            return MatrixSelector(self._selector(node.vector_selector), _duration_ms(node.range))
        if isinstance(node, _pp.NumberLiteral):
            value = float(node.val)
            return NumberLiteral(NAN if math.isnan(value) else value)
        if isinstance(node, _pp.StringLiteral):
            return StringLiteral(self._str(node.val))
        if isinstance(node, _pp.ParenExpr):
            return ParenExpr(args[0])
        if isinstance(node, _pp.UnaryExpr):
            return UnaryExpr("-", args[0])
        if isinstance(node, _pp.Call):
            return Call(str(node.func.name), tuple(args))
        if isinstance(node, _pp.AggregateExpr):
            return self._aggregate(node, args)
        if isinstance(node, _pp.BinaryExpr):
            return self._binary(node, args[0], args[1])
        if isinstance(node, _pp.SubqueryExpr):
            if node.range is None:
                raise ParseError("parse error: subquery without a range")
            step = node.step
            return SubqueryExpr(
                args[0],
                _duration_ms(node.range),
                None if step is None else _duration_ms(step),
                self._offset(node.offset),
                self._at(node.at),
            )
        raise ParseError(f"parse error: unsupported expression {type(node).__name__}")

    def _selector(self, node: Any) -> VectorSelector:
        name = node.name
        matchers = node.matchers
        if matchers.or_matchers:  # a GreptimeDB extension, not PromQL
            raise ParseError("parse error: 'or' inside label matchers is not supported")
        converted: list[Matcher] = []
        if name is not None:
            converted.append(Matcher(MatchOp.EQUAL, METRIC_NAME, self._str(name)))
        for m in matchers.matchers:
            try:
                converted.append(Matcher(_lookup(_MATCH_OPS, m.op), self._str(m.name), self._str(m.value)))
            except ValueError as exc:
                raise ParseError(f"parse error: {exc}") from exc
        return VectorSelector(
            None if name is None else self._str(name),
            tuple(converted),
            self._offset(node.offset),
            self._at(node.at),
        )

    @staticmethod
    def _offset(offset: timedelta | None) -> int:
        return 0 if offset is None else _duration_ms(offset)

    def _at(self, at: Any) -> At | None:
        if at is None:
            return None
        index = self.at_index
        self.at_index += 1
        if at.type == _pp.AtModifierType.Start:
            return At("start")
        if at.type == _pp.AtModifierType.End:
            return At("end")
        delta = at.at - _EPOCH
        timestamp_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if index < len(self.negative_at) and self.negative_at[index]:
            timestamp_ms = -timestamp_ms
        return At("time", timestamp_ms)

    def _aggregate(self, node: Any, args: list[Expr]) -> AggregateExpr:
        param = args[0] if len(args) == 2 else None
        inner = args[-1]
        modifier = node.modifier
        grouping: tuple[str, ...] = ()
        without = False
        if modifier is not None:
            grouping = tuple(self._str(label) for label in modifier.labels)
            without = modifier.type == _pp.AggModifierType.Without
        return AggregateExpr(str(node.op).lower(), inner, param, grouping, without)

    def _binary(self, node: Any, lhs: Expr, rhs: Expr) -> BinaryExpr:
        op = str(node.op).lower()
        modifier = node.modifier
        matching: VectorMatching | None = None
        return_bool = False
        if modifier is not None:
            return_bool = bool(modifier.return_bool)
            on = False
            labels: tuple[str, ...] = ()
            if modifier.matching is not None:
                on = modifier.matching.type == _pp.LabelModifierType.Include
                labels = tuple(self._str(label) for label in modifier.matching.labels)
            include = tuple(self._str(label) for label in (modifier.group_labels or ()))
            fill = modifier.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise ParseError("parse error: fill modifiers are not supported")
            matching = VectorMatching(_lookup(_CARDINALITIES, modifier.card), on, labels, include)
        if op in SET_OPS:
            if matching is None or matching.card == "one-to-one":
                base = matching or VectorMatching()
                matching = VectorMatching("many-to-many", base.on, base.labels, base.include)
        elif matching == VectorMatching():
            matching = None  # `a > bool b`: no matching clause, same as `a + b`
        return BinaryExpr(op, lhs, rhs, matching, return_bool)
