"""A real DNS server on loopback for MX tests: dnsmasq with only the records a test gives.

``DnsServer(records).start()`` runs ``dnsmasq`` in the foreground on 127.0.0.1:<free port>,
reading no system files (no /etc/hosts, no resolv.conf, no upstream), answering
authoritatively for the given names only. Records:

* ``mx=("example.test", "mx1.example.test", 10)``
* ``a=("mx1.example.test", "127.0.0.1")``
* null MX: ``mx=("nullmx.test", ".", 0)``
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, wait_for


@dataclass
class DnsServer:
    mx: list[tuple[str, str, int]] = field(default_factory=list)
    a: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _process: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> DnsServer:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(binary).exists():
            raise RuntimeError("dnsmasq is not installed (apt-get install dnsmasq-base)")
        self.port = self.port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="petrel-dns-")
        conf = Path(self._dir.name) / "dnsmasq.conf"
        lines = [
            "no-resolv", "no-hosts", "no-poll", "bind-interfaces", "listen-address=127.0.0.1",
            f"port={self.port}", "log-facility=-", "user=root", "group=root",
            f"pid-file={Path(self._dir.name) / 'pid'}",
        ]
        domains = {name for name, _, _ in self.mx} | {name for name, _ in self.a}
        for name in sorted(domains):
            lines.append(f"auth-zone={name}")
        for name, host, pref in self.mx:
            lines.append(f"mx-host={name},{host},{pref}")
        for name, addr in self.a:
            lines.append(f"host-record={name},{addr}")
        lines.append("auth-server=ns.test,127.0.0.1")
        conf.write_text("\n".join(lines) + "\n")
        self._process = subprocess.Popen(
            [binary, "--keep-in-foreground", f"--conf-file={conf}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=10, message="dnsmasq to answer")
        return self

    def _answers(self) -> bool:
        import dns.message
        import dns.query

        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited with {self._process.returncode}")
        query = dns.message.make_query("probe.invalid", "A")
        try:
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.3)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
