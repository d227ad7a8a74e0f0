"""A download whose connection is cut in the middle of a packet resumes at the first missing
packet, over real sockets: a warehouse process, a worker's download in another, and between them
a proxy that cuts the first connection half way through an answer."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netlab import ROOT, make_object

pytestmark = pytest.mark.integration

PACKET = 1_000_000
SIZE = 5 * PACKET
# Bytes of answers let through on the first connection: two packets and a half.
CUT_AFTER = int(2.5 * PACKET)


class CuttingProxy:
    """Forwards TCP connections to ``target``; cuts the first one after CUT_AFTER answer bytes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            limit = CUT_AFTER if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, limit), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    self.cut.set()
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        # Both ways at once (shutdown wakes the other direction's thread blocked in recv), as
        # when a link drops or a middlebox dies.
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[tuple[str, str]]:
    digest, _ = make_object(tmp_path / "warehouse", SIZE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    popen = subprocess.Popen(
        [sys.executable, "-m", "bench.netlab", "serve", str(tmp_path / "warehouse"),
         "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
    )  # fmt: skip
    try:
        assert popen.stdout is not None
        port = json.loads(popen.stdout.readline())["port"]
        yield f"127.0.0.1:{port}", digest
    finally:
        popen.terminate()
        popen.wait(10)
    assert popen.poll() is not None


def test_a_download_cut_mid_packet_resumes_and_is_whole(
    warehouse: tuple[str, str], tmp_path: Path
) -> None:
    """The first connection dies half way through the third packet: the download opens another,
    asks for the third packet again, and ends with the object's exact bytes."""
    address, digest = warehouse
    host, port = address.split(":")
    proxy = CuttingProxy((host, int(port)))
    dest = tmp_path / "copy.bin"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.netlab", "fetch", f"http://127.0.0.1:{proxy.port}",
             digest, str(SIZE), str(dest), "--packet-size", str(PACKET), "--every", "60"],
            capture_output=True, text=True, cwd=str(ROOT), timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert proxy.cut.is_set() and proxy.connections >= 2
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    assert not dest.with_name("copy.bin.part").exists()
    assert "failed at 2000000" in done.stderr
