"""Prometheus relabelling (``relabel_configs``, ``metric_relabel_configs``), pure.

Regexes are fully anchored, as in Prometheus; replacements use ``$1``, ``${1}``, ``$name``.
Python's `re` stands in for RE2: the syntax Prometheus configs use in practice is the same.

>>> rules = [RelabelConfig(source_labels=["__address__"], regex="(.*):9100", target_label="host")]
>>> relabel({"__address__": "db1:9100", "job": "node"}, compile_rules(rules))
{'__address__': 'db1:9100', 'job': 'node', 'host': 'db1'}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEMPLATE = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")

Action = Literal[
    "replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod",
    "lowercase", "uppercase", "keepequal", "dropequal",
]


class RelabelConfig(BaseModel):
    """One relabelling step, in Prometheus' configuration format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_labels: list[str] = []
    separator: str = ";"
    target_label: str = ""
    regex: str = "(.*)"
    modulus: int | None = Field(default=None, gt=0)
    replacement: str = "$1"
    action: Action = "replace"

    @model_validator(mode="after")
    def _check(self) -> RelabelConfig:
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        needs_target = ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")
        if self.action in needs_target and not self.target_label:
            raise ValueError(f"relabel action {self.action!r} needs a target_label")
        if self.action == "hashmod" and self.modulus is None:
            raise ValueError("relabel action 'hashmod' needs a modulus")
        return self


@dataclass(frozen=True, slots=True)
class Rule:
    config: RelabelConfig
    regex: re.Pattern[str]


def compile_rules(configs: Sequence[RelabelConfig]) -> tuple[Rule, ...]:
    return tuple(Rule(c, re.compile(c.regex)) for c in configs)


def _expand(template: str, m: re.Match[str]) -> str:
    if "$" not in template:
        return template
    groups = m.groupdict()

    def one(t: re.Match[str]) -> str:
        ref = t.group(1) or t.group(2)
        if ref is None:
            return "$"
        if ref.isdigit():
            i = int(ref)
            return (m.group(i) or "") if i <= (m.re.groups or 0) else ""
        return groups.get(ref) or ""

    return _TEMPLATE.sub(one, template)


def relabel(labels: dict[str, str], rules: Sequence[Rule]) -> dict[str, str] | None:
    """The labels after `rules` (a new dict), or None when a rule dropped them."""
    out = dict(labels)
    for rule in rules:
        c = rule.config
        value = c.separator.join(out.get(name, "") for name in c.source_labels)
        action = c.action
        if action == "replace":
            m = rule.regex.fullmatch(value)
            if m is None:
                continue
            target = _expand(c.target_label, m)
            if _LABEL_NAME.fullmatch(target) is None:
                continue
            result = _expand(c.replacement, m)
            if result:
                out[target] = result
            else:
                out.pop(target, None)
        elif action == "keep":
            if rule.regex.fullmatch(value) is None:
                return None
        elif action == "drop":
            if rule.regex.fullmatch(value) is not None:
                return None
        elif action == "hashmod":
            digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
            assert c.modulus is not None  # checked by the model
            out[c.target_label] = str(int.from_bytes(digest[8:], "big") % c.modulus)
        elif action == "labelmap":
            for name, v in list(out.items()):
                m = rule.regex.fullmatch(name)
                if m is not None:
                    out[_expand(c.replacement, m)] = v
        elif action == "labeldrop":
            out = {n: v for n, v in out.items() if rule.regex.fullmatch(n) is None}
        elif action == "labelkeep":
            out = {n: v for n, v in out.items() if rule.regex.fullmatch(n) is not None}
        elif action in ("lowercase", "uppercase"):
            out[c.target_label] = value.lower() if action == "lowercase" else value.upper()
        elif action == "keepequal":
            if value != out.get(c.target_label, ""):
                return None
        elif action == "dropequal" and value == out.get(c.target_label, ""):
            return None
    return out
