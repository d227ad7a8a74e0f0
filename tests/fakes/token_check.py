"""A coordinator's ``GET /api/v1/token`` alone, served from a thread: what ``xwch-worker
install`` asks before it writes anything."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def token_check_server(tokens: dict[str, str]) -> Iterator[str]:
    """Serve, on an ephemeral loopback port, the role of each token of ``tokens`` (token ->
    role); others get 401. Yields the base URL; stopped on exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if self.path != "/api/v1/token":
                self._answer(404, {"error": "not_found", "message": self.path})
            elif token not in tokens:
                self._answer(401, {"error": "unauthorized", "message": "unknown token"})
            else:
                self._answer(200, {"role": tokens[token], "name": "test"})

        def _answer(self, status: int, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
