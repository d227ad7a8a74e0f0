"""Downloading a job's results into ``DIR/<task id>/<output name>``.

A result already in place with the right content is not downloaded again, so running
``xwch-client results`` twice (or after an interrupted download) only fetches what is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from twisted.internet.interfaces import IReactorTime

from xwch.protocol.client import ResultFile
from xwch.protocol.codec import ProtocolError
from xwch.protocol.worker import Policy

from .clock import now
from .coordinator import CoordinatorClient
from .humane import format_bytes, format_duration
from .transfers import BIG_TRANSFER, Progress, Transfers, real_transfers


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download_results` left in the results folder."""

    directory: Path
    files: tuple[Path, ...]
    fetched: int  # files actually downloaded; the others were already in place
    size: int  # bytes of all the files

    def summary(self) -> str:
        if not self.files:
            return "no results to download"
        return f"{len(self.files)} result(s), {format_bytes(self.size)}, in {self.directory}"


def default_results_dir(job_name: str, cwd: Path | None = None) -> Path:
    """``./<job name>-results``, as docs/cli.md promises."""
    return (cwd or Path.cwd()) / f"{job_name}-results"


def result_path(directory: Path, result: ResultFile) -> Path:
    """Where one result goes; refuses a name that would land outside ``directory``.

    Task ids and output names are checked by the coordinator too, but they arrive over the
    network and end up as paths on the user's disk: check again here.
    """
    parts = [result.task, *PurePosixPath(result.output).parts]
    if result.output.startswith("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise ProtocolError(f"result {result.task}/{result.output}: not a safe local path")
    return directory.joinpath(*parts)


def _already_there(path: Path, result: ResultFile, transfers: Transfers) -> bool:
    try:
        if path.stat().st_size != result.size:
            return False
    except OSError:
        return False
    return transfers.hash_file(path) == (result.digest, result.size)


def _write_whole(path: Path, content: bytes) -> None:
    """Write ``path`` whole or not at all: an interrupted run leaves no half-written result."""
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(content)
    os.replace(partial, path)


async def download_results(
    api: CoordinatorClient,
    http: Any,
    job_id: str,
    directory: Path,
    reactor: IReactorTime,
    progress: Progress,
    transfers: Transfers | None = None,
) -> Downloaded:
    """Download the results of ``job_id`` that exist into ``directory``."""
    transfers = transfers or real_transfers()
    results = await api.results(job_id)
    targets = [(r, result_path(directory, r)) for r in results]
    todo = [(r, p) for r, p in targets if not _already_there(p, r, transfers)]
    fetched = 0
    if todo:
        sources = await api.downloads(sorted({r.digest for r, _ in todo}))
        pacer = transfers.make_pacer(reactor, Policy())
        # Two results with the same content are fetched once and copied.
        first_copy: dict[str, Path] = {}
        for result, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            if result.digest in first_copy:
                shutil.copyfile(first_copy[result.digest], path)
                continue
            found = sources.get(result.digest)
            if found is not None and found.content is not None:
                # A small result the coordinator keeps: its bytes came with the answer.
                _write_whole(path, found.content)
                first_copy[result.digest] = path
                fetched += 1
                continue
            if found is None or not found.sources:
                raise ProtocolError(
                    f"result {result.task}/{result.output}: no warehouse holds it now"
                )
            big = result.size >= BIG_TRANSFER
            label = f"{result.task}/{result.output}"
            if big:
                progress(f"downloading {label}: {format_bytes(result.size)}")
            started = now(reactor)
            await transfers.download_object(
                http, found.sources, result.digest, result.size, path, pacer, reactor
            )
            if big:
                progress(f"downloaded {label} in {format_duration(now(reactor) - started)}")
            first_copy[result.digest] = path
            fetched += 1
    return Downloaded(
        directory=directory,
        files=tuple(p for _, p in targets),
        fetched=fetched,
        size=sum(r.size for r, _ in targets),
    )
