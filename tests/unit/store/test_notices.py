"""Notices between members: LISTEN/NOTIFY on a real PostgreSQL, and within one process."""

from __future__ import annotations

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.backends import postgres_or_skip, threaded_database
from xwch.store.notices import GROUPS, MEMBERS, LocalNotices, PostgresNotices


class Heard:
    """Counts the notices of a channel, and hands out a Deferred for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: list[Deferred[None]] = []

    def __call__(self) -> None:
        self.count += 1
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def next(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d


class LocalNoticesTests(SynchronousTestCase):
    def test_a_notice_arrives_after_the_publisher_returns_and_only_on_its_channel(self) -> None:
        clock = Clock()
        notices = LocalNotices(clock)
        groups, members = Heard(), Heard()
        notices.subscribe(GROUPS, groups)
        stop = notices.subscribe(MEMBERS, members)
        notices.publish(GROUPS)
        self.assertEqual(groups.count, 0)  # never inside the publisher's own call
        clock.advance(0)
        self.assertEqual((groups.count, members.count), (1, 0))
        stop()
        notices.publish(MEMBERS)
        clock.advance(0)
        self.assertEqual(members.count, 0)

    def test_an_unknown_channel_is_refused(self) -> None:
        with self.assertRaises(ValueError) as refused:
            LocalNotices(Clock()).subscribe("xwch_nothing", Heard())
        self.assertIn("xwch_nothing", str(refused.exception))


class PostgresNoticesTests(TestCase):
    def setUp(self) -> None:
        postgres_or_skip()
        self.db = threaded_database(self, "postgresql")
        self.db.start()

    async def listening(self) -> tuple[PostgresNotices, Heard, Heard]:
        """A member listening, once it listens (it says so by telling every channel)."""
        notices = PostgresNotices(reactor, self.db)
        groups, members = Heard(), Heard()
        notices.subscribe(GROUPS, groups)
        notices.subscribe(MEMBERS, members)
        started = members.next()  # the last channel told
        notices.startService()
        self.addCleanup(notices.stopService)
        await started
        return notices, groups, members

    async def test_a_notice_reaches_the_members_listening_on_its_channel(self) -> None:
        listener, groups, members = await self.listening()
        publisher = PostgresNotices(reactor, self.db)  # publishing needs no listening thread
        before = (groups.count, members.count)
        heard = groups.next()
        await publisher.publish(GROUPS)
        await heard
        self.assertEqual((groups.count, members.count), (before[0] + 1, before[1]))
        heard = members.next()
        await listener.publish(MEMBERS)  # its own notices too
        await heard
        self.assertEqual(members.count, before[1] + 1)

    async def test_a_broken_connection_is_made_again_and_every_channel_told(self) -> None:
        """Notices sent while the connection was down are lost: once listening again, the
        member is told on every channel, as if each had a notice, and hears new ones."""
        notices, groups, members = await self.listening()
        notices.RECONNECT = 0.05
        told = groups.next(), members.next()
        killed = await self.db.write(_end_listening_backends_thd)
        self.assertEqual(killed, 1)
        for d in told:
            await d
        heard = groups.next()
        await notices.publish(GROUPS)
        await heard

    async def test_stopping_ends_the_listening_thread(self) -> None:
        notices, _, _ = await self.listening()
        thread = notices._thread
        assert thread is not None
        await notices.stopService()
        self.assertFalse(thread.is_alive())


def _end_listening_backends_thd(conn: sa.Connection) -> int:
    """Terminate this database's connections that LISTEN (as a restarted server would)."""
    rows = conn.execute(
        sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    ).all()
    return len(rows)
