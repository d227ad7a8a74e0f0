"""``xwch-client network``: the communication manager's policy, limits and links, for people."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.fakes.warehouse import result_of
from xwch.client.__main__ import run
from xwch.client.network_text import network_text

NOW = 1_700_000_000.0
STATUS = {
    "communication": {
        "policy": {"packet_size": 524288, "packet_sleep": 0.25, "max_transfers": 2},
        "max_work_requests": 48,
        "work_requests_in_flight": 3,
        "work_requests_refused": 17,
        "network_load": 0.62,
        "worker_links": 3,
        "sessions": {"http://w1:8751": {"active": 5, "limit": 20, "refused": 2}},
        "links": [
            {
                "link": "http://w1:8751",
                "kind": "warehouse",
                "capacity": 5_000_000.0,
                "xwch_rate": 1_000_000.0,
                "other_rate": 3_500_000.0,
                "min_rtt": 0.002,
                "avg_rtt": 0.082,
                "queueing_delay": 0.08,
                "load": 0.7,
                "updated": NOW - 4,
            },
            {
                "link": "k1",
                "kind": "worker",
                "capacity": None,
                "xwch_rate": 0.0,
                "other_rate": None,
                "min_rtt": None,
                "avg_rtt": None,
                "queueing_delay": 0.0,
                "load": 0.0,
                "updated": NOW - 1,
            },
        ],
    }
}


class StatusRoute(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(STATUS).encode()


def run_network(argv: list[str], home: Path) -> tuple[int, str]:
    clock = Clock()
    clock.advance(NOW)
    out, err = io.StringIO(), io.StringIO()
    env = {"XWCH_COORDINATOR": "http://c:8750", "XWCH_TOKEN": "t", "XWCH_HOME": str(home)}
    d = ensureDeferred(run(argv, clock, StubTreq(StatusRoute()), out, err, environ=env))
    status: Any = result_of(d)
    return status, out.getvalue()


def test_network_shows_policy_limits_sessions_and_links(tmp_path: Path) -> None:
    """`network` says the policy in force, the Work Request limit and how many were told to
    retry, each warehouse's sessions, and a row per link."""
    status, text = run_network(["network"], tmp_path)
    assert status == 0
    lines = text.splitlines()
    assert lines[0] == (
        "policy: packets of 512.0 KiB, 250ms apart, 2 transfers at once (network load 0.62)"
    )
    assert lines[1] == "work requests: 3 in flight, at most 48, 17 told to retry later"
    assert lines[3] == "  http://w1:8751: 5 of 20 active, 2 refused"
    header = lines[5].split()
    assert header[:3] == ["LINK", "KIND", "CAPACITY"]
    assert lines[6].split() == [
        "http://w1:8751",
        "warehouse",
        "5.0",
        "MB/s",
        "1.0",
        "MB/s",
        "3.5",
        "MB/s",
        "2ms/82ms",
        "80ms",
        "0.70",
        "4s",
        "ago",
    ]
    assert lines[7].split()[:5] == ["k1", "worker", "-", "0", "B/s"]
    assert lines[-1] == "(and 2 more worker links, less loaded)"


def test_network_json_is_the_communication_document(tmp_path: Path) -> None:
    """`network --json` prints the communication manager's document as the API gives it."""
    status, text = run_network(["network", "--json"], tmp_path)
    assert status == 0
    assert json.loads(text) == STATUS["communication"]


def test_no_links_yet_is_said_plainly() -> None:
    doc = {"communication": {**STATUS["communication"], "links": [], "sessions": {}}}
    assert network_text(doc, NOW).endswith(
        "no link estimate yet (workers and warehouses report every few seconds)\n"
    )
