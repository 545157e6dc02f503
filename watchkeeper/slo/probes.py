"""Uptime probes (HTTP(S), TCP) on asyncio, written as blackbox_exporter's ``probe_*`` series.

Series, labelled ``{probe, instance}`` (the probe name and its URL or ``host:port``)::

    probe_success                       1 / 0
    probe_degraded                      1 when up but slower than degraded_after
    probe_duration_seconds              whole probe
    probe_http_status_code              HTTP only
    probe_http_duration_seconds{phase}  connect (incl. DNS), tls, processing, transfer
    probe_ssl_earliest_cert_expiry      unix seconds, HTTPS only
    probe_failure_info{reason}          1 on failure: why (status 503, keyword missing, timeout…)

No retries (blackbox_exporter's reasoning: retries hide failures). The checks themselves
(:func:`check_response`) are pure and the manager is the only place that reads the clock:

>>> manager = ProbeManager(config.probes, storage)          # doctest: +SKIP
>>> await manager.start()  # one task per probe; manager.stop() ends them  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from watchkeeper.labels import Labels, from_dict
from watchkeeper.slo.config import ProbeConfig

log = logging.getLogger("watchkeeper.slo.probes")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    success: bool
    duration_seconds: float
    cause: str = ""
    status_code: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    cert_expiry_unix: float | None = None
    degraded: bool = False


def json_lookup(doc: Any, path: str) -> Any:
    """``status.checks.0.ok`` into parsed JSON; KeyError if absent.

    >>> json_lookup({"db": [{"ok": True}]}, "db.0.ok")
    True
    """
    cur = doc
    for part in path.split("."):
        if isinstance(cur, list) and part.lstrip("-").isdigit():
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise KeyError(path)
    return cur


def check_response(cfg: ProbeConfig, status: int, body: str) -> str:
    """Why a response fails the probe's conditions; empty when it passes."""
    ok_status = status in cfg.expected_status if cfg.expected_status else 200 <= status < 300
    if not ok_status:
        return f"status {status}"
    if cfg.keyword is not None and cfg.keyword not in body:
        return f"keyword {cfg.keyword!r} missing"
    if cfg.regex is not None and not re.search(cfg.regex, body):
        return f"regex {cfg.regex!r} did not match"
    if cfg.json_path is not None:
        try:
            value = json_lookup(json.loads(body), cfg.json_path)
        except (ValueError, KeyError, IndexError):
            return f"json {cfg.json_path} missing"
        if cfg.json_equals is not None and value != cfg.json_equals and str(value) != str(cfg.json_equals):
            return f"json {cfg.json_path} is {value!r}, expected {cfg.json_equals!r}"
    return ""


def _cert_expiry(stream: Any) -> float | None:
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if cert and cert.get("notAfter"):
        return float(ssl.cert_time_to_seconds(cert["notAfter"]))
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:  # unverified connection: parse the certificate if cryptography is installed
        from cryptography import x509
    except ImportError:
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


async def probe_http(cfg: ProbeConfig, client: httpx.AsyncClient) -> ProbeResult:
    marks: dict[str, float] = {}

    async def trace(event: str, info: dict[str, Any]) -> None:
        marks.setdefault(event, time.perf_counter())

    start = time.perf_counter()
    cert: float | None = None
    try:
        async with asyncio.timeout(cfg.timeout_seconds):
            async with client.stream(
                cfg.method, cfg.url, headers=cfg.headers, content=cfg.body, extensions={"trace": trace}
            ) as resp:
                cert = _cert_expiry(resp.extensions.get("network_stream"))
                body = (await resp.aread()).decode(resp.encoding or "utf-8", errors="replace")
                status = resp.status_code
    except TimeoutError:
        return ProbeResult(False, time.perf_counter() - start, f"timeout after {cfg.timeout}")
    except httpx.HTTPError as exc:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ProbeResult(False, time.perf_counter() - start, cause[:200])
    end = time.perf_counter()
    duration = end - start
    phases = _phases(marks, start, end)
    cause = check_response(cfg, status, body)
    degraded = not cause and cfg.degraded_after_seconds is not None and duration > cfg.degraded_after_seconds
    return ProbeResult(not cause, duration, cause, status, phases, cert, degraded)


def _phases(marks: dict[str, float], start: float, end: float) -> dict[str, float]:
    def at(suffix: str) -> float | None:
        return next((v for k, v in marks.items() if k.endswith(suffix)), None)

    out: dict[str, float] = {}
    c0, c1 = at("connect_tcp.started"), at("connect_tcp.complete")
    if c0 is not None and c1 is not None:
        out["connect"] = c1 - c0
    t0, t1 = at("start_tls.started"), at("start_tls.complete")
    if t0 is not None and t1 is not None:
        out["tls"] = t1 - t0
    sent, headers = at("send_request_body.complete"), at("receive_response_headers.complete")
    if sent is not None and headers is not None:
        out["processing"] = headers - sent
    if headers is not None:
        out["transfer"] = end - headers
    return out


async def probe_tcp(cfg: ProbeConfig) -> ProbeResult:
    host, _, port = cfg.target.rpartition(":")
    start = time.perf_counter()
    try:
        async with asyncio.timeout(cfg.timeout_seconds):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.close()
        await writer.wait_closed()
    except TimeoutError:
        return ProbeResult(False, time.perf_counter() - start, f"timeout after {cfg.timeout}")
    except OSError as exc:
        return ProbeResult(False, time.perf_counter() - start, f"connect failed: {exc.strerror or exc}")
    duration = time.perf_counter() - start
    degraded = cfg.degraded_after_seconds is not None and duration > cfg.degraded_after_seconds
    return ProbeResult(True, duration, phases={"connect": duration}, degraded=degraded)


def result_samples(cfg: ProbeConfig, r: ProbeResult) -> list[tuple[Labels, float]]:
    """The ``probe_*`` samples of one result."""
    base = {"probe": cfg.name, "instance": cfg.instance}

    def s(name: str, value: float, **extra: str) -> tuple[Labels, float]:
        return from_dict({**base, **extra, "__name__": name}), value

    out = [
        s("probe_success", 1.0 if r.success else 0.0),
        s("probe_duration_seconds", r.duration_seconds),
        s("probe_degraded", 1.0 if r.degraded else 0.0),
    ]
    if r.status_code is not None:
        out.append(s("probe_http_status_code", float(r.status_code)))
    out += [s("probe_http_duration_seconds", v, phase=k) for k, v in sorted(r.phases.items())]
    if r.cert_expiry_unix is not None:
        out.append(s("probe_ssl_earliest_cert_expiry", r.cert_expiry_unix))
    if not r.success:
        out.append(s("probe_failure_info", 1.0, reason=r.cause[:120]))
    return out


class ProbeManager:
    """Runs every probe at its interval and appends the results to the store.

    ``storage`` needs ``series_refs(labels)`` and ``append(refs, timestamps_ms, values)``.
    """

    def __init__(
        self,
        probes: Sequence[ProbeConfig],
        storage: Any,
        *,
        clock: Callable[[], float] = time.time,
        max_concurrency: int = 50,
    ) -> None:
        self.probes = list(probes)
        self.storage = storage
        self.clock = clock
        self.last: dict[str, ProbeResult] = {}
        self._sem = asyncio.Semaphore(max_concurrency)
        self._tasks: dict[str, tuple[ProbeConfig, asyncio.Task[None]]] = {}
        self._clients: dict[tuple[bool, str | None, bool], httpx.AsyncClient] = {}

    def _client(self, cfg: ProbeConfig) -> httpx.AsyncClient:
        key = (cfg.tls_verify, cfg.ca_file, cfg.follow_redirects)
        if key not in self._clients:
            verify: ssl.SSLContext | bool = cfg.tls_verify
            if cfg.tls_verify and cfg.ca_file:
                verify = ssl.create_default_context(cafile=cfg.ca_file)
            # one connection per probe run: keep-alive would hide connect/TLS time and failures
            self._clients[key] = httpx.AsyncClient(
                verify=verify,
                follow_redirects=cfg.follow_redirects,
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"User-Agent": "watchkeeper-probe/0.1"},
            )
        return self._clients[key]

    async def run_probe(self, cfg: ProbeConfig) -> ProbeResult:
        """Probe once, write the samples, remember the result."""
        async with self._sem:
            ts_ms = int(self.clock() * 1000)
            try:
                result = await (probe_http(cfg, self._client(cfg)) if cfg.type == "http" else probe_tcp(cfg))
            except Exception as exc:  # a probe must never take the manager down
                log.exception("probe %s crashed", cfg.name)
                result = ProbeResult(False, 0.0, f"probe error: {type(exc).__name__}")
        self.last[cfg.name] = result
        samples = result_samples(cfg, result)
        refs = self.storage.series_refs([lb for lb, _ in samples])
        await asyncio.to_thread(
            self.storage.append,
            refs,
            np.full(len(samples), ts_ms, dtype=np.int64),
            np.array([v for _, v in samples], dtype=np.float64),
        )
        return result

    async def run_once(self) -> dict[str, ProbeResult]:
        results = await asyncio.gather(*(self.run_probe(p) for p in self.probes))
        return {p.name: r for p, r in zip(self.probes, results, strict=True)}

    async def _loop(self, cfg: ProbeConfig) -> None:
        interval = cfg.interval_ms / 1000
        # spread probes over the interval, then keep to a fixed schedule (no drift)
        await asyncio.sleep((zlib.crc32(cfg.name.encode()) % 1000) / 1000 * min(interval, 5.0))
        next_at = time.monotonic()
        while True:
            await self.run_probe(cfg)
            next_at += interval
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    async def start(self) -> None:
        self._tasks = {p.name: (p, self._spawn(p)) for p in self.probes}

    def _spawn(self, cfg: ProbeConfig) -> asyncio.Task[None]:
        return asyncio.create_task(self._loop(cfg), name=f"probe {cfg.name}")

    async def apply(self, probes: Sequence[ProbeConfig]) -> None:
        """Reload: probes whose config is unchanged keep running on their schedule; removed and
        changed ones stop, new and changed ones start."""
        wanted = {p.name: p for p in probes}
        gone = [(name, task) for name, (cfg, task) in self._tasks.items() if wanted.get(name) != cfg]
        for name, task in gone:
            task.cancel()
            del self._tasks[name]
            if name not in wanted:
                self.last.pop(name, None)
        await asyncio.gather(*(task for _, task in gone), return_exceptions=True)
        self.probes = list(probes)
        for cfg in self.probes:
            if cfg.name not in self._tasks:
                self._tasks[cfg.name] = (cfg, self._spawn(cfg))

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = {}
        for c in self._clients.values():
            await c.aclose()
        self._clients = {}
