"""Route templates read from the ASGI scope after routing — never by re-walking ``app.routes``.

Starlette stores the matched route in ``scope["route"]``; FastAPI (≥ 0.137, where ``app.routes`` is
a tree of included routers) stores the effective route, with every include prefix joined, in
``scope["fastapi"]["effective_route_context"]``. A ``Mount`` adds the matched prefix to
``root_path`` (the top-level root path is kept in ``app_root_path``).

```python
matched = matched_route(scope)      # (route object, mount prefix) or None; cheap
template = template_of(matched)     # "/api/items/{item_id}" or None
```
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

UNMATCHED = "__unmatched__"

Matched = tuple[object, str]


def matched_route(scope: MutableMapping[str, Any]) -> Matched | None:
    """The route that handled the request and its mount prefix, or None when nothing matched."""
    route: object = scope.get("route")
    fastapi_scope = scope.get("fastapi")
    if fastapi_scope:
        context = fastapi_scope.get("effective_route_context")
        if context is not None:
            route = context
    if route is None:
        return None
    app_root_path = scope.get("app_root_path")
    if app_root_path is None:
        return (route, "")
    root_path: str = scope.get("root_path", "")
    return (route, root_path[len(app_root_path) :])


def template_of(matched: Matched | None) -> str | None:
    """The path template of a route from :func:`matched_route`."""
    if matched is None:
        return None
    route, prefix = matched
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    return prefix + path


def route_template(scope: MutableMapping[str, Any]) -> str | None:
    """The path template of the route that handled this request, or None when nothing matched."""
    return template_of(matched_route(scope))
