"""Counts for the operator's view (metrics, dashboard): read-only, one query each."""

from __future__ import annotations

import sqlalchemy as sa

from xwch.store.schema import jobs


def job_counts_thd(conn: sa.Connection) -> dict[str, int]:
    """Every job of the store, counted by state."""
    rows = conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
    return {state: int(count) for state, count in rows}
