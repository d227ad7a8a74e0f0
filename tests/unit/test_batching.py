"""The coalescer: one call in flight, what arrives meanwhile goes together in the next."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from xwch.batching import Coalescer


class FakeEndpoint:
    """Records each call's items; each call waits until the test answers it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.answers: list[Deferred[None]] = []

    def send(self, items: list[str]) -> Deferred[None]:
        self.calls.append(items)
        answer: Deferred[None] = Deferred()
        self.answers.append(answer)
        return answer


class CoalescerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.endpoint = FakeEndpoint()
        self.coalescer: Coalescer[str] = Coalescer(self.endpoint.send, most=4)

    def submit(self, *items: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self.coalescer.submit(items))

    def test_alone_a_report_goes_at_once(self) -> None:
        done = self.submit("a")
        self.assertEqual(self.endpoint.calls, [["a"]])
        self.assertNoResult(done)
        self.endpoint.answers[0].callback(None)
        self.assertIsNone(self.successResultOf(done))

    def test_reports_made_during_a_call_go_together_in_the_next(self) -> None:
        first = self.submit("a")
        second = self.submit("b")
        third = self.submit("c", "d")
        self.assertEqual(self.endpoint.calls, [["a"]])
        self.endpoint.answers[0].callback(None)
        self.successResultOf(first)
        self.assertEqual(self.endpoint.calls, [["a"], ["b", "c", "d"]])
        self.assertNoResult(second)
        self.endpoint.answers[1].callback(None)
        self.successResultOf(second)
        self.successResultOf(third)

    def test_a_failed_call_fails_only_its_own_reports(self) -> None:
        first = self.submit("a")
        second = self.submit("b")
        self.endpoint.answers[0].errback(ConnectionError("coordinator gone"))
        self.failureResultOf(first, ConnectionError)
        self.assertNoResult(second)
        self.endpoint.answers[1].callback(None)
        self.successResultOf(second)

    def test_a_call_carries_at_most_so_many_items(self) -> None:
        self.submit("a")
        self.submit("b", "c")
        self.submit("d", "e")
        self.submit("f", "g", "h", "i", "j")
        self.endpoint.answers[0].callback(None)
        self.endpoint.answers[1].callback(None)
        self.endpoint.answers[2].callback(None)
        # Whole reports only; one bigger than the limit goes alone rather than never.
        self.assertEqual(
            self.endpoint.calls, [["a"], ["b", "c", "d", "e"], ["f", "g", "h", "i", "j"]]
        )

    def test_held_reports_wait_for_the_next_call(self) -> None:
        """Items submitted with ``hold`` start no call; the next plain submission carries them."""
        held = Deferred.fromCoroutine(self.coalescer.submit(["r1"], hold=True))
        self.assertEqual((self.endpoint.calls, self.coalescer.waiting), ([], 1))
        plain = self.submit("r2")
        self.assertEqual(self.endpoint.calls, [["r1", "r2"]])
        self.endpoint.answers[0].callback(None)
        self.successResultOf(held)
        self.successResultOf(plain)
        self.assertEqual(self.coalescer.waiting, 0)

    def test_flush_sends_what_was_held(self) -> None:
        held = Deferred.fromCoroutine(self.coalescer.submit(["r1"], hold=True))
        self.coalescer.flush()
        self.assertEqual(self.endpoint.calls, [["r1"]])
        self.endpoint.answers[0].callback(None)
        self.successResultOf(held)

    def test_flush_during_a_call_leaves_the_held_for_the_next(self) -> None:
        """A flush while a call is on its way sends nothing more at once: the held go next."""
        first = self.submit("r1")
        held = Deferred.fromCoroutine(self.coalescer.submit(["r2"], hold=True))
        self.coalescer.flush()
        self.assertEqual(self.endpoint.calls, [["r1"]])
        self.endpoint.answers[0].callback(None)
        self.successResultOf(first)
        self.assertEqual(self.endpoint.calls, [["r1"], ["r2"]])
        self.assertNoResult(held)
        self.endpoint.answers[1].callback(None)
        self.successResultOf(held)
