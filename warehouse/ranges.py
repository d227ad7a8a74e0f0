"""The one kind of ``Range`` header the warehouse serves: a single span of bytes."""

from __future__ import annotations

import re

from .answers import Refusal

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The (first, last) byte of a ``Range: bytes=a-b`` header, clamped to the object."""
    match = _RANGE.match(header.strip())
    if not match or not (match[1] or match[2]):
        raise Refusal(400, "bad_request", f"Range: expected bytes=FIRST-LAST, got {header!r}")
    if not match[1]:
        # bytes=-n: the last n bytes.
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise Refusal(416, "bad_request", f"Range: {header!r} selects no byte")
        return max(0, size - suffix), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else max(first, size - 1)
    if last < first:
        raise Refusal(400, "bad_request", f"Range: last byte before first in {header!r}")
    if first >= size:
        raise Refusal(416, "bad_request", f"Range: {header!r} starts past the {size} bytes")
    return first, min(last, size - 1)
