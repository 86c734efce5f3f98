"""`petrel up --secure`: certificates made once under the data directory, every service on
gRPC mutual TLS, mail still flows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from petrel.config import SecurityConfig
from petrel.grpc_auth import GrpcSecurity
from petrel.healthcheck import probe
from tests.support.messages import make_message, smtp_send
from tests.support.net import free_port, port_open, wait_for
from tests.support.pipeline import REPO
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def test_petrel_up_secure(tmp_path: Path, sink: SmtpSink) -> None:
    smtp, http, spool = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
    env["PETREL_SPOOL__LISTEN"] = env["PETREL_SPOOL__ADDRESS"] = f"127.0.0.1:{spool}"
    for section in ("scheduler", "bounce"):
        port = free_port()
        env[f"PETREL_{section.upper()}__LISTEN"] = f"127.0.0.1:{port}"
        env[f"PETREL_{section.upper()}__ADDRESS"] = f"127.0.0.1:{port}"
    grpc_port = free_port()
    env["PETREL_INGRESS__GRPC_LISTEN"] = env["PETREL_INGRESS__ADDRESS"] = f"127.0.0.1:{grpc_port}"
    data_dir = tmp_path / "data"
    with open(tmp_path / "up.log", "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "petrel", "up", "--secure", "--data-dir", str(data_dir),
             "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}",
             "--smarthost", sink.address, "--metrics-port", "0"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(smtp) and port_open(http), timeout=60,
                 message="SMTP and HTTP listeners")
        certs = data_dir / "certs"
        assert (certs / "ca.crt").exists() and (certs / "gateway.key").exists()
        client = GrpcSecurity.from_config(SecurityConfig(grpc_auth="mtls",
                                                         certs_dir=str(certs)))
        address = f"127.0.0.1:{spool}"
        assert wait_for(lambda: probe(address, security=client)[0], timeout=30)
        healthy, detail = probe(address, security=GrpcSecurity())
        assert not healthy, detail
        # The gateway reaches ingress over mTLS.
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=5)
                 .status_code == 200, timeout=30, message="gateway healthy")
        assert smtp_send(smtp, SENDER, ["secure@dest.test"],
                         make_message(SENDER, ["secure@dest.test"]))[0] == 250
        wait_for(lambda: sink.received_for("secure@dest.test"), timeout=30)
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
