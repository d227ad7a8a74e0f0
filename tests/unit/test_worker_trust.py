"""The keys a worker trusts: from --trust, else worker.toml, each checked."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xwch.errors import ConfigurationError
from xwch.signing import format_public_key
from xwch.worker.trust import trusted_keys

KEY = format_public_key(Ed25519PrivateKey.generate().public_key())
OTHER = format_public_key(Ed25519PrivateKey.generate().public_key())


def test_the_flags_win_over_worker_toml() -> None:
    assert trusted_keys([KEY], [OTHER], "worker.toml") == {KEY}
    assert trusted_keys([], [OTHER], "worker.toml") == {OTHER}
    assert trusted_keys([], None, "worker.toml") == frozenset()


@pytest.mark.parametrize(
    ("flags", "config", "why"),
    [
        (["ed25519:c2hvcnQ="], None, "--trust: an ed25519 key has 32 bytes, this one 5"),
        ([], "ed25519:one-key-not-a-list", "worker.toml: trusted_keys must be a list"),
        ([], [KEY, 3], "worker.toml: trusted_keys must be a list"),
        ([], ["rsa:AAAA"], "worker.toml: trusted_keys: key of the wrong type 'rsa'"),
    ],
)
def test_a_malformed_key_is_a_clear_error(flags: list[str], config: object, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        trusted_keys(flags, config, "worker.toml")
