"""Notification text: the default title and lines, and per-receiver template overrides.

Overrides (``title:``/``text:`` on a receiver) are Jinja2 templates rendered in a sandbox (no
attribute access to internals, no code execution) over Alertmanager's template data, with
Alertmanager's names; a leading dot as in Go templates is accepted:

>>> from watchkeeper.alerting.model import Alert
>>> from watchkeeper.alerting.notification import Notification
>>> from watchkeeper.labels import from_dict
>>> n = Notification.build("team", "{}:{}", from_dict({"alertname": "Down"}),
...     [Alert(from_dict({"alertname": "Down", "job": "api"}), from_dict({"summary": "api is down"}), 0)],
...     now_ms=1)
>>> default_title(n)
'[FIRING:1] Down (api)'
>>> render("{{ .Status | upper }}: {{ .CommonAnnotations.summary }} ({{ Alerts.Firing | length }})", n)
'FIRING: api is down (1)'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from watchkeeper.alerting.notification import Notification, NotifiedAlert, rfc3339
from watchkeeper.errors import NotificationError

_env = SandboxedEnvironment(autoescape=False, undefined=Undefined, keep_trailing_newline=False)
_strict_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
_GO_DOT = re.compile(r"(?<=[\s({|,])\.(?=[A-Za-z])")
_BLOCK = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.S)


class _AlertList(list[dict[str, Any]]):
    """``Alerts`` with Alertmanager's ``.Firing`` and ``.Resolved``."""

    @property
    def Firing(self) -> list[dict[str, Any]]:
        return [a for a in self if a["Status"] == "firing"]

    @property
    def Resolved(self) -> list[dict[str, Any]]:
        return [a for a in self if a["Status"] == "resolved"]


def template_data(n: Notification) -> dict[str, Any]:
    def alert(a: NotifiedAlert) -> dict[str, Any]:
        return {
            "Status": a.status,
            "Labels": dict(a.labels),
            "Annotations": dict(a.annotations),
            "StartsAt": rfc3339(a.starts_at_ms),
            "EndsAt": rfc3339(a.ends_at_ms),
            "GeneratorURL": a.generator_url,
            "Fingerprint": a.fingerprint,
        }

    return {
        "Receiver": n.receiver,
        "Status": n.status,
        "Alerts": _AlertList(alert(a) for a in n.alerts),
        "GroupLabels": dict(n.group_labels),
        "CommonLabels": dict(n.common_labels),
        "CommonAnnotations": dict(n.common_annotations),
        "ExternalURL": n.external_url,
        "GroupKey": n.group_key,
    }


def _jinja_source(source: str) -> str:
    return _BLOCK.sub(
        lambda m: _GO_DOT.sub("", m.group(0).replace("{{.", "{{ ").replace("{{ .", "{{ ")), source
    )


@lru_cache(maxsize=256)
def _compile(source: str, strict: bool) -> Any:
    env = _strict_env if strict else _env
    return env.from_string(_jinja_source(source))


def render(source: str, n: Notification, *, strict: bool = False) -> str:
    """Render an override template; errors (syntax, sandbox) become `NotificationError`."""
    try:
        return str(_compile(source, strict).render(template_data(n)))
    except Exception as exc:  # a user's template may fail in any way (1/0, bad index): never crash a send
        raise NotificationError(f"template {source[:60]!r}: {type(exc).__name__}: {exc}") from exc


def check(source: str) -> None:
    """Raise `NotificationError` if the template does not compile."""
    try:
        _compile(source, False)
    except TemplateError as exc:
        raise NotificationError(f"template {source[:60]!r}: {exc}") from exc


def default_title(n: Notification) -> str:
    """Alertmanager's ``__subject``: ``[FIRING:2] <group label values> (<other common label values>)``."""
    head = f"[{n.status.upper()}" + (f":{len(n.firing)}]" if n.status == "firing" else "]")
    group = " ".join(v for _, v in n.group_labels)
    group_names = {k for k, _ in n.group_labels}
    rest = " ".join(v for k, v in n.common_labels if k not in group_names)
    title = f"{head} {group}".rstrip()
    return f"{title} ({rest})" if rest else title


def alert_summary(a: NotifiedAlert) -> str:
    """One line about one alert: its summary/description annotation or its name and labels."""
    text = a.annotation("summary") or a.annotation("description") or a.annotation("message")
    if text:
        return text
    return ", ".join(f"{k}={v}" for k, v in a.labels if k != "alertname") or a.label("alertname")


def title_of(n: Notification, override: str | None) -> str:
    return render(override, n) if override else default_title(n)


def text_of(n: Notification, override: str | None) -> str | None:
    return render(override, n) if override else None
