"""A tiny stand-in for the coordinator's warehouse routes, run as a process by integration tests.

    python -m tests.fakes.fake_coordinator --listen tcp:0:interface=127.0.0.1 --token T --key K

Prints ``fake-coordinator listening on URL`` once listening, then one line per event the test
may wait for: ``registered <warehouse url>``, ``heartbeat``, ``objects <digest> <size>``. Each
line is printed (and flushed) before the answer is sent, so a warehouse that got the answer
proves the line is already in the pipe.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from xwch.protocol.codec import encode
from xwch.protocol.warehouse import HeartbeatAnswer, WarehouseRegistered
from xwch.protocol.worker import Policy

WAREHOUSE_ID = "wh-1"
HEARTBEAT_INTERVAL = 3600.0


def say(line: str) -> None:
    print(line, flush=True)


class FakeCoordinator(Resource):
    isLeaf = True

    def __init__(self, token: str, key: bytes) -> None:
        super().__init__()
        self._token = token
        self._key = key

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.getHeader(b"authorization") != f"Bearer {self._token}".encode():
            request.setResponseCode(401)
            return b'{"error": "unauthorized", "message": "bad token"}'
        body = json.loads(request.content.read() or b"{}")
        path = request.path.decode()
        if path == "/api/v1/warehouses":
            say(f"registered {body['url']}")
            request.setResponseCode(201)
            return encode(
                WarehouseRegistered(
                    warehouse_id=WAREHOUSE_ID,
                    heartbeat_interval=HEARTBEAT_INTERVAL,
                    capability_key=base64.b64encode(self._key).decode(),
                )
            )
        if path == f"/api/v1/warehouses/{WAREHOUSE_ID}/heartbeat":
            say("heartbeat")
            return encode(HeartbeatAnswer(policy=Policy()))
        if path == f"/api/v1/warehouses/{WAREHOUSE_ID}/objects":
            for ref in body["objects"]:
                say(f"objects {ref['digest']} {ref['size']}")
            return b"{}"
        request.setResponseCode(404)
        return b'{"error": "not_found", "message": "no such route"}'


async def run(reactor: Any, args: argparse.Namespace) -> None:
    port = await serverFromString(reactor, args.listen).listen(
        Site(FakeCoordinator(args.token, args.key.encode()))
    )
    host = port.getHost()
    say(f"fake-coordinator listening on http://{host.host}:{host.port}")
    await Deferred()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="tcp:0:interface=127.0.0.1")
    parser.add_argument("--token", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    sys.exit(main())
