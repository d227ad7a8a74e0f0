"""Signed programs on the worker's side: whether this worker may run an assignment's program.

The worker's volunteer chose the keys it trusts (``--trust``, ``trusted_keys`` in worker.toml);
the check is made here, on the worker, whatever the coordinator was told, so a coordinator that
is wrong (or lied to) cannot make an untrusted program runnable.
"""

from __future__ import annotations

from collections.abc import Iterable

from xwch.errors import ConfigurationError
from xwch.protocol.objects import BinaryRef
from xwch.signing import ProgramSignature, SignatureError, normalized_key, refusal


def program_refusal(binary: BinaryRef, trusted_keys: frozenset[str]) -> str | None:
    """Why this worker must not run ``binary`` (None: it may)."""
    if not trusted_keys:
        return None
    signed = None
    if binary.signed is not None:
        signed = ProgramSignature(binary.signed.key, binary.signed.signature)
    name = binary.name or binary.digest
    return refusal(signed, trusted_keys, binary.digest, name, binary.job_name or "")


def trusted_keys(flags: Iterable[str], config: object, where: str) -> frozenset[str]:
    """The keys of ``--trust`` flags, else of ``trusted_keys`` in worker.toml (``config``),
    each checked; a :class:`ConfigurationError` names the one that is wrong."""
    given = list(flags)
    origin = "--trust"
    if not given and config is not None:
        origin = f"{where}: trusted_keys"
        if not isinstance(config, list) or not all(isinstance(k, str) for k in config):
            raise ConfigurationError(f'{origin} must be a list of keys ("ed25519:BASE64")')
        given = list(config)
    keys = set()
    for key in given:
        try:
            keys.add(normalized_key(key))
        except SignatureError as e:
            raise ConfigurationError(f"{origin}: {e}") from None
    return frozenset(keys)
