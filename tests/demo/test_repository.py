"""The core API's data layer on PostgreSQL: reads in autocommit, writes in transactions."""

from __future__ import annotations

import pytest

from watchkeeper.demo import repository as repo


@pytest.mark.postgres
def test_postgresql_reads_open_no_transaction_and_writes_on_the_same_connection_stay_atomic(
    postgres_url: str,
) -> None:
    import psycopg

    engine = repo.make_engine(postgres_url)
    try:
        repo.create_schema(engine)
        repo.seed(engine, num_players=10, now_ms=0)
        name = repo.get_player(engine, 1)["name"]
        with repo.reading(engine) as conn:
            conn.execute(repo.players.select().where(repo.players.c.id == 1)).one()
            read_on = conn.connection.dbapi_connection
            status = read_on.info.transaction_status  # type: ignore[union-attr]
        assert status == psycopg.pq.TransactionStatus.IDLE, "no BEGIN was sent: nothing to roll back"

        with pytest.raises(RuntimeError), repo.writing(engine) as conn:
            assert conn.connection.dbapi_connection is read_on, "the pooled connection the read used"
            conn.execute(repo.players.update().where(repo.players.c.id == 1).values(name="half-done"))
            raise RuntimeError("the write fails half-way")
        assert repo.get_player(engine, 1)["name"] == name, "rolled back: transactional again"
    finally:
        engine.dispose()
