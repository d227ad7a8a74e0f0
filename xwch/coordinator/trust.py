"""Which workers accept which programs: signed programs on the coordinator's side.

A worker that trusts keys (its Register Request says which) runs only programs signed by one of
them, and checks so itself before a program becomes runnable. The coordinator offers it only
such work, so that nothing is sent to be refused; the signatures themselves were checked when
the job was created (``xwch.dag.parse_wire_job``), here only the signer's key is compared.
"""

from __future__ import annotations

from collections.abc import Collection

from xwch import dag
from xwch.protocol.objects import BinaryRef, ProgramSigned


def accepts(trusted_keys: Collection[str], variant: dag.BinaryVariant | None) -> bool:
    """Whether a worker trusting ``trusted_keys`` (none: any program) runs ``variant``."""
    if variant is None:
        return False
    if not trusted_keys:
        return True
    return variant.signature is not None and variant.signature.key in trusted_keys


def worker_accepts(platform: str, trusted_keys: Collection[str], binary: dag.Binary) -> bool:
    """Whether a worker of ``platform`` trusting ``trusted_keys`` runs ``binary``."""
    return accepts(trusted_keys, binary.for_platform(platform))


def binary_ref(variant: dag.BinaryVariant, name: str, job_name: str) -> BinaryRef:
    """What an assignment tells of its program, with the signature a worker checks."""
    assert variant.digest is not None and variant.size is not None
    signed = None
    if variant.signature is not None:
        signed = ProgramSigned(variant.signature.key, variant.signature.signature)
    return BinaryRef(
        variant.digest,
        variant.size,
        variant.bundle,
        variant.entry,
        name=name,
        signed=signed,
        job_name=job_name if signed is not None else None,
    )


def refused_by_all(binary: dag.Binary, live: Collection[tuple[str, frozenset[str]]]) -> str | None:
    """Why no live worker (each a platform and its trusted keys) accepts ``binary``, when the
    reason is trust; None when one accepts it, or when none runs its platforms anyway."""
    runnable = [keys for platform, keys in live if binary.for_platform(platform) is not None]
    if not runnable:
        return None
    if any(worker_accepts(p, keys, binary) for p, keys in live):
        return None
    signers = {v.signature.key for v in binary.variants.values() if v.signature is not None}
    if not signers:
        return "no live worker accepts an unsigned program"
    return (
        f"no live worker trusts {', '.join(sorted(signers))}, "
        f"the key that signed program {binary.name!r}"
    )
