"""Loading dashboards from YAML files, one dashboard per file, with errors reported per file.

>>> catalog = Catalog([BUILTIN_DIR])
>>> catalog.get("service-overview").title  # doctest: +SKIP
'Service overview'
>>> catalog.errors  # a bad file is listed here; every other dashboard still loads
[]

Directories are searched in order; a later directory's dashboard replaces an earlier one with the
same uid (the deployment's ``dashboards/`` overrides a built-in). The catalog re-reads a directory
when a file in it was added, removed or changed (checked at most every ``check_interval_seconds``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from watchkeeper.dashboards.model import Dashboard

BUILTIN_DIR = Path(__file__).parent / "builtin"
SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class FileError:
    """Why one file did not load: ``field`` is the dotted path of the bad value (``rows.0.panels.2.unit``)."""

    path: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f" at {self.field}" if self.field else ""
        return f"{self.path}{where}: {self.message}"


class DashboardFileError(ValueError):
    def __init__(self, errors: list[FileError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def _location(loc: tuple[int | str, ...]) -> str:
    # discriminated unions add the tag ("query") to the location: keep only the data's path
    parts = [
        str(p)
        for p in loc
        if not (isinstance(p, str) and p in ("query", "custom", "interval", "constant", "textbox"))
    ]
    return ".".join(parts)


def parse_dashboard(text: str, path: str = "<text>") -> Dashboard:
    """One dashboard from YAML text; raises :class:`DashboardFileError` naming the path and field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise DashboardFileError([FileError(path, where, f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise DashboardFileError([FileError(path, "", "a dashboard file must be a YAML mapping")])
    try:
        return Dashboard.model_validate(data)
    except ValidationError as exc:
        errors = [FileError(path, _location(e["loc"]), e["msg"]) for e in exc.errors()]
        raise DashboardFileError(errors) from None


def load_file(path: Path) -> Dashboard:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DashboardFileError([FileError(str(path), "", f"cannot read: {exc.strerror}")]) from None
    return parse_dashboard(text, str(path))


@dataclass(frozen=True, slots=True)
class Loaded:
    dashboards: dict[str, Dashboard]
    paths: dict[str, Path]
    errors: list[FileError]


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_dirs(dirs: Sequence[Path]) -> Loaded:
    dashboards: dict[str, Dashboard] = {}
    paths: dict[str, Path] = {}
    errors: list[FileError] = []
    for directory in dirs:
        seen_here: dict[str, Path] = {}
        for path in _files(directory):
            try:
                dashboard = load_file(path)
            except DashboardFileError as exc:
                errors.extend(exc.errors)
                continue
            if dashboard.uid in seen_here:
                errors.append(
                    FileError(
                        str(path),
                        "uid",
                        f"uid {dashboard.uid!r} is already used by {seen_here[dashboard.uid]}",
                    )
                )
                continue
            seen_here[dashboard.uid] = path
            dashboards[dashboard.uid] = dashboard
            paths[dashboard.uid] = path
    return Loaded(dashboards, paths, errors)


def _signature(dirs: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    sig = []
    for directory in dirs:
        for path in _files(directory):
            try:
                st = path.stat()
            except OSError:
                continue
            sig.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(sig)


class Catalog:
    """The dashboards of some directories, reloaded when their files change. Thread-safe."""

    def __init__(self, dirs: Sequence[Path], *, check_interval_seconds: float = 1.0) -> None:
        self.dirs = list(dirs)
        self.check_interval_seconds = check_interval_seconds
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._loaded = Loaded({}, {}, [])
        self.refresh()

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if (
                not force
                and self._signature is not None
                and now - self._checked < self.check_interval_seconds
            ):
                return
            self._checked = now
            sig = _signature(self.dirs)
            if sig != self._signature or force:
                self._loaded = load_dirs(self.dirs)
                self._signature = sig

    def all(self) -> list[Dashboard]:
        self.refresh()
        return sorted(self._loaded.dashboards.values(), key=lambda d: d.title.lower())

    def get(self, uid: str) -> Dashboard | None:
        self.refresh()
        return self._loaded.dashboards.get(uid)

    def path(self, uid: str) -> Path | None:
        return self._loaded.paths.get(uid)

    @property
    def errors(self) -> list[FileError]:
        self.refresh()
        return list(self._loaded.errors)

    def writable_dir(self) -> Path | None:
        """Where imported dashboards are saved: the last directory that is not the built-ins."""
        for directory in reversed(self.dirs):
            if directory.resolve() != BUILTIN_DIR.resolve():
                return directory
        return None
