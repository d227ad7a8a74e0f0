"""Who may look at the dashboard: one-time login codes and the sessions they open.

A client token never reaches the browser. ``xwch-client dashboard`` asks, with its token, for a
login code; the code works once and for :attr:`LoginDesk.CODE_LIFETIME` seconds, and opening it
gives the browser a session in an HttpOnly, SameSite=Strict cookie.

Codes live in the memory of the member that issued them: the link is opened within seconds, at
the member the client asked. A session is the browser's for a working day, and the member that
opened it may die or lose its groups meanwhile: so a session is no record in anyone's memory but
a sealed note (who opened it, until when) that any member of the platform checks, sealed with a
key every member derives from the store's own secret (:func:`session_key`). A restarted
coordinator, or another member taking over, still recognises it. The note names the client
token that asked for the code, and a session lasts only as long as that token: revoking the
token ends the sessions opened with it (the dashboard asks the store on each page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime


@dataclass(frozen=True)
class Session:
    """A browser's session: who opened it (the client token's name and id), until when."""

    owner: str
    token_id: int
    expires: float


def session_key(store_secret: bytes) -> bytes:
    """The key sealing dashboard sessions, derived from the store's secret (the one capabilities
    are signed with): the same on every member, and of no use for anything else."""
    return hmac.new(store_secret, b"xwch dashboard sessions", hashlib.sha256).digest()


class LoginDesk:
    """Issues login codes, trades each for a session once, and recognises sessions."""

    # The contract's five minutes: long enough to switch to a browser, short enough that a
    # link left in a terminal's scrollback is useless.
    CODE_LIFETIME = 5 * 60.0
    # A working day: a dashboard left open on a wall screen keeps working through it.
    SESSION_LIFETIME = 12 * 3600.0

    def __init__(self, clock: IReactorTime, key: bytes) -> None:
        """``clock``: the reactor's (seconds since the epoch, so that members agree on when a
        session ends); ``key``: :func:`session_key` of the store's secret."""
        self._clock = clock
        self._key = key
        self._codes: dict[str, tuple[str, int, float]] = {}

    def issue_code(self, owner: str, token_id: int) -> str:
        """A code for the holder of the client token ``token_id`` (named ``owner``)."""
        self._forget_expired()
        code = secrets.token_urlsafe(24)
        self._codes[code] = (owner, token_id, self._clock.seconds() + self.CODE_LIFETIME)
        return code

    def open_session(self, code: str) -> str | None:
        """A new session for a valid code, which is spent; None for an unknown, spent or
        expired code."""
        found = self._codes.pop(code, None)
        if found is None:
            return None
        owner, token_id, until = found
        now = self._clock.seconds()
        if now > until:
            return None
        # The nonce makes two sessions of one owner opened in one second two different notes.
        note = json.dumps([owner, token_id, now + self.SESSION_LIFETIME, secrets.token_hex(8)])
        payload = _encode(note.encode("utf-8"))
        return f"{payload}.{self._seal(payload)}"

    def session(self, session_id: str | None) -> Session | None:
        """The session a cookie holds; None for no cookie, a note not sealed by this platform's
        key (forged, altered, cut), or one past its end. Whether its token is still in force
        is the caller's to ask."""
        if not session_id:
            return None
        payload, dot, seal = session_id.partition(".")
        if not dot or not hmac.compare_digest(seal, self._seal(payload)):
            return None
        try:
            owner, token_id, expires, _nonce = json.loads(_decode(payload))
        except (ValueError, TypeError):
            return None
        if (
            not isinstance(owner, str)
            or type(token_id) is not int
            or not isinstance(expires, (int, float))
        ):
            return None
        if self._clock.seconds() > expires:
            return None
        return Session(owner, token_id, float(expires))

    def _seal(self, payload: str) -> str:
        return _encode(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def _forget_expired(self) -> None:
        now = self._clock.seconds()
        for code in [c for c, (_, _, until) in self._codes.items() if now > until]:
            del self._codes[code]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError(str(e)) from e
