"""Bounded label values: values past a cap fold into ``__other__`` and are counted.

```python
cap = LabelCap(100)
region = cap.fold(region)   # the first 100 distinct values pass, the rest become "__other__"
```
"""

from __future__ import annotations

import threading

OTHER = "__other__"


class LabelCap:
    """Admits at most ``max_values`` distinct values; later new values become ``__other__``."""

    __slots__ = ("_lock", "_seen", "max_values", "overflowed")

    def __init__(self, max_values: int) -> None:
        if max_values < 1:
            raise ValueError("max_values must be at least 1")
        self.max_values = max_values
        self.overflowed = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def fold(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.max_values:
                self._seen.add(value)
                return value
            self.overflowed += 1
            return OTHER

    def __len__(self) -> int:
        return len(self._seen)
