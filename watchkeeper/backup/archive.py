"""The backup file: a tar.gz whose first member is ``manifest.json``, then the files it lists.

::

    manifest.json          format, watchkeeper version, created at, Alembic revisions, tables
                           (columns, row counts), and size + SHA-256 of every other member
    db/<table>.jsonl       one JSON array per row, columns as listed in the manifest; binary
                           columns base64, so the rows load into SQLite or PostgreSQL alike
    wal/<segment>          the write-ahead-log segments, byte for byte (head samples)
    config/<path>          the config file and the rule / SLO spec files, relative to its directory

Files are staged in a directory beside the target and the archive is written to a temporary name
and renamed, so a crash never leaves a half-written archive under the final name.
`verify_archive` reads everything once and checks it against the manifest before a restore touches
anything; any damage (truncation, a flipped bit, a missing member) is a `BackupError`.

>>> with ArchiveWriter(Path("b.tar.gz")) as w:                     # doctest: +SKIP
...     w.path("db/t.jsonl").write_text("[1]\\n")
...     w.finish({"tables": []})
>>> verify_archive(Path("b.tar.gz"))["files"]                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

from watchkeeper.errors import StorageError

FORMAT = "watchkeeper-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_BLOCK = 1 << 20

Manifest = dict[str, Any]
Progress = Callable[[str], None]
"""Receives one line per step of a long backup or restore (the CLI prints them on stderr)."""


def quiet(_message: str) -> None:
    """The `Progress` that says nothing."""


class BackupError(StorageError):
    """A backup could not be made, or a backup file is damaged, foreign or cannot be restored."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


class ArchiveWriter:
    """Stage member files in a scratch directory, then write the archive in one go (`finish`)."""

    def __init__(self, target: Path, *, compresslevel: int = 6) -> None:
        self.target = target
        self.compresslevel = compresslevel
        target.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def path(self, member: str) -> Path:
        """Where to write the staged file of `member` (parent directories created)."""
        p = self.stage / _safe(member)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def finish(self, manifest: Manifest) -> Manifest:
        """Checksum the staged files into ``manifest["files"]`` and write the archive atomically."""
        staged = sorted(p for p in self.stage.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "files": [
                {"path": p.relative_to(self.stage).as_posix(), "size_bytes": p.stat().st_size,
                 "sha256": sha256_file(p)}
                for p in staged
            ],
        }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        partial = self.target.with_name(f".{self.target.name}.partial")
        level = self.compresslevel
        try:
            with tarfile.open(partial, "w:gz", compresslevel=level, format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(data)
                info.mtime = int(manifest.get("created_at_ms", 0) / 1000)
                tar.addfile(info, io.BytesIO(data))
                for p in staged:
                    tar.add(p, arcname=p.relative_to(self.stage).as_posix(), recursive=False)
            with partial.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, self.target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return manifest


def _safe(member: str) -> str:
    """A member name that stays inside the directory it is extracted to."""
    p = PurePosixPath(member)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BackupError(f"unsafe member name in backup: {member!r}")
    return p.as_posix()


def _wrap(path: Path, exc: BaseException) -> BackupError:
    return BackupError(f"{path}: the backup file is damaged or truncated ({type(exc).__name__}: {exc})")


_DAMAGE = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, UnicodeDecodeError)


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except FileNotFoundError:
        raise BackupError(f"{path}: no such backup file") from None
    except _DAMAGE as exc:
        raise _wrap(path, exc) from exc


def _read_manifest(path: Path, tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST:
        raise BackupError(f"{path}: not a watchkeeper backup (no {MANIFEST} first)")
    f = tar.extractfile(first)
    assert f is not None
    manifest = json.loads(f.read())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a watchkeeper backup (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path}: backup format version {manifest.get('format_version')} is not supported "
                          f"(this watchkeeper reads version {FORMAT_VERSION})")
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The manifest alone (the first member: nothing else is read)."""
    try:
        with _open(path) as tar:
            return _read_manifest(path, tar)
    except BackupError:
        raise
    except _DAMAGE as exc:
        raise _wrap(path, exc) from exc


def verify_archive(path: Path, *, progress: Progress = quiet) -> Manifest:
    """Read the whole archive; every member must be listed with its size and checksum, and every
    listed member present. Returns the manifest; raises `BackupError` on any damage."""
    try:
        with _open(path) as tar:
            manifest = _read_manifest(path, tar)
            expected = {f["path"]: f for f in manifest["files"]}
            seen: set[str] = set()
            while (info := tar.next()) is not None:  # after the manifest (iterating would restart)
                entry = expected.get(info.name)
                if entry is None or not info.isfile():
                    raise BackupError(f"{path}: unexpected member {info.name!r} (not in the manifest)")
                f = tar.extractfile(info)
                assert f is not None
                h = hashlib.sha256()
                size = 0
                while block := f.read(_BLOCK):
                    h.update(block)
                    size += len(block)
                if size != entry["size_bytes"] or h.hexdigest() != entry["sha256"]:
                    raise BackupError(f"{path}: checksum mismatch in {info.name} (the file is corrupt)")
                seen.add(info.name)
                if size >= _BLOCK:
                    progress(f"verified {info.name} ({size} bytes)")
            # to the end of the gzip stream: its CRC and length check the bytes tar did not read
            while tar.fileobj is not None and tar.fileobj.read(_BLOCK):
                pass
    except BackupError:
        raise
    except (*_DAMAGE, KeyError, TypeError) as exc:
        raise _wrap(path, exc) from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"{path}: members missing from the backup: {', '.join(missing)}")
    return manifest


class ArchiveReader:
    """The members of an archive in order, after the manifest (for a restore, once verified).

    >>> with ArchiveReader(path) as r:                       # doctest: +SKIP
    ...     for name, f in r.members(): ...
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = _open(path)
        try:
            self.manifest = _read_manifest(path, self._tar)
        except BaseException:
            self._tar.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._tar.close()

    def members(self) -> Iterator[tuple[str, IO[bytes]]]:
        try:
            while (info := self._tar.next()) is not None:
                f = self._tar.extractfile(info)
                if f is not None:
                    yield _safe(info.name), f
        except _DAMAGE as exc:
            raise _wrap(self.path, exc) from exc
