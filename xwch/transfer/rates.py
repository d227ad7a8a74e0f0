"""Rates as people write them: ``500k``, ``2.5M``, ``1MiB``, ``40mbit`` (per second)."""

from __future__ import annotations

import re

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b|bit|bps)?(?:/s)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_rate(text: str) -> float:
    """Bytes per second from ``text``; ValueError if it is not a positive rate.

    A bare number is bytes per second. ``k``, ``M``, ``G`` are powers of 1000, ``Ki``, ``Mi``,
    ``Gi`` of 1024; a trailing ``B`` (or nothing) means bytes, ``bit`` or ``bps`` bits.
    """
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (try 500k, 2.5M, 1MiB or 40mbit)")
    number, prefix, binary, unit = match.groups()
    base = 1024 if binary else 1000
    value = float(number) * float(base ** _POWERS[prefix.lower()])
    if unit is not None and unit.lower() in ("bit", "bps"):
        value /= 8
    if not value > 0:
        raise ValueError(f"a rate must be positive: {text!r}")
    return value


def format_rate(rate: float | None) -> str:
    """``rate`` bytes/s for people: ``4.2 MB/s``; ``-`` when unknown."""
    if rate is None:
        return "-"
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if abs(rate) < 1000 or unit == "GB/s":
            return f"{rate:.0f} {unit}" if unit == "B/s" else f"{rate:.1f} {unit}"
        rate /= 1000
    return f"{rate:.1f} GB/s"
