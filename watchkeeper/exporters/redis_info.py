"""A Redis exporter: ``INFO`` turned into metrics named as redis_exporter names them.

```python
registry.register(RedisCollector("redis://127.0.0.1:6379/0"))
```
Each scrape runs one ``INFO all``; when Redis cannot be reached, only ``redis_up 0`` is exported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watchkeeper.exporters.safety import dropped

# INFO field -> (metric name, help, is counter)
FIELDS: dict[str, tuple[str, str, bool]] = {
    "used_memory": ("redis_memory_used_bytes", "Memory used by Redis.", False),
    "used_memory_rss": ("redis_memory_used_rss_bytes", "Resident memory of the Redis process.", False),
    "maxmemory": ("redis_memory_max_bytes", "The maxmemory setting (0 = no limit).", False),
    "keyspace_hits": ("redis_keyspace_hits", "Successful key lookups.", True),
    "keyspace_misses": ("redis_keyspace_misses", "Failed key lookups.", True),
    "evicted_keys": ("redis_evicted_keys", "Keys evicted because of maxmemory.", True),
    "expired_keys": ("redis_expired_keys", "Keys expired.", True),
    "connected_clients": ("redis_connected_clients", "Client connections.", False),
    "blocked_clients": ("redis_blocked_clients", "Clients blocked in a blocking call.", False),
    "total_commands_processed": ("redis_commands_processed", "Commands processed.", True),
    "total_connections_received": ("redis_connections_received", "Connections accepted.", True),
    "instantaneous_ops_per_sec": (
        "redis_instantaneous_ops_per_sec",
        "Commands per second (Redis' estimate).",
        False,
    ),
    "total_net_input_bytes": ("redis_net_input_bytes", "Bytes received.", True),
    "total_net_output_bytes": ("redis_net_output_bytes", "Bytes sent.", True),
    "uptime_in_seconds": ("redis_uptime_in_seconds", "Seconds since the server started.", False),
    "connected_slaves": ("redis_connected_slaves", "Connected replicas.", False),
}


def info_metrics(info: Mapping[str, Any]) -> Iterator[Metric]:
    """Metrics from a parsed ``INFO all`` reply (redis-py's ``client.info("all")``)."""
    yield GaugeMetricFamily("redis_up", "1 when the last scrape reached Redis.", value=1)
    for field, (name, help_text, counter) in FIELDS.items():
        value = info.get(field)
        if not isinstance(value, int | float):
            continue
        if counter:
            yield CounterMetricFamily(name, help_text, value=value)
        else:
            yield GaugeMetricFamily(name, help_text, value=value)
    keys = GaugeMetricFamily("redis_db_keys", "Keys per database.", labels=["db"])
    expiring = GaugeMetricFamily("redis_db_keys_expiring", "Keys with an expiry per database.", labels=["db"])
    for field, value in sorted(info.items()):
        if field.startswith("db") and field[2:].isdigit() and isinstance(value, Mapping):
            keys.add_metric([field], float(value.get("keys", 0)))
            expiring.add_metric([field], float(value.get("expires", 0)))
    yield keys
    yield expiring
    role = info.get("role")
    if isinstance(role, str):
        yield _instance_info(role, str(info.get("redis_version", "")))


def _instance_info(role: str, version: str) -> Metric:
    family = GaugeMetricFamily("redis_instance_info", "Instance facts.", labels=["role", "redis_version"])
    family.add_metric([role, version], 1)
    return family


class RedisCollector:
    """Scrapes one Redis server per collect; ``redis_up 0`` when it cannot be reached."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, timeout_seconds: float = 2.0) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds

    def collect(self) -> Iterator[Metric]:
        import redis

        client = redis.Redis.from_url(
            self.url, socket_timeout=self.timeout_seconds, socket_connect_timeout=self.timeout_seconds
        )
        try:
            info = client.info("all")
        except Exception as exc:
            dropped("exporter.redis", exc)
            yield GaugeMetricFamily("redis_up", "1 when the last scrape reached Redis.", value=0)
            return
        finally:
            client.close()
        yield from info_metrics(info)
