"""A second SIGTERM or SIGINT while the reactor stops is ignored (no ReactorNotRunning)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from xwch.startup import stop_once_on_signals


class FakeReactor:
    def __init__(self) -> None:
        self.told: list[str] = []

    def sigTerm(self, number: int, frame: object) -> None:
        self.told.append("term")

    def sigInt(self, number: int, frame: object) -> None:
        self.told.append("int")


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("restored_handlers")
def test_the_first_signal_stops_and_the_others_are_ignored() -> None:
    reactor = FakeReactor()
    stop_once_on_signals(reactor)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # type: ignore[operator]
    assert reactor.told == ["term"]


@pytest.mark.usefixtures("restored_handlers")
def test_ctrl_c_stops_as_sigint() -> None:
    reactor = FakeReactor()
    stop_once_on_signals(reactor)
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # type: ignore[operator]
    assert reactor.told == ["int"]
