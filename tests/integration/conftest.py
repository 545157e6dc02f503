"""A real `watchkeeper serve` process on a free loopback port with a temporary data dir.

>>> def test_up(server): assert httpx.get(server.url + "/-/healthy").status_code == 200
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.collector.encode import Pairs, body

WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One server process; `start`, `stop` (SIGTERM), `kill` (SIGKILL) and start again on the same
    data dir and port. `env` adds ``WATCHKEEPER_*`` settings."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, extra_args: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start(self, *, ready_timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
        env.update(self.env)
        cmd = [
            sys.executable,
            "-m",
            "watchkeeper.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir.parent
        )
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {ready_timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful shutdown. Returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write(self, items: Sequence[tuple[Pairs, Sequence[tuple[int, float]]]], **kw: bool) -> httpx.Response:
        return self.client.post("/api/v1/write", content=body(items, **kw), headers=WRITE_HEADERS)

    def post_raw(self, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post("/api/v1/write", content=content, headers=headers or WRITE_HEADERS)

    def raw_samples(
        self, selector: str, at_ms: int, window: str = "1h"
    ) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
        """Every stored sample of the selected series in (at - window, at], via the query API."""
        r = self.client.get("/api/v1/query", params={"query": f"{selector}[{window}]", "time": at_ms / 1000})
        r.raise_for_status()
        out = {}
        for s in r.json()["data"]["result"]:
            key = tuple(sorted(s["metric"].items()))
            out[key] = [(round(float(t) * 1000), float(v)) for t, v in s["values"]]
        return out

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        self.client.close()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: ``make_server(env={...})`` gives a started server on its own data dir."""
    servers: list[Server] = []

    def make(
        env: dict[str, str] | None = None, start: bool = True, extra_args: list[str] | None = None
    ) -> Server:
        data_dir = tmp_path / f"data{len(servers)}"
        server = Server(data_dir, env, extra_args)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()
