"""Credentials: tokens by role, stored as their SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa

from xwch.protocol.wire import ROLES
from xwch.store.records import TokenRecord
from xwch.store.schema import settings, tokens


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(role: str) -> str:
    """A fresh secret; the role in clear helps a user tell their tokens apart."""
    return f"xwch_{role}_{secrets.token_urlsafe(32)}"


def create_token_thd(conn: sa.Connection, role: str, name: str, now: float) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    token = new_token(role)
    conn.execute(
        tokens.insert().values(digest=token_digest(token), role=role, name=name, created=now)
    )
    return token


def find_token_thd(conn: sa.Connection, token: str) -> TokenRecord | None:
    row = conn.execute(
        sa.select(tokens.c.id, tokens.c.role, tokens.c.name).where(
            tokens.c.digest == token_digest(token)
        )
    ).first()
    return None if row is None else TokenRecord(id=row.id, role=row.role, name=row.name)


def token_in_force_thd(conn: sa.Connection, token_id: int) -> bool:
    """Whether the token with ``token_id`` is still there (not revoked)."""
    found = conn.execute(sa.select(tokens.c.id).where(tokens.c.id == token_id)).first()
    return found is not None


def capability_key_thd(conn: sa.Connection) -> bytes:
    value = conn.execute(
        sa.select(settings.c.value).where(settings.c.key == "capability_key")
    ).scalar_one()
    return bytes.fromhex(value)


def list_tokens_thd(conn: sa.Connection) -> list[tuple[int, str, str, float]]:
    """Every token in force: (id, role, name, created), oldest first. Secrets are not kept."""
    rows = conn.execute(
        sa.select(tokens.c.id, tokens.c.role, tokens.c.name, tokens.c.created).order_by(tokens.c.id)
    )
    return [(r.id, r.role, r.name, r.created) for r in rows]


def revoke_token_thd(conn: sa.Connection, token_id: int | None, token: str | None) -> bool:
    """Remove the token with ``token_id``, or the one whose secret is ``token``; whether one
    was there. The row goes: records naming its id (jobs, workers) stay, but nobody can use
    it any more."""
    where = (
        tokens.c.id == token_id
        if token_id is not None
        else tokens.c.digest == token_digest(token or "")
    )
    return conn.execute(tokens.delete().where(where)).rowcount > 0
