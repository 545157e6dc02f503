"""SeriesRouter: which samples go out, with which labels, to which shard."""

from __future__ import annotations

import numpy as np
import pytest

from watchkeeper.collector.push import encode_label_pairs
from watchkeeper.collector.relabel import RelabelConfig, compile_rules
from watchkeeper.collector.remote_write import AppendedSamples, parse_labels
from watchkeeper.forwarding.router import RouteResult, SeriesRouter


def batch(series: list[int], ts: list[int], *, complete: bool = True) -> AppendedSamples:
    """Samples of series numbered as given (ref = 1000 + number, labels from the number)."""
    uniq = sorted(set(series))
    keys = [encode_label_pairs([("__name__", "m"), ("i", str(s))]) for s in uniq]
    index = {s: i for i, s in enumerate(uniq)}
    return AppendedSamples(
        keys,
        np.array([index[s] for s in series], dtype=np.int64),
        np.array([1000 + s for s in series], dtype=np.int64),
        np.array(ts, dtype=np.int64),
        np.array([float(t) for t in ts]),
        complete,
    )


def sent(result: RouteResult) -> list[tuple[str, int]]:
    """(series number, timestamp) of every routed sample, in shard order."""
    return [
        (dict(parse_labels(k))["i"], t)
        for part in result.per_shard
        if part is not None
        for k, t in zip(part.keys, part.timestamps_ms.tolist(), strict=True)
    ]


def test_many_series_arriving_over_time_are_all_found_again() -> None:
    router = SeriesRouter([], shards=3)
    expected_shard: dict[str, int] = {}
    for step in range(30):  # 200 new series a step: the sorted index is rebuilt several times
        numbers = list(range(200 * (step + 1)))
        result = router.route(batch(numbers, [step + 1] * len(numbers)))
        assert sorted(sent(result)) == sorted((str(n), step + 1) for n in numbers)
        for shard, part in enumerate(result.per_shard):
            for key in part.keys if part is not None else []:
                name = dict(parse_labels(key))["i"]
                assert expected_shard.setdefault(name, shard) == shard  # a series keeps its shard
    assert router.num_series == 6000


def test_each_sample_must_be_newer_than_the_last_forwarded_one() -> None:
    router = SeriesRouter([], shards=1)
    router.route(batch([1, 2], [10, 10]))
    result = router.route(batch([1, 1, 1, 2], [11, 11, 12, 10]))
    assert sent(result) == [("1", 11), ("1", 12)]
    assert result.dropped_out_of_order == 2
    # the store refused some samples (complete=False): checked one by one as well
    result = router.route(batch([1, 2, 2], [5, 11, 11], complete=False))
    assert sent(result) == [("2", 11)]


def test_relabelled_series_are_counted_and_never_sent() -> None:
    rules = compile_rules([RelabelConfig(source_labels=["i"], regex="[0-4]", action="drop")])
    router = SeriesRouter(rules, shards=2)
    result = router.route(batch(list(range(10)), [1] * 10))
    assert sorted(n for n, _ in sent(result)) == [str(i) for i in range(5, 10)]
    assert result.dropped_relabel == 5


@pytest.mark.parametrize(("limit", "forgotten"), [(7, True), (8, False)])
def test_past_max_series_the_router_starts_over(limit: int, forgotten: bool) -> None:
    router = SeriesRouter([], shards=1, max_series=limit)
    router.route(batch([1, 2, 3, 4], [10] * 4))
    result = router.route(batch([5, 6, 7, 8, 1], [5] * 5))
    assert router.num_series == (5 if forgotten else 8)
    # forgetting series also forgets their last timestamps: series 1 at 5 goes out again
    assert (("1", 5) in sent(result)) is forgotten
