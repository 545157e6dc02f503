"""Remote-write out through the real ingest core and a real store, to receivers on loopback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.collector.encode import body
from tests.forwarding.receiver import Receiver
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import RemoteWriteIngester
from watchkeeper.forwarding.config import RemoteWriteConfig
from watchkeeper.forwarding.queue import Forwarders
from watchkeeper.tsdb.storage import Storage

NOW_MS = (time.time_ns() // 1_000_000) - 3_600_000
FAST = {"batch_send_deadline": "20ms", "min_backoff": "5ms", "max_backoff": "20ms"}


class Pipeline:
    """A store, the ingest core and the forwarders, wired as the app wires them."""

    def __init__(self, configs: list[RemoteWriteConfig], *, out_of_order_window_ms: int = 0) -> None:
        self.registry = CollectorRegistry()
        self.storage = Storage.open(data_dir=None, out_of_order_window_ms=out_of_order_window_ms)
        self.ingester = RemoteWriteIngester(self.storage, Limits())
        self.forwarders = Forwarders(self.registry)
        self.forwarders.apply(configs)
        self.ingester.after_append = self.forwarders.sink()
        self.configs = configs

    def write(self, items: list[tuple[list[tuple[str, str]], list[tuple[int, float]]]]) -> None:
        self.ingester.ingest(body(items))

    def metric(self, name: str, config: RemoteWriteConfig | None = None, **labels: str) -> float:
        c = config or self.configs[0]
        value = self.registry.get_sample_value(
            f"watchkeeper_remote_storage_{name}", {"remote_name": c.remote_name, "url": c.url, **labels}
        )
        return value or 0.0

    def close(self) -> None:
        self.forwarders.stop(deadline_seconds=5)
        self.storage.close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: list[tuple[int, dict[str, str]]] | None = None) -> Receiver:
        r = Receiver(script)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def pipelines() -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(configs: list[RemoteWriteConfig], **kw: Any) -> Pipeline:
        p = Pipeline(configs, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def config(url: str, *, name: str = "rx", **queue: Any) -> RemoteWriteConfig:
    return RemoteWriteConfig.model_validate({"url": url, "name": name, "queue_config": {**FAST, **queue}})


def series(i: int) -> list[tuple[str, str]]:
    return [("__name__", "requests_total"), ("instance", f"host{i}"), ("job", "api")]


def test_samples_arrive_exactly_once_and_in_order_after_server_errors(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers([(500, {}), (503, {}), (500, {})])
    cfg = config(rx.url, max_shards=2, max_samples_per_send=7)
    p = pipelines([cfg])
    expected: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}
    for step in range(6):
        items = [(series(i), [(NOW_MS + 1000 * step, float(step * 100 + i))]) for i in range(10)]
        p.write(items)
        for pairs, samples in items:
            expected.setdefault(tuple(pairs), []).extend(samples)
    rx.wait_for(lambda: len(rx.accepted()) >= 60, "60 accepted samples")
    p.forwarders.stop(deadline_seconds=5)  # nothing more is in flight: exactly once can be checked
    got: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}
    for labels, t, v in rx.accepted():
        got.setdefault(labels, []).append((t, v))
    assert got == expected  # every sample once, in order within its series
    assert [r.status for r in rx.requests[:3]] == [500, 503, 500]
    assert p.metric("samples_total") == 60
    assert p.metric("samples_retried_total") > 0
    assert p.metric("samples_failed_total") == 0
    assert p.metric("samples_pending") == 0
    assert p.metric("queue_highest_sent_timestamp_seconds") == (NOW_MS + 5000) / 1000


def test_429_is_retried_after_retry_after_when_enabled(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers([(429, {"Retry-After": "1"})])
    cfg = config(rx.url, max_shards=1, retry_on_http_429=True)
    p = pipelines([cfg])
    p.write([(series(1), [(NOW_MS, 1.0)])])
    rx.wait_for(lambda: len(rx.accepted()) == 1, "the retried sample")
    first, second = rx.requests
    assert (first.status, second.status) == (429, 204)
    assert second.at - first.at >= 0.9  # Retry-After, not the 5 ms backoff
    assert p.metric("samples_retried_total") == 1
    assert p.metric("samples_failed_total") == 0


@pytest.mark.parametrize(
    ("status", "queue"),
    [(400, {}), (404, {}), (429, {"retry_on_http_429": False})],
)
def test_client_errors_drop_the_batch_count_it_and_log_once_per_burst(
    status: int,
    queue: dict[str, Any],
    receivers: Callable[..., Receiver],
    pipelines: Callable[..., Pipeline],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rx = receivers([(status, {}), (status, {})])
    cfg = config(rx.url, max_shards=1, **queue)
    p = pipelines([cfg])
    caplog.set_level(logging.INFO, logger="watchkeeper.forwarding")
    p.write([(series(1), [(NOW_MS, 1.0)]), (series(2), [(NOW_MS, 2.0)])])
    rx.wait_for(lambda: len(rx.requests) == 1, "the first batch")
    p.write([(series(1), [(NOW_MS + 1000, 3.0)])])
    rx.wait_for(lambda: len(rx.requests) == 2, "the second batch")
    p.write([(series(1), [(NOW_MS + 2000, 4.0)])])
    rx.wait_for(lambda: len(rx.requests) == 3, "the third batch")
    # one shard sends in order: had a failed batch been retried, it would come before the next
    assert [len(r.samples) for r in rx.requests] == [2, 1, 1]
    assert rx.accepted() == [(tuple(series(1)), NOW_MS + 2000, 4.0)]
    assert p.metric("samples_failed_total") == 3
    assert p.metric("samples_retried_total") == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].status == status  # type: ignore[attr-defined]
    rx.wait_for(
        lambda: any(r.getMessage() == "remote write recovered" for r in caplog.records), "recovery log"
    )


def test_a_full_queue_drops_new_samples_and_counts_them(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    rx.hold.clear()  # the receiver stalls: the shard's first batch stays in flight
    cfg = config(rx.url, max_shards=1, capacity=10, max_samples_per_send=5)
    p = pipelines([cfg])
    p.write([(series(i), [(NOW_MS, float(i))]) for i in range(5)])
    deadline = time.monotonic() + 10
    while p.metric("samples_pending") != 5 or _buffered(p) != 0:
        assert time.monotonic() < deadline, "the first batch was not taken"
        time.sleep(0.01)
    p.write([(series(i), [(NOW_MS + 1000, float(100 + i))]) for i in range(30)])
    assert p.metric("samples_dropped_total", reason="queue_full") == 20
    rx.hold.set()
    rx.wait_for(lambda: len(rx.accepted()) == 15, "the first batch and the 10 buffered samples")
    later = [(labels, v) for labels, t, v in rx.accepted() if t == NOW_MS + 1000]
    assert [v for _, v in later] == [100.0 + i for i in range(10)]
    p.forwarders.stop(deadline_seconds=5)  # counters are final once the senders are done
    assert p.metric("samples_total") == 15


def _buffered(p: Pipeline) -> int:
    return sum(s.buffered for q in p.forwarders.queues.values() for s in q._shards)


def test_write_relabel_configs_rename_and_drop(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    cfg = RemoteWriteConfig.model_validate(
        {
            "url": rx.url,
            "name": "relabelled",
            "queue_config": FAST,
            "write_relabel_configs": [
                {"source_labels": ["instance"], "regex": "host0", "action": "drop"},
                {"source_labels": ["job"], "target_label": "service"},
                {"regex": "job", "action": "labeldrop"},
            ],
        }
    )
    p = pipelines([cfg])
    p.write([(series(i), [(NOW_MS, float(i))]) for i in range(3)])
    rx.wait_for(lambda: len(rx.accepted()) == 2, "2 relabelled samples")
    labels = sorted(s[0] for s in rx.accepted())
    assert labels == [
        (("__name__", "requests_total"), ("instance", f"host{i}"), ("service", "api")) for i in (1, 2)
    ]
    assert p.metric("samples_dropped_total", reason="write_relabel") == 1


def test_requests_carry_the_protocol_headers_and_credentials(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    cfg = RemoteWriteConfig.model_validate(
        {
            "url": rx.url,
            "queue_config": FAST,
            "headers": {"X-Scope-OrgID": "team-a"},
            "basic_auth": {"username": "wk", "password": "s3cret"},
        }
    )
    p = pipelines([cfg])
    p.write([(series(1), [(NOW_MS, 1.0)])])
    rx.wait_for(lambda: len(rx.accepted()) == 1, "one sample")
    h = {k.lower(): v for k, v in rx.requests[0].headers.items()}
    assert h["content-encoding"] == "snappy"
    assert h["content-type"] == "application/x-protobuf"
    assert h["x-prometheus-remote-write-version"] == "0.1.0"
    assert h["user-agent"].startswith("watchkeeper/")
    assert h["x-scope-orgid"] == "team-a"
    assert h["authorization"] == "Basic d2s6czNjcmV0"


def test_shutdown_flushes_what_is_buffered(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    cfg = config(rx.url, batch_send_deadline="1h", max_shards=3)
    p = pipelines([cfg])
    p.write([(series(i), [(NOW_MS, float(i))]) for i in range(7)])
    assert rx.requests == []  # well under max_samples_per_send and the hour's deadline
    p.forwarders.stop(deadline_seconds=10)
    assert sorted(v for _, _, v in rx.accepted()) == [float(i) for i in range(7)]
    assert p.metric("samples_pending") == 0


def test_shutdown_gives_up_at_its_deadline_and_counts_the_rest(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers([(503, {})] * 1000)
    cfg = config(rx.url, max_shards=1, max_samples_per_send=2)
    p = pipelines([cfg])
    p.write([(series(i), [(NOW_MS, float(i))]) for i in range(5)])
    rx.wait_for(lambda: len(rx.requests) >= 2, "retries")
    p.forwarders.stop(deadline_seconds=0.2)
    assert p.metric("samples_dropped_total", reason="shutdown") == 5
    assert p.metric("samples_total") == 0
    assert p.metric("samples_pending") == 0


def test_samples_the_store_refused_are_not_forwarded(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    p = pipelines([config(rx.url, max_shards=1)])
    p.write([(series(1), [(NOW_MS + 2000, 1.0)])])
    # series 1 goes back in time (the store refuses it); series 2 is new (accepted)
    p.write([(series(1), [(NOW_MS + 1000, 2.0)]), (series(2), [(NOW_MS + 1000, 3.0)])])
    rx.wait_for(lambda: len(rx.accepted()) == 2, "the two accepted samples")
    p.forwarders.stop(deadline_seconds=5)
    assert sorted((labels[1][1], t, v) for labels, t, v in rx.accepted()) == [
        ("host1", NOW_MS + 2000, 1.0),
        ("host2", NOW_MS + 1000, 3.0),
    ]


def test_out_of_order_samples_the_store_accepts_in_its_window_are_not_forwarded(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    p = pipelines([config(rx.url, max_shards=1)], out_of_order_window_ms=3_600_000)
    p.write([(series(1), [(NOW_MS + 2000, 1.0)])])
    p.write([(series(1), [(NOW_MS + 1000, 2.0)])])  # accepted by the store, inside its window
    p.write([(series(1), [(NOW_MS + 3000, 3.0)])])
    rx.wait_for(lambda: len(rx.accepted()) == 2, "the in-order samples")
    p.forwarders.stop(deadline_seconds=5)
    assert [v for _, _, v in rx.accepted()] == [1.0, 3.0]
    assert p.metric("samples_dropped_total", reason="out_of_order") == 1


def test_several_endpoints_each_get_every_sample(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    a, b = receivers(), receivers([(500, {})])
    p = pipelines([config(a.url, name="a"), config(b.url, name="b")])
    p.write([(series(i), [(NOW_MS, float(i))]) for i in range(4)])
    a.wait_for(lambda: len(a.accepted()) == 4, "4 samples at a")
    b.wait_for(lambda: len(b.accepted()) == 4, "4 samples at b")


def test_apply_keeps_unchanged_queues_and_replaces_changed_ones(
    receivers: Callable[..., Receiver], pipelines: Callable[..., Pipeline]
) -> None:
    rx = receivers()
    keep, change = config(rx.url, name="keep"), config(rx.url, name="change")
    p = pipelines([keep, change])
    before = p.forwarders.queues
    changed = config(rx.url, name="change", max_shards=2)
    p.forwarders.apply([keep, changed], flush_deadline_seconds=5)
    after = p.forwarders.queues
    assert after["keep"] is before["keep"]
    assert after["change"] is not before["change"] and after["change"].config == changed
    p.forwarders.apply([], flush_deadline_seconds=5)
    assert p.forwarders.sink() is None
    assert p.metric("shards", keep) == 0
