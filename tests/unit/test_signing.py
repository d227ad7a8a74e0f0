"""Signed programs: the keys, the signature of one program of one job, and its checks."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xwch.errors import ConfigurationError
from xwch.signing import (
    PRIVATE_KEY_FILE,
    ProgramSignature,
    SignatureError,
    create_private_key,
    format_public_key,
    load_key,
    normalized_key,
    parse_public_key,
    refusal,
    sign_program,
    verify_program,
)

DIGEST = "a" * 64
OTHER_DIGEST = "b" * 64


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_signature_verifies_for_its_program_of_its_job(key: Ed25519PrivateKey) -> None:
    """The signature made for a program of a job is accepted for exactly that."""
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    verify_program(signed, DIGEST, "render", "mandelbrot")
    assert signed.key == format_public_key(key.public_key())


@pytest.mark.parametrize(
    ("digest", "program", "job"),
    [
        (OTHER_DIGEST, "render", "mandelbrot"),  # other bytes
        (DIGEST, "merge", "mandelbrot"),  # another program's name
        (DIGEST, "render", "other-job"),  # replayed for another job
    ],
)
def test_a_signature_does_not_vouch_for_anything_else(
    key: Ed25519PrivateKey, digest: str, program: str, job: str
) -> None:
    """A signature replayed for other bytes, another program name or another job is refused."""
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_program(signed, digest, program, job)


def test_names_cannot_be_shifted_between_the_parts(key: Ed25519PrivateKey) -> None:
    """What is signed delimits its parts: moving characters between names breaks it."""
    signed = sign_program(key, DIGEST, "ab", "c")
    with pytest.raises(SignatureError):
        verify_program(signed, DIGEST, "a", "bc")


def test_a_forged_signature_is_refused(key: Ed25519PrivateKey) -> None:
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    raw = bytearray(base64.b64decode(signed.signature))
    raw[0] ^= 1
    forged = ProgramSignature(signed.key, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(SignatureError, match="forged"):
        verify_program(forged, DIGEST, "render", "mandelbrot")


def test_a_signature_by_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    """A signature claimed for a key it was not made with does not verify."""
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    other = format_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_program(ProgramSignature(other, signed.signature), DIGEST, "render", "mandelbrot")


def test_a_truncated_signature_is_refused_as_such(key: Ed25519PrivateKey) -> None:
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    short = base64.b64encode(base64.b64decode(signed.signature)[:40]).decode()
    with pytest.raises(SignatureError, match="this one 40: truncated"):
        verify_program(ProgramSignature(signed.key, short), DIGEST, "render", "mandelbrot")


def test_a_signature_that_is_not_base64_is_refused(key: Ed25519PrivateKey) -> None:
    signed = sign_program(key, DIGEST, "render", "mandelbrot")
    with pytest.raises(SignatureError, match="signature is not base64"):
        verify_program(ProgramSignature(signed.key, "***"), DIGEST, "render", "mandelbrot")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("rsa:AAAA", "wrong type 'rsa'"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not a key"),
        ("ed25519:" + base64.b64encode(b"x" * 31).decode(), "this one 31: truncated"),
        ("ed25519:not base64!", "key is not base64"),
    ],
)
def test_a_malformed_key_is_refused_with_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        parse_public_key(text)


def test_keys_are_compared_in_one_spelling(key: Ed25519PrivateKey) -> None:
    public = format_public_key(key.public_key())
    assert normalized_key(f"  {public}\n") == public


def test_a_worker_trusting_no_key_runs_anything() -> None:
    assert refusal(None, frozenset(), DIGEST, "render", "job") is None


def test_a_worker_trusting_keys_refuses_what_they_did_not_sign(key: Ed25519PrivateKey) -> None:
    """Unsigned, signed by another key, or badly signed: each refused with its reason."""
    mine = format_public_key(key.public_key())
    trusted = frozenset({mine})
    signed = sign_program(key, DIGEST, "render", "job")
    assert refusal(signed, trusted, DIGEST, "render", "job") is None
    assert "is not signed" in str(refusal(None, trusted, DIGEST, "render", "job"))
    stranger = sign_program(Ed25519PrivateKey.generate(), DIGEST, "render", "job")
    assert "a key this worker does not trust" in str(
        refusal(stranger, trusted, DIGEST, "render", "job")
    )
    assert "does not verify" in str(refusal(signed, trusted, DIGEST, "render", "another-job"))


def test_keys_create_writes_a_private_key_its_owner_alone_reads(tmp_path: Path) -> None:
    public = create_private_key(tmp_path / "home")
    path = tmp_path / "home" / PRIVATE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert format_public_key(load_key(tmp_path / "home").public_key()) == format_public_key(public)


def test_keys_create_never_replaces_a_key(tmp_path: Path) -> None:
    """Workers trust the first key: replacing it would make them refuse every later job."""
    public = format_public_key(create_private_key(tmp_path))
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    with pytest.raises(ConfigurationError, match="exists already") as raised:
        create_private_key(tmp_path)
    assert public in str(raised.value)
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == before


def test_a_broken_private_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / PRIVATE_KEY_FILE).write_text("garbage")
    with pytest.raises(ConfigurationError, match="not a private key"):
        load_key(tmp_path)
