"""A pooled PostgreSQL connection is checked before use only after it has been idle a while.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` at every checkout: a round trip before every
group commit and every read. Under load the writer checks a connection out every few
milliseconds, and its pings were a fifth of the writer thread's time in W1, for connections
used a moment before. What the ping guards against (the server restarted, or the connection
killed, while it sat in the pool) needs some idle time; a connection that dies while in use
fails its transaction with or without a ping before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

# Idle for longer than this (seconds), a connection is pinged before use.
PING_AFTER_IDLE = 1.0

# Where a connection's pool entry keeps when it was last returned.
_RETURNED = "xwch_returned"


def ping_when_idle(
    engine: sa.Engine, idle: float = PING_AFTER_IDLE, now: Callable[[], float] = time.monotonic
) -> None:
    """Make ``engine``'s pool ping a connection at checkout when it has been idle for more than
    ``idle`` seconds by ``now``; one found dead is replaced by a new one."""

    @sa.event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[_RETURNED] = now()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        # A new connection (no return yet) was made just now.
        if returned is None or now() - returned <= idle:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as e:
            if engine.dialect.is_disconnect(e, dbapi_connection, None):  # type: ignore[arg-type]
                # The pool drops this connection and checks out another (a new one).
                raise sa.exc.DisconnectionError() from e
            raise
        if not alive:
            raise sa.exc.DisconnectionError()
