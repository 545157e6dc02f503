"""``watchkeeper backup`` and ``watchkeeper restore``.

::

    watchkeeper backup --to FILE [--data-dir D] [--database-url U] [--config watchkeeper.yml]
    watchkeeper backup --to FILE --server http://127.0.0.1:9470 [--token T]   # the server makes it
    watchkeeper restore --from FILE [--data-dir D] [--database-url U] [--config-dir DIR] [--force]
    watchkeeper restore --from FILE --check                          # verify only

``backup`` reads the data dir and database directly (the server may be running: see
`watchkeeper.backup.snapshot`) or, with ``--server``, asks the server (``backup.admin_api: true``).
Exit status: 0 done, 1 failed (the reason on stderr; a restore leaves the target as it was when
the file is damaged or the target not empty), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import httpx

from watchkeeper.backup.archive import BackupError, Progress, verify_archive
from watchkeeper.backup.restore import check_backup, describe, restore_backup
from watchkeeper.backup.snapshot import Source, create_backup
from watchkeeper.config import DEFAULT_CONFIG_FILE, Settings
from watchkeeper.errors import ConfigError


def _settings(args: argparse.Namespace) -> Settings:
    config = args.config if args.config is not None else DEFAULT_CONFIG_FILE
    return Settings.load(config, overrides={"data_dir": args.data_dir, "database_url": args.database_url})


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="the data directory (default: from the config, ./data)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: the SQLite file in the data dir)")
    parser.add_argument("--config", type=Path,
                        help=f"YAML config file (default {DEFAULT_CONFIG_FILE} if present)")


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, err: TextIO,
         action: Callable[[argparse.Namespace, Progress], None]) -> int:
    """Parse, run `action` with progress lines on `err`; the exit status of the module docstring."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2

    def progress(message: str) -> None:
        print(message, file=err, flush=True)

    try:
        action(args, progress)
    except (BackupError, ConfigError) as exc:
        print(f"{parser.prog}: {exc}", file=err)
        return 1
    return 0


def backup_main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watchkeeper backup",
                                     description="Write a consistent backup while the server runs.")
    parser.add_argument("--to", type=Path, required=True, help="the backup file to write (.tar.gz)")
    parser.add_argument("--server", help="ask this running server for the backup (needs backup.admin_api)")
    parser.add_argument("--token", help="with --server: an API token with the admin scope (sent as Bearer)")
    _store_args(parser)

    def backup(args: argparse.Namespace, progress: Progress) -> None:
        if args.server is not None:
            _fetch(args.server, args.to, progress, token=args.token)
        else:
            create_backup(args.to, Source.from_settings(_settings(args)), progress=progress)

    return _run(parser, argv, stderr or sys.stderr, backup)


def _fetch(server: str, target: Path, progress: Progress, *, token: str | None = None) -> None:
    """Stream the server's backup to a temporary name, verify it, then rename it to `target`."""
    partial = target.with_name(f".{target.name}.partial")
    url = server.rstrip("/") + "/api/v1/admin/backup"
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.stream("POST", url, headers=headers, timeout=httpx.Timeout(30.0, read=3600.0)) as r:
            if r.status_code != 200:
                r.read()
                raise BackupError(f"{url} answered {r.status_code}: {r.text.strip()[:500]}")
            with partial.open("wb") as f:
                for block in r.iter_bytes(1 << 20):
                    f.write(block)
        verify_archive(partial)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"fetching the backup from {url} failed: {exc}") from exc
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    progress(f"wrote {target} ({target.stat().st_size} bytes) from {server}")


def restore_main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watchkeeper restore",
                                     description="Restore a backup into an empty data dir and database.")
    parser.add_argument("--from", dest="source", type=Path, required=True, help="the backup file")
    parser.add_argument("--config-dir", type=Path,
                        help="where the backup's config files go (default DATA_DIR/restored-config)")
    parser.add_argument("--force", action="store_true", help="replace a target that holds data")
    parser.add_argument("--check", action="store_true",
                        help="only verify the file (checksums, migrations) and describe it; touch nothing")
    _store_args(parser)

    def restore(args: argparse.Namespace, progress: Progress) -> None:
        if args.check:
            progress(describe(check_backup(args.source)))
            return
        settings = _settings(args)
        restore_backup(args.source, data_dir=settings.data_dir, database_url=settings.database_url,
                       force=args.force, config_dir=args.config_dir, progress=progress)

    return _run(parser, argv, stderr or sys.stderr, restore)


if __name__ == "__main__":
    raise SystemExit(backup_main())
