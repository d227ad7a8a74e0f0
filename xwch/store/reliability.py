"""Queries about workers' reliability records (see xwch.coordinator.reliability)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from xwch.coordinator.reliability import Record
from xwch.store.group_locks import Fencing
from xwch.store.schema import worker_reliability


def load_records_thd(conn: sa.Connection) -> list[Record]:
    rows = conn.execute(sa.select(worker_reliability)).all()
    return [
        Record(
            identity=r.identity,
            agreed=r.agreed,
            disagreed=r.disagreed,
            streak=r.streak,
            distrusted=r.distrusted,
        )
        for r in rows
    ]


def save_records_thd(
    conn: sa.Connection, records: Sequence[Record], fence: Fencing | None = None, now: float = 0.0
) -> None:
    """Write ``records`` whole (insert or replace), under the member's fence."""
    if fence is not None:
        fence.check_thd(conn, now)
    for r in records:
        values = {
            "agreed": r.agreed,
            "disagreed": r.disagreed,
            "streak": r.streak,
            "distrusted": r.distrusted,
        }
        updated = conn.execute(
            worker_reliability.update()
            .where(worker_reliability.c.identity == r.identity)
            .values(**values)
        )
        if updated.rowcount == 0:
            conn.execute(worker_reliability.insert().values(identity=r.identity, **values))
