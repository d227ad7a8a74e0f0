"""Workers' reliability records in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from xwch.coordinator.reliability import Record
from xwch.store.database import make_engine
from xwch.store.reliability import load_records_thd, save_records_thd
from xwch.store.schema import migrate_thd


def test_records_are_written_whole_and_read_back(db_url: str) -> None:
    """A record saved again replaces the one before; every worker's record comes back."""
    engine = make_engine(db_url)
    migrate_thd(engine)
    try:
        with engine.begin() as conn:
            save_records_thd(conn, [Record("1/a", agreed=3, streak=3), Record("1/b", disagreed=1)])
        with engine.begin() as conn:
            save_records_thd(conn, [Record("1/b", agreed=1, disagreed=3, distrusted=True)])
        with engine.begin() as conn:
            records = sorted(load_records_thd(conn), key=lambda r: r.identity)
        assert records == [
            Record("1/a", agreed=3, streak=3),
            Record("1/b", agreed=1, disagreed=3, distrusted=True),
        ]
    finally:
        engine.dispose()
