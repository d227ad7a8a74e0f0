"""Notices between the members of one store: a member that changed something the others must
act on at once (it let a group go, it joined or left) says so, and they hear it within
milliseconds instead of at their next periodic round.

On PostgreSQL this is ``LISTEN``/``NOTIFY``: each member keeps one connection of its own,
listening in a thread, and a notice is sent in a transaction of its own once the change it
announces has committed (the writes of a member commit in order). A notice says only that
something changed, never what: whoever hears it reads the store, so a notice lost (the
connection to the store broken and made again) costs a delay, not a wrong decision. Every
listener keeps its periodic round as the net, and after a reconnection the listeners are all
told, as if every channel had a notice, since some may have been missed.

On SQLite there is one coordinator per store (``store_lock.py``): notices stay in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from xwch.store.database import Database

# The channels of the platform. A member listens to all of them.
GROUPS = "xwch_groups"  # a group was let go: who may take it should look now
MEMBERS = "xwch_members"  # a member joined or left: the fair shares changed
CHANNELS = (GROUPS, MEMBERS)

Listener = Callable[[], None]


class Notices(Protocol):
    def publish(self, channel: str) -> Deferred[None]:
        """Tell every member (this one included) that something on ``channel`` changed."""

    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (in the reactor) at each notice on ``channel``; the function
        returned stops that."""


class _Subscribers:
    """Who listens to what, in the reactor."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        if channel not in CHANNELS:
            raise ValueError(f"unknown notice channel {channel!r}")
        listeners = self._listeners.setdefault(channel, [])
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    def deliver(self, channel: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener()

    def deliver_all(self) -> None:
        for channel in CHANNELS:
            self.deliver(channel)


class LocalNotices(_Subscribers):
    """Notices within this process: a store of one coordinator (SQLite), or the members of a
    test sharing one object."""

    def __init__(self, reactor: IReactorTime) -> None:
        super().__init__()
        self._reactor = reactor

    def publish(self, channel: str) -> Deferred[None]:
        # Never within the publisher's own call: as on PostgreSQL, notices arrive later.
        self._reactor.callLater(0, self.deliver, channel)
        return succeed(None)


class PostgresNotices(_Subscribers, Service):
    """``LISTEN``/``NOTIFY`` on a PostgreSQL store, listening in a thread of its own."""

    log = Logger()

    # How long a wait for notices lasts before the thread looks whether it should stop.
    POLL = 0.5
    # A lost connection is made again after this long, doubling up to MAX.
    RECONNECT = 0.5
    RECONNECT_MAX = 5.0

    def __init__(self, reactor: Any, db: Database) -> None:
        """``reactor`` provides IReactorThreads and IReactorTime."""
        _Subscribers.__init__(self)
        self._reactor = reactor
        self._db = db
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, channel: str) -> Deferred[None]:
        return self._db.write(notify_thd, channel)

    def startService(self) -> None:
        super().startService()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._listen_thd, name="xwch-notices", daemon=True)
        self._thread.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        thread, self._thread = self._thread, None
        if thread is None:
            return None
        self._stopping.set()
        pool = self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, thread.join)  # type: ignore[no-any-return]

    def _listen_thd(self) -> None:
        import psycopg

        delay = self.RECONNECT
        conninfo = _conninfo(self._db.engine.url)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    delay = self.RECONNECT
                    # Listening from now on; what was said before it may have been missed.
                    self._reactor.callFromThread(self.deliver_all)
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=self.POLL):
                            self._reactor.callFromThread(self.deliver, notice.channel)
            except psycopg.Error as e:
                self._reactor.callFromThread(
                    self.log.warn, "notices: {error}; listening again in {delay:.1f} s",
                    error=e, delay=delay,
                )  # fmt: skip
                self._stopping.wait(delay)
                delay = min(delay * 2, self.RECONNECT_MAX)


def notify_thd(conn: sa.Connection, channel: str) -> None:
    conn.execute(sa.select(sa.func.pg_notify(channel, "")))


def _conninfo(url: sa.URL) -> str:
    """What psycopg connects with, from the store's SQLAlchemy URL (password included)."""
    plain = url.set(drivername="postgresql")
    return plain.render_as_string(hide_password=False)
