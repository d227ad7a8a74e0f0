"""What every program does once started (xwch/startup.py)."""

from __future__ import annotations

import resource

from xwch.startup import OPEN_FILES_WANTED, raise_open_file_limit


class Limits:
    """Stands in for getrlimit/setrlimit."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not permitted")
        self.soft, self.hard = limits


def test_the_soft_limit_rises_to_the_hard_one() -> None:
    limits = Limits(1024, 4096)
    assert raise_open_file_limit(limits.get, limits.set) == 4096
    assert (limits.soft, limits.hard) == (4096, 4096)


def test_a_high_hard_limit_is_not_taken_whole() -> None:
    limits = Limits(1024, resource.RLIM_INFINITY)
    assert raise_open_file_limit(limits.get, limits.set) == OPEN_FILES_WANTED


def test_a_soft_limit_already_high_is_left_alone() -> None:
    limits = Limits(100_000, 200_000)
    assert raise_open_file_limit(limits.get, limits.set) == 100_000
    assert limits.soft == 100_000


def test_a_refusal_keeps_the_limit_as_it_was() -> None:
    limits = Limits(1024, 4096, refuse=True)
    assert raise_open_file_limit(limits.get, limits.set) == 1024


def test_the_real_limit_is_raised_within_what_is_allowed() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        now = raise_open_file_limit()
        assert now >= soft
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
