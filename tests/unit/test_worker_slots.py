"""The worker's slots: attempts beyond them wait in turn, cancelled waits take none."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from xwch.worker.run_slots import SlotGate


class SlotGateTests(SynchronousTestCase):
    def test_takes_at_once_while_slots_are_free(self) -> None:
        gate = SlotGate(2)
        self.successResultOf(gate.take())
        self.successResultOf(gate.take())
        self.assertEqual((gate.taken, gate.waiting), (2, 0))

    def test_beyond_the_slots_callers_wait_first_come_first_served(self) -> None:
        gate = SlotGate(1)
        self.successResultOf(gate.take())
        second, third = gate.take(), gate.take()
        self.assertNoResult(second)
        self.assertEqual(gate.waiting, 2)
        gate.give_back()
        self.successResultOf(second)
        self.assertNoResult(third)
        gate.give_back()
        self.successResultOf(third)
        self.assertEqual((gate.taken, gate.waiting), (1, 0))

    def test_a_cancelled_wait_takes_no_slot(self) -> None:
        gate = SlotGate(1)
        self.successResultOf(gate.take())
        cancelled, next_one = gate.take(), gate.take()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual(gate.waiting, 1)
        gate.give_back()
        self.successResultOf(next_one)
        self.assertEqual(gate.taken, 1)

    def test_more_slots_let_waiters_in_fewer_only_as_slots_come_back(self) -> None:
        gate = SlotGate(1)
        self.successResultOf(gate.take())
        waiting = gate.take()
        gate.resize(2)
        self.successResultOf(waiting)
        gate.resize(1)
        after = gate.take()
        gate.give_back()
        self.assertNoResult(after)  # two taken, one slot: still one too many
        gate.give_back()
        self.successResultOf(after)

    def test_giving_back_a_slot_not_taken_is_a_bug(self) -> None:
        with self.assertRaises(RuntimeError):
            SlotGate(1).give_back()
