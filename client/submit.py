"""Submitting a job: hash its binaries and files, upload those no warehouse has, create it.

The job is already valid (``xwch.dag.load_job_file`` checked it before any request). Objects are
content-addressed, so a binary that any warehouse holds is never sent twice, whoever sent it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.interfaces import IReactorTime

from xwch.dag import PLATFORM_ANY, Job
from xwch.errors import ApiError
from xwch.protocol.objects import ObjectRef
from xwch.protocol.worker import Policy

from .clock import now
from .coordinator import CoordinatorClient
from .humane import format_bytes, format_duration
from .keys import signed_job
from .transfers import BIG_TRANSFER, Progress, Transfers, real_transfers


@dataclass(frozen=True)
class LocalObject:
    """One object the job needs, as it is on this machine."""

    label: str  # what the user calls it: "binary render (linux-x86_64)", "file palette"
    source: Path  # the file to upload: the user's file, or a bundle's packed archive
    digest: str
    size: int


def collect_objects(job: Job, transfers: Transfers, scratch: Path) -> dict[str, LocalObject]:
    """Every binary and file of ``job`` by its absolute client path, hashed.

    A bundle directory is packed into ``scratch`` first; its archive is what is hashed and sent.
    A path used twice (one binary for two platforms) is hashed once.
    """
    found: dict[str, LocalObject] = {}
    for binary in job.binaries.values():
        for platform, variant in binary.variants.items():
            if variant.path is None or variant.path in found:
                continue
            label = f"binary {binary.name}"
            if platform != PLATFORM_ANY:
                label += f" ({platform})"
            source = Path(variant.path)
            if variant.bundle:
                archive = scratch / f"bundle-{len(found)}.tar"
                transfers.pack_bundle(source, archive)
                source = archive
            digest, size = transfers.hash_file(source)
            found[variant.path] = LocalObject(label, source, digest, size)
    for entry in job.files.values():
        if entry.path is None or entry.path in found:
            continue
        digest, size = transfers.hash_file(Path(entry.path))
        found[entry.path] = LocalObject(f"file {entry.name}", Path(entry.path), digest, size)
    return found


async def upload_missing(
    api: CoordinatorClient,
    http: Any,
    objects: Iterable[LocalObject],
    reactor: IReactorTime,
    progress: Progress,
    transfers: Transfers,
    site: str | None = None,
) -> None:
    """Upload, one after the other, the objects no warehouse holds yet (to one of ``site``)."""
    unique = {o.digest: o for o in objects}
    if not unique:
        return
    plan = await api.uploads((ObjectRef(d, o.size) for d, o in unique.items()), site)
    # The uploads route sets no policy; the defaults pace like a worker's first transfer.
    pacer = transfers.make_pacer(reactor, Policy())
    sent = skipped = sent_bytes = 0
    for slot in plan.objects:
        obj = unique.get(slot.digest)
        if obj is None:
            continue
        if slot.present or slot.capability is None:
            skipped += 1
            continue
        big = obj.size >= BIG_TRANSFER
        if big:
            progress(f"uploading {obj.label}: {format_bytes(obj.size)} to {plan.warehouse_url}")
        started = now(reactor)
        # One at a time: the pacer spaces packets for the whole uplink, and a volunteer
        # platform's client is rarely on a link that gains from parallel streams.
        await transfers.upload_file(
            http,
            plan.warehouse_url,
            obj.digest,
            obj.size,
            obj.source,
            slot.capability,
            pacer,
            reactor,
        )
        if big:
            took = now(reactor) - started
            speed = f", {format_bytes(obj.size / took)}/s" if took > 0 else ""
            progress(f"uploaded {obj.label} in {format_duration(took)}{speed}")
        sent += 1
        sent_bytes += obj.size
    if sent:
        progress(f"uploaded {sent} object(s), {format_bytes(sent_bytes)}; {skipped} already stored")
    else:
        progress(f"nothing to upload: all {skipped} object(s) already stored")


async def submit(
    api: CoordinatorClient,
    http: Any,
    job: Job,
    reactor: IReactorTime,
    progress: Progress,
    transfers: Transfers | None = None,
    site: str | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> str:
    """Upload what ``job`` needs (to a warehouse of ``site``) and create it; the new job's id.

    With ``signing_key``, each program of the job is signed (see client/keys.py).
    """
    transfers = transfers or real_transfers()
    with tempfile.TemporaryDirectory(prefix="xwch-submit-") as scratch:
        local = collect_objects(job, transfers, Path(scratch))
        await upload_missing(api, http, local.values(), reactor, progress, transfers, site)
        stamped = job.with_digests({p: (o.digest, o.size) for p, o in local.items()})
        if signing_key is not None:
            stamped = signed_job(stamped, signing_key)
        wire = stamped.to_wire()
        try:
            return await api.submit_job(wire)
        except ApiError as e:
            if e.status != 409 or e.code != "missing_objects":
                raise
            # A warehouse lost an object between our check and the creation (evicted, or
            # gone offline): send those again, once, then let a second refusal through.
            missing = set(_digests(e.details.get("digests")))
            progress(f"{len(missing)} object(s) went missing; uploading them again")
            again = [o for o in local.values() if o.digest in missing]
            await upload_missing(api, http, again, reactor, progress, transfers, site)
            return await api.submit_job(wire)


def _digests(value: object) -> list[str]:
    return [d for d in value if isinstance(d, str)] if isinstance(value, list) else []
