"""Minimum and maximum of a signal over a sliding window, in a few bytes of memory.

The window is cut into buckets of ``bucket`` seconds; each keeps the extreme of the samples that
fell in it, and only the last ``buckets`` are kept. This is RFC 6817's base-delay history (the
minima of the last ten minutes, one a minute): a sample older than the window is forgotten, so an
estimate follows a route that changed, and memory stays fixed however many samples arrive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class WindowedExtreme:
    """The minimum (or maximum) of the samples of the last ``bucket * buckets`` seconds."""

    def __init__(
        self, bucket: float, buckets: int, pick: Callable[[float, float], float] = min
    ) -> None:
        if bucket <= 0 or buckets < 1:
            raise ValueError("a window needs a positive bucket length and at least one bucket")
        self._bucket = bucket
        self._buckets = buckets
        self._pick = pick
        # (index of the bucket = floor(time / bucket), extreme of its samples), oldest first.
        self._history: deque[tuple[int, float]] = deque()

    def add(self, value: float, now: float) -> None:
        index = int(now // self._bucket)
        if self._history and self._history[-1][0] == index:
            self._history[-1] = (index, self._pick(self._history[-1][1], value))
        else:
            self._history.append((index, value))
        self._forget(index)

    def value(self, now: float | None = None) -> float | None:
        """The extreme over the window (``now`` ages it first), or None without samples."""
        if now is not None:
            self._forget(int(now // self._bucket))
        if not self._history:
            return None
        result = self._history[0][1]
        for _, v in self._history:
            result = self._pick(result, v)
        return result

    def _forget(self, index: int) -> None:
        while self._history and self._history[0][0] <= index - self._buckets:
            self._history.popleft()


def windowed_min(bucket: float, buckets: int) -> WindowedExtreme:
    return WindowedExtreme(bucket, buckets, min)


def windowed_max(bucket: float, buckets: int) -> WindowedExtreme:
    return WindowedExtreme(bucket, buckets, max)
