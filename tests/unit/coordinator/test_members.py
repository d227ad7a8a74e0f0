"""A coordinator as a member of its store's platform: joining, renewing, leaving, listed."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from tests.unit.coordinator.harness import CoordinatorTestCase, _d
from xwch.coordinator.assembly import Coordinator, CoordinatorConfig, make_coordinator
from xwch.coordinator.members import Membership
from xwch.store import tokens

URL = "http://c1.test:8750"


class MembershipTests(CoordinatorTestCase):
    def build(self) -> Coordinator:
        config = CoordinatorConfig(db_url=self.url, alive_interval=5.0, public_url=URL, lease=9.0)
        return self.successResultOf(
            _d(make_coordinator(config, self.clock, db=self.db, request_copy=self.copies.request))
        )

    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        with self.db.engine.begin() as conn:
            self.secret = tokens.create_token_thd(conn, "warehouse", "w", 0.0)
        self.membership = self.coordinator.membership
        self.coordinator.web._settle(("port", None))  # type: ignore[arg-type]  # as if listening
        self.membership.startService()

    def listed(self) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.secret}"}
        d = self.http.get("http://c1.test/api/v1/coordinators", headers=headers)
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        return json.loads(self.successResultOf(response.content()))["coordinators"]  # type: ignore[no-any-return]

    def other_member(self, url: str) -> Membership:
        listening: Deferred[object] = Deferred()
        other = Membership(self.clock, self.db, lambda: listening, lambda: url, lambda: (0, 0), 9.0)
        other.startService()
        listening.callback(None)
        return other

    def test_a_coordinator_lists_itself_once_listening(self) -> None:
        """Any part (a warehouse's token here) sees the live members and where they answer."""
        [me] = self.listed()
        self.assertEqual((me["id"], me["url"], me["state"]), (self.membership.id, URL, "live"))
        self.assertEqual((me["workers"], me["running"], me["groups"]), (0, 0, []))

    def test_a_silent_member_is_lost_after_its_lease_and_a_live_one_renews(self) -> None:
        other = self.other_member("http://c2.test:8750")
        self.assertEqual([m["state"] for m in self.listed()], ["live", "live"])
        # The other one freezes (no leave, no renewal); this one goes on renewing.
        assert other._renewing is not None
        other._renewing.stop()
        self.advance(self.membership.lease + 1)
        states = {m["url"]: m["state"] for m in self.listed()}
        self.assertEqual(states, {URL: "live", "http://c2.test:8750": "lost"})

    def test_a_member_stopping_cleanly_leaves_at_once(self) -> None:
        other = self.other_member("http://c2.test:8750")
        self.successResultOf(other.stopService())
        self.assertEqual([m["url"] for m in self.listed()], [URL])

    def test_a_lone_coordinator_holds_the_one_group(self) -> None:
        self.coordinator.groups.startService()
        self.clock.advance(self.membership.lease / 3)
        [me] = self.listed()
        self.assertEqual(me["groups"], ["g1"])

    def test_renewals_tell_the_workers_known(self) -> None:
        self.register()
        self.clock.advance(self.membership.lease / Membership.RENEWALS_PER_LEASE)
        [me] = self.listed()
        self.assertEqual(me["workers"], 1)
