"""The store's tables (SQLAlchemy Core) and the migrations that bring a database to them.

Every change of schema adds a step to ``MIGRATIONS``; ``migrate_thd`` runs the steps a database
lacks, in one transaction each, and records the version reached.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Only the token's SHA-256 is kept: a leaked database does not leak credentials.
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("owner", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("message", sa.Text),
    # The job's wire form (JSON): the coordinator rebuilds its DAG from it after a restart.
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    # The logical group whose holder runs it (version 9); null: the first group, g1.
    sa.Column("grp", sa.String(32)),
)
sa.Index("jobs_by_state", jobs.c.state)
sa.Index("jobs_by_created", jobs.c.created)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("task_id", sa.String(128), primary_key=True),
    # Index in the job's topological order, so listings keep the order of the job file.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(128)),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    # When the task's last checkpoint was recorded (version 6); None: never.
    sa.Column("checkpointed", sa.Float),
)
sa.Index("tasks_by_state", tasks.c.job_id, tasks.c.state)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("task_id", sa.String(128), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("stdout", sa.Text, nullable=False, default=""),
    sa.Column("stderr", sa.Text, nullable=False, default=""),
    # A duplicate of a slow attempt near the end of its job (version 2).
    sa.Column("speculative", sa.Boolean, nullable=False, server_default=sa.false()),
    # The checkpoint lineage it continues (version 8) when its task is replicated and keeps
    # checkpoints: the number of the attempt that opened it (see coordinator/lineages.py);
    # else 0.
    sa.Column("lineage", sa.Integer, nullable=False, server_default="0"),
    # One attempt number per task: a second insert of the same attempt is a bug, not a retry.
    sa.UniqueConstraint("job_id", "task_id", "number", name="attempts_unique_number"),
)
sa.Index("attempts_by_task", attempts.c.job_id, attempts.c.task_id)
sa.Index("attempts_by_state", attempts.c.state)

outputs = sa.Table(
    "outputs",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("task_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

# The checkpoints saved for running tasks (version 6), the latest few per task and lineage:
# ``chunks`` is the JSON list of the chunk digests its manifest names (what to keep at
# warehouses, and what to drop once no checkpoint names them). ``seq`` grows across the task's
# lineages, so it stays the key; ``lineage`` (version 8) is the replica whose checkpoints they
# are (0: the one lineage of a task not replicated).
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("task_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("manifest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("content", sa.BigInteger, nullable=False),
    sa.Column("chunks", sa.Text, nullable=False),
    sa.Column("taken", sa.Float, nullable=False),
    sa.Column("lineage", sa.Integer, nullable=False, server_default="0"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("platform", sa.String(64), nullable=False),
    sa.Column("cores", sa.Integer, nullable=False),
    sa.Column("memory", sa.BigInteger, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("performance", sa.Float, nullable=False),
    sa.Column("site", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("registered", sa.Float, nullable=False),
    sa.Column("last_heard", sa.Float, nullable=False),
    sa.Column("tasks_done", sa.Integer, nullable=False, default=0),
    # The public keys whose signed programs alone it runs, space-separated; null: any program
    # (version 5).
    sa.Column("trusted_keys", sa.Text),
    # The logical group it belongs to (version 9): the membership store; null: g1.
    sa.Column("grp", sa.String(32)),
)

warehouses = sa.Table(
    "warehouses",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.String(512), nullable=False, unique=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("capacity", sa.BigInteger, nullable=False),
    sa.Column("free", sa.BigInteger, nullable=False),
    sa.Column("registered", sa.Float, nullable=False),
    sa.Column("last_heard", sa.Float, nullable=False),
)

object_locations = sa.Table(
    "object_locations",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("warehouse_id", sa.String(32), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
)

# Small objects (protocol.INLINE_MOST) the coordinator keeps itself instead of a warehouse.
inline_objects = sa.Table(
    "inline_objects",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


# The coordinators sharing this store (several only on PostgreSQL): each renews its row; one
# silent past the lease is lost. Times are the database's clock, so members' clocks may differ.
coordinators = sa.Table(
    "coordinators",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("last_heard", sa.Float, nullable=False),
    # What the member told at its last renewal, for `xwch-client coordinators`.
    sa.Column("workers", sa.Integer, nullable=False, default=0),
    sa.Column("running", sa.Integer, nullable=False, default=0),
)


# The lock of each logical group of workers: held by one coordinator at a time under a lease
# (expires, by the database's clock); the epoch grows each time the lock changes hands.
group_locks = sa.Table(
    "group_locks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(32)),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("expires", sa.Float),
)

# Each worker's record in votes on replicated results (xwch.coordinator.reliability), under its
# lasting identity (token and name), so trust and distrust outlive registrations and restarts.
worker_reliability = sa.Table(
    "worker_reliability",
    metadata,
    sa.Column("identity", sa.String(300), primary_key=True),
    sa.Column("agreed", sa.Integer, nullable=False),
    sa.Column("disagreed", sa.Integer, nullable=False),
    sa.Column("streak", sa.Integer, nullable=False),
    sa.Column("distrusted", sa.Boolean, nullable=False),
)


def _create_v1(conn: sa.Connection) -> None:
    metadata.create_all(conn)
    # The key that signs warehouse capabilities; made once, kept with the data it protects.
    conn.execute(settings.insert().values(key="capability_key", value=secrets.token_hex(32)))


def _speculative_attempts_v2(conn: sa.Connection) -> None:
    # A database made by version 1's create_all lacks the column; one made since has it.
    columns = {c["name"] for c in sa.inspect(conn).get_columns("attempts")}
    if "speculative" not in columns:
        conn.execute(
            sa.text("ALTER TABLE attempts ADD COLUMN speculative BOOLEAN NOT NULL DEFAULT FALSE")
        )


def _inline_objects_v3(conn: sa.Connection) -> None:
    # Made by create_all in a database created since; added to an older one.
    inline_objects.create(conn, checkfirst=True)


def _coordinators_v4(conn: sa.Connection) -> None:
    coordinators.create(conn, checkfirst=True)
    group_locks.create(conn, checkfirst=True)


def _worker_trusted_keys_v5(conn: sa.Connection) -> None:
    # What a worker trusts outlives the coordinator that registered it: another member taking
    # over, or this one restarted, offers it only the work it accepts.
    columns = {c["name"] for c in sa.inspect(conn).get_columns("workers")}
    if "trusted_keys" not in columns:
        conn.execute(sa.text("ALTER TABLE workers ADD COLUMN trusted_keys TEXT"))


def _checkpoints_v6(conn: sa.Connection) -> None:
    checkpoints.create(conn, checkfirst=True)
    columns = {c["name"] for c in sa.inspect(conn).get_columns("tasks")}
    if "checkpointed" not in columns:
        conn.execute(sa.text("ALTER TABLE tasks ADD COLUMN checkpointed FLOAT"))


def _worker_reliability_v7(conn: sa.Connection) -> None:
    worker_reliability.create(conn, checkfirst=True)


def _checkpoint_lineages_v8(conn: sa.Connection) -> None:
    # Replicas keep checkpoints apart: attempts say which lineage they continue, checkpoints
    # which lineage they belong to. What a store had before was of tasks not replicated: 0.
    for table in ("attempts", "checkpoints"):
        columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        if "lineage" not in columns:
            conn.execute(
                sa.text(f"ALTER TABLE {table} ADD COLUMN lineage INTEGER NOT NULL DEFAULT 0")
            )


def _groups_v9(conn: sa.Connection) -> None:
    # Jobs and workers are spread over logical groups; what a store had before ran in g1.
    for table in ("jobs", "workers"):
        columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        if "grp" not in columns:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN grp VARCHAR(32)"))


MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _create_v1,
    _speculative_attempts_v2,
    _inline_objects_v3,
    _coordinators_v4,
    _worker_trusted_keys_v5,
    _checkpoints_v6,
    _worker_reliability_v7,
    _checkpoint_lineages_v8,
    _groups_v9,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer XWCH than this one."""


def current_version_thd(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    version = conn.execute(sa.select(schema_version.c.version)).scalar()
    return int(version or 0)


# The PostgreSQL advisory lock that lets one coordinator at a time migrate a shared store
# (several started at once would each create the same tables). Any fixed number: "XWCH".
MIGRATION_LOCK = 0x58574348


def migrate_thd(engine: sa.Engine) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return the version it had before."""
    with engine.connect() as guard:
        shared = engine.dialect.name == "postgresql"
        if shared:
            guard.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            return _migrate_thd(engine)
        finally:
            if shared:
                guard.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})


def _migrate_thd(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        before = current_version_thd(conn)
    if before > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {before}; this XWCH knows up to {SCHEMA_VERSION}"
        )
    for version in range(before, SCHEMA_VERSION):
        with engine.begin() as conn:
            MIGRATIONS[version](conn)
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=version + 1))
    return before
