"""Who is calling: bearer tokens checked against the store, known ones remembered briefly."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from xwch.store import tokens
from xwch.store.database import Database
from xwch.store.records import TokenRecord


class Authenticator:
    """Resolves tokens to their records.

    ``xwch-coordinator token create`` and ``token revoke`` change the tokens at any time from
    another process: an unknown token is always looked up again, and a known one is remembered
    for :attr:`REMEMBER` seconds only, so a revoked token is refused within that long.
    """

    # Short enough that a revocation takes effect "within seconds"; long enough that a busy
    # platform's requests (hundreds a second from one worker token) cost one read per period.
    REMEMBER = 2.0

    def __init__(self, db: Database, clock: IReactorTime) -> None:
        self._db = db
        self._clock = clock
        self._known: dict[str, tuple[TokenRecord, float]] = {}
        # Token id -> until when it is known to be in force.
        self._in_force: dict[int, float] = {}

    async def __call__(self, token: str) -> TokenRecord | None:
        now = self._clock.seconds()
        known = self._known.get(token)
        if known is not None and known[1] > now:
            return known[0]
        record = await self._db.read(tokens.find_token_thd, token)
        if record is None:
            self._known.pop(token, None)
        else:
            self._known[token] = (record, now + self.REMEMBER)
        return record

    async def in_force(self, token_id: int) -> bool:
        """Whether the token with ``token_id`` is not revoked: what a dashboard session opened
        with it asks on each page, remembered as briefly as a token is."""
        now = self._clock.seconds()
        if self._in_force.get(token_id, 0.0) > now:
            return True
        found = await self._db.read(tokens.token_in_force_thd, token_id)
        if found:
            self._in_force[token_id] = now + self.REMEMBER
        else:
            self._in_force.pop(token_id, None)
        return found
