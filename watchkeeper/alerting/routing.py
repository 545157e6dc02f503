"""The routing tree: which routes (receiver, grouping, timings) an alert goes to.

Alertmanager's rules: the root matches everything; an alert descends into the first child whose
matchers match, and keeps trying the next siblings only while the matching child has
``continue: true``; when no child matches, the node itself is the destination. Children inherit
receiver, ``group_by`` and timings; time intervals are not inherited.

>>> from watchkeeper.alerting.config import AlertingConfig
>>> from watchkeeper.labels import from_dict
>>> cfg = AlertingConfig.model_validate({
...     "route": {"receiver": "team", "routes": [{"matchers": ['severity="page"'], "receiver": "pager"}]},
...     "receivers": [{"name": "team"}, {"name": "pager"}]})
>>> tree = build_routes(cfg.route)
>>> [r.receiver for r in match_routes(tree, from_dict({"severity": "page"}))]
['pager']
>>> group_key(tree.children[0], from_dict({"severity": "page", "alertname": "X"}))
'{}/{severity="page"}/0:{}'
"""

from __future__ import annotations

from dataclasses import dataclass

from watchkeeper.alerting.config import RouteConfig, duration_ms
from watchkeeper.labels import Labels, Matcher, get, keep_only

DEFAULT_GROUP_WAIT_MS = 30_000
DEFAULT_GROUP_INTERVAL_MS = 300_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved route: inherited options filled in, ``key`` unique in the tree."""

    key: str
    matchers: tuple[Matcher, ...]
    receiver: str
    group_by: tuple[str, ...]
    group_by_all: bool
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    resolved_wait_ms: int
    continue_: bool
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]
    children: tuple[Route, ...]

    def matches(self, labels: Labels) -> bool:
        return all(m.matches(get(labels, m.name)) for m in self.matchers)

    def group_labels(self, labels: Labels) -> Labels:
        if self.group_by_all:
            return labels
        return keep_only(labels, self.group_by)


def _matchers_str(matchers: tuple[Matcher, ...]) -> str:
    return "{" + ",".join(str(m) for m in matchers) + "}"


def build_routes(cfg: RouteConfig, parent: Route | None = None, index: int = 0) -> Route:
    """Resolve a `RouteConfig` tree (inheritance, defaults) into `Route` values."""
    matchers = cfg.all_matchers()
    key = _matchers_str(matchers) if parent is None else f"{parent.key}/{_matchers_str(matchers)}/{index}"

    def inherit_ms(value: str | None, field: str, default: int) -> int:
        if value is not None:
            return duration_ms(value)
        return int(getattr(parent, field)) if parent is not None else default

    if cfg.group_by is not None:
        group_by_all = "..." in cfg.group_by
        group_by = tuple(sorted(set(cfg.group_by) - {"..."}))
    elif parent is not None:
        group_by_all, group_by = parent.group_by_all, parent.group_by
    else:
        group_by_all, group_by = False, ()
    receiver = cfg.receiver or (parent.receiver if parent is not None else "")
    node = Route(
        key=key,
        matchers=matchers,
        receiver=receiver,
        group_by=group_by,
        group_by_all=group_by_all,
        group_wait_ms=inherit_ms(cfg.group_wait, "group_wait_ms", DEFAULT_GROUP_WAIT_MS),
        group_interval_ms=inherit_ms(cfg.group_interval, "group_interval_ms", DEFAULT_GROUP_INTERVAL_MS),
        repeat_interval_ms=inherit_ms(cfg.repeat_interval, "repeat_interval_ms", DEFAULT_REPEAT_INTERVAL_MS),
        resolved_wait_ms=inherit_ms(cfg.resolved_wait, "resolved_wait_ms", 0),
        continue_=cfg.continue_,
        mute_time_intervals=tuple(cfg.mute_time_intervals),
        active_time_intervals=tuple(cfg.active_time_intervals),
        children=(),
    )
    children = tuple(build_routes(child, node, i) for i, child in enumerate(cfg.routes))
    object.__setattr__(node, "children", children)
    return node


def match_routes(route: Route, labels: Labels) -> list[Route]:
    """The routes an alert with these labels is delivered through (Alertmanager's ``Route.Match``)."""
    if not route.matches(labels):
        return []
    found: list[Route] = []
    for child in route.children:
        hits = match_routes(child, labels)
        found.extend(hits)
        if hits and not child.continue_:
            break
    return found or [route]


def walk(route: Route) -> list[Route]:
    """Every route of the tree, depth first."""
    out = [route]
    for child in route.children:
        out.extend(walk(child))
    return out


def group_key(route: Route, labels: Labels) -> str:
    """Alertmanager's group key: ``<route key>:<group labels>``."""
    group = route.group_labels(labels)
    return f"{route.key}:" + "{" + ", ".join(f'{k}="{v}"' for k, v in group) + "}"
