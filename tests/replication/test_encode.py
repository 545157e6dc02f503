from __future__ import annotations

import cramjam
import numpy as np

from watchkeeper.collector.push import encode_label_pairs
from watchkeeper.collector.remote_write import AppendedSamples, decode_write_request, parse_labels
from watchkeeper.replication.replicator import encode_entries


def _appended(keys: list[bytes], series: list[int], ts: list[int], values: list[float]) -> AppendedSamples:
    return AppendedSamples(keys, np.array(series), np.zeros(len(series), np.int64), np.array(ts, np.int64),
                           np.array(values), True)


def _decode(body: bytes) -> list[tuple[list[tuple[str, str]], int, float]]:
    d = decode_write_request(bytes(cramjam.snappy.decompress_raw(body)))
    return [(parse_labels(d.keys[s]), int(t), float(v))
            for s, t, v in zip(d.sample_series.tolist(), d.timestamps_ms, d.values, strict=True)]


def test_entries_carry_every_sample_with_its_labels_in_order() -> None:
    up = encode_label_pairs([("__name__", "up"), ("job", "a")])
    rps = encode_label_pairs([("__name__", "rps"), ("job", "b")])
    one = _appended([up, rps], [0, 1, 0], [1_700_000_000_000, 1_700_000_000_000, 1_700_000_001_000],
                    [1.0, 2.5, 0.0])
    two = _appended([rps], [0], [5], [float("inf")])  # a timestamp off the vectorised encoding's path
    entries = encode_entries([one, two], entry_samples=3)
    assert [n for _, n in entries] == [3, 1]
    decoded = [x for body, _ in entries for x in _decode(body)]
    up_l, rps_l = [("__name__", "up"), ("job", "a")], [("__name__", "rps"), ("job", "b")]
    assert decoded == [
        (up_l, 1_700_000_000_000, 1.0),
        (rps_l, 1_700_000_000_000, 2.5),
        (up_l, 1_700_000_001_000, 0.0),
        (rps_l, 5, float("inf")),
    ]
