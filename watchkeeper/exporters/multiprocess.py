"""prometheus-client's multiprocess mode, plus compaction of dead workers' files.

Each worker writes its own ``<type>_<pid>.db`` files. When a worker dies, its counters and
histograms must stay in the totals (or every restart makes counters drop), but the number of files
must not grow with every restart (scrapes slow to seconds, client_python#367/#443). So on start-up
and on every scrape, the files of dead workers are merged into ``<type>_archive.db`` and removed,
and their ``live*`` gauge files are deleted. A lock file serialises compaction and scrapes.

```python
enable("/tmp/wk-metrics")                 # in every worker, before any metric is created
body, content_type = exposition("/tmp/wk-metrics", accept)   # what /metrics serves
registry = scrape_registry("/tmp/wk-metrics")                # the same, as a registry
```
"""

from __future__ import annotations

import fcntl
import glob
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import mmap_dict as _mmap_dict
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from watchkeeper.exporters.mmap_exposition import FileMerger, Unsupported

# prometheus-client's multiprocess internals are untyped; they are used through these handles.
values: Any = _values
MmapedDict: Any = _mmap_dict.MmapedDict
MultiProcessCollector: Any = _multiprocess.MultiProcessCollector

ARCHIVE = "archive"
_ACCUMULATING = ("counter", "histogram", "summary")
_LOCK_NAME = ".watchkeeper.lock"


def enable(path: str) -> None:
    """Switch prometheus-client to multiprocess mode, writing into ``path``.

    Must run before the first metric is created in the process (prometheus-client picks the value
    class then). prometheus-client reads the directory from ``PROMETHEUS_MULTIPROC_DIR``, so this
    sets it; the workers a server starts inherit it.
    """
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()
    compact(path)


def enabled() -> bool:
    return values.ValueClass is not values.MutexValue


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked(path: str) -> Iterator[None]:
    fd = os.open(os.path.join(path, _LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _file_pid(filename: str) -> int | None:
    stem = os.path.basename(filename)[: -len(".db")]
    last = stem.rsplit("_", 1)[-1]
    return int(last) if last.isdigit() else None


def compact(path: str, *, is_alive: Callable[[int], bool] = pid_alive) -> int:
    """Fold the files of dead processes into archives; returns how many files were removed."""
    with locked(path):
        return _compact_locked(path, is_alive)


def _compact_locked(path: str, is_alive: Callable[[int], bool]) -> int:
    removed = 0
    alive_cache: dict[int, bool] = {}
    for filename in sorted(glob.glob(os.path.join(path, "*.db"))):
        pid = _file_pid(filename)
        if pid is None or pid == os.getpid():
            continue
        if pid not in alive_cache:
            alive_cache[pid] = is_alive(pid)
        if alive_cache[pid]:
            continue
        kind = os.path.basename(filename).split("_", 1)[0]
        if kind in _ACCUMULATING:
            _merge_into(os.path.join(path, f"{kind}_{ARCHIVE}.db"), filename)
            os.remove(filename)
            removed += 1
        elif kind == "gauge" and os.path.basename(filename).split("_")[1].startswith("live"):
            os.remove(filename)
            removed += 1
    return removed


def _merge_into(archive_path: str, filename: str) -> None:
    archive = MmapedDict(archive_path)
    try:
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(filename):
            current, _ = archive.read_value(key)
            archive.write_value(key, current + value, 0.0)
    finally:
        archive.close()


_merger = FileMerger()


def exposition(path: str, accept: str = "") -> tuple[bytes, str]:
    """The ``/metrics`` body of every worker's files and its content type, chosen by ``accept``
    (after compacting dead workers' files); the fast path of :mod:`mmap_exposition`."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    with locked(path):
        _compact_locked(path, pid_alive)
        files = sorted(glob.glob(os.path.join(path, "*.db")))
        try:
            return _merger.render(files, openmetrics=openmetrics), content_type
        except Unsupported:
            pass  # UTF-8 names: prometheus-client's merge and encoders below
    return encoder(scrape_registry(path)), content_type


def scrape_registry(path: str) -> CollectorRegistry:
    """A registry that merges every worker's files (after compacting dead workers' files)."""
    registry = CollectorRegistry()
    registry.register(_LockedCollector(path))
    return registry


class _LockedCollector:
    """prometheus-client's MultiProcessCollector, run under the compaction lock."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._inner = MultiProcessCollector(None, path)

    def collect(self) -> list[Metric]:
        with locked(self._path):
            _compact_locked(self._path, pid_alive)
            return list(self._inner.collect())
