"""CPU to start one attempt: the native launcher against the fork server (and a fresh Python).

    .venv/bin/python bench/spawn.py [--attempts 500] [--program-size BYTES]

Each spawner starts ``noop`` (native/build) the way the executor does: launcher options with
the program's digest and Landlock confinement to a working folder, a status pipe, standard
output and error read by the reactor. Two attempts run at a time, as on a worker of two slots.
Prints, per attempt, the CPU of the worker process plus its children (launcher, program, fork
server: everything a worker's machine spends) and the wall time. Then the native launcher again,
its program's bytes hashed (``--sha256``) against trusted by the identity the worker recorded
(``--known-identity``, :mod:`xwch.worker.program_identity`), for ``noop`` padded to
``--program-size`` bytes (default 20 MB: a program that links its libraries statically). Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.python.failure import Failure

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import NOOP, build_native

from xwch.worker import landlock
from xwch.worker.native_launcher import build_native_launcher
from xwch.worker.program_identity import FileIdentity
from xwch.worker.spawner import (
    STATUS_FD,
    AttemptProcess,
    AttemptSpawner,
    DirectSpawner,
    ForkServerSpawner,
    NativeSpawner,
)


class _Ended(AttemptProcess):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _measure(
    spawner: AttemptSpawner,
    attempts: int,
    work: Path,
    stop: Callable[[], Any] | None = None,
    program: Path = NOOP,
    trust: bool = False,
) -> tuple[float, float]:
    digest = hashlib.sha256(program.read_bytes()).hexdigest()
    options = ["--sha256", digest]
    if trust:
        options += ["--known-identity", FileIdentity.of(program.stat()).option()]
    if landlock.abi_version() >= 1:
        options += ["--writable", str(work)]
    argv = [*options, "--status-fd", str(STATUS_FD), "--", str(program), "out.txt", "1\n"]

    async def one() -> None:
        process = _Ended()
        await spawner.spawn(process, argv, {"PATH": "/usr/bin:/bin"}, str(work))
        await process.ended

    await one()  # the fork server's start is not an attempt's cost
    cpu, started = _cpu(), time.perf_counter()
    for _ in range(attempts // 2):
        await defer.gatherResults([defer.Deferred.fromCoroutine(one()) for _ in range(2)])
    done = attempts // 2 * 2
    wall = time.perf_counter() - started
    if stop is not None:
        # The fork server reaps the attempts: their CPU is counted once it has been reaped.
        await stop()
    return (_cpu() - cpu) / done * 1000, wall / done * 1000


def _padded_noop(folder: Path, size: int) -> Path:
    """``noop`` with zeros after its last section (still runnable), sealed as the cache's are."""
    program = folder / "big-noop"
    data = NOOP.read_bytes()
    program.write_bytes(data + bytes(max(0, size - len(data))))
    program.chmod(0o555)
    return program


async def _main(attempts: int, program_size: int) -> None:
    build_native()
    with tempfile.TemporaryDirectory(prefix="xwch-bench-spawn-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        native = build_native_launcher(Path(tmp) / "bin")
        fork_server = ForkServerSpawner(reactor, sys.executable)
        fork_server.startService()
        spawners: list[tuple[str, AttemptSpawner, int, Callable[[], Any] | None]] = []
        if native.path is not None:
            native_spawner = NativeSpawner(reactor, str(native.path))  # type: ignore[arg-type]
            spawners.append(("native launcher", native_spawner, attempts, None))
        else:
            print(f"no native launcher: {native.reason}")
        spawners.append(("fork server", fork_server, attempts, fork_server.stopService))
        python = DirectSpawner(reactor, sys.executable)  # type: ignore[arg-type]
        spawners.append(("fresh python", python, max(20, attempts // 20), None))
        print(f"{'spawner':16s} {'attempts':>8s} {'CPU ms/attempt':>15s} {'wall ms/attempt':>16s}")
        try:
            for name, spawner, count, stop in spawners:
                cpu, wall = await _measure(spawner, count, work, stop)
                print(f"{name:16s} {count:8d} {cpu:15.2f} {wall:16.2f}")
            if native.path is not None:
                big = _padded_noop(Path(tmp), program_size)
                print(f"native launcher, a program of {big.stat().st_size / 1e6:.1f} MB:")
                count = max(20, attempts // 10)
                for trust in (False, True, False, True):
                    cpu, wall = await _measure(
                        native_spawner, count, work, program=big, trust=trust
                    )
                    name = "  trusted" if trust else "  hashed"
                    print(f"{name:16s} {count:8d} {cpu:15.2f} {wall:16.2f}")
        finally:
            await fork_server.stopService()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=500)
    parser.add_argument("--program-size", type=int, default=20_000_000)
    args = parser.parse_args()
    defer.ensureDeferred(_main(args.attempts, args.program_size)).addErrback(
        lambda f: f.printTraceback()
    ).addBoth(lambda _: reactor.stop())
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
