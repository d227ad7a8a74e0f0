"""`xwch-client dashboard`: a one-time link, printed alone, opened where there is a browser."""

from __future__ import annotations

import io
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.coordinator_client_side import COORDINATOR_URL, FakeCoordinator
from tests.unit.client.harness import environ
from xwch.client.__main__ import run


class DashboardCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fake = FakeCoordinator()
        self.opened: list[str] = []
        self.home = Path(self.mktemp())
        self.home.mkdir()

    def dashboard(self, *flags: str, browser: bool = True) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()

        def open_url(url: str) -> bool:
            self.opened.append(url)
            return browser

        status = self.successResultOf(
            ensureDeferred(
                run(
                    ["dashboard", *flags],
                    Clock(),
                    StubTreq(self.fake.resource()),
                    stdout,
                    stderr,
                    environ=environ(self.home),
                    open_url=open_url,
                )
            )
        )
        return status, stdout.getvalue(), stderr.getvalue()

    def test_the_link_is_printed_alone_and_opened(self) -> None:
        """The link, on the coordinator's URL, is the whole of standard output; it is opened."""
        status, out, err = self.dashboard()
        self.assertEqual(status, 0)
        self.assertEqual(out, f"{COORDINATOR_URL}/dashboard/login?code=code1\n")
        self.assertEqual(self.opened, [out.strip()])
        self.assertIn("opened in your browser", err)

    def test_no_open_opens_nothing(self) -> None:
        status, _, err = self.dashboard("--no-open")
        self.assertEqual(status, 0)
        self.assertEqual(self.opened, [])
        self.assertIn("within 5 minutes; it works once", err)

    def test_without_a_browser_the_user_is_told_how_long_it_works(self) -> None:
        status, _, err = self.dashboard(browser=False)
        self.assertEqual(status, 0)
        self.assertEqual(len(self.opened), 1)
        self.assertIn("within 5 minutes", err)

    def test_each_run_gets_a_new_code(self) -> None:
        _, first, _ = self.dashboard("--no-open")
        _, second, _ = self.dashboard("--no-open")
        self.assertNotEqual(first, second)
