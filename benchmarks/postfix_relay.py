"""A private Postfix instance that relays everything to a sink: the benchmark's peer for Petrel.

    python benchmarks/postfix_relay.py setup DIR INGRESS_PORT SINK_PORT
    python benchmarks/postfix_relay.py start-fg DIR      # master in the foreground
    python benchmarks/postfix_relay.py stop DIR
    python benchmarks/postfix_relay.py queue DIR         # queue files not yet delivered

``PostfixRelay(directory, ingress_port, sink_port)`` does the same from Python
(``benchmarks/bench.py`` uses it). Everything lives under ``directory``: ``etc/`` (main.cf,
master.cf), ``queue/``, ``data/`` and ``log/maillog``. The system instance (``/etc/postfix``,
port 25) is never started or changed; the binaries come from Debian's ``postfix`` package and
must run as root (the master drops to the ``postfix`` user).

The instance listens on ``127.0.0.1:INGRESS_PORT`` only, accepts relaying from 127.0.0.0/8,
and hands every recipient to ``[127.0.0.1]:SINK_PORT`` over SMTP (no DNS, no TLS, nothing
delivered locally). The queue is Postfix's normal durable queue: ``cleanup`` fsyncs each
queue file before ``smtpd`` answers 250, the same promise Petrel keeps. Differences from
Postfix's defaults that matter for throughput (the rest are plumbing of a private instance):

- ``initial_destination_concurrency = 20`` (default 5), so 20 parallel deliveries to the one
  sink from the start instead of after slow start; destination concurrency limit 20
  (= default), ``default_process_limit = 100`` (= default), ``in_flow_delay = 1s`` (= default).
- chroot off in master.cf (a private queue directory), log file via ``postlogd``
  (no syslog daemon on the benchmark machines).

``Knobs`` changes those values (the shared peer harness found destination concurrency 5 or 50,
``in_flow_delay = 0`` and no logging to make no or a negative difference at 2 KB x 20).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MARKER = "# petrel benchmarks/postfix_relay.py instance"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
# Files Postfix's own tools (post-install, dynamic maps) expect beside main.cf.
PACKAGE_FILES = ("dynamicmaps.cf", "dynamicmaps.cf.d", "postfix-files", "postfix-files.d")


@dataclass(frozen=True)
class Knobs:
    destination_concurrency: int = 20
    initial_concurrency: int = 20
    process_limit: int = 100
    in_flow_delay: str = "1s"
    log: bool = True


def main_cf(directory: Path, sink_port: int, knobs: Knobs) -> str:
    """The instance's main.cf."""
    lines = [
        MARKER,
        "compatibility_level = 3.6",
        f"queue_directory = {directory / 'queue'}",
        f"data_directory = {directory / 'data'}",
        "myhostname = postfix-relay.bench.example",
        "mydomain = bench.example",
        "myorigin = $myhostname",
        "# relay only: nothing is local, everything goes to the sink",
        "mydestination =",
        "local_recipient_maps =",
        "alias_maps =",
        "alias_database =",
        f"relayhost = [127.0.0.1]:{sink_port}",
        "default_transport = smtp",
        "relay_transport = smtp",
        "mynetworks = 127.0.0.0/8",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "smtp_dns_support_level = disabled",
        "smtpd_tls_security_level = none",
        "smtp_tls_security_level = none",
        "smtpd_banner = $myhostname ESMTP",
        "biff = no",
        "append_dot_mydomain = no",
        "delay_warning_time = 0h",
        "# throughput (the queue itself keeps Postfix's defaults: fsync before 250)",
        f"default_process_limit = {knobs.process_limit}",
        f"default_destination_concurrency_limit = {knobs.destination_concurrency}",
        f"smtp_destination_concurrency_limit = {knobs.destination_concurrency}",
        f"initial_destination_concurrency = {knobs.initial_concurrency}",
        f"in_flow_delay = {knobs.in_flow_delay}",
        "smtp_connection_cache_on_demand = yes",
    ]
    if knobs.log:
        lines += [f"maillog_file_prefixes = /var, /dev/stdout, {directory}",
                  f"maillog_file = {directory / 'log' / 'maillog'}"]
    return "\n".join(lines) + "\n"


# name type private unpriv chroot wakeup maxproc command
SERVICES = (
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
)


def master_cf(ingress_port: int) -> str:
    """The instance's master.cf: smtpd on the loopback port, every daemon without chroot."""
    rows = [(f"127.0.0.1:{ingress_port}", "inet", "n", "-", "n", "-", "-", "smtpd"), *SERVICES]
    return MARKER + "\n" + "".join(" ".join(f"{c:<10}" for c in row).rstrip() + "\n"
                                   for row in rows)


class PostfixRelay:
    """One private instance under ``directory`` (created by ``setup``, reused by the others)."""

    def __init__(self, directory: Path | str, ingress_port: int = 0, sink_port: int = 0,
                 knobs: Knobs | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.conf = self.directory / "etc"
        self.ingress_port = ingress_port
        self.sink_port = sink_port
        self.knobs = knobs or Knobs()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def setup(self) -> None:
        """Write a fresh instance (a previous instance of ours in ``directory`` is replaced;
        any other non-empty directory is refused)."""
        if shutil.which("postfix") is None:
            raise RuntimeError("postfix is not installed (apt-get install postfix)")
        if self.directory.exists():
            conf = self.conf / "main.cf"
            if conf.is_file() and MARKER in conf.read_text():
                self.stop()
                shutil.rmtree(self.directory)
            elif any(self.directory.iterdir()):
                raise RuntimeError(f"{self.directory} is not empty and not a relay instance")
        for sub in ("etc", "queue", "data", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        # The daemons run as user postfix: every directory above the queue must be searchable.
        path = self.directory
        while path != path.parent:
            mode = path.stat().st_mode
            if not mode & 0o001:
                path.chmod(mode | 0o001)
            path = path.parent
        for sub in ("", "etc", "log", "queue"):
            (self.directory / sub).chmod(0o755)
        shutil.chown(self.directory / "queue", "root", "root")
        shutil.chown(self.directory / "data", "postfix", "postfix")
        for name in PACKAGE_FILES:
            source = Path("/etc/postfix") / name
            if source.is_dir():
                shutil.copytree(source, self.conf / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy(source, self.conf / name)
        (self.conf / "main.cf").write_text(main_cf(self.directory, self.sink_port, self.knobs))
        (self.conf / "master.cf").write_text(master_cf(self.ingress_port))
        # `postfix check` creates the queue's subdirectories with their owners and modes.
        subprocess.run(["postfix", "-c", str(self.conf), "check"], check=True,
                       capture_output=True, timeout=60)

    def command(self) -> list[str]:
        """The foreground master: the caller may wrap it (e.g. into a cgroup) and run it."""
        return ["postfix", "-c", str(self.conf), "start-fg"]

    def start(self, wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        """Run the master in the foreground as our child, in its own session."""
        log = open(self.directory / "log" / "master.out", "wb")  # noqa: SIM115
        self._log = log
        argv = wrap(self.command()) if wrap else self.command()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self, timeout: float = 30.0) -> None:
        """``postfix stop`` (the master stops its daemons), then wait for our child."""
        if (self.conf / "main.cf").is_file():
            subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True,
                           timeout=timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session we started
                self.proc.wait(5)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def master_pid(self) -> int | None:
        try:
            return int((self.directory / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queue_length(self) -> int:
        """Queue files not yet delivered (every queue but the ones Postfix keeps for itself)."""
        total = 0
        for name in QUEUES:
            for _root, _dirs, files in os.walk(self.directory / "queue" / name):
                total += len(files)
        return total

    def wait_empty(self, timeout: float) -> int:
        """Wait (bounded) for an empty queue; returns the last queue length."""
        deadline = time.monotonic() + timeout
        left = self.queue_length()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.queue_length()
        return left


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("setup", "start-fg", "stop", "queue"))
    parser.add_argument("directory")
    parser.add_argument("ingress_port", nargs="?", type=int, default=0)
    parser.add_argument("sink_port", nargs="?", type=int, default=0)
    args = parser.parse_args(argv)
    relay = PostfixRelay(args.directory, args.ingress_port, args.sink_port)
    if args.command == "setup":
        if not (args.ingress_port and args.sink_port):
            parser.error("setup needs INGRESS_PORT and SINK_PORT")
        relay.setup()
        print(f"postfix relay: {relay.conf}, 127.0.0.1:{args.ingress_port} -> "
              f"127.0.0.1:{args.sink_port}")
    elif args.command == "start-fg":
        os.execvp("postfix", relay.command())
    elif args.command == "stop":
        relay.stop()
    else:
        print(relay.queue_length())
    return 0


if __name__ == "__main__":
    sys.exit(main())
