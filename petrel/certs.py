"""Certificates for gRPC mutual TLS between Petrel services (``petrel certs``).

``ensure_certs(out)`` writes, into ``out``, whatever is missing of:

* ``ca.crt`` / ``ca.key``: a private CA for this deployment (the trust boundary: any
  certificate it signed may call any Petrel service);
* ``<name>.crt`` / ``<name>.key`` for every service and for ``client`` (tools such as
  ``petrel healthcheck``): one certificate per identity, valid both as a server and as a client
  (extended key usages serverAuth and clientAuth), with the identity as common name and, as
  subject alternative names, ``localhost``, ``127.0.0.1``, ``::1``, the identity itself (the
  compose service name) and any ``hosts`` given.

Existing files are kept, so it is safe to run at every start; a missing leaf is signed by the
existing CA. Keys are ECDSA P-256, written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = ("spool", "bounce", "scheduler", "ingress", "egress", "gateway")
IDENTITIES = (*SERVICES, "client")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
LEAF_DAYS = 825


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Petrel"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca(out: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Petrel CA")
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(out / "ca.key", key)
    _write_cert(out / "ca.crt", cert)
    return cert, key


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{out / 'ca.key'}: not an EC private key")
    return cert, key


def _make_leaf(out: Path, identity: str, hosts: Iterable[str], days: int,
               ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(identity)).issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(_san([*DEFAULT_HOSTS, identity, *hosts]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(out / f"{identity}.key", key)
    _write_cert(out / f"{identity}.crt", cert)


def ensure_certs(out: str | os.PathLike[str], identities: Iterable[str] = IDENTITIES,
                 hosts: Iterable[str] = (), ca_days: int = CA_DAYS,
                 days: int = LEAF_DAYS) -> list[Path]:
    """Create the CA and the identities' certificates that ``out`` lacks; returns the files
    written (empty when everything was there)."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if (directory / "ca.crt").exists() and (directory / "ca.key").exists():
        ca, ca_key = _load_ca(directory)
    else:
        ca, ca_key = _make_ca(directory, ca_days)
        written += [directory / "ca.crt", directory / "ca.key"]
    hosts = tuple(hosts)
    for identity in identities:
        if (directory / f"{identity}.crt").exists() and (directory / f"{identity}.key").exists():
            continue
        _make_leaf(directory, identity, hosts, days, ca, ca_key)
        written += [directory / f"{identity}.crt", directory / f"{identity}.key"]
    return written
