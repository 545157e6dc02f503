"""Remote-write out: samples watchkeeper ingests, forwarded to Prometheus-compatible stores
(Mimir, Thanos Receive, VictoriaMetrics, Prometheus' receiver) as Prometheus' ``remote_write``
does: `config` (the YAML format) -> `router` (relabel, order, shard) -> `queue` (bounded shard
buffers, sender threads) -> `sender` (encode, POST, classify, backoff); `metrics` counts it all.
"""
