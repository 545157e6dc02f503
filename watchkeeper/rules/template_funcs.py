"""The functions alert templates can call: Prometheus' template functions and Go's builtins.

Each takes the render :class:`Context` first, then the template's arguments. Outputs follow the Go
implementations (``template/template.go`` in Prometheus, ``fmt`` for ``printf``):

>>> humanize(Context(), 1234567.0), humanize1024(Context(), 2048), humanizeDuration(Context(), 3725)
('1.235M', '2ki', '1h 2m 5s')
>>> humanizePercentage(Context(), 0.1234), printf(Context(), "%.2f%%", 3.14159)
('12.34%', '3.14%')
"""

from __future__ import annotations

import datetime as dt
import html as html_lib
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watchkeeper.labels import go_to_python_regex
from watchkeeper.promql.formatting import format_go_float


class FuncError(ValueError):
    """A template function refused its arguments."""


@dataclass(frozen=True, slots=True)
class Context:
    """What functions may reach beyond their arguments: the query function, URL, render time."""

    query: Callable[[str], list[dict[str, Any]]] | None = None
    external_url: str = ""
    now_s: float = 0.0


# --- printing ------------------------------------------------------------------------------------


def go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return "<nil>" if value is None else type(value).__name__


def go_print(value: Any) -> str:
    """Go's ``fmt.Sprint`` of a template value (``%v``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_go_float(value, "g")
    if isinstance(value, int | str):
        return str(value)
    if value is None:
        return "<no value>"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{go_print(k)}:{go_print(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings/maps/lists are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | Mapping | list | tuple):
        return len(value) > 0
    return True


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def _fmt_g(value: float, precision: int | None, flags: str = "") -> str:
    """Go's ``%g``/``%.Ng`` (NaN and ±Inf spelled as Go does)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if precision is None:
        text = format_go_float(value, "g")
        return ("+" + text) if "+" in flags and value >= 0 else text
    return ("%" + flags + "." + str(precision) + "g") % value


def printf(ctx: Context, fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: ``%s %v %q %d %f %e %g %x %X %t %%``."""
    out: list[str] = []
    pos = 0
    arg_i = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if arg_i >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[arg_i]
        arg_i += 1
        out.append(_format_verb(flags, width, prec, verb, arg))
    out.append(fmt[pos:])
    if arg_i < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{go_type(a)}={go_print(a)}" for a in args[arg_i:]) + ")")
    return "".join(out)


def _format_verb(flags: str, width: str | None, prec: str | None, verb: str, arg: Any) -> str:
    p = int(prec) if prec not in (None, "*") else (0 if prec == "" else None)
    if verb in "fFeEgG" and isinstance(arg, int | float) and not isinstance(arg, bool):
        f = float(arg)
        if math.isnan(f) or math.isinf(f):
            body = _fmt_g(f, None)
        elif verb in "gG":
            body = _fmt_g(f, p, flags.replace("0", "").replace("-", ""))
        else:
            body = ("%" + flags.replace("-", "").replace("0", "") + "." + str(6 if p is None else p)
                    + verb.lower()) % f
    elif verb in "dxXob" and isinstance(arg, int) and not isinstance(arg, bool):
        body = format(arg, {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb])
        if "+" in flags and arg >= 0:
            body = "+" + body
    elif verb == "t" and isinstance(arg, bool):
        body = go_print(arg)
    elif verb in "sv":
        body = go_print(arg)
        if p is not None and isinstance(arg, str):
            body = body[:p]
    elif verb == "q" and isinstance(arg, str):
        body = json.dumps(arg, ensure_ascii=False)
    elif verb in "xX" and isinstance(arg, str):
        body = arg.encode().hex()
        body = body.upper() if verb == "X" else body
    else:
        return f"%!{verb}({go_type(arg)}={go_print(arg)})"
    if width and width != "*":
        w = int(width)
        if "-" in flags:
            body = body.ljust(w)
        elif "0" in flags and verb not in "sqvt":
            sign = body[0] if body[:1] in "+-" else ""
            body = sign + body[len(sign):].rjust(w - len(sign), "0")
        else:
            body = body.rjust(w)
    return body


# --- numbers -------------------------------------------------------------------------------------


def to_float(value: Any) -> float:
    """Prometheus' ``convertToFloat``: numbers, numeric strings, durations are not accepted."""
    if isinstance(value, bool):
        raise FuncError(f"can't convert {go_type(value)} to float")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError as exc:
            raise FuncError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from exc
    raise FuncError(f"can't convert {go_type(value)} to float")


def _g4(v: float) -> str:
    return _fmt_g(v, 4)


def humanize(ctx: Context, value: Any) -> str:
    v = to_float(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(ctx: Context, value: Any) -> str:
    v = to_float(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanizeDuration(ctx: Context, value: Any) -> str:
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        total = int(v)
        seconds, minutes = total % 60, (total // 60) % 60
        hours, days = (total // 3600) % 24, total // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def humanizePercentage(ctx: Context, value: Any) -> str:
    return _g4(to_float(value) * 100) + "%"


def _go_time_string(t: dt.datetime) -> str:
    """Go's ``time.Time.String()`` in UTC: ``2024-01-01 00:00:00.5 +0000 UTC``."""
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        base += ("." + f"{t.microsecond:06d}").rstrip("0")
    return base + " +0000 UTC"


def _to_datetime(v: float) -> dt.datetime:
    if math.isnan(v) or math.isinf(v) or abs(v) > 2**62 / 1e9:
        raise FuncError(f"'{go_print(v)}' doesn't fit into an int64 nanosecond timestamp")
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=round(v * 1e6))


def humanizeTimestamp(ctx: Context, value: Any) -> str:
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    return _go_time_string(_to_datetime(v))


def toTime(ctx: Context, value: Any) -> str:
    return _go_time_string(_to_datetime(to_float(value)))


_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_PROM_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_PROM_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parseDuration(ctx: Context, text: Any) -> float:
    """Seconds of a Prometheus duration (``1h30m``) as a float."""
    s = str(text)
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PROM_DURATION.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _PROM_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise FuncError(f'not a valid duration string: "{s}"')
    return total


def toDuration(ctx: Context, value: Any) -> str:
    """Go's ``time.Duration.String()`` of seconds: ``1h2m3.5s``."""
    v = to_float(value)
    if v == 0:
        return "0s"
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v < 1:
        for unit, scale in (("ms", 1e3), ("µs", 1e6), ("ns", 1e9)):
            if v * scale >= 1:
                return sign + format_go_float(round(v * scale, 9), "f") + unit
        return sign + format_go_float(v * 1e9, "f") + "ns"
    hours, rest = divmod(v, 3600)
    minutes, seconds = divmod(rest, 60)
    out = sign
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + format_go_float(round(seconds, 9), "f") + "s"


# --- strings and regexps -------------------------------------------------------------------------


def title(ctx: Context, text: Any) -> str:
    s = str(text)
    out: list[str] = []
    prev_letter = False
    for c in s:
        out.append(c.upper() if not prev_letter else c)
        prev_letter = c.isalnum() or c in "_'"
    return "".join(out)


def _go_repl(repl: str) -> str:
    """Go's ``Regexp.Expand`` template (``$1``, ``${1}``, ``$name``, ``$$``) for ``re.sub``."""
    out: list[str] = []
    i = 0
    while i < len(repl):
        c = repl[i]
        if c == "$" and i + 1 < len(repl):
            if repl[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            m = re.compile(r"\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+)").match(repl, i + 1)
            if m:
                out.append(f"\\g<{m.group(1) or m.group(2)}>")
                i = m.end()
                continue
        out.append(c.replace("\\", "\\\\"))
        i += 1
    return "".join(out)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(go_to_python_regex(pattern))
    except re.error as exc:
        raise FuncError(f"error parsing regexp: {exc}") from exc


def reReplaceAll(ctx: Context, pattern: Any, repl: Any, text: Any) -> str:
    regex = _compile(str(pattern))
    template = _go_repl(str(repl))

    def sub(m: re.Match[str]) -> str:
        try:
            return m.expand(template)
        except (IndexError, re.error):  # Go expands unknown groups to ""
            return re.sub(r"\\g<[^>]*>", "", template)

    return regex.sub(sub, str(text))


def match(ctx: Context, pattern: Any, text: Any) -> bool:
    return _compile(str(pattern)).search(str(text)) is not None


def stripPort(ctx: Context, host: Any) -> str:
    s = str(host)
    if s.startswith("["):
        end = s.find("]")
        return s[1:end] if end > 0 else s
    if s.count(":") == 1:
        return s.split(":", 1)[0]
    return s


def stripDomain(ctx: Context, host: Any) -> str:
    s = str(host)
    port = ""
    if s.count(":") == 1:
        s, port = s.split(":", 1)
        port = ":" + port
    if re.fullmatch(r"[0-9.]+", s) or ":" in s:
        return str(host)
    return s.split(".", 1)[0] + port


# --- query results -------------------------------------------------------------------------------


def query(ctx: Context, q: Any) -> list[dict[str, Any]]:
    if ctx.query is None:
        raise FuncError("query is not available here")
    return ctx.query(str(q))


def first(ctx: Context, samples: Any) -> dict[str, Any]:
    if isinstance(samples, list | tuple) and samples:
        item = samples[0]
        if isinstance(item, dict):
            return item
    raise FuncError("first() called on vector with no elements")


def _sample(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping) and "Labels" in value:
        return value
    raise FuncError(f"expected a query sample, got {go_type(value)}")


def label(ctx: Context, name: Any, sample: Any) -> str:
    labels = _sample(sample)["Labels"]
    return str(labels.get(str(name), ""))


def value(ctx: Context, sample: Any) -> float:
    return float(_sample(sample)["Value"])


def strvalue(ctx: Context, sample: Any) -> str:
    return str(_sample(sample)["Labels"].get("__value__", ""))


def sortByLabel(ctx: Context, name: Any, samples: Any) -> list[Any]:
    if not isinstance(samples, list | tuple):
        raise FuncError("sortByLabel needs a query result")
    return sorted(samples, key=lambda s: str(_sample(s)["Labels"].get(str(name), "")))


def args(ctx: Context, *values: Any) -> dict[str, Any]:
    return {f"arg{i}": v for i, v in enumerate(values)}


def _url_query(q: str) -> str:
    return urllib.parse.quote(q, safe="")


def graphLink(ctx: Context, expr: Any) -> str:
    return f"{ctx.external_url}/graph?g0.expr={_url_query(str(expr))}&g0.tab=0"


def tableLink(ctx: Context, expr: Any) -> str:
    return f"{ctx.external_url}/graph?g0.expr={_url_query(str(expr))}&g0.tab=1"


def externalURL(ctx: Context) -> str:
    return ctx.external_url


def pathPrefix(ctx: Context) -> str:
    return urllib.parse.urlsplit(ctx.external_url).path


def now(ctx: Context) -> float:
    return ctx.now_s


# --- Go builtins ---------------------------------------------------------------------------------


def _compare(a: Any, b: Any) -> int:
    if (isinstance(a, bool) or isinstance(b, bool)) and type(a) is not type(b):
        raise FuncError("incompatible types for comparison")
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num):
        if isinstance(a, int) != isinstance(b, int):
            raise FuncError("incompatible types for comparison")
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if a is None and b is None:
        return 0
    raise FuncError("incompatible types for comparison")


def eq(ctx: Context, a: Any, *others: Any) -> bool:
    if not others:
        raise FuncError("missing argument for comparison")
    return any(_compare(a, b) == 0 for b in others)


def ne(ctx: Context, a: Any, b: Any) -> bool:
    return _compare(a, b) != 0


def lt(ctx: Context, a: Any, b: Any) -> bool:
    return _compare(a, b) < 0


def le(ctx: Context, a: Any, b: Any) -> bool:
    return _compare(a, b) <= 0


def gt(ctx: Context, a: Any, b: Any) -> bool:
    return _compare(a, b) > 0


def ge(ctx: Context, a: Any, b: Any) -> bool:
    return _compare(a, b) >= 0


def not_(ctx: Context, a: Any) -> bool:
    return not truth(a)


def len_(ctx: Context, a: Any) -> int:
    if isinstance(a, str | Mapping | list | tuple):
        return len(a)
    raise FuncError(f"len of type {go_type(a)}")


def index(ctx: Context, item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, "")
        elif isinstance(item, list | tuple | str) and isinstance(key, int):
            if not 0 <= key < len(item):
                raise FuncError(f"index out of range: {key}")
            item = item[key]
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def print_(ctx: Context, *values: Any) -> str:
    out = ""
    for i, v in enumerate(values):
        if i and not isinstance(v, str) and not isinstance(values[i - 1], str):
            out += " "
        out += go_print(v)
    return out


def println(ctx: Context, *values: Any) -> str:
    return " ".join(go_print(v) for v in values) + "\n"


def to_upper(ctx: Context, text: Any) -> str:
    return str(text).upper()


def to_lower(ctx: Context, text: Any) -> str:
    return str(text).lower()


def safe_html(ctx: Context, text: Any) -> str:
    return str(text)


def html(ctx: Context, *values: Any) -> str:
    return html_lib.escape(print_(ctx, *values), quote=True).replace("&#x27;", "&#39;")


def js(ctx: Context, *values: Any) -> str:
    s = print_(ctx, *values)
    return (s.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("<", "\\u003C")
            .replace(">", "\\u003E").replace("&", "\\u0026").replace("=", "\\u003D"))


def urlquery(ctx: Context, *values: Any) -> str:
    return urllib.parse.quote_plus(print_(ctx, *values))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Prometheus (template/template.go)
    "query": query, "first": first, "label": label, "value": value, "strvalue": strvalue,
    "args": args, "reReplaceAll": reReplaceAll, "safeHtml": safe_html, "match": match,
    "title": title, "toUpper": to_upper, "toLower": to_lower, "graphLink": graphLink,
    "tableLink": tableLink, "sortByLabel": sortByLabel, "humanize": humanize,
    "humanize1024": humanize1024, "humanizeDuration": humanizeDuration,
    "humanizePercentage": humanizePercentage, "humanizeTimestamp": humanizeTimestamp,
    "toTime": toTime, "toDuration": toDuration, "pathPrefix": pathPrefix, "externalURL": externalURL,
    "parseDuration": parseDuration, "stripPort": stripPort, "stripDomain": stripDomain, "now": now,
    # Go text/template builtins
    "printf": printf, "print": print_, "println": println, "eq": eq, "ne": ne, "lt": lt, "le": le,
    "gt": gt, "ge": ge, "not": not_, "len": len_, "index": index, "html": html, "js": js,
    "urlquery": urlquery,
}
