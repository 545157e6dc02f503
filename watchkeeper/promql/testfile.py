r"""Prometheus' ``.test`` file format (``promql/promqltest``): ``load``/``clear``/``eval`` blocks,
``expect`` lines and the series value notation (``0+10x5 _ stale``, ``{{...}}`` histograms).

>>> commands = parse_test("load 1m\n  up 0+1x2\n\neval instant at 2m up\n  up 2\n")
>>> [type(c).__name__ for c in commands]
['Load', 'Eval']

`promql/promqltest.py` runs what this module parses; `rules/unit_tests.py` reuses the value notation.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, cast

from watchkeeper.durations import parse_duration
from watchkeeper.labels import METRIC_NAME, Labels, from_pairs

_STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", _STALE_NAN_BITS))[0]

# Command and expect patterns, as upstream (test.go).
_PAT_SPACE = re.compile(r"[\t ]+")
_PAT_LOAD = re.compile(r"^load(?:_(with_nhcb))?\s+(.+?)$")
_PAT_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_PAT_EVAL_RANGE = re.compile(
    r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$"
)
_PAT_EXPECT = re.compile(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$")
_RANGE_VECTOR_PREFIX = "expect range vector"
_PAT_EXPECT_RANGE = re.compile(r"^" + _RANGE_VECTOR_PREFIX + r"\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$")
_EXPECT_STRING_PREFIX = "expect string"


class TestFileError(ValueError):
    """A ``.test`` file does not follow the format; ``line`` is 1-based."""

    __test__ = False  # not a pytest class

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NativeHistogram:
    """A ``{{...}}`` value, kept as text: native histograms are parsed but not evaluated."""

    text: str


#: One position of a value sequence: a float, ``None`` for ``_`` (no sample), or a histogram.
Point = float | None | NativeHistogram


_GO_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
    "'": "'", '"': '"',
}


def go_unquote(text: str) -> str:
    """Go's ``strconv.Unquote`` for ``"..."``, ``'...'`` and raw `` `...` `` strings."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'`":
        raise ValueError(f"invalid quoted string {text}")
    quote, body = text[0], text[1:-1]
    if quote == "`":
        if "`" in body:
            raise ValueError(f"invalid quoted string {text}")
        return body.replace("\r", "")
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == quote or char == "\n":
            raise ValueError(f"invalid quoted string {text}")
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError(f"invalid escape in {text}")
        esc = body[i + 1]
        if esc in _GO_SIMPLE_ESCAPES:
            out += _GO_SIMPLE_ESCAPES[esc].encode()
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"invalid escape in {text}")
            code = int(digits, 16)
            out += bytes([code]) if esc == "x" else chr(code).encode()
            i += 2 + width
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ValueError(f"invalid escape in {text}")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape sequence \\{esc} in {text}")
    return out.decode("utf-8", errors="surrogateescape")


_NUMBER = r"[+-]?(?:[iI]nf(?:inity)?|NaN|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
_PAT_ITEM_REPEAT = re.compile(rf"^({_NUMBER})(?:x(\d+))?$")
_UNSIGNED = r"(?:[iI]nf|NaN|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
_PAT_ITEM_SERIES = re.compile(rf"^({_NUMBER})([+-]{_UNSIGNED})x(\d+)$")
_PAT_BLANKS = re.compile(r"^_x(\d+)$")
_PAT_HISTOGRAM_ITEM = re.compile(r"^(\{\{.*?\}\})(?:([+-])(\{\{.*?\}\}))?(?:x(\d+))?$")


def _split_items(text: str) -> Iterator[str]:
    """Whitespace-separated items; ``{{...}}`` (which contains spaces) stays one item."""
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        start = i
        while i < n and text[i] not in " \t":
            if text.startswith("{{", i):
                close = text.find("}}", i)
                if close < 0:
                    raise ValueError(f"unterminated histogram in {text!r}")
                i = close + 2
            else:
                i += 1
        yield text[start:i]


def parse_values(text: str) -> tuple[Point, ...]:
    """The value notation: ``1 2 _ stale 0+10x5 3x2 _x4 Inf {{schema:0 sum:1 count:1}}x2``."""
    points: list[Point] = []
    for item in _split_items(text):
        if item == "_":
            points.append(None)
        elif item == "stale":
            points.append(STALE_NAN)
        elif m := _PAT_BLANKS.match(item):
            points.extend([None] * int(m.group(1)))
        elif m := _PAT_ITEM_REPEAT.match(item):
            value = float(m.group(1))
            points.extend([value] * (int(m.group(2)) + 1 if m.group(2) else 1))
        elif m := _PAT_ITEM_SERIES.match(item):
            current, delta = float(m.group(1)), float(m.group(2))
            for _ in range(int(m.group(3)) + 1):
                points.append(current)
                current += delta  # accumulated like upstream, rounding errors included
        elif m := _PAT_HISTOGRAM_ITEM.match(item):
            count = int(m.group(4)) + 1 if m.group(4) else 1
            points.extend([NativeHistogram(m.group(1))] * count)
        else:
            raise ValueError(f"invalid value {item!r}")
    return tuple(points)


_PAT_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PAT_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PAT_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`')


def parse_series(text: str) -> tuple[Labels, tuple[Point, ...]]:
    """A series line: ``metric{l="v"} <values>``, ``{__name__="m"} <values>`` or ``{} <values>``."""
    pos = 0
    pairs: list[tuple[str, str]] = []
    if m := _PAT_METRIC_NAME.match(text):
        pairs.append((METRIC_NAME, m.group()))
        pos = m.end()
    if pos < len(text) and text[pos] == "{":
        pos += 1
        while True:
            pos = _skip_space(text, pos)
            if text.startswith("}", pos):
                pos += 1
                break
            if m := _PAT_LABEL_NAME.match(text, pos):
                name = m.group()
            elif m := _PAT_QUOTED.match(text, pos):
                name = go_unquote(m.group())
            else:
                raise ValueError(f"invalid label name at {text[pos:]!r}")
            pos = _skip_space(text, m.end())
            if text.startswith(("}", ","), pos) and m.group()[0] in "\"'`":
                pairs.append((METRIC_NAME, name))  # {"metric.name"} form
            else:
                if not text.startswith("=", pos):
                    raise ValueError(f"expected '=' at {text[pos:]!r}")
                pos = _skip_space(text, pos + 1)
                value = _PAT_QUOTED.match(text, pos)
                if value is None:
                    raise ValueError(f"expected a quoted label value at {text[pos:]!r}")
                pairs.append((name, go_unquote(value.group())))
                pos = _skip_space(text, value.end())
            if text.startswith(",", pos):
                pos += 1
            elif not text.startswith("}", pos):
                raise ValueError(f"expected ',' or '}}' at {text[pos:]!r}")
    elif pos == 0:
        raise ValueError(f"expected a metric name or '{{' in {text!r}")
    if pos < len(text) and text[pos] not in " \t":
        raise ValueError(f"unexpected {text[pos:]!r}")
    return from_pairs(pairs), parse_values(text[pos:])


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _parse_number(text: str) -> float:
    """Go's ``ParseInt(s, 0, 64)`` then ``ParseFloat``: ``3``, ``0x10``, ``1e3``, ``-Inf``, ``NaN``."""
    body = text.lstrip("+-")
    if re.fullmatch(r"0[0-7]+", body):  # Go base-0 octal
        value = float(int(body, 8))
        return -value if text.startswith("-") else value
    try:
        return float(int(text, 0))
    except ValueError:
        pass
    if "_" in text or not re.fullmatch(_NUMBER, text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesLine:
    labels: Labels
    values: tuple[Point, ...]

    @property
    def native(self) -> bool:
        return any(isinstance(v, NativeHistogram) for v in self.values)


@dataclass(frozen=True, slots=True)
class Load:
    line: int
    interval_ms: int
    series: tuple[SeriesLine, ...]
    with_nhcb: bool = False


@dataclass(frozen=True, slots=True)
class Clear:
    line: int


ExpectKind = Literal["ordered", "fail", "warn", "no_warn", "info", "no_info"]


@dataclass(frozen=True, slots=True)
class Expect:
    """``expect <kind> [msg: <exact>|regex: <re>]``; with neither, any message matches."""

    kind: ExpectKind
    message: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        return self.message is None or self.message == text

    def describe(self) -> str:
        if self.regex is not None:
            return f"pattern {self.regex.pattern!r}"
        return f"message {self.message!r}" if self.message is not None else "any message"


@dataclass(slots=True)
class Eval:
    """One ``eval`` block. Times are ms since the epoch; ``expected`` maps a label set to its
    1-based position among the result lines and its values."""

    line: int
    expr: str
    instant: bool
    start_ms: int
    end_ms: int = -(2**62)  # upstream: the zero time, before any evaluation time
    step_ms: int = 0
    eval_ms: int = 0
    fail: bool = False
    warn: bool = False
    info: bool = False
    ordered: bool = False
    expected_fail_message: str | None = None
    expected_fail_regexp: re.Pattern[str] | None = None
    expects: dict[str, list[Expect]] = field(default_factory=dict)
    expected: dict[Labels, tuple[int, tuple[Point, ...]]] = field(default_factory=dict)
    expected_scalar: float | None = None
    expected_string: str | None = None
    exclude_from_range: bool = False

    @property
    def is_fail(self) -> bool:
        return self.fail or bool(self.expects.get("fail"))

    @property
    def is_ordered(self) -> bool:
        return self.ordered or bool(self.expects.get("ordered"))

    @property
    def expects_histograms(self) -> bool:
        return any(isinstance(v, NativeHistogram) for _, vals in self.expected.values() for v in vals)


Command = Load | Clear | Eval


def parse_test(text: str) -> list[Command]:
    """The commands of a ``.test`` file. Eval expressions are kept as text (parsed by the runner).

    Raises :class:`TestFileError` where upstream's parser rejects the file."""
    lines = [("" if ln.strip().startswith("#") else ln.strip()) for ln in text.split("\n")]
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        word = _PAT_SPACE.split(line, maxsplit=1)[0].lower()
        if word == "clear":
            commands.append(Clear(i + 1))
        elif word.startswith("load"):
            i, load = _parse_load(lines, i)
            commands.append(load)
        elif word.startswith("eval"):
            i, ev = _parse_eval(lines, i)
            commands.append(ev)
        else:
            raise TestFileError(i + 1, f"invalid command {line!r}")
        i += 1
    return commands


def _block(lines: list[str], i: int) -> Iterator[int]:
    """Indices of the lines after ``i`` up to the next empty line."""
    while i + 1 < len(lines) and lines[i + 1]:
        i += 1
        yield i


def _parse_load(lines: list[str], i: int) -> tuple[int, Load]:
    match = _PAT_LOAD.match(lines[i])
    if match is None:
        raise TestFileError(i + 1, "invalid load command. (load[_with_nhcb] <step:duration>)")
    try:
        interval_ms = parse_duration(match.group(2))
    except ValueError as exc:
        raise TestFileError(i + 1, f"invalid step definition {match.group(2)!r}: {exc}") from exc
    series: dict[Labels, SeriesLine] = {}
    end = i
    for end in _block(lines, i):
        first = _PAT_SPACE.split(lines[end], maxsplit=1)[0]
        if first.endswith("@st"):
            continue  # start-timestamp lines: tolerated, not used
        try:
            labels, values = parse_series(lines[end])
        except ValueError as exc:
            raise TestFileError(end + 1, str(exc)) from exc
        series[labels] = SeriesLine(labels, values)  # a repeated series replaces the earlier line
    return end, Load(i + 1, interval_ms, tuple(series.values()), with_nhcb=match.group(1) is not None)


def _parse_eval(lines: list[str], i: int) -> tuple[int, Eval]:
    instant = _PAT_EVAL_INSTANT.match(lines[i])
    ranged = _PAT_EVAL_RANGE.match(lines[i])
    if instant is None and ranged is None:
        raise TestFileError(
            i + 1,
            "invalid evaluation command. Must be either 'eval[_fail|_warn|_ordered] instant "
            "[at <offset:duration>] <query>' or 'eval[_fail|_warn] range from <from> to <to> "
            "step <step> <query>'",
        )
    line_no = i + 1
    try:
        if instant is not None:
            modifier, expr = instant.group(1), instant.group(3)
            at_ms = parse_duration(instant.group(2) or "")
            ev = Eval(line_no, expr, instant=True, start_ms=at_ms, eval_ms=at_ms)
        else:
            assert ranged is not None
            modifier, expr = ranged.group(1), ranged.group(5)
            start_ms, end_ms, step_ms = _parse_range(ranged.group(2), ranged.group(3), ranged.group(4))
            ev = Eval(line_no, expr, instant=False, start_ms=start_ms, end_ms=end_ms, step_ms=step_ms)
    except ValueError as exc:
        raise TestFileError(line_no, f"error in eval {lines[i]}: {exc}") from exc
    if modifier:
        setattr(ev, modifier, True)

    expect_range_vector = False
    position = 0
    last = i
    for last in _block(lines, i):
        line = lines[last]
        position += 1
        try:
            if ev.fail and line.startswith("expected_fail_message"):
                ev.expected_fail_message = line.removeprefix("expected_fail_message").strip()
                break
            if ev.fail and line.startswith("expected_fail_regexp"):
                ev.expected_fail_regexp = re.compile(line.removeprefix("expected_fail_regexp").strip())
                break
            if line.startswith(_RANGE_VECTOR_PREFIX):
                match = _PAT_EXPECT_RANGE.match(line)
                if match is None:
                    raise ValueError(f"invalid range vector definition {line!r}")
                ev.start_ms, ev.end_ms, ev.step_ms = _parse_range(*match.groups())
                ev.eval_ms = ev.end_ms
                ev.exclude_from_range = expect_range_vector = True
                continue
            if line.startswith(_EXPECT_STRING_PREFIX):
                ev.expected_string = _parse_expect_string(line)
                ev.exclude_from_range = True
                continue
            if line.split(" ")[0] == "expect":
                expect = _parse_expect(line)
                ev.expects.setdefault(expect.kind, []).append(expect)
                position -= 1
                _validate_expects(ev)
                continue
            try:
                ev.expected_scalar = _parse_number(line)
                break
            except ValueError:
                pass
            labels, values = parse_series(line)
        except (ValueError, re.error) as exc:
            raise TestFileError(last + 1, f"error in eval {ev.expr} (line {line_no}): {exc}") from exc
        if len(values) > 1 and ev.instant and not expect_range_vector:
            raise TestFileError(
                last + 1,
                f"error in eval {ev.expr} (line {line_no}): expecting multiple values in instant "
                "evaluation not allowed. consider using 'expect range vector' directive to enable "
                "a range vector result for an instant query",
            )
        ev.expected_scalar = None
        ev.expected[labels] = (position, values)
    return last, ev


def _parse_range(start: str, end: str, step: str) -> tuple[int, int, int]:
    start_ms, end_ms = parse_duration(start), parse_duration(end)
    if end_ms < start_ms:
        raise ValueError(
            f"invalid test definition, end timestamp ({end}) is before start timestamp ({start})"
        )
    return start_ms, end_ms, parse_duration(step)


def _parse_expect_string(line: str) -> str:
    quoted = line.removeprefix(_EXPECT_STRING_PREFIX + " ")
    if line == _EXPECT_STRING_PREFIX or not quoted:
        raise ValueError("expected string literal not valid - a quoted string literal is required")
    try:
        return go_unquote(quoted)
    except ValueError as exc:
        raise ValueError(
            "expected string literal not valid - check that the string is correctly quoted"
        ) from exc


def _parse_expect(line: str) -> Expect:
    match = _PAT_EXPECT.match(line.strip())
    if match is None:
        raise ValueError("invalid expect statement, must match `expect <type> <match_type>: <string>` format")
    kind = cast(ExpectKind, match.group(1))
    how, text = match.group(2), match.group(3)
    if how == "msg":
        return Expect(kind, message=text.strip())
    if how == "regex":
        return Expect(kind, regex=re.compile(text.strip()))
    return Expect(kind)


def _validate_expects(ev: Eval) -> None:
    if ev.expects.get("info") and ev.expects.get("no_info"):
        raise ValueError("invalid expect lines, info and no_info cannot be used together")
    if ev.expects.get("warn") and ev.expects.get("no_warn"):
        raise ValueError("invalid expect lines, warn and no_warn cannot be used together")
    if len(ev.expects.get("fail", [])) > 1:
        raise ValueError("invalid expect lines, multiple expect fail lines are not allowed")
