"""In-process replicas for the replication tests: a store, its ingester (publishing through the
replicator's hook) and a replicator, on the real Redis.

>>> a, b = make_replica(), make_replica()   # doctest: +SKIP
>>> a.write("up", [(now_ms, 1.0)])          # doctest: +SKIP
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.collector.encode import body
from tests.environment import unavailable
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import IngestReport, RemoteWriteIngester
from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.replication import ReplicationConfig, Replicator
from watchkeeper.tsdb.storage import Storage

TIMEOUT_S = 15.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Replica:
    """One replica in this process: `start` / `stop` the replicator on the same data dir."""

    data_dir: Path
    redis_url: str
    config: ReplicationConfig
    storage: Storage = field(default_factory=lambda: Storage.open(data_dir=None))
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    replicator: Replicator | None = None

    def __post_init__(self) -> None:
        self.ingester = RemoteWriteIngester(self.storage, Limits())
        self.applier = RemoteWriteIngester(self.storage, Limits())

    def start(self) -> Replicator:
        self.registry = CollectorRegistry()
        self.replicator = Replicator.start(self.config, redis_url=self.redis_url, data_dir=self.data_dir,
                                           ingester=self.applier, registry=self.registry)
        self.ingester.after_append = self.replicator.hook(None)
        self.replicator.catch_up(self.config.catch_up_timeout_seconds)
        return self.replicator

    def stop(self) -> None:
        assert self.replicator is not None
        self.replicator.stop(deadline_seconds=1.0)
        self.replicator = None
        self.ingester.after_append = None

    def write(self, name: str, samples: list[tuple[int, float]], **labels: str) -> IngestReport:
        pairs = [("__name__", name), *labels.items()]
        return self.ingester.ingest(body([(pairs, samples)]))

    def samples(self, name: str) -> list[tuple[int, float]]:
        found = self.storage.select([Matcher(MatchOp.EQUAL, "__name__", name)], 0, now_ms() + 60_000)
        return [(int(t), float(v)) for s in found for t, v in zip(s.timestamps_ms, s.values, strict=True)]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"watchkeeper_replication_{name}", labels) or 0.0

    def close(self) -> None:
        if self.replicator is not None:
            self.stop()
        self.storage.close()


class RedisProcess:
    """A private ``redis-server`` on a free port, to take down and bring back."""

    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            wait_for("redis-server to answer", lambda: _pings(client))
        finally:
            client.close()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None


def _pings(client: object) -> bool:
    import redis

    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    import shutil

    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


@pytest.fixture
def make_replica(tmp_path: Path, redis_process: RedisProcess) -> Iterator[Callable[..., Replica]]:
    """Factory: ``make_replica(**config)`` gives a started replica on its own data dir, on a Redis
    of the test's own (the shared one's test database is flushed by other tests at any time)."""
    replicas: list[Replica] = []

    def make(start: bool = True, **config: object) -> Replica:
        data_dir = tmp_path / f"replica{len(replicas)}"
        data_dir.mkdir()
        cfg = ReplicationConfig.model_validate({"enabled": True, "block": "100ms", **config})
        replica = Replica(data_dir, redis_process.url, cfg)
        replicas.append(replica)
        if start:
            replica.start()
        return replica

    yield make
    for r in replicas:
        r.close()


def recent(n: int, step_ms: int = 1000) -> list[int]:
    """n increasing timestamps ending now."""
    end = now_ms()
    return [end - step_ms * i for i in range(n - 1, -1, -1)]
