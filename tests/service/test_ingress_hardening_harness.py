"""Helpers for the hardening tests (no tests here): a greeting probe, connection-closed
checks, a self-signed certificate and the ingress as its own process (for RSS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.service.test_ingress_harness import REPO, RawSmtp
from tests.support.net import free_port


async def assert_greets(port: int, source: str = "127.0.0.1") -> None:
    """A new client still gets the 220 greeting."""
    client = await RawSmtp.connect(port, source=source)
    try:
        greeting = await client.reply()
        assert greeting.startswith("220 "), greeting
        assert await client.command("QUIT") == "221 2.0.0 Bye"
    finally:
        await client.close()


async def assert_closed(client: RawSmtp, timeout: float = 5.0) -> None:
    """The server closed the connection and sent nothing more."""
    async with asyncio.timeout(timeout):
        rest = await client.reader.read()
    assert rest == b"", rest


def make_certificate(directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=ingress.petrel.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


class IngressProcess:
    """``python -m ingress`` on free loopback ports, configured through the environment."""

    def __init__(self, data_dir: Path, spool_address: str, **ingress: str) -> None:
        self.data_dir = data_dir
        self.smtp_port = free_port()
        self.env = {
            **os.environ, "PETREL_DATA_DIR": str(data_dir), "PETREL_LOG_LEVEL": "WARNING",
            "PETREL_SPOOL__ADDRESS": spool_address,
            "PETREL_SCHEDULER__ADDRESS": f"127.0.0.1:{free_port()}",
            "PETREL_INGRESS__SMTP_LISTEN": f"127.0.0.1:{self.smtp_port}",
            "PETREL_INGRESS__GRPC_LISTEN": f"127.0.0.1:{free_port()}",
            "PETREL_INGRESS__HOSTNAME": "ingress.petrel.test",
            **{f"PETREL_INGRESS__{k.upper()}": v for k, v in ingress.items()},
        }
        self.env.pop("PETREL_CONFIG", None)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> IngressProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "ingress.stderr", "ab") as err:
            self._process = subprocess.Popen([sys.executable, "-m", "ingress"], cwd=REPO,
                                             env=self.env, stdout=subprocess.PIPE, stderr=err)
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([stdout], [], [], 0.2)[0]:
                continue
            line = stdout.readline()
            if not line:
                raise RuntimeError("ingress exited: "
                                   + (self.data_dir / "ingress.stderr").read_text()[-2000:])
            with contextlib.suppress(ValueError):
                if json.loads(line).get("ready") == "ingress":
                    return self
        self.stop()
        raise TimeoutError("ingress did not get ready")

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def status_kb(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure such as ``VmRSS`` or ``VmHWM``, in kB."""
        assert self._process is not None
        for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
