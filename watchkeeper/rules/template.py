"""Go ``text/template`` for alert labels and annotations: a parser and an interpreter, no eval.

Prometheus expands annotations (and label values) of alerting rules as Go templates with
``$labels``, ``$externalLabels``, ``$externalURL`` and ``$value`` predefined. This module implements
the part of the language rule files use: text and ``{{ }}`` actions (``{{-``/``-}}`` trimming,
comments), pipelines with ``|``, variables (``$x := ...``, ``$x = ...``), fields (``.Labels.job``,
``$labels.job``, ``$.Value``), ``if``/``else if``/``else``, ``range`` (with ``$i, $e :=`` and
``else``), ``with``, parenthesised pipelines, string/number/bool literals, and the functions of
:mod:`watchkeeper.rules.template_funcs`. Data are plain dicts, lists, strings and numbers; field
access is a dict lookup, so a template can reach nothing but the data it was given.

>>> expand("{{ $labels.instance }} is {{ $value | humanize }}", labels={"instance": "a:1"}, value=1234.5)
'a:1 is 1.234k'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.rules import template_funcs as funcs


class TemplateError(ValueError):
    """A template does not parse, or failed while executing."""


#: Prometheus' convenience variables, prepended to every alert template.
ALERT_DEFS = (
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}"
    "{{$externalURL := .ExternalURL}}{{$value := .Value}}"
)

MAX_OUTPUT_CHARS = 1 << 20
MAX_RANGE_ITERATIONS = 100_000


# --- lexing --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # str, num, bool, nil, ident, var, field, dot, pipe, lparen, rparen, decl, assign, comma
    text: str
    value: Any = None


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)")
_FIELD_CHAIN = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "0": "\0"}


def _split(src: str) -> list[tuple[str, str]]:
    """``[("text", ...), ("action", ...)]`` with trim markers applied and comments dropped."""
    parts: list[tuple[str, str]] = []
    i = 0
    while True:
        start = src.find("{{", i)
        if start < 0:
            parts.append(("text", src[i:]))
            return parts
        text = src[i:start]
        j = start + 2
        if src.startswith("- ", j) or src.startswith("-\t", j) or src.startswith("-\n", j):
            text = text.rstrip(" \t\r\n")
            j += 1
        parts.append(("text", text))
        end, body = _scan_action(src, j)
        trim_right = False
        if body.endswith(" -") or body.endswith("\t-") or body.endswith("\n-"):
            body = body[:-1]
            trim_right = True
        stripped = body.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError("unclosed comment")
        else:
            parts.append(("action", body))
        i = end + 2
        if trim_right:
            while i < len(src) and src[i] in " \t\r\n":
                i += 1


def _scan_action(src: str, j: int) -> tuple[int, str]:
    """Find the ``}}`` closing the action starting at ``j``, skipping quoted strings."""
    k = j
    while k < len(src):
        c = src[k]
        if c in "\"'":
            k += 1
            while k < len(src) and src[k] != c:
                if src[k] == "\n":
                    raise TemplateError("unterminated quoted string")
                k += 2 if src[k] == "\\" else 1
            k += 1
        elif c == "`":
            close = src.find("`", k + 1)
            if close < 0:
                raise TemplateError("unterminated raw quoted string")
            k = close + 1
        elif src.startswith("}}", k):
            return k, src[j:k]
        else:
            k += 1
    raise TemplateError("unclosed action")


def _tokens(action: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(action)
    while i < n:
        c = action[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            j, out = i + 1, []
            while j < n and action[j] != '"':
                if action[j] == "\\" and j + 1 < n:
                    out.append(_ESCAPES.get(action[j + 1], "\\" + action[j + 1]))
                    j += 2
                else:
                    out.append(action[j])
                    j += 1
            if j >= n:
                raise TemplateError("unterminated quoted string")
            toks.append(_Tok("str", action[i : j + 1], "".join(out)))
            i = j + 1
        elif c == "`":
            j = action.index("`", i + 1)
            toks.append(_Tok("str", action[i : j + 1], action[i + 1 : j]))
            i = j + 1
        elif c == "'":
            j = action.find("'", i + 1)
            if j < 0:
                raise TemplateError("unterminated character constant")
            body = action[i + 1 : j]
            ch = _ESCAPES.get(body[1:], body[1:]) if body.startswith("\\") else body
            toks.append(_Tok("num", action[i : j + 1], ord(ch[:1] or "\0")))
            i = j + 1
        elif c == "|":
            toks.append(_Tok("pipe", c))
            i += 1
        elif c == "(":
            toks.append(_Tok("lparen", c))
            i += 1
        elif c == ")":
            j = i + 1
            m = _FIELD_CHAIN.match(action, j)
            toks.append(_Tok("rparen", c, tuple(m.group()[1:].split(".")) if m else ()))
            i = m.end() if m else j
        elif c == ",":
            toks.append(_Tok("comma", c))
            i += 1
        elif action.startswith(":=", i):
            toks.append(_Tok("decl", ":="))
            i += 2
        elif c == "=":
            toks.append(_Tok("assign", "="))
            i += 1
        elif c == "$":
            m = re.compile(r"\$[A-Za-z0-9_]*").match(action, i)
            assert m is not None
            fields = _FIELD_CHAIN.match(action, m.end())
            chain = tuple(fields.group()[1:].split(".")) if fields else ()
            toks.append(_Tok("var", m.group(), (m.group(), chain)))
            i = fields.end() if fields else m.end()
        elif c == ".":
            m = _FIELD_CHAIN.match(action, i)
            if m:
                toks.append(_Tok("field", m.group(), tuple(m.group()[1:].split("."))))
                i = m.end()
            elif i + 1 < n and action[i + 1].isdigit():
                m2 = _NUMBER.match(action, i)
                assert m2 is not None
                toks.append(_Tok("num", m2.group(), _parse_number(m2.group())))
                i = m2.end()
            else:
                toks.append(_Tok("dot", "."))
                i += 1
        elif c.isdigit() or (c in "+-" and i + 1 < n and (action[i + 1].isdigit() or action[i + 1] == ".")):
            m = _NUMBER.match(action, i)
            if not m:
                raise TemplateError(f"bad number syntax: {action[i:]!r}")
            toks.append(_Tok("num", m.group(), _parse_number(m.group())))
            i = m.end()
        elif m := _WORD.match(action, i):
            word = m.group()
            if word in ("true", "false"):
                toks.append(_Tok("bool", word, word == "true"))
            elif word == "nil":
                toks.append(_Tok("nil", word))
            else:
                toks.append(_Tok("ident", word))
            i = m.end()
        else:
            raise TemplateError(f"unexpected {c!r} in action")
    return toks


def _parse_number(text: str) -> int | float:
    clean = text.replace("_", "")
    try:
        return int(clean, 0)
    except ValueError:
        pass
    try:
        return float(clean)
    except ValueError as exc:
        raise TemplateError(f"bad number syntax: {text!r}") from exc


# --- syntax tree ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operand:
    kind: str  # literal, ident, var, field, dot, sub
    value: Any = None
    chain: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pipeline:
    decl: tuple[str, ...] = ()
    assign: bool = False
    commands: list[list[_Operand]] = field(default_factory=list)


@dataclass(slots=True)
class _Text:
    text: str


@dataclass(slots=True)
class _Action:
    pipe: _Pipeline


@dataclass(slots=True)
class _Branch:
    kind: str  # if, range, with
    pipe: _Pipeline
    body: list[_Node]
    orelse: list[_Node]


_Node = _Text | _Action | _Branch


class _PipeParser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipeline(self, allow_decl: bool = True, allow_two_vars: bool = False) -> _Pipeline:
        pipe = _Pipeline()
        if allow_decl:
            self._declaration(pipe, allow_two_vars)
        while True:
            cmd = self._command()
            if not cmd:
                raise TemplateError("missing value for command")
            pipe.commands.append(cmd)
            tok = self.peek()
            if tok is None or tok.kind == "rparen":
                break
            if tok.kind != "pipe":
                raise TemplateError(f"unexpected {tok.text!r} in operand")
            self.i += 1
        return pipe

    def _declaration(self, pipe: _Pipeline, allow_two_vars: bool) -> None:
        t = self.toks
        if len(t) > self.i + 1 and t[self.i].kind == "var" and not t[self.i].value[1]:
            if t[self.i + 1].kind in ("decl", "assign"):
                pipe.decl = (t[self.i].value[0],)
                pipe.assign = t[self.i + 1].kind == "assign"
                self.i += 2
            elif (allow_two_vars and t[self.i + 1].kind == "comma" and len(t) > self.i + 3
                  and t[self.i + 2].kind == "var" and t[self.i + 3].kind in ("decl", "assign")):
                pipe.decl = (t[self.i].value[0], t[self.i + 2].value[0])
                pipe.assign = t[self.i + 3].kind == "assign"
                self.i += 4

    def _command(self) -> list[_Operand]:
        ops: list[_Operand] = []
        while (tok := self.peek()) is not None and tok.kind not in ("pipe", "rparen"):
            self.i += 1
            if tok.kind in ("str", "num", "bool"):
                ops.append(_Operand("literal", tok.value))
            elif tok.kind == "nil":
                ops.append(_Operand("literal", None))
            elif tok.kind == "ident":
                if tok.text not in funcs.FUNCTIONS and tok.text not in _BUILTINS:
                    raise TemplateError(f'function "{tok.text}" not defined')
                ops.append(_Operand("ident", tok.text))
            elif tok.kind == "var":
                ops.append(_Operand("var", tok.value[0], tok.value[1]))
            elif tok.kind == "field":
                ops.append(_Operand("field", None, tok.value))
            elif tok.kind == "dot":
                ops.append(_Operand("dot"))
            elif tok.kind == "lparen":
                inner = self.pipeline(allow_decl=False)
                close = self.peek()
                if close is None or close.kind != "rparen":
                    raise TemplateError("unclosed left paren")
                self.i += 1
                ops.append(_Operand("sub", inner, close.value))
            else:
                raise TemplateError(f"unexpected {tok.text!r} in command")
        return ops


_BUILTINS = frozenset({"and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne",
                       "lt", "le", "gt", "ge", "html", "js", "urlquery", "slice", "call"})


def _parse_pipeline(text: str, *, two_vars: bool = False) -> _Pipeline:
    toks = _tokens(text)
    if not toks:
        raise TemplateError("missing value for command")
    p = _PipeParser(toks)
    pipe = p.pipeline(allow_two_vars=two_vars)
    if p.i != len(toks):
        raise TemplateError(f"unexpected {toks[p.i].text!r}")
    return pipe


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template; :meth:`execute` renders it. Parse once, execute many times.

    >>> Template.parse("{{ if gt $value 1.0 }}high{{ else }}ok{{ end }}").execute({}, {"$value": 2.0})
    'high'
    """

    nodes: tuple[_Node, ...]

    @classmethod
    def parse(cls, src: str) -> Template:
        parts = _split(src)
        # frames: (open branch or None for the root, list being filled, closed by its parent's end)
        stack: list[tuple[_Branch | None, list[_Node], bool]] = [(None, [], False)]
        for kind, body in parts:
            if kind == "text":
                if body:
                    stack[-1][1].append(_Text(body))
                continue
            words = body.split(None, 1)
            keyword = words[0] if words else ""
            rest = words[1] if len(words) > 1 else ""
            if keyword in ("if", "with", "range"):
                branch = _Branch(keyword, _parse_pipeline(rest, two_vars=keyword == "range"), [], [])
                stack[-1][1].append(branch)
                stack.append((branch, branch.body, False))
            elif keyword == "else":
                open_branch, current, chained = stack[-1]
                if open_branch is None or current is open_branch.orelse:
                    raise TemplateError("unexpected {{else}}")
                stack[-1] = (open_branch, open_branch.orelse, chained)
                if rest.startswith(("if ", "with ")):
                    sub_kind, sub_rest = rest.split(None, 1)
                    nested = _Branch(sub_kind, _parse_pipeline(sub_rest), [], [])
                    open_branch.orelse.append(nested)
                    stack.append((nested, nested.body, True))  # {{else if}} shares the {{end}}
            elif keyword == "end":
                while True:
                    if len(stack) == 1:
                        raise TemplateError("unexpected {{end}}")
                    _, _, chained = stack.pop()
                    if not chained:
                        break
            elif keyword in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"{{{{{keyword}}}}} is not supported")
            else:
                stack[-1][1].append(_Action(_parse_pipeline(body)))
        if len(stack) != 1:
            raise TemplateError("unexpected EOF (missing {{end}})")
        return cls(tuple(stack[0][1]))

    def execute(
        self,
        data: Any,
        variables: Mapping[str, Any] | None = None,
        *,
        query: Callable[[str], list[dict[str, Any]]] | None = None,
        context: funcs.Context | None = None,
    ) -> str:
        ctx = context or funcs.Context()
        if query is not None:
            ctx = funcs.Context(query=query, external_url=ctx.external_url, now_s=ctx.now_s)
        runner = _Runner(ctx)
        scope: list[dict[str, Any]] = [{"$": data, **(variables or {})}]
        out: list[str] = []
        runner.walk(self.nodes, data, scope, out)
        return "".join(out)



class _Runner:
    def __init__(self, ctx: funcs.Context) -> None:
        self.ctx = ctx
        self.size = 0

    def emit(self, out: list[str], text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise TemplateError("template output too large")
        out.append(text)

    def walk(self, nodes: Sequence[_Node], dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.emit(out, node.text)
            elif isinstance(node, _Action):
                value = self.pipe(node.pipe, dot, scope)
                if not node.pipe.decl:
                    self.emit(out, funcs.go_print(value))
            else:
                self.branch(node, dot, scope, out)

    def branch(self, node: _Branch, dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        scope.append({})
        try:
            value = self.pipe(node.pipe, dot, scope)
            if node.kind == "if":
                self.walk(node.body if funcs.truth(value) else node.orelse, dot, scope, out)
            elif node.kind == "with":
                if funcs.truth(value):
                    self.walk(node.body, value, scope, out)
                else:
                    self.walk(node.orelse, dot, scope, out)
            else:
                self.range(node, value, dot, scope, out)
        finally:
            scope.pop()

    def range(self, node: _Branch, value: Any, dot: Any, scope: list[dict[str, Any]], out: list[str]) -> None:
        if isinstance(value, Mapping):
            items: list[tuple[Any, Any]] = sorted(value.items())
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {funcs.go_print(value)}")
        if len(items) > MAX_RANGE_ITERATIONS:
            raise TemplateError("range over too many elements")
        if not items:
            self.walk(node.orelse, dot, scope, out)
            return
        for key, elem in items:
            frame = scope[-1]
            if len(node.pipe.decl) == 1:
                frame[node.pipe.decl[0]] = elem
            elif len(node.pipe.decl) == 2:
                frame[node.pipe.decl[0]] = key
                frame[node.pipe.decl[1]] = elem
            self.walk(node.body, elem, scope, out)

    def pipe(self, pipe: _Pipeline, dot: Any, scope: list[dict[str, Any]]) -> Any:
        value: Any = _NO_VALUE
        for cmd in pipe.commands:
            value = self.command(cmd, dot, scope, value)
        if pipe.decl:
            if pipe.assign:
                for frame in reversed(scope):
                    if pipe.decl[0] in frame:
                        frame[pipe.decl[0]] = value
                        break
                else:
                    raise TemplateError(f"undefined variable: {pipe.decl[0]}")
            elif len(pipe.decl) == 1:
                scope[-1][pipe.decl[0]] = value
        return value

    def command(self, cmd: list[_Operand], dot: Any, scope: list[dict[str, Any]], piped: Any) -> Any:
        head = cmd[0]
        if head.kind == "ident":
            args = [self.operand(op, dot, scope) for op in cmd[1:]]
            if piped is not _NO_VALUE:
                args.append(piped)
            return self.call(head.value, args)
        if len(cmd) > 1 or piped is not _NO_VALUE:
            raise TemplateError(f"can't give argument to non-function {_describe(head)}")
        return self.operand(head, dot, scope)

    def operand(self, op: _Operand, dot: Any, scope: list[dict[str, Any]]) -> Any:
        if op.kind == "literal":
            return op.value
        if op.kind == "dot":
            return dot
        if op.kind == "field":
            return _fields(dot, op.chain)
        if op.kind == "var":
            for frame in reversed(scope):
                if op.value in frame:
                    return _fields(frame[op.value], op.chain)
            raise TemplateError(f"undefined variable: {op.value}")
        if op.kind == "sub":
            return _fields(self.pipe(op.value, dot, scope), op.chain)
        if op.kind == "ident":  # a function used as an argument: call it without arguments
            return self.call(op.value, [])
        raise TemplateError(f"bad operand {op.kind}")

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "and":
            return _and_or(args, want=False)
        if name == "or":
            return _and_or(args, want=True)
        fn = funcs.FUNCTIONS.get(name)
        if fn is None:
            raise TemplateError(f'function "{name}" not supported')
        try:
            return fn(self.ctx, *args)
        except TypeError as exc:
            raise TemplateError(f"error calling {name}: {exc}") from exc
        except funcs.FuncError as exc:
            raise TemplateError(f"error calling {name}: {exc}") from exc


def _and_or(args: list[Any], *, want: bool) -> Any:
    if not args:
        raise TemplateError("wrong number of args")
    for a in args[:-1]:
        if funcs.truth(a) is want:
            return a
    return args[-1]


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


_NO_VALUE: Any = _NoValue()


def _describe(op: _Operand) -> str:
    if op.kind == "field":
        return "." + ".".join(op.chain)
    if op.kind == "var":
        return str(op.value) + "".join("." + c for c in op.chain)
    return repr(op.value)


def _fields(value: Any, chain: tuple[str, ...]) -> Any:
    for name in chain:
        if isinstance(value, Mapping):
            # missingkey=zero, as Prometheus sets it: a missing label is ""
            value = value.get(name, "")
        elif value is None or value == "":
            raise TemplateError(f"nil pointer evaluating .{name}")
        else:
            raise TemplateError(f"can't evaluate field {name} in type {funcs.go_type(value)}")
    return value


def alert_data(
    labels: Mapping[str, str], external_labels: Mapping[str, str], external_url: str, value: float
) -> dict[str, Any]:
    """Prometheus' ``AlertTemplateData``: the ``.`` of an alert template."""
    return {"Labels": dict(labels), "ExternalLabels": dict(external_labels),
            "ExternalURL": external_url, "Value": value}


def expand(
    text: str,
    *,
    labels: Mapping[str, str] | None = None,
    value: float = math.nan,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
    query: Callable[[str], list[dict[str, Any]]] | None = None,
    now_s: float = 0.0,
) -> str:
    """Expand an alert template as Prometheus does; errors raise :class:`TemplateError`."""
    data = alert_data(labels or {}, external_labels or {}, external_url, value)
    ctx = funcs.Context(query=query, external_url=external_url, now_s=now_s)
    # the variables ALERT_DEFS would define, set directly (same values, four pipelines less per run)
    variables = {"$labels": data["Labels"], "$externalLabels": data["ExternalLabels"],
                 "$externalURL": external_url, "$value": value}
    return compile_alert_template(text).execute(data, variables, context=ctx)


_CACHE: dict[str, Template] = {}


def compile_alert_template(text: str) -> Template:
    """The parsed template (cached); :func:`expand` supplies ``$labels``, ``$value``, ...."""
    tmpl = _CACHE.get(text)
    if tmpl is None:
        tmpl = Template.parse(text)
        if len(_CACHE) > 10_000:
            _CACHE.clear()
        _CACHE[text] = tmpl
    return tmpl


def expand_or_error(text: str, **kwargs: Any) -> str:
    """:func:`expand`, or Prometheus' ``<error expanding template: ...>`` text on error."""
    if "{{" not in text:
        return text
    try:
        return expand(text, **kwargs)
    except (TemplateError, funcs.FuncError) as exc:
        return f"<error expanding template: {exc}>"
