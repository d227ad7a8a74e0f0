"""Who may look at the dashboard: one-time login codes and the sessions they open.

A client token never reaches the browser. ``xwch-client dashboard`` asks, with its token, for a
login code; the code works once and for :attr:`LoginDesk.CODE_LIFETIME` seconds, and opening it
gives the browser a session id in an HttpOnly, SameSite=Strict cookie. Codes and sessions live
in memory only: a restarted coordinator asks for a new link, which costs one command.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime


@dataclass(frozen=True)
class Session:
    """A browser's session: who opened it (the name of the client token), until when."""

    owner: str
    expires: float


class LoginDesk:
    """Issues login codes, trades each for a session once, and recognises sessions."""

    # The contract's five minutes: long enough to switch to a browser, short enough that a
    # link left in a terminal's scrollback is useless.
    CODE_LIFETIME = 5 * 60.0
    # A working day: a dashboard left open on a wall screen keeps working through it.
    SESSION_LIFETIME = 12 * 3600.0

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._codes: dict[str, tuple[str, float]] = {}
        self._sessions: dict[str, Session] = {}

    def issue_code(self, owner: str) -> str:
        self._forget_expired()
        code = secrets.token_urlsafe(24)
        self._codes[code] = (owner, self._clock.seconds() + self.CODE_LIFETIME)
        return code

    def open_session(self, code: str) -> str | None:
        """A new session id for a valid code, which is spent; None for an unknown, spent or
        expired code."""
        found = self._codes.pop(code, None)
        if found is None:
            return None
        owner, until = found
        now = self._clock.seconds()
        if now > until:
            return None
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(owner, now + self.SESSION_LIFETIME)
        return session_id

    def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        found = self._sessions.get(session_id)
        if found is None:
            return None
        if self._clock.seconds() > found.expires:
            del self._sessions[session_id]
            return None
        return found

    def _forget_expired(self) -> None:
        now = self._clock.seconds()
        for code in [c for c, (_, until) in self._codes.items() if now > until]:
            del self._codes[code]
        for sid in [s for s, session in self._sessions.items() if now > session.expires]:
            del self._sessions[sid]
