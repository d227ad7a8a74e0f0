"""W1 on each store: one coordinator on SQLite against one on PostgreSQL, in the same run.

    .venv/bin/python bench/store_backends.py [--tasks 2000] [--rounds 3] [--postgres URL]

Runs bench/throughput.py's job (N trivial native tasks, 2 workers x 2 slots) on a fresh
xwch-local with its default SQLite store, then on a fresh PostgreSQL database (made for the
round, dropped after), alternating, and prints each round and the medians. The goal: PostgreSQL
no more than 10% below SQLite. Asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import build_native, compile_bytecode, time_xwch

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    """The ``postgresql://`` URL of a new empty database, dropped afterwards."""
    name = "xwch_bench_" + secrets.token_hex(4)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        base = admin_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=ADMIN, help="an admin URL that may create databases")
    args = parser.parse_args()
    build_native()
    compile_bytecode()
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for round_number in range(1, args.rounds + 1):
        for store in ("sqlite", "postgresql"):
            if store == "sqlite":
                timing = time_xwch(args.tasks, args.workers, args.slots)
            else:
                with fresh_postgres(args.postgres) as url:
                    timing = time_xwch(args.tasks, args.workers, args.slots, ["--db", url])
            rate = args.tasks / timing.total
            rates[store].append(rate)
            print(
                f"round {round_number} {store:<10} {rate:7.1f} tasks/s  "
                f"({timing.state}, {timing.done} done, {timing.total:.2f} s)",
                flush=True,
            )
    sqlite, postgres = (statistics.median(rates[s]) for s in ("sqlite", "postgresql"))
    print(f"median sqlite:      {sqlite:.1f} tasks/s")
    print(f"median postgresql:  {postgres:.1f} tasks/s ({postgres / sqlite:.2f}x sqlite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
