"""Login throttling: after `max_failures` wrong passwords for one user name within `window_seconds`,
further attempts for that name are refused (429) until the oldest failure leaves the window.

Per process and in memory: it slows guessing against one account; a success clears the name.

>>> t = LoginThrottle(max_failures=2, window_seconds=60)
>>> t.fail("bob", now_seconds=0); t.fail("bob", now_seconds=1)
>>> t.retry_after("bob", now_seconds=30), t.retry_after("bob", now_seconds=61)
(30, None)
"""

from __future__ import annotations

import math
import threading
from collections import deque


class LoginThrottle:
    def __init__(
        self, *, max_failures: int = 5, window_seconds: float = 900.0, max_names: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_names = max_names
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, name: str, *, now_seconds: float) -> int | None:
        """Seconds until `name` may try again, or None when it may now."""
        with self._lock:
            times = self._failures.get(name)
            if times is None:
                return None
            while times and times[0] <= now_seconds - self.window_seconds:
                times.popleft()
            if not times:
                del self._failures[name]
                return None
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_seconds - now_seconds))

    def fail(self, name: str, *, now_seconds: float) -> None:
        with self._lock:
            if name not in self._failures and len(self._failures) >= self.max_names:
                self._failures.pop(next(iter(self._failures)))  # bounded memory: forget the oldest name
            self._failures.setdefault(name, deque(maxlen=self.max_failures)).append(now_seconds)

    def succeed(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
