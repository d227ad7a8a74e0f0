"""The attempt ledger: the running attempts by id, worker, task and job; the lost; the killed."""

from __future__ import annotations

import pytest

from xwch.coordinator.attempts import Attempt, AttemptLedger, NotYourAttempt


def attempt(attempt_id: str, task: str = "t1", worker: str = "w1", job: str = "j1") -> Attempt:
    return Attempt(attempt_id, job, task, 1, worker, started=0.0)


def test_a_started_attempt_is_found_by_id_worker_task_and_job() -> None:
    ledger = AttemptLedger()
    a = attempt("a1")
    ledger.started(a)
    assert ledger["a1"] is a and "a1" in ledger and len(ledger) == 1
    assert ledger.running_on("w1") == ["a1"]
    assert set(ledger.of_task("j1", "t1")) == {"a1"}
    assert set(ledger.of_job("j1")) == {"a1"}
    assert ledger.workers_of("j1", "t1") == {"w1"}


def test_an_ended_attempt_is_in_no_index_any_more() -> None:
    ledger = AttemptLedger()
    a, b = attempt("a1"), attempt("a2", task="t2")
    ledger.started(a)
    ledger.started(b)
    assert ledger.ended(a)
    assert "a1" not in ledger
    assert ledger.running_on("w1") == ["a2"]
    assert not ledger.of_task("j1", "t1")
    assert set(ledger.of_job("j1")) == {"a2"}
    # Ending it twice changes nothing.
    assert not ledger.ended(a)


def test_attempts_of_several_workers_are_listed_in_the_order_they_started() -> None:
    ledger = AttemptLedger()
    for n, worker in enumerate(["w2", "w1", "w3", "w1"]):
        ledger.started(attempt(f"a{n}", task=f"t{n}", worker=worker))
    assert [a.id for a in ledger.on_workers({"w1", "w2"})] == ["a0", "a1", "a3"]


def ended(ledger: AttemptLedger, attempt_id: str) -> Attempt:
    """An attempt that ran in ``ledger`` and ended."""
    a = attempt(attempt_id)
    ledger.started(a)
    ledger.ended(a)
    return a


def test_a_worker_is_told_once_which_attempts_to_kill() -> None:
    ledger = AttemptLedger()
    ledger.kill(ended(ledger, "a1"))
    assert ledger.to_kill("w1") == {"a1"}
    assert ledger.to_kill("w1") == set()


def test_a_lost_worker_is_told_nothing_more() -> None:
    ledger = AttemptLedger()
    a = attempt("a1")
    ledger.kill(a)
    ledger.worker_gone("w1")
    assert ledger.to_kill("w1") == set()


def test_an_attempt_presumed_lost_may_run_again_on_its_worker_under_a_new_id() -> None:
    ledger = AttemptLedger()
    a = ended(ledger, "a1")
    ledger.presume_lost(a)
    assert ledger.lost("a1") is a and "a1" not in ledger
    again = ledger.readopt("a1", "w1-again")
    assert again is a and a.worker_id == "w1-again"
    assert ledger.running_on("w1-again") == ["a1"] and ledger.running_on("w1") == []
    assert ledger.lost("a1") is None


def test_the_lost_attempts_of_an_ended_job_are_forgotten() -> None:
    ledger = AttemptLedger()
    ledger.presume_lost(attempt("a1"))
    ledger.presume_lost(attempt("a2", job="j2"))
    ledger.job_over("j1")
    assert ledger.lost("a1") is None
    assert ledger.lost("a2") is not None


def test_a_worker_speaking_of_another_workers_attempt_is_refused() -> None:
    ledger = AttemptLedger()
    ledger.started(attempt("a1"))
    assert ledger.attempt_of("a1", "w1") is ledger["a1"]
    assert ledger.attempt_of("gone", "w1") is None
    with pytest.raises(NotYourAttempt):
        ledger.attempt_of("a1", "w2")
