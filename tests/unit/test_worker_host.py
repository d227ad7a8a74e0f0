"""What a worker tells of its machine: host facts and the performance figure."""

from __future__ import annotations

import ipaddress
import re

import pytest

from xwch.protocol.codec import convert
from xwch.protocol.worker import HostFacts
from xwch.worker.benchmark import measure_performance
from xwch.worker.host import platform_name, probe_host


def test_host_facts_are_plausible() -> None:
    """The registered facts name this machine, an IPv4 address, its cores and its memory."""
    host = probe_host()
    assert host.name
    assert isinstance(ipaddress.ip_address(host.address), ipaddress.IPv4Address)
    assert 1 <= host.cores <= 4096
    assert host.memory > 64 * 1024 * 1024
    facts = host.facts(slots=2, performance=1.0, site="lab")
    # What a worker sends is what the coordinator accepts.
    assert convert(facts.to_json(), HostFacts, "register") == facts


def test_platform_names_follow_the_job_file_format() -> None:
    """Platform names are <os>-<machine> in lower case, as job files spell them."""
    assert re.fullmatch(r"[a-z0-9_]+-[a-z0-9_]+", probe_host().platform)
    assert platform_name("Linux", "x86_64") == "linux-x86_64"
    assert platform_name("Darwin", "arm64") == "darwin-arm64"
    assert platform_name("Windows", "AMD64") == "windows-amd64"
    assert platform_name("Linux", "aarch64") == "linux-aarch64"


def test_benchmark_gives_a_positive_figure() -> None:
    """The performance figure is a positive number, whatever the machine."""
    assert measure_performance() > 0


def test_benchmark_scales_with_time() -> None:
    """A machine twice as slow gets half the figure."""
    ticks = iter([0.0, 1.0, 10.0, 12.0])
    fast = measure_performance(rounds=10, repeats=1, clock=lambda: next(ticks))
    slow = measure_performance(rounds=10, repeats=1, clock=lambda: next(ticks))
    assert fast > 0
    assert fast == pytest.approx(2 * slow)
