"""An HTTPS server that records every request it gets and answers each with a 401: what a
part facing an impostor would have sent it."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from xwch.tls import fingerprint, make_self_signed


@dataclass
class Recorded:
    url: str
    fingerprint: str
    # (method, path, Authorization header or None), in the order received.
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


class _QuietTLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client refusing our certificate closes the handshake: expected here


@contextmanager
def recording_https_server(folder: Path) -> Iterator[Recorded]:
    """Serve HTTPS on an ephemeral loopback port with a certificate of its own, made in
    ``folder``; yields what it records. Stopped on exit."""
    files = make_self_signed(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            with lock:
                recorded.requests.append(
                    (self.command, self.path, self.headers.get("Authorization"))
                )
            body = b'{"error": "unauthorized", "message": "recorded"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _QuietTLSServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    recorded = Recorded(f"https://127.0.0.1:{server.server_address[1]}", fingerprint(files))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
