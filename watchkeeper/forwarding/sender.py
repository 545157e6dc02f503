"""One batch to a remote-write receiver: encoding, the request, and what the answer means.

2xx: sent. 5xx, 408 and transport errors (refused connection, timeout): retried, with exponential
backoff from `min_backoff` doubling to `max_backoff` (each wait drawn between half and all of it,
so shards that failed together do not retry together), or after ``Retry-After`` when the receiver
gives one. 429: retried the same way when `retry_on_http_429`, else failed. Any other 4xx: failed
(the batch itself is wrong; retrying cannot help).

>>> classify(503, {}, now_ms=0).retry, classify(400, {}, now_ms=0).retry
(True, False)
>>> classify(429, {"Retry-After": "2"}, now_ms=0, retry_on_429=True).retry_after_seconds
2.0
>>> Backoff(0.03, 5.0).delay(3, jitter=1.0)
0.24
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import cramjam
import httpx

from watchkeeper import __version__
from watchkeeper.alerting.delivery import http_client, retry_after_ms
from watchkeeper.collector.push import SampleBatch
from watchkeeper.forwarding.config import RemoteWriteConfig
from watchkeeper.forwarding.router import Routed

USER_AGENT = f"watchkeeper/{__version__}"
PROTOCOL_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": USER_AGENT,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    retry: bool
    status: int | None
    message: str = ""
    retry_after_seconds: float | None = None


def encode(batch: Routed) -> bytes:
    """The snappy-compressed WriteRequest of a batch (one TimeSeries per sample, as Prometheus)."""
    raw = SampleBatch(batch.keys, batch.timestamps_ms.tolist(), batch.values.tolist()).write_request()
    return bytes(cramjam.snappy.compress_raw(raw))


def classify(
    status: int, headers: Mapping[str, str], *, now_ms: int, retry_on_429: bool = False, body: bytes = b""
) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, False, status)
    message = f"HTTP {status}: {body[:256].decode(errors='replace').strip()}"
    if status >= 500 or status == 408 or (status == 429 and retry_on_429):
        after = retry_after_ms(headers, b"", now_ms=now_ms)
        return Outcome(False, True, status, message, None if after is None else after / 1000)
    return Outcome(False, False, status, message)


class Backoff:
    """Exponential backoff with jitter: attempt 0 waits about `min_seconds`."""

    def __init__(self, min_seconds: float, max_seconds: float) -> None:
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds

    def delay(self, attempt: int, *, jitter: float | None = None) -> float:
        full = min(self.max_seconds, self.min_seconds * 2.0 ** min(attempt, 62))
        fraction = random.uniform(0.5, 1.0) if jitter is None else jitter
        return round(full * fraction, 6)


def make_client(config: RemoteWriteConfig) -> httpx.Client:
    tls = config.tls_config
    if tls.ca_file is None and tls.cert_file is None and not tls.insecure_skip_verify:
        return http_client()
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file is not None:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return httpx.Client(follow_redirects=False, verify=ctx)


def send(client: httpx.Client, config: RemoteWriteConfig, body: bytes, *, now_ms: int) -> Outcome:
    """POST one encoded batch; never raises for HTTP or transport failures."""
    headers = {**config.headers, **PROTOCOL_HEADERS}
    try:
        auth = config.auth_header()
    except OSError as exc:  # an unreadable secret file: retry, it may appear (as for a 5xx)
        return Outcome(False, True, None, f"cannot read credentials: {exc}")
    if auth is not None:
        headers["Authorization"] = auth
    try:
        resp = client.post(config.url, content=body, headers=headers, timeout=config.timeout_seconds)
    except httpx.HTTPError as exc:
        return Outcome(False, True, None, f"{type(exc).__name__}: {exc}")
    return classify(
        resp.status_code,
        resp.headers,
        now_ms=now_ms,
        retry_on_429=config.queue_config.retry_on_http_429,
        body=resp.content,
    )
