"""Certificates for the WebTransport endpoint (and the page, when the operator gives one).

Without ``--tls-cert`` the server makes its own: ECDSA P-256, valid for less than 14 days
(browsers accept a certificate they cannot verify only through
``serverCertificateHashes``, and only with such a short life), with the extensions
Chromium wants of a leaf. It is renewed while the server runs; the page lists the SHA-256
of every certificate still valid, so a page loaded just before a renewal still connects.
The private key never leaves memory.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bangor.errors import UsageError

DAY = 86400.0
# Chromium refuses a serverCertificateHashes certificate valid for 14 days or more.
MAX_LIFETIME = 14 * DAY
BACKDATE = 60.0  # seconds before now the validity starts: clocks differ a little


@dataclass(frozen=True)
class Certificate:
    """One certificate with its key; ``sha256`` is the hash of its DER, lowercase hex."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    not_after: float  # Unix time

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def __repr__(self) -> str:  # never the key
        return f"Certificate(sha256={self.sha256}, not_after={self.not_after})"


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [*hosts, "localhost", "127.0.0.1", "::1"]:
        if not host or host in seen or host in ("0.0.0.0", "::"):
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificate(hosts: list[str], now: float, lifetime: float) -> Certificate:
    """A self-made certificate for ``hosts`` (plus localhost), valid from a minute before
    ``now`` (Unix time) for ``lifetime`` seconds (under 14 days)."""
    if not 0 < lifetime < MAX_LIFETIME:
        raise ValueError(f"certificate lifetime must be under 14 days, got {lifetime} s")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bangor")])
    start = datetime.datetime.fromtimestamp(now - BACKDATE, datetime.UTC)
    # Validity counts from the backdated start, so the whole span stays under the limit.
    end = start + datetime.timedelta(seconds=lifetime)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key, end.timestamp())


class SelfCertificates:
    """The self-made certificates: the current one, and the one before while it is valid."""

    def __init__(self, hosts: list[str], now: float, lifetime: float, renew_before: float) -> None:
        if not 0 < renew_before < lifetime:
            raise ValueError("renew_before must be between 0 and the lifetime")
        self.hosts = hosts
        self.lifetime = lifetime
        self.renew_before = renew_before
        self.current = make_certificate(hosts, now, lifetime)
        self.previous: Certificate | None = None

    def renew_at(self) -> float:
        """Unix time at which :meth:`maybe_renew` makes a new certificate."""
        return self.current.not_after - self.renew_before

    def maybe_renew(self, now: float) -> bool:
        """Make a new certificate when the current one has less than ``renew_before``
        left; True if it did."""
        if now < self.renew_at():
            return False
        self.previous = self.current
        self.current = make_certificate(self.hosts, now, self.lifetime)
        return True

    def hashes(self, now: float) -> list[str]:
        """SHA-256 (hex) of each certificate valid at ``now``, the current one first."""
        certs = [self.current, self.previous]
        return [c.sha256 for c in certs if c is not None and now < c.not_after]


def check_operator_files(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server SSLContext from the operator's PEM files, or a UsageError saying what is
    wrong (never the key's contents)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    for path, what in ((cert_file, "--tls-cert"), (key_file, "--tls-key")):
        if not path.is_file():
            raise UsageError(f"{what}: no such file: {path}")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "unreadable"
        raise UsageError(
            f"--tls-cert/--tls-key: cannot use {cert_file} with {key_file}: {reason}"
        ) from None
    return context
