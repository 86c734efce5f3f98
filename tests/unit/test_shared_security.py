"""Security defaults and ``petrel certs``, without sockets."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from petrel.certs import IDENTITIES, ensure_certs
from petrel.cli import cli
from petrel.config import Config, SecurityConfig, split_hostport
from petrel.grpc_auth import GrpcSecurity


def test_every_default_listener_is_on_loopback() -> None:
    config = Config()
    listeners = {f"{section}.{name}": value
                 for section, model in config.model_dump().items() if isinstance(model, dict)
                 for name, value in model.items() if name.endswith("listen")}
    assert "gateway.http_listen" in listeners and "ingress.smtp_listen" in listeners
    for option, value in listeners.items():
        if value:
            host, _ = split_hostport(value)
            assert ipaddress.ip_address(host).is_loopback, option
    assert config.security.grpc_auth == "none" and not config.gateway.api_keys


def test_certs_name_every_service_and_serve_both_ends(tmp_path: Path) -> None:
    written = ensure_certs(tmp_path, hosts=("mta.example.net", "10.1.2.3"))
    assert len(written) == 2 + 2 * len(IDENTITIES)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for identity in IDENTITIES:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{identity}.crt").read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {"localhost", identity, "mta.example.net"} <= set(
            names.get_values_for_type(x509.DNSName))
        assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
                ipaddress.ip_address("10.1.2.3")} <= set(
            names.get_values_for_type(x509.IPAddress))
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
        assert stat.S_IMODE((tmp_path / f"{identity}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_certs_keep_what_exists_and_sign_what_is_missing(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    spool_before = (tmp_path / "spool.crt").read_bytes()
    (tmp_path / "egress.crt").unlink()
    assert ensure_certs(tmp_path) == [tmp_path / "egress.crt", tmp_path / "egress.key"]
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "spool.crt").read_bytes() == spool_before
    ca = x509.load_pem_x509_certificate(ca_before)
    x509.load_pem_x509_certificate((tmp_path / "egress.crt").read_bytes()) \
        .verify_directly_issued_by(ca)
    assert ensure_certs(tmp_path) == []


def test_cli_certs_and_api_key(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["certs", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "spool.crt" in result.output
    result = runner.invoke(cli, ["api-key", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    key = result.output.split("key: ", 1)[1].split()[0]
    assert len(key) > 40 and key not in result.output.split("config: ", 1)[1]
    assert runner.invoke(cli, ["api-key"]).exit_code != 0


def test_mtls_security_reads_the_identity_of_the_process(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    security = GrpcSecurity.from_config(
        SecurityConfig(grpc_auth="mtls", certs_dir=str(tmp_path)), "scheduler")
    assert security.cert == (tmp_path / "scheduler.crt").read_bytes()
    assert security.server_credentials() is not None
    assert security.channel_credentials() is not None
    assert "BEGIN" not in repr(security)
