"""Damaged, foreign or too-new backups and non-empty targets: a clear error, exit status 1, and
the target exactly as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from alembic.script import ScriptDirectory

from watchkeeper.backup.archive import ArchiveWriter, read_manifest
from watchkeeper.backup.cli import backup_main, restore_main
from watchkeeper.backup.snapshot import Source, create_backup
from watchkeeper.tsdb.schema import alembic_config
from watchkeeper.tsdb.storage import Storage


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backup of a store with persisted chunks and head samples."""
    root = tmp_path_factory.mktemp("src")
    store = Storage.open(data_dir=root / "data")
    refs = store.series_refs([(("__name__", "m"), ("i", str(i))) for i in range(10)])
    for t in range(300):
        store.append(refs, np.full(10, t * 1000), np.full(10, float(t)))
    store.close()
    out = root / "good.tar.gz"
    create_backup(out, Source(root / "data"))
    return out


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with its SHA-256 (empty if `path` does not exist)."""
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def retar(archive: Path, out: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of `archive` with member contents changed by `change(name, data)`; gzip CRCs valid."""
    buf = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for info in src.getmembers():
            f = src.extractfile(info)
            assert f is not None
            data = change(info.name, f.read())
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip.compress(buf.getvalue()))
    return out


def restore(tmp_path: Path, backup: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = restore_main(["--from", str(backup), "--data-dir", str(tmp_path / "target"), *extra])
    return code, capsys.readouterr().err


def _truncated(a: Path, tmp: Path) -> Path:
    data = a.read_bytes()
    return _write(tmp / "cut.tar.gz", data[: len(data) * 2 // 3])


def _bit_flipped(a: Path, tmp: Path) -> Path:
    data = a.read_bytes()
    return _write(tmp / "flip.tar.gz", flip_byte(data, len(data) // 2))


def _member_changed(a: Path, tmp: Path) -> Path:
    return retar(a, tmp / "tampered.tar.gz",
                 lambda name, d: flip_byte(d, len(d) // 2) if name == "db/tsdb_chunks.jsonl" else d)


def _member_dropped(a: Path, tmp: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(a) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for info in src.getmembers():
            if not info.name.startswith("wal/"):
                dst.addfile(info, src.extractfile(info))
    return _write(tmp / "dropped.tar.gz", gzip.compress(buf.getvalue()))


def _foreign(_a: Path, tmp: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as dst:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        dst.addfile(info, io.BytesIO(b"hi"))
    return _write(tmp / "foreign.tar.gz", buf.getvalue())


def _not_gzip(_a: Path, tmp: Path) -> Path:
    return _write(tmp / "text.tar.gz", b"this is not a backup\n")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("damage", "message"), [
    (_truncated, "damaged or truncated"),
    (_bit_flipped, "damaged or truncated"),
    (_member_changed, "checksum mismatch in db/tsdb_chunks.jsonl"),
    (_member_dropped, "members missing from the backup: wal/"),
    (_foreign, "not a watchkeeper backup"),
    (_not_gzip, "damaged or truncated"),
])
@pytest.mark.parametrize("target_state", ["fresh", "holds data, --force"])
def test_damaged_backup_is_refused_and_the_target_untouched(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path, Path], Path], message: str, target_state: str,
) -> None:
    extra: tuple[str, ...] = ()
    if target_state != "fresh":
        assert restore(tmp_path, archive, capsys)[0] == 0
        extra = ("--force",)
    before = tree(tmp_path / "target")
    code, err = restore(tmp_path, damage(archive, tmp_path), capsys, *extra)
    assert code == 1
    assert message in err
    assert err.startswith("watchkeeper restore: ")
    assert tree(tmp_path / "target") == before


def test_check_only_verifies(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = restore(tmp_path, archive, capsys, "--check")
    assert code == 0
    assert "backup OK" in err and ", 30 rows," in err  # 10 series + 20 chunks
    assert not (tmp_path / "target").exists()
    code, err = restore(tmp_path, _truncated(archive, tmp_path), capsys, "--check")
    assert code == 1 and "damaged or truncated" in err


def test_non_empty_target_needs_force(archive: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert restore(tmp_path, archive, capsys)[0] == 0
    before = tree(tmp_path / "target")
    code, err = restore(tmp_path, archive, capsys)
    assert code == 1
    assert "not empty" in err and "table tsdb_chunks has rows" in err and "--force" in err
    assert tree(tmp_path / "target") == before
    assert restore(tmp_path, archive, capsys, "--force")[0] == 0


def test_backup_of_a_newer_schema_is_refused(archive: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    manifest = read_manifest(archive)
    newer = tmp_path / "newer.tar.gz"
    with ArchiveWriter(newer) as w:
        w.path("db/x.jsonl").write_text("")
        w.finish({**{k: v for k, v in manifest.items() if k not in ("files", "format", "format_version")},
                  "alembic_revisions": [*manifest["alembic_revisions"], "9999_from_the_future"],
                  "tables": [], "wal_segments": []})
    code, err = restore(tmp_path, newer, capsys)
    assert code == 1
    assert "9999_from_the_future" in err and "newer watchkeeper" in err
    assert not (tmp_path / "target").exists()


def test_backup_of_a_missing_data_dir_fails_without_leaving_files(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = backup_main(["--to", str(tmp_path / "out" / "b.tar.gz"), "--data-dir", str(tmp_path / "nothing")])
    assert code == 1
    assert "no database at" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "nothing").exists()


def test_manifest_lists_versions_counts_and_checksums(archive: Path) -> None:
    m = read_manifest(archive)
    assert m["format"] == "watchkeeper-backup" and m["watchkeeper_version"]
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert m["alembic_revisions"] == sorted(heads)  # what alembic_version held
    tables = {t["name"]: t for t in m["tables"]}
    assert tables["tsdb_series"]["rows"] == 10
    assert tables["tsdb_chunks"]["rows"] == 20  # 300 samples a series: two cut chunks of 120
    assert m["wal_segments"]
    with tarfile.open(archive) as tar:
        for entry in m["files"]:
            f = tar.extractfile(entry["path"])
            assert f is not None
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
    assert json.dumps(m)  # plain JSON


def test_unwritable_targets_are_clear_errors(archive: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = archive.parent / "data"
    (tmp_path / "a-dir.tar.gz").mkdir()
    assert backup_main(["--to", str(tmp_path / "a-dir.tar.gz"), "--data-dir", str(source)]) == 1
    assert "writing the backup" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir.tar.gz"]  # no partial file left
    (tmp_path / "file").write_text("not a directory")
    assert restore_main(["--from", str(archive), "--data-dir", str(tmp_path / "file")]) == 1
    assert "restoring into" in capsys.readouterr().err
