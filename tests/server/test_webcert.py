"""The self-made WebTransport certificate: what Chromium needs of it, and its renewal."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bangor.errors import UsageError
from bangor.server.web import WebOptions, start_web
from bangor.server.webcert import (
    DAY,
    MAX_LIFETIME,
    SelfCertificates,
    check_operator_files,
    make_certificate,
)
from bangor.settings import ServerSettings
from tests.server.test_app import make_server
from tests.webclient import web_client

NOW = 1_800_000_000.0


def test_the_certificate_has_what_chromium_wants_of_a_hash_pinned_leaf() -> None:
    cert = make_certificate(["example.test"], NOW, ServerSettings.web_cert_lifetime)
    x = cert.certificate
    key = x.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    basic = x.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = x.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = x.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = x.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.test", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    lifetime = x.not_valid_after_utc - x.not_valid_before_utc
    assert datetime.timedelta(days=12) < lifetime < datetime.timedelta(days=14)
    assert x.not_valid_before_utc.timestamp() <= NOW < x.not_valid_after_utc.timestamp()
    assert cert.sha256 == hashlib.sha256(x.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert "PRIVATE" not in repr(cert) and cert.sha256 in repr(cert)


@pytest.mark.parametrize("lifetime", [MAX_LIFETIME, 20 * DAY, 0.0])
def test_a_lifetime_browsers_refuse_is_refused(lifetime: float) -> None:
    with pytest.raises(ValueError, match="under 14 days"):
        make_certificate([], NOW, lifetime)


def test_renewal_when_little_is_left_and_both_hashes_while_both_are_valid() -> None:
    certs = SelfCertificates(["127.0.0.1"], NOW, 13 * DAY, 3 * DAY)
    first = certs.current
    assert certs.hashes(NOW) == [first.sha256]
    assert not certs.maybe_renew(NOW + 9 * DAY)  # four days left
    assert certs.maybe_renew(NOW + 10.5 * DAY)  # two and a half left
    second = certs.current
    assert second.sha256 != first.sha256 and certs.previous is first
    assert certs.hashes(NOW + 10.5 * DAY) == [second.sha256, first.sha256]
    assert certs.hashes(NOW + 13 * DAY) == [second.sha256]  # the first has expired
    assert not certs.maybe_renew(NOW + 11 * DAY)


async def test_a_running_server_renews_and_new_connections_get_the_new_certificate(
    tmp_path: Path,
) -> None:
    server = await make_server(tmp_path)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        endpoint = web.endpoint
        (old,) = endpoint.certificate_hashes()
        assert not endpoint.renew()
        endpoint.wall_clock = lambda: time.time() + 11 * DAY
        assert endpoint.renew()
        hashes = endpoint.certificate_hashes()
        assert len(hashes) == 2 and hashes[1] == old
        assert json.loads(web.page.config())["certificate_hashes"] == hashes
        async with web_client("127.0.0.1", web.port) as browser:
            assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
            cert = browser._quic.tls._peer_certificate
            der = cert.public_bytes(serialization.Encoding.DER)
            assert hashlib.sha256(der).hexdigest() == hashes[0]
    finally:
        await server.close()


def write_pem(tmp_path: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A test certificate and key as PEM files (the key 0600)."""
    cert = make_certificate([host], time.time(), DAY)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.certificate.public_bytes(serialization.Encoding.PEM))
    key_file.touch(0o600)
    key_file.write_bytes(
        cert.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_operator_files_that_are_missing_or_wrong_are_a_usage_error(tmp_path: Path) -> None:
    cert_file, key_file = write_pem(tmp_path)
    check_operator_files(cert_file, key_file)
    with pytest.raises(UsageError, match="--tls-key: no such file"):
        check_operator_files(cert_file, tmp_path / "missing.pem")
    (tmp_path / "other").mkdir()
    _, other_key = write_pem(tmp_path / "other")
    with pytest.raises(UsageError, match="cannot use") as error:
        check_operator_files(cert_file, other_key)  # a key that is not the certificate's
    assert "PRIVATE" not in str(error.value)
    with pytest.raises(UsageError, match="cannot use"):
        check_operator_files(key_file, key_file)
