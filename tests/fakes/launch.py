"""A fake of ``xwch.detached.Launch``: remembers what it was asked to start, starts nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xwch.detached import Ended


@dataclass
class Started:
    argv: list[str]
    log: Path
    env: dict[str, str]
    on_end: Callable[[Ended], None]
    pid: int

    def end(self, status: int | None = 0, signal: int | None = None) -> None:
        """As if the process ended now."""
        self.on_end(Ended(self.pid, status, signal))


@dataclass
class FakeLaunch:
    started: list[Started] = field(default_factory=list)
    # Set to make the next starts fail as an exec that cannot find its program would.
    refuse: OSError | None = None

    def __call__(
        self,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        on_end: Callable[[Ended], None],
    ) -> int:
        if self.refuse is not None:
            raise self.refuse
        started = Started(list(argv), log, dict(env), on_end, 1000 + len(self.started))
        self.started.append(started)
        return started.pid
