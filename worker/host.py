"""What a worker tells the coordinator about its machine: name, address, platform, cores, memory."""

from __future__ import annotations

import ipaddress
import os
import platform
import socket
from dataclasses import dataclass

import psutil

from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import HostFacts

LOOPBACK_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Host:
    """The facts of this machine that do not depend on the worker's settings."""

    name: str
    address: str
    platform: str
    cores: int
    memory: int

    def facts(self, slots: int, performance: float, site: str | None = None) -> HostFacts:
        """The Register Request body for a worker with these settings on this host."""
        return HostFacts(
            name=self.name,
            address=self.address,
            platform=self.platform,
            cores=self.cores,
            memory=self.memory,
            slots=slots,
            performance=performance,
            site=site,
            protocol=PROTOCOL_VERSION,
        )


def probe_host() -> Host:
    """This machine's facts, read once at start."""
    return Host(
        name=socket.gethostname() or platform.node() or "localhost",
        address=primary_address(),
        platform=platform_name(),
        cores=usable_cores(),
        memory=psutil.virtual_memory().total,
    )


def platform_name(system: str | None = None, machine: str | None = None) -> str:
    """``<os>-<machine>`` lower case, the names job files use (``linux-x86_64``, ``darwin-arm64``)."""
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    return f"{system.lower() or 'unknown'}-{machine.lower() or 'unknown'}"


def usable_cores() -> int:
    """Logical CPUs this process may run on.

    The affinity mask rather than the machine's count: a worker pinned to some CPUs (taskset, a
    container's cpuset) should not offer the others as slots.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, psutil.cpu_count(logical=True) or 1)


def primary_address() -> str:
    """The first IPv4 address of an interface that is up, not loopback nor link-local.

    Only informative (``xwch-client workers`` shows it): workers only ever open connections, so a
    wrong guess on a machine with several interfaces does no harm.
    """
    try:
        stats = psutil.net_if_stats()
        interfaces = psutil.net_if_addrs()
    except OSError:
        return LOOPBACK_ADDRESS
    for name, addresses in interfaces.items():
        if name in stats and not stats[name].isup:
            continue
        for entry in addresses:
            if entry.family != socket.AF_INET:
                continue
            try:
                address = ipaddress.IPv4Address(entry.address)
            except ValueError:
                continue
            if address.is_loopback or address.is_link_local or address.is_unspecified:
                continue
            return str(address)
    return LOOPBACK_ADDRESS
