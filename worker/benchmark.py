"""A short CPU benchmark giving the worker's performance figure, measured once at start.

The scheduler gives bigger tasks to faster workers, so it needs one number per worker that ranks
single-core speed. A fixed mix of integer and floating-point work in pure Python is enough for a
ranking: it runs the same everywhere, needs no compiler, and takes a fraction of a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Operations of one round of the loop below (an add, a multiply, a xor and a modulo on integers;
# a multiply-add and a division on floats), counted to turn time into operations per second.
OPERATIONS_PER_ROUND = 6
ROUNDS = 200_000
# Best of several short runs: the best one is the least disturbed by other processes.
REPEATS = 5
# Operations per second of CPython 3.11 on one core of a typical 2020 machine, so that such a core
# scores about 1.0. Calibrated on a virtual AMD EPYC core (3.9e7 operations per second; the whole
# measurement takes about 0.15 s there). Only the ranking between workers matters.
REFERENCE_OPS_PER_SECOND = 4.0e7


def _work(rounds: int) -> float:
    acc = 1
    x = 1.0
    for i in range(rounds):
        acc = (acc * 31 + i) ^ (acc >> 3)
        acc %= 1_000_003
        x = x * 1.000001 + 0.5
        x /= 1.0000003
    # Returned so that no interpreter could ever skip the loop as dead code.
    return acc + x


def measure_performance(
    rounds: int = ROUNDS,
    repeats: int = REPEATS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """This machine's single-core speed relative to a typical 2020 core (about 1.0 there)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = clock()
        _work(rounds)
        best = min(best, clock() - start)
    # A coarse clock can measure 0 for a tiny run; one tick is the honest lower bound.
    best = max(best, 1e-9)
    return rounds * OPERATIONS_PER_ROUND / best / REFERENCE_OPS_PER_SECOND
