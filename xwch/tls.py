"""Encrypted links: the platform's certificate, HTTPS servers, and clients that pin it.

A coordinator started with ``--tls`` makes a self-signed certificate on its first start (or is
given one with ``--cert``/``--key``). There is no CA: a token made by ``token create`` on such a
coordinator ends with the certificate's SHA-256 fingerprint (``SECRET.FINGERPRINT``), and a
part given that token accepts, on every ``https://`` link of the platform, that certificate
and no other. Warehouses serve the same certificate (``--cert``/``--key``, the coordinator's
files). A token without a fingerprint leaves ``https://`` links to the usual checks against the
system's public CAs.

The fingerprint is checked during the TLS handshake, before any HTTP request is sent, so a part
facing another certificate sends no token; it calls its ``on_mismatch`` to stop.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import Certificate, CertificateOptions, KeyPair, PrivateCertificate
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from xwch.errors import ConfigurationError

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
# Where a coordinator with --tls and no --cert keeps the certificate it made, in its data folder.
TLS_FOLDER = "tls"
# A self-signed certificate lives as long as the platform; nobody renews a pin by date.
VALIDITY = datetime.timedelta(days=3650)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

log = Logger()


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def make_self_signed(folder: Path) -> TlsFiles:
    """The certificate and key in ``folder``, made the first time (key readable by its owner
    only, written before the certificate so a half-made pair is never taken for whole)."""
    files = TlsFiles(folder / CERT_FILE, folder / KEY_FILE)
    if files.cert.exists() and files.key.exists():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xwch platform")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(files.key, key_pem, 0o600)
    _write_new(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def _write_new(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tls_files(
    tls: bool, cert: str | None, key: str | None, default_folder: Path | None
) -> TlsFiles | None:
    """The certificate to serve, from the flags (``--tls``, ``--cert``, ``--key``); None: plain
    HTTP. With ``--tls`` alone, the one in ``default_folder``, made there if need be (None:
    the part cannot make one and says so)."""
    if cert is None and key is None:
        if not tls:
            return None
        if default_folder is None:
            raise ConfigurationError("--tls needs --cert and --key (the coordinator's files)")
        return make_self_signed(default_folder)
    if cert is None or key is None:
        raise ConfigurationError("--cert and --key go together")
    files = TlsFiles(Path(cert), Path(key))
    server_options(files)  # a clear error now rather than at the first connection
    return files


def fingerprint_of_pem(pem: bytes) -> str:
    """The SHA-256 of a PEM certificate's DER bytes, in lowercase hex: what tokens pin."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def fingerprint(files: TlsFiles) -> str:
    return fingerprint_of_pem(files.cert.read_bytes())


def server_options(files: TlsFiles) -> CertificateOptions:
    try:
        cert = Certificate.loadPEM(files.cert.read_bytes())
        key = KeyPair.load(files.key.read_bytes(), crypto.FILETYPE_PEM)
        private = PrivateCertificate.fromCertificateAndKeyPair(cert, key)
    except (OSError, SSL.Error, crypto.Error, ValueError) as e:
        raise ConfigurationError(f"--cert {files.cert} / --key {files.key}: {e}") from None
    options: CertificateOptions = private.options()
    return options


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream endpoint (``tcp:0:interface=...``), with TLS over its connections."""

    def __init__(self, inner: IStreamServerEndpoint, options: CertificateOptions) -> None:
        self._inner = inner
        self._options = options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:  # noqa: N803
        wrapped = TLSMemoryBIOFactory(self._options, False, protocolFactory)
        return self._inner.listen(wrapped)


# Tokens carrying the pin.


def split_token(token: str) -> tuple[str, str | None]:
    """``(secret, fingerprint or None)`` of a token: the secret alone is ever sent."""
    secret, dot, pin = token.rpartition(".")
    if dot and _FINGERPRINT.fullmatch(pin):
        return secret, pin
    return token, None


def pinned_token(secret: str, pin: str) -> str:
    return f"{secret}.{pin}"


# Clients.


class CertificateMismatch(Exception):
    """A server showed another certificate than the one the token pins."""


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedCreator:
    def __init__(self, context: SSL.Context, host: str) -> None:
        self._context = context
        self._host = host

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not _is_address(self._host):
            connection.set_tlsext_host_name(self._host.encode("idna"))
        return connection


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IPolicyForHTTPS)
class PinnedPolicy:
    """Accepts on every ``https://`` link only the certificate whose SHA-256 is ``pin``, and
    calls ``on_mismatch`` (once per host) with a sentence saying what it found instead."""

    def __init__(self, pin: str, on_mismatch: Callable[[str], None] | None = None) -> None:
        self.pin = pin
        self._on_mismatch = on_mismatch
        self._told: set[str] = set()

    def creatorForNetloc(self, hostname: bytes | str, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)

        def verify(
            connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
        ) -> bool:
            if depth != 0:
                return True  # the chain above the server's own certificate does not matter
            found = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).hexdigest()
            if found == self.pin:
                return True
            self._mismatch(f"{host}:{port}", found)
            return False

        context.set_verify(SSL.VERIFY_PEER, verify)
        return _PinnedCreator(context, host)

    def _mismatch(self, where: str, found: str) -> None:
        message = (
            f"https://{where} shows a certificate (SHA-256 {found}) other than the one the "
            f"token pins ({self.pin}): refusing to talk to it, no token was sent"
        )
        log.error("{message}", message=message)
        if where not in self._told and self._on_mismatch is not None:
            self._told.add(where)
            self._on_mismatch(message)


def https_policy(
    pin: str | None, on_mismatch: Callable[[str], None] | None = None
) -> IPolicyForHTTPS:
    """The checks of ``https://`` links: the pinned certificate, else the public CAs."""
    if pin is None:
        return BrowserLikePolicyForHTTPS()
    return PinnedPolicy(pin, on_mismatch)


class StopOnMismatch:
    """An ``on_mismatch`` for a service: says why on standard error, once, and stops the
    reactor; ``message`` tells the caller, after the reactor stopped, that this was why."""

    def __init__(self, program: str, stop: Callable[[], None]) -> None:
        self._program = program
        self._stop = stop
        self.message: str | None = None

    def __call__(self, message: str) -> None:
        if self.message is not None:
            return
        self.message = message
        print(f"{self._program}: {message}; stopping", file=sys.stderr, flush=True)
        self._stop()
