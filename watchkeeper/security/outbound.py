"""The outbound allow-list: which hosts alert receivers and uptime probes may reach.

``security.outbound_allow`` lists host names (``hooks.slack.com``), wildcard domains
(``*.example.com``, which also matches ``example.com``), and IP addresses or CIDR blocks
(``10.0.0.0/8``, matched when the target is written as an address). A receiver URL or probe target
outside the list makes the configuration invalid, with a message naming the receiver or probe.
Names are not resolved when the config is read, so a literal address is checked by address and a
name by name. Unset (the default), every target is allowed.

>>> allow = AllowList.parse(["hooks.slack.com", "*.example.com", "10.0.0.0/8"])
>>> allow.allows("hooks.slack.com"), allow.allows("api.example.com"), allow.allows("10.2.3.4")
(True, True, True)
>>> allow.allows("169.254.169.254"), allow.allows("evil.com")
(False, False)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from watchkeeper.errors import ConfigError
from watchkeeper.security.addresses import Network, address_in

_URL_KEYS = ("url", "api_url", "webhook_url")


@dataclass(frozen=True, slots=True)
class AllowList:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, items: Iterable[str]) -> AllowList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        for raw in items:
            item = raw.strip().lower().rstrip(".")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if item.startswith("*."):
                suffixes.append(item[1:])
                names.add(item[2:])
            elif "/" in item or ":" in item or " " in item:
                raise ConfigError(f"security.outbound_allow: {raw!r} is neither a host name nor a CIDR block")
            else:
                names.add(item)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def allows(self, host: str) -> bool:
        host = host.strip("[]").lower().rstrip(".")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or host.endswith(self.suffixes)
        return address_in(host, self.networks)


def host_of(target: str) -> str:
    """The host of a URL (``https://h:1/x``) or of ``host:port`` (tcp probes, SMTP smarthosts)."""
    if "://" in target:
        return urlsplit(target).hostname or ""
    return urlsplit("//" + target).hostname or ""


def outbound_targets(alerting: Any, slo: Any) -> Iterator[tuple[str, str]]:
    """(where, target) for every receiver URL, SMTP smarthost and probe of the config sections."""
    for receiver in alerting.receivers:
        for kind, configs in receiver:
            if not kind.endswith("_configs"):
                continue
            for i, cfg in enumerate(configs):
                where = f"alerting receiver {receiver.name!r} {kind}[{i}]"
                for key in _URL_KEYS:
                    value = getattr(cfg, key, None)
                    if isinstance(value, str) and value:
                        yield where, value
                smarthost = getattr(cfg, "smarthost", None)
                if isinstance(smarthost, str) and smarthost:
                    yield where, smarthost
    for probe in slo.probes:
        yield f"probe {probe.name!r}", probe.url if probe.type == "http" else probe.target


def check_outbound(allow: Iterable[str] | None, alerting: Any, slo: Any) -> None:
    """Raise `ConfigError` naming every receiver or probe whose target the allow-list refuses."""
    if allow is None:
        return
    allow_list = AllowList.parse(allow)
    refused = [
        f"{where}: host {host_of(target) or target!r} is not in security.outbound_allow"
        for where, target in outbound_targets(alerting, slo)
        if not allow_list.allows(host_of(target))
    ]
    if refused:
        raise ConfigError("; ".join(refused))
