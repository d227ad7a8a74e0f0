"""Signed programs: Ed25519 keys, and the signature of one program of one job.

A client signs each program of a job with its private key; a worker that trusts that key's
public half runs the program only if the signature verifies. What is signed binds the program's
bytes (their SHA-256), the name the job gives the program and the job's name, so a signature
taken from one job cannot vouch for another program, or for the same program under another
name or in another job.

Keys travel as text, ``ed25519:`` then the base64 of the 32 raw bytes of the public key; a
signature is the base64 of its 64 bytes. Every check here raises :class:`SignatureError` with
a sentence saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xwch.errors import ConfigurationError, XwchError

KEY_PREFIX = "ed25519:"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# Bumped if what is signed ever changes, so an old signature cannot pass for a new kind.
_PURPOSE = "xwch program signature 1"
PRIVATE_KEY_FILE = "signing.key"


class SignatureError(XwchError):
    """A key or signature that is malformed, or a signature that does not verify."""


@dataclass(frozen=True)
class ProgramSignature:
    """Who signed a program (``key``, as :func:`format_public_key` writes it) and the signature."""

    key: str
    signature: str


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SignatureError(f"{what} is not base64") from None


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The public key written ``ed25519:BASE64``; a clear error for anything else."""
    kind, colon, body = text.strip().partition(":")
    if not colon:
        raise SignatureError(f"not a key: {text!r} (expected ed25519:BASE64)")
    if kind != KEY_PREFIX[:-1]:
        raise SignatureError(f"key of the wrong type {kind!r}: only ed25519 keys are supported")
    raw = _b64(body, "the key")
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"an ed25519 key has {PUBLIC_KEY_BYTES} bytes, this one {len(raw)}: truncated?"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def normalized_key(text: str) -> str:
    """``text`` checked and written as :func:`format_public_key` writes it."""
    return format_public_key(parse_public_key(text))


def format_public_key(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def signed_message(digest: str, program: str, job: str) -> bytes:
    """The bytes signed for program ``program`` (SHA-256 ``digest``) of job ``job``.

    A JSON array: each part is delimited, so no choice of names can make two different
    (digest, program, job) triples sign the same bytes.
    """
    return json.dumps([_PURPOSE, digest, program, job], separators=(",", ":")).encode()


def sign_program(key: Ed25519PrivateKey, digest: str, program: str, job: str) -> ProgramSignature:
    signature = key.sign(signed_message(digest, program, job))
    return ProgramSignature(
        format_public_key(key.public_key()), base64.b64encode(signature).decode("ascii")
    )


def verify_program(signed: ProgramSignature, digest: str, program: str, job: str) -> None:
    """Raise :class:`SignatureError` unless ``signed`` vouches for this program of this job."""
    public = parse_public_key(signed.key)
    raw = _b64(signed.signature, "the signature")
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureError(
            f"an ed25519 signature has {SIGNATURE_BYTES} bytes, this one {len(raw)}: truncated?"
        )
    try:
        public.verify(raw, signed_message(digest, program, job))
    except InvalidSignature:
        raise SignatureError(
            f"the signature of program {program!r} does not verify: it was made for other "
            "bytes, another program name or another job, or it is forged"
        ) from None


def refusal(
    signed: ProgramSignature | None,
    trusted: frozenset[str],
    digest: str,
    program: str,
    job: str,
) -> str | None:
    """Why a worker trusting ``trusted`` must not run this program (None: it may).

    A worker that trusts no key runs anything, as before signed programs existed.
    """
    if not trusted:
        return None
    if signed is None:
        return f"program {program!r} is not signed, and this worker runs only signed programs"
    if signed.key not in trusted:
        return f"program {program!r} is signed by {signed.key}, a key this worker does not trust"
    try:
        verify_program(signed, digest, program, job)
    except SignatureError as e:
        return str(e)
    return None


# The client's key pair, in $XWCH_HOME.


def create_private_key(home: Path) -> Ed25519PublicKey:
    """Make a key pair, its private half in ``home`` readable by its owner only.

    Refuses to replace an existing key: the workers that trust it would refuse every job
    signed afterwards.
    """
    path = home / PRIVATE_KEY_FILE
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    home.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite; mode 0600 from the start, so it is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} exists already: its public key is {format_public_key(load_key(home).public_key())}"
            " (remove the file first to make a new key)"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key.public_key()


def load_key(home: Path) -> Ed25519PrivateKey:
    """The private key of :func:`create_private_key`; a clear error when it is unusable."""
    path = home / PRIVATE_KEY_FILE
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"{path}: not a private key: {e}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(f"{path}: not an ed25519 private key")
    return loaded


def load_key_if_any(home: Path) -> Ed25519PrivateKey | None:
    if not (home / PRIVATE_KEY_FILE).exists():
        return None
    return load_key(home)
