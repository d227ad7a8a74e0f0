"""The coordinator's Prometheus metrics, every name starting ``xwch_``.

Two kinds. Events (attempts started and ended, bytes moved, Work Request and commit latencies)
are counted as they happen, by prometheus_client's counters and histograms. States (jobs,
tasks, workers and slots by state, the network's load and policy, the scanner's repairs, the
coordinators and their groups) are read when Prometheus scrapes, from a :class:`PlatformState`
taken just before: never kept twice, so never out of step with what the API answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Work Requests are answered in milliseconds when the platform is well; the upper buckets show
# a coordinator under strain (admission control starts refusing near a second).
WORK_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A group commit is one fsync on SQLite (a few ms) to a round trip and more on PostgreSQL.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class PlatformState:
    """What the platform is, as of the last scrape."""

    jobs: Mapping[str, int] = field(default_factory=dict)
    tasks: Mapping[str, int] = field(default_factory=dict)
    workers: Mapping[str, int] = field(default_factory=dict)
    slots_busy: int = 0
    slots_total: int = 0
    warehouses: Mapping[str, int] = field(default_factory=dict)
    network_load: float = 0.0
    packet_size: int = 0
    packet_sleep: float = 0.0
    max_transfers: int = 0
    repairs: Mapping[str, int] = field(default_factory=dict)
    # Coordinator id -> (state, groups held).
    coordinators: Mapping[str, tuple[str, int]] = field(default_factory=dict)


class _StateCollector(Collector):
    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        s = self._metrics.state
        yield _by_label("xwch_jobs", "Jobs by state", "state", s.jobs)
        yield _by_label("xwch_tasks", "Tasks of running jobs by state", "state", s.tasks)
        yield _by_label("xwch_workers", "Workers by state", "state", s.workers)
        yield _by_label(
            "xwch_slots",
            "Slots of live workers, busy or free",
            "state",
            {"busy": s.slots_busy, "free": max(0, s.slots_total - s.slots_busy)},
        )
        yield _by_label("xwch_warehouses", "Warehouses, alive or not", "state", s.warehouses)
        yield _gauge("xwch_network_load", "Sensed network load, 0 (quiet) to 1", s.network_load)
        yield _gauge("xwch_policy_packet_size_bytes", "Packet size in force", s.packet_size)
        yield _gauge("xwch_policy_packet_sleep_seconds", "Pause between packets", s.packet_sleep)
        yield _gauge("xwch_policy_max_transfers", "Transfers at once per party", s.max_transfers)
        repairs = CounterMetricFamily(
            "xwch_scanner_repairs", "Repairs made by the scanner, by kind", labels=["kind"]
        )
        for kind, count in sorted(s.repairs.items()):
            repairs.add_metric([kind], count)
        yield repairs
        members = GaugeMetricFamily(
            "xwch_coordinator_groups",
            "Groups of workers each coordinator holds",
            labels=["coordinator", "state"],
        )
        for member, (state, groups) in sorted(s.coordinators.items()):
            members.add_metric([member, state], groups)
        yield members


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_label(
    name: str, documentation: str, label: str, values: Mapping[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class CoordinatorMetrics:
    """The registry of one coordinator (not the library's global one: tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.attempts_started = Counter(
            "xwch_attempts_started", "Attempts handed to workers", registry=r
        )
        self.attempts_succeeded = Counter(
            "xwch_attempts_succeeded", "Attempts reported succeeded and taken", registry=r
        )
        self.attempts_failed = Counter(
            "xwch_attempts_failed", "Attempts reported failed", registry=r
        )
        self.transfer_bytes = Counter(
            "xwch_transfer_bytes",
            "Bytes workers moved, by direction and the worker's site",
            ["direction", "site"],
            registry=r,
        )
        self.work_request_seconds = Histogram(
            "xwch_work_request_seconds",
            "Time to answer a Work Request (waiting for work excluded)",
            buckets=WORK_REQUEST_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "xwch_store_commit_seconds",
            "Time of one group commit of the store",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.state = PlatformState()
        r.register(_StateCollector(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
