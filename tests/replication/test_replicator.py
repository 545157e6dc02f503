"""In-process replicas on a real Redis (a private ``redis-server``): what one accepts, the others
hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from tests.replication.conftest import RedisProcess, Replica, now_ms, recent, wait_for
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import AppendedSamples, RemoteWriteIngester
from watchkeeper.errors import ConfigError
from watchkeeper.replication import ReplicationConfig, Replicator
from watchkeeper.tsdb.storage import Storage


def test_a_write_to_either_replica_reaches_the_other(make_replica: Callable[..., Replica]) -> None:
    a, b = make_replica(), make_replica()
    ts = recent(3)
    assert a.write("from_a", [(t, float(i)) for i, t in enumerate(ts)], job="x").accepted == 3
    assert b.write("from_b", [(ts[0], 7.0)]).accepted == 1
    wait_for("a's samples on b", lambda: b.samples("from_a") == [(t, float(i)) for i, t in enumerate(ts)])
    wait_for("b's sample on a", lambda: a.samples("from_b") == [(ts[0], 7.0)])
    # applied samples are neither applied back to their origin nor published again
    wait_for("b to count its applied entry", lambda: b.metric("applied_entries_total") == 1)
    assert a.metric("applied_samples_total") == 1 and b.metric("applied_samples_total") == 3
    assert a.metric("published_samples_total") == 3 and b.metric("published_samples_total") == 1
    assert b.metric("lag_seconds_count") == 1


def test_applying_a_sample_again_stores_nothing_twice(make_replica: Callable[..., Replica]) -> None:
    a, b = make_replica(), make_replica()
    ts = recent(4)
    samples = [(t, float(i)) for i, t in enumerate(ts)]
    b.write("both", samples[:3])  # b already has three of them (fed the same stream, HA-pair style)
    a.write("both", samples)
    wait_for("the fourth sample on b", lambda: b.samples("both") == samples)
    a.write("both", samples[2:])  # a sender's retry: the same samples again
    wait_for("b to apply the retry", lambda: b.metric("applied_entries_total") == 2)
    assert b.samples("both") == samples
    # the newest sample again is accepted silently; older ones are refused as out of order, counted
    assert b.metric("rejected_samples_total", reason="out_of_order") == 2 + 1
    assert b.metric("failed_entries_total") == 0
    a.write("both", [(ts[0], 0.0)])  # older than the newest: out of order on a itself, not published
    assert b.samples("both") == samples


def test_a_restarted_replica_catches_up_from_its_saved_position(make_replica: Callable[..., Replica]) -> None:
    a, b = make_replica(), make_replica()
    ts = recent(3)
    a.write("before", [(ts[0], 1.0)])
    wait_for("the first sample on b", lambda: b.samples("before") == [(ts[0], 1.0)])
    assert b.replicator is not None
    replica_id = b.replicator.replica_id
    b.stop()
    a.write("during", [(ts[1], 2.0)])
    a.write("during", [(ts[2], 3.0)])
    wait_for("a to publish", lambda: a.metric("published_samples_total") == 3)
    replicator = b.start()  # returns once caught up with the stream as it was
    assert b.samples("during") == [(ts[1], 2.0), (ts[2], 3.0)]
    # it resumed after the entry it had applied, it did not read the stream from the start
    assert b.metric("applied_samples_total") == 2
    assert replicator.replica_id == replica_id


def test_a_trimmed_stream_is_reported_as_a_gap(make_replica: Callable[..., Replica],
                                               redis_process: RedisProcess) -> None:
    a, b = make_replica(), make_replica()
    ts = recent(4)
    a.write("m", [(ts[0], 1.0)])
    wait_for("the first sample on b", lambda: b.samples("m") == [(ts[0], 1.0)])
    b.stop()
    for i in (1, 2, 3):  # one entry each
        a.write("m", [(ts[i], float(i + 1))])
        wait_for("a to publish", lambda: a.metric("published_samples_total") == i + 1)  # noqa: B023
    client = redis.Redis.from_url(redis_process.url)
    client.xtrim(a.config.stream, maxlen=1, approximate=False)  # as MAXLEN does when b is down too long
    client.close()
    b.start()
    wait_for("b to apply what is left", lambda: b.samples("m") == [(ts[0], 1.0), (ts[3], 4.0)])
    assert b.metric("gaps_total") == 1


def test_ingest_goes_on_while_redis_is_down_and_replication_catches_up(
    make_replica: Callable[..., Replica], redis_process: RedisProcess
) -> None:
    a, b = make_replica(), make_replica()
    ts = recent(3)
    a.write("m", [(ts[0], 1.0)])
    wait_for("the first sample on b", lambda: b.samples("m") == [(ts[0], 1.0)])
    redis_process.stop()
    assert a.write("m", [(ts[1], 2.0)]).accepted == 1  # ingest does not wait for or fail on Redis
    wait_for("a publish error", lambda: a.metric("publish_errors_total") >= 1)
    wait_for("a read error", lambda: b.metric("read_errors_total") >= 1)
    assert a.metric("queue_samples") == 1
    assert a.write("m", [(ts[2], 3.0)]).accepted == 1
    redis_process.start()  # an empty Redis: the queued samples are published when it is back
    wait_for("b to catch up", lambda: b.samples("m") == [(ts[0], 1.0), (ts[1], 2.0), (ts[2], 3.0)])
    assert a.metric("queue_samples") == 0 and a.metric("dropped_samples_total") == 0


def test_a_full_publish_queue_drops_and_counts(make_replica: Callable[..., Replica],
                                               redis_process: RedisProcess) -> None:
    a = make_replica(queue_samples=2)
    redis_process.stop()
    ts = recent(3)
    assert a.write("m", [(ts[0], 1.0), (ts[1], 2.0)]).accepted == 2
    assert a.write("m", [(ts[2], 3.0)]).accepted == 1
    assert a.metric("dropped_samples_total") == 1 and a.metric("queue_samples") == 2
    assert a.samples("m") == [(ts[0], 1.0), (ts[1], 2.0), (ts[2], 3.0)]


def test_series_removed_by_retention_are_created_again(make_replica: Callable[..., Replica]) -> None:
    a, b = make_replica(), make_replica()
    ts = now_ms()
    a.write("m", [(ts - 120_000, 1.0)])
    wait_for("the first sample on b", lambda: b.samples("m") == [(ts - 120_000, 1.0)])
    b.storage.retention_ms = 60_000
    b.storage.apply_retention(ts)  # b's series "m" is gone, its applier still has the ref cached
    assert b.samples("m") == []
    a.write("m", [(ts, 2.0)])
    wait_for("the new sample on b", lambda: b.samples("m") == [(ts, 2.0)])
    assert b.metric("rejected_samples_total", reason="unknown_series") == 0


def test_remote_write_out_gets_this_replicas_samples_only(make_replica: Callable[..., Replica]) -> None:
    a, b = make_replica(), make_replica()
    assert a.replicator is not None and b.replicator is not None
    forwarded_a: list[AppendedSamples] = []
    forwarded_b: list[AppendedSamples] = []
    a.ingester.after_append = a.replicator.hook(forwarded_a.append)
    b.ingester.after_append = b.replicator.hook(forwarded_b.append)
    ts = recent(1)[0]
    a.write("m", [(ts, 1.0)])
    wait_for("the sample on b", lambda: b.samples("m") == [(ts, 1.0)])
    assert [x.timestamps_ms.tolist() for x in forwarded_a] == [[ts]]
    assert forwarded_b == []  # applied, not forwarded a second time by b
    wait_for("a to publish", lambda: a.metric("published_samples_total") == 1)


def test_a_replica_starts_and_ingests_while_redis_is_down(make_replica: Callable[..., Replica],
                                                          redis_process: RedisProcess) -> None:
    redis_process.stop()
    a = make_replica()  # no catching up without Redis: it starts at once
    ts = recent(1)[0]
    assert a.write("m", [(ts, 1.0)]).accepted == 1
    assert a.samples("m") == [(ts, 1.0)]
    wait_for("a publish error", lambda: a.metric("publish_errors_total") >= 1)


def test_replication_without_redis_is_a_config_error(tmp_path: Path) -> None:
    storage = Storage.open(data_dir=None)
    with pytest.raises(ConfigError, match="redis_url"):
        Replicator.start(ReplicationConfig(enabled=True), redis_url=None, data_dir=tmp_path,
                         ingester=RemoteWriteIngester(storage, Limits()), registry=CollectorRegistry())
    storage.close()
