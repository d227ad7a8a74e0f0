"""``xwch-client network``: the communication manager's view, as text.

The coordinator's ``GET /api/v1/status`` carries the policy in force, the admission limits and
queue lengths, every warehouse's transfer sessions, and the estimate of each link (capacity,
XWCH's traffic, others' traffic, delays, load). This module turns that document into lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xwch.protocol.codec import ProtocolError
from xwch.transfer.rates import format_rate

from .humane import NOTHING, format_ago, format_bytes
from .tables import Column, render_table

LINK_COLUMNS = (
    Column("LINK"),
    Column("KIND"),
    Column("CAPACITY", right=True),
    Column("XWCH", right=True),
    Column("OTHER", right=True),
    Column("RTT", right=True),
    Column("QUEUE", right=True),
    Column("LOAD", right=True),
    Column("HEARD"),
)


def _object(doc: object, where: str) -> Mapping[str, Any]:
    # The status document is a view for people, free to grow: read as it is, checked as used.
    if not isinstance(doc, dict):
        raise ProtocolError(f"{where}: expected a JSON object")
    return doc


def communication_of(status: object) -> Mapping[str, Any]:
    """The ``communication`` part of a status document."""
    return _object(_object(status, "status").get("communication"), "communication")


def _ms(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return NOTHING
    return f"{seconds * 1000:.0f}ms"


def _rate(value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return NOTHING
    return format_rate(float(value))


def network_text(status: object, now: float) -> str:
    """The policy, limits, sessions and links of a status document, for people."""
    comm = communication_of(status)
    policy = _object(comm.get("policy"), "communication.policy")
    try:
        size = int(policy["packet_size"])
        sleep = float(policy["packet_sleep"])
        transfers = int(policy["max_transfers"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("communication.policy: expected a policy") from None
    pause = f"{sleep * 1000:.0f}ms apart" if sleep > 0 else "no sleep"
    lines = [
        f"policy: packets of {format_bytes(size)}, {pause}, {transfers} transfers at once "
        f"(network load {float(comm.get('network_load') or 0.0):.2f})",
        f"work requests: {comm.get('work_requests_in_flight', 0)} in flight, "
        f"at most {comm.get('max_work_requests', NOTHING)}, "
        f"{comm.get('work_requests_refused', 0)} told to retry later",
    ]
    sessions = comm.get("sessions") or {}
    if isinstance(sessions, dict) and sessions:
        lines.append("warehouse sessions:")
        for url, s in sessions.items():
            if isinstance(s, dict):
                lines.append(
                    f"  {url}: {s.get('active', 0)} of {s.get('limit', NOTHING)} active, "
                    f"{s.get('refused', 0)} refused"
                )
    links = comm.get("links") or []
    rows = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict):
            continue
        heard = link.get("updated")
        rows.append(
            [
                str(link.get("link", "")),
                str(link.get("kind", "")),
                _rate(link.get("capacity")),
                _rate(link.get("xwch_rate")),
                _rate(link.get("other_rate")),
                f"{_ms(link.get('min_rtt'))}/{_ms(link.get('avg_rtt'))}",
                _ms(link.get("queueing_delay")),
                f"{float(link.get('load') or 0.0):.2f}",
                format_ago(now, heard if isinstance(heard, (int, float)) else None),
            ]
        )
    text = "\n".join(lines) + "\n"
    if rows:
        text += "\n" + render_table(LINK_COLUMNS, rows)
        hidden = int(comm.get("worker_links", 0) or 0) - sum(1 for r in rows if r[1] == "worker")
        if hidden > 0:
            text += f"(and {hidden} more worker links, less loaded)\n"
    else:
        text += "no link estimate yet (workers and warehouses report every few seconds)\n"
    return text
