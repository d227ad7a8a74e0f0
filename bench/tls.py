"""What TLS costs: W1 tasks/s and a 1 GiB warehouse-to-worker transfer, HTTP against HTTPS.

    .venv/bin/python bench/tls.py [--tasks 2000] [--workers 2] [--slots 2] [--gib 1] [--rounds 1]

In one run, alternating plain and TLS so both see the same machine load:

- W1: a fresh ``xwch-local`` (``--tls`` or not) runs one job of N trivial ``noop`` tasks
  (bench/throughput.py's), timed from ``submit --wait`` to its end;
- transfer: a fresh ``xwch-local`` with one warehouse and no worker holds an object of
  ``--gib`` GiB of random bytes (uploaded by ``xwch-client submit``); it is then downloaded the
  way a worker fetches an input (``xwch.transfer.download.download_object``, through the same
  pinned HTTP client a worker builds from its token), and timed.

Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import build_native, compile_bytecode, time_xwch

from xwch.client.coordinator import CoordinatorClient
from xwch.config import resolve_endpoint
from xwch.http import JsonApi, make_http_client
from xwch.localprocess import LocalPlatformProcess
from xwch.protocol.worker import Policy
from xwch.tls import https_policy
from xwch.transfer.download import download_object
from xwch.transfer.pacing import PacketPacer

CHUNK = 1 << 20


def random_file(path: Path, size: int) -> str:
    """``size`` random bytes (nothing for zstandard to squeeze) at ``path``; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


async def time_download(reactor: Any, tls: bool, source: Path, digest: str, size: int) -> float:
    """Seconds to download the object from a fresh one-warehouse platform (``--tls`` or not)."""
    with tempfile.TemporaryDirectory(prefix="xwch-bench-tls-") as tmp:
        folder = Path(tmp)
        job = {
            "name": "transfer",
            "binaries": {"noop": str(Path(__file__).resolve().parent.parent / "native/build/noop")},
            "files": {"big": str(source)},
            "tasks": [{"id": "t", "binary": "noop", "inputs": {"big": "big"}}],
        }
        (folder / "dag.json").write_text(json.dumps(job))
        platform = LocalPlatformProcess(
            folder / "home", workers=0, warehouses=1, extra=["--tls"] if tls else []
        )
        platform.start()
        try:
            subprocess.run(
                [sys.executable, "-m", "xwch.client", "submit", str(folder / "dag.json")],
                env=platform.env(),
                check=True,
                capture_output=True,
            )
            config = tomllib.loads((folder / "home" / "client.toml").read_text())
            endpoint = resolve_endpoint(config["coordinator"], config["token"], environ={})
            # What a worker builds from its token: the certificate pinned when the token says.
            http = make_http_client(reactor, tls=https_policy(endpoint.pin))
            api = CoordinatorClient(JsonApi(http, endpoint.url, endpoint.token, reactor))
            sources = (await api.downloads([digest]))[digest].sources
            pacer = PacketPacer(Policy(), None, reactor)
            started = time.monotonic()
            await download_object(
                http, sources, digest, size, folder / "copy", pacer, reactor, durable=False
            )
            took = time.monotonic() - started
            if http.pool is not None:
                await http.pool.closeCachedConnections()
            return took
        finally:
            platform.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    build_native()
    compile_bytecode()
    w1: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for tls in (False, True):
            timing = time_xwch(args.tasks, args.workers, args.slots, ["--tls"] if tls else [])
            if timing.state != "done":
                print(f"W1 ({'TLS' if tls else 'plain'}): the job ended {timing.state}")
                return 1
            w1[tls].append(args.tasks / timing.total)
    size = int(args.gib * (1 << 30))
    transfer: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="xwch-bench-tls-src-") as tmp:
        source = Path(tmp) / "big.bin"
        digest = random_file(source, size)

        async def transfers(reactor: Any) -> None:
            for _ in range(args.rounds):
                for tls in (False, True):
                    transfer[tls].append(await time_download(reactor, tls, source, digest, size))

        try:
            react(lambda reactor: Deferred.fromCoroutine(transfers(reactor)))
        except SystemExit as e:
            if e.code:
                raise
    print(f"W1: {args.tasks} noop tasks on {args.workers} workers x {args.slots} slots")
    for tls in (False, True):
        rates = ", ".join(f"{r:.1f}" for r in w1[tls])
        print(f"  {'HTTPS' if tls else 'HTTP ':5}  {rates} tasks/s end to end")
    ratio = (sum(w1[True]) / len(w1[True])) / (sum(w1[False]) / len(w1[False]))
    print(f"  TLS/plain: {ratio:.2f}")
    print(f"transfer: {size / (1 << 30):g} GiB warehouse -> worker's download")
    for tls in (False, True):
        figures = ", ".join(f"{t:.2f} s ({size / t / 1e6:.0f} MB/s)" for t in transfer[tls])
        print(f"  {'HTTPS' if tls else 'HTTP ':5}  {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
