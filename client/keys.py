"""The client's signing key: ``keys create`` and ``keys show``, and signing a job's programs.

The private key lives in ``$XWCH_HOME`` (see xwch.signing); with one there, ``submit`` signs
each program of the job, so that workers trusting its public key run them.
"""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xwch.dag import Job
from xwch.signing import sign_program


def signed_job(job: Job, key: Ed25519PrivateKey) -> Job:
    """``job`` with each of its programs (every platform's file or bundle) signed by ``key``;
    its digests must be set (:meth:`Job.with_digests`)."""
    binaries = {}
    for name, binary in job.binaries.items():
        variants = {}
        for platform, variant in binary.variants.items():
            if variant.digest is None:
                raise ValueError(f"binary {name!r} ({platform}) has no digest to sign")
            signature = sign_program(key, variant.digest, name, job.name)
            variants[platform] = replace(variant, signature=signature)
        binaries[name] = replace(binary, variants=variants)
    return replace(job, binaries=binaries)
