"""``xwch-coordinator token create|list|revoke``: credentials in the store, from the shell.

They work on the store directly (a coordinator using it may be running): a token created is
known at its first use, and one revoked is refused by every coordinator within
``Authenticator.REMEMBER`` seconds, by warehouses' metrics within ``MetricsAccess.REMEMBER``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import sqlalchemy as sa

from xwch.errors import ConfigurationError

T = TypeVar("T")


def _in_store(db_url: str, work: Callable[[sa.Connection], T]) -> T:
    """Run ``work`` in one transaction on the store at ``db_url`` (migrated first if new)."""
    from xwch.store.database import make_engine
    from xwch.store.schema import migrate_thd

    engine = make_engine(db_url)
    try:
        migrate_thd(engine)
        with engine.begin() as conn:
            return work(conn)
    finally:
        engine.dispose()


def create_token(db_url: str, role: str, name: str) -> str:
    """Create a token in the store at ``db_url``; the secret, shown this once."""
    from xwch.store.tokens import create_token_thd

    return _in_store(db_url, lambda conn: create_token_thd(conn, role, name, time.time()))


def token_table(db_url: str) -> str:
    """The tokens in force, one a row: id, role, name, created (UTC). Secrets are never kept."""
    from xwch.store.tokens import list_tokens_thd

    rows = _in_store(db_url, list_tokens_thd)
    lines = [f"{'ID':>5}  {'ROLE':<10} {'CREATED (UTC)':<20} NAME"]
    for token_id, role, name, created in rows:
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{token_id:>5}  {role:<10} {when:<20} {name}")
    return "\n".join(lines) + "\n"


def revoke_token(db_url: str, which: str) -> None:
    """Revoke the token with id ``which`` (as ``token list`` shows it) or with that secret."""
    from xwch.store.tokens import revoke_token_thd

    which = which.strip()
    token_id = int(which) if which.isdigit() else None
    if token_id is None and not which.startswith("xwch_"):
        raise ConfigurationError(
            f"{which!r} is neither a token id (a number, see `token list`) nor a token"
        )
    found = _in_store(
        db_url, lambda conn: revoke_token_thd(conn, token_id, None if token_id else which)
    )
    if not found:
        raise ConfigurationError(f"no such token: {which if token_id else 'the one given'}")
