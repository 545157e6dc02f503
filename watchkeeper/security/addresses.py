"""Address lists of the config (proxies, allow-lists): single addresses and CIDR blocks.

>>> nets = parse_networks(["127.0.0.1", "10.0.0.0/8"])
>>> address_in("10.1.2.3", nets), address_in("192.0.2.1", nets), address_in("not-an-ip", nets)
(True, False, False)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from watchkeeper.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str], *, setting: str = "trusted_proxies") -> tuple[Network, ...]:
    """CIDR blocks (a bare address is a /32 or /128); anything else raises `ConfigError`."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip().strip("[]"), strict=False))
        except ValueError:
            raise ConfigError(f"{setting}: {item!r} is not an IP address or CIDR block") from None
    return tuple(out)


def address_in(host: str | None, networks: Sequence[Network]) -> bool:
    if not host or not networks:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in net for net in networks)
