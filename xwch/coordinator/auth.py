"""Who is calling: bearer tokens checked against the store, known ones remembered."""

from __future__ import annotations

from xwch.store import tokens
from xwch.store.database import Database
from xwch.store.records import TokenRecord


class Authenticator:
    """Resolves tokens to their records; ``xwch-coordinator token create`` may add tokens at any
    time from another process, so an unknown token is always looked up again."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[str, TokenRecord] = {}

    async def __call__(self, token: str) -> TokenRecord | None:
        record = self._known.get(token)
        if record is None:
            record = await self._db.read(tokens.find_token_thd, token)
            if record is not None:
                self._known[token] = record
        return record
