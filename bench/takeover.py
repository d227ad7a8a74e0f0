"""Takeover: SIGKILL (or SIGTERM) the member holding the most groups mid-job, on PostgreSQL.

    .venv/bin/python bench/takeover.py [--rounds 3] [--lease 10] [--groups 4] [--tasks 80]
                                       [--seconds 0.5] [--signal KILL|TERM]

Each round starts a fresh xwch-local with two coordinators sharing ``--groups`` logical groups
on a fresh PostgreSQL database (made for the round, dropped after), 4 workers of 1 slot and one
warehouse; waits until both members hold groups; submits a job of N tasks that each sleep S
seconds; once a quarter of the tasks are done, SIGKILLs the member holding the most groups
(ties: the one holding the job's group, ``jobs.grp``); and reads from the store: seconds from
the kill until every group the killed member held is held again by the other (live) member,
until the first result recorded after the kill, and until the first attempt *started* after
the kill has ended; and attempts per task. Goal: groups held again within --lease + 2 s.
Asserts nothing. ``--signal TERM`` stops that member cleanly instead (a planned restart): it
lets its groups go and says so, and the other member takes them at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_backends import ADMIN, fresh_postgres
from xwch.localprocess import LocalPlatformProcess
from xwch.store.group_locks import GroupLock, locks_thd
from xwch.store.placement import group_of
from xwch.store.schema import attempts, coordinators, jobs

T = TypeVar("T")
POLL = 0.05


def poll(check: Callable[[], T | None], timeout: float = 300.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(POLL)
    raise RuntimeError("timed out")


def job(folder: Path, tasks: int, seconds: float) -> Path:
    program = folder / "sleepy.sh"
    program.write_text(f'#!/bin/sh\nsleep {seconds}\necho "$1" > "$2"\n')
    program.chmod(0o755)
    path = folder / "dag.json"
    path.write_text(
        json.dumps(
            {
                "name": "takeover",
                "binaries": {"sleepy": str(program)},
                "tasks": [
                    {
                        "id": "t-{i}",
                        "foreach": {"i": {"range": [0, tasks]}},
                        "binary": "sleepy",
                        "args": ["{i}", "out.txt"],
                        "outputs": ["out.txt"],
                    }
                ],
            }
        )
    )
    return path


def held_by(locks: list[GroupLock]) -> dict[str, set[str]]:
    """Member id -> the groups its lease still holds."""
    holders: dict[str, set[str]] = {}
    for lock in locks:
        if lock.held and lock.holder is not None:
            holders.setdefault(lock.holder, set()).add(lock.id)
    return holders


def one_round(
    lease: float, groups: int, tasks: int, seconds: float, stop: int
) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="xwch-takeover-") as tmp, fresh_postgres(ADMIN) as url:
        folder = Path(tmp)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))

        def locks() -> list[GroupLock]:
            with engine.connect() as conn:
                return locks_thd(conn, time.time())

        platform = LocalPlatformProcess(
            folder / "home",
            workers=4,
            slots=1,
            warehouses=1,
            extra=[
                "--coordinators",
                "2",
                "--db",
                url,
                "--lease",
                str(lease),
                "--groups",
                str(groups),
            ],
        )
        platform.start()
        try:
            poll(lambda: True if len(held_by(locks())) >= 2 else None, timeout=60.0)
            submitted = subprocess.run(
                [sys.executable, "-m", "xwch.client", "submit", str(job(folder, tasks, seconds))],
                env=platform.env(),
                capture_output=True,
                text=True,
                check=True,
            )
            assert submitted.stdout.strip()

            def succeeded() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.execute(
                            sa.select(sa.func.count()).where(attempts.c.state == "succeeded")
                        ).scalar()
                        or 0
                    )

            poll(lambda: True if succeeded() >= tasks // 4 else None)

            with engine.connect() as conn:
                job_group = str(conn.execute(sa.select(group_of(jobs.c.grp))).scalar_one())
                urls = {r.id: r.url for r in conn.execute(sa.select(coordinators))}
            holders = held_by(locks())
            victim = max(holders, key=lambda m: (len(holders[m]), job_group in holders[m], m))
            lost = holders[victim]
            [child] = [
                c
                for c in platform.state()["coordinators"]
                if c["url"].rstrip("/") == urls[victim].rstrip("/")
            ]
            killed = time.time()
            os.kill(child["pid"], stop)

            def held_again() -> float | None:
                now = time.time()
                by_group = {lock.id: lock for lock in locks()}
                for group in lost:
                    lock = by_group[group]
                    if not lock.held or lock.holder in (None, victim):
                        return None
                return now

            held = poll(held_again)

            def first_after(started_after: bool) -> float | None:
                query = sa.select(sa.func.min(attempts.c.ended)).where(
                    attempts.c.state == "succeeded", attempts.c.ended > killed
                )
                if started_after:
                    query = query.where(attempts.c.started > killed)
                with engine.connect() as conn:
                    value = conn.execute(query).scalar()
                return None if value is None else float(value)

            recorded = poll(lambda: first_after(False))
            new_attempt = poll(lambda: first_after(True))
            poll(lambda: True if succeeded() >= tasks else None)
            with engine.connect() as conn:
                total = int(
                    conn.execute(sa.select(sa.func.count()).select_from(attempts)).scalar() or 0
                )
        finally:
            platform.stop()
            engine.dispose()
    return {
        "held": held - killed,
        "recorded": recorded - killed,
        "new_attempt": new_attempt - killed,
        "attempts_per_task": total / tasks,
        "lost": ",".join(sorted(lost)),
        "job_group": job_group,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--signal", choices=("KILL", "TERM"), default="KILL")
    args = parser.parse_args()
    stop = signal.Signals["SIG" + args.signal]
    rounds = []
    for number in range(1, args.rounds + 1):
        figures = one_round(args.lease, args.groups, args.tasks, args.seconds, stop)
        rounds.append(figures)
        print(
            f"round {number}: SIG{args.signal} to the member holding {figures['lost']} (job in "
            f"{figures['job_group']}); groups held again after {figures['held']:.2f} s, first "
            f"result recorded after {figures['recorded']:.2f} s, first new attempt ended after "
            f"{figures['new_attempt']:.2f} s, {figures['attempts_per_task']:.3f} attempts/task",
            flush=True,
        )
    for key, label in (
        ("held", "groups held again (s)"),
        ("recorded", "first result recorded (s)"),
        ("new_attempt", "first new attempt ended (s)"),
        ("attempts_per_task", "attempts per task"),
    ):
        values = [float(r[key]) for r in rounds]
        print(f"median {label:<30} {statistics.median(values):.3f}")
    print(f"goal: groups held again within lease + 2 = {args.lease + 2:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
