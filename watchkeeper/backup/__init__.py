"""Backups and disaster recovery: ``watchkeeper backup`` / ``watchkeeper restore`` and a scheduled job.

    archive.py   the file format (tar.gz + manifest with checksums), writing and verifying
    snapshot.py  taking a consistent backup of a data dir + database, online
    restore.py   loading a backup into a fresh data dir + database (SQLite or PostgreSQL)
    job.py       the scheduled backup with retention, and ``POST /api/v1/admin/backup``
    cli.py       the two commands

See docs/backup.md.
"""
