"""A remote-write receiver on loopback for tests: answers from a script, records every request.

Each request takes the next answer of `script` (status, headers); when the script is empty it
answers 204. `hold` (an Event) makes requests wait until it is set. Bodies are decoded with the
collector's own decoder, so what the receiver records is what a real one would store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from watchkeeper.collector.remote_write import decode_write_request, decompress_snappy, parse_labels

Labels = tuple[tuple[str, str], ...]


@dataclass
class Received:
    status: int
    headers: dict[str, str]
    samples: list[tuple[Labels, int, float]]
    at: float  # time.monotonic() when it arrived


class Receiver:
    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[Received] = []
        self.hold = threading.Event()
        self.hold.set()
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.monotonic()
                receiver.hold.wait(30)
                raw = decompress_snappy(body, 64 << 20)
                decoded = decode_write_request(raw)
                samples = [
                    (tuple(parse_labels(decoded.keys[s])), int(t), float(v))
                    for s, t, v in zip(
                        decoded.sample_series.tolist(),
                        decoded.timestamps_ms.tolist(),
                        decoded.values.tolist(),
                        strict=True,
                    )
                ]
                with receiver.changed:
                    status, headers = receiver.script.pop(0) if receiver.script else (204, {})
                    receiver.requests.append(Received(status, dict(self.headers.items()), samples, at))
                    receiver.changed.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                payload = b"" if status == 204 else f"answer {status}\n".encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/write"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def accepted(self) -> list[tuple[Labels, int, float]]:
        """Samples of the requests answered 2xx, in arrival order."""
        with self.changed:
            return [s for r in self.requests if 200 <= r.status < 300 for s in r.samples]

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Wait until `check()` is true (bounded); fail saying `what` did not happen."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got {len(self.requests)} requests")
                self.changed.wait(min(left, 0.05))

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
