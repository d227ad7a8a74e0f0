"""An attempt's states: the transitions the worker makes, and those it must never make."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_worker_service import FakeAttempt, assignment
from xwch.worker.attempts import AttemptState, Held, IllegalTransition

S = AttemptState


class AttemptStateTests(SynchronousTestCase):
    def held(self) -> Held:
        return Held(FakeAttempt(assignment("a1")))

    def test_a_reported_attempt_goes_through_every_state_in_order(self) -> None:
        record = self.held()
        self.assertIs(record.state, S.WAITING_FOR_SLOT)
        for state in (S.RUNNING, S.REPORTING, S.SENDING):
            record.move(state)
            self.assertIs(record.state, state)
        self.assertTrue(record.reporting)
        self.assertFalse(record.dropped)

    def test_any_live_state_may_be_dropped_and_says_what_it_was(self) -> None:
        for path in (
            [],
            [S.RUNNING],
            [S.RUNNING, S.REPORTING],
            [S.RUNNING, S.REPORTING, S.SENDING],
        ):
            record = self.held()
            for state in path:
                record.move(state)
            self.assertIs(record.move(S.DROPPED), path[-1] if path else S.WAITING_FOR_SLOT)
            self.assertTrue(record.dropped)

    def test_no_way_back_and_none_out_of_dropped(self) -> None:
        """A dropped attempt is never revived; no state is skipped or gone back to."""
        record = self.held()
        self.assertRaises(IllegalTransition, record.move, S.REPORTING)
        record.move(S.RUNNING)
        self.assertRaises(IllegalTransition, record.move, S.WAITING_FOR_SLOT)
        record.move(S.DROPPED)
        for state in S:
            self.assertRaises(IllegalTransition, record.move, state)
