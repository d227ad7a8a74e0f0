"""One-time login codes and the sessions they open."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xwch.dashboard.logins import LoginDesk, session_key

KEY = session_key(b"the store's secret")


class LoginDeskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.desk = LoginDesk(self.clock, KEY)

    def test_a_code_opens_one_session_only(self) -> None:
        """A login code opens a session once; the second use is refused."""
        code = self.desk.issue_code("alice", 1)
        session = self.desk.open_session(code)
        assert session is not None
        found = self.desk.session(session)
        assert found is not None and found.owner == "alice"
        self.assertIsNone(self.desk.open_session(code))

    def test_a_code_expires_after_five_minutes(self) -> None:
        """A code unused for five minutes no longer opens anything."""
        code = self.desk.issue_code("alice", 1)
        self.clock.advance(LoginDesk.CODE_LIFETIME + 1)
        self.assertIsNone(self.desk.open_session(code))

    def test_a_code_just_in_time_works(self) -> None:
        code = self.desk.issue_code("alice", 1)
        self.clock.advance(LoginDesk.CODE_LIFETIME - 1)
        self.assertIsNotNone(self.desk.open_session(code))

    def test_sessions_end(self) -> None:
        """A session is forgotten after its lifetime; unknown ids are never sessions."""
        session = self.desk.open_session(self.desk.issue_code("alice", 1))
        self.clock.advance(LoginDesk.SESSION_LIFETIME + 1)
        self.assertIsNone(self.desk.session(session))
        self.assertIsNone(self.desk.session("made-up"))
        self.assertIsNone(self.desk.session(None))

    def test_codes_and_sessions_differ_each_time(self) -> None:
        codes = {self.desk.issue_code("alice", 1) for _ in range(100)}
        assert len(codes) == 100

    def test_another_member_recognises_a_session(self) -> None:
        """A session opened at one member (or before a restart) is recognised by another
        member of the same store, which never saw it opened: the takeover of the lead keeps
        every browser logged in."""
        session = self.desk.open_session(self.desk.issue_code("alice", 1))
        other = LoginDesk(self.clock, session_key(b"the store's secret"))
        found = other.session(session)
        assert found is not None and found.owner == "alice"
        elsewhere = LoginDesk(self.clock, session_key(b"another store's secret"))
        self.assertIsNone(elsewhere.session(session))

    def test_forged_altered_and_cut_sessions_are_refused(self) -> None:
        session = self.desk.open_session(self.desk.issue_code("alice", 1))
        assert session is not None
        payload, seal = session.split(".")
        for bad in (
            payload,
            f"{payload}.",
            f".{seal}",
            f"{payload[:-2]}.{seal}",
            f"{payload}.{seal[:-1]}",
            f"{payload}x.{seal}",
            "eyJvd25lciI6ICJtYWxsb3J5In0.AAAA",
            "not base64 at all!.seal",
        ):
            self.assertIsNone(self.desk.session(bad), bad)
