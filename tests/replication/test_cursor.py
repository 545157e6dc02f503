from __future__ import annotations

from pathlib import Path

from watchkeeper.replication.cursor import FILE_NAME, START, Cursor, stream_id


def test_a_new_cursor_starts_at_the_beginning_and_keeps_its_id(tmp_path: Path) -> None:
    first = Cursor.load(tmp_path, "s")
    assert first.position == START
    first.position = "1700000000000-4"
    first.save()
    again = Cursor.load(tmp_path, "s")
    assert (again.replica_id, again.position) == (first.replica_id, "1700000000000-4")


def test_another_stream_key_starts_over_with_the_same_id(tmp_path: Path) -> None:
    cursor = Cursor.load(tmp_path, "s")
    cursor.position = "5-0"
    cursor.save()
    other = Cursor.load(tmp_path, "t")
    assert (other.replica_id, other.position) == (cursor.replica_id, START)


def test_an_unreadable_file_gives_a_fresh_cursor(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text('{"replica_id": "x", "stream": "s", "position": "not-an-id"}')
    cursor = Cursor.load(tmp_path, "s")
    assert cursor.position == START and cursor.replica_id != "x"


def test_stream_ids_compare_by_time_then_sequence() -> None:
    assert stream_id("10-0") > stream_id("9-99") > stream_id("9-1")
    assert stream_id("7") == (7, 0)
