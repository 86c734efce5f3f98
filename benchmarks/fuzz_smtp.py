"""Bounded SMTP fuzzing of a real ingress: random and mutated sessions for N seconds.

    python benchmarks/fuzz_smtp.py --seconds 60 [--concurrency 8] [--seed 1] [--json out.jsonl]

Starts a spool (RocksDB under a temporary directory) and an ingress as processes, with a
self-signed certificate (STARTTLS), SASL users (AUTH PLAIN/LOGIN without TLS, to reach that
code) and short timeouts, then runs ``--concurrency`` clients that open session after
session until the time is up. A session is one of:

* ``random``: random bytes, or random tokens of SMTP vocabulary (verbs, paths, CR/LF/NUL,
  dots, long runs);
* ``mutated``: a valid session (plain, pipelined, HELO, SMTPUTF8, AUTH, STARTTLS + garbage)
  with 1-4 mutations: byte flips and insertions of CR, LF, NUL, ``.``, ``<``, ``@``...; lines
  duplicated, dropped, swapped or cut; line endings replaced; over-long lines; fake
  end-of-data variants; sent at once, line by line or in random pieces;
* ``tls``: EHLO, STARTTLS and a real TLS handshake, then a mutated session inside TLS.

Every reply line is checked (``NNN`` + ``SP``/``-`` + printable text, no echoed control
bytes). Reported: sessions tried, sessions per second, replies by class (2xx..5xx, 421),
sessions the server closed, malformed replies, crashes (the ingress process exited, or an
error was logged by the SMTP listener or the event loop), sessions the ingress still holds
open 5 s after the clients left (from its ``petrel_ingress_smtp_sessions`` gauge; the
2 s command deadline must have closed them) and, at the end, whether the ingress still
greets and accepts a valid message. The exit status is 1 unless there was no crash, no
malformed reply, no lingering session, and the ingress still greets and accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from petrel.ports import free_port

REPO = Path(__file__).resolve().parents[1]
REPLY_LINE = re.compile(rb"^[2-5]\d\d(?:[ -][\x20-\x7e\x80-\xff]*)?\r\n$")
CRASH_LOGGERS = ("ingress.smtp", "ingress.strict", "asyncio", "mail.log")
SESSION_LIMIT = 6.0  # seconds a fuzz session may last before the client gives up
IDLE = 0.25  # seconds without a reply after which the client stops waiting

VOCABULARY = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"QUIT",
              b"VRFY", b"EXPN", b"HELP", b"STARTTLS", b"AUTH PLAIN", b"AUTH LOGIN", b"BDAT",
              b"<a@example.com>", b"<>", b"<@a,@b:c@d>", b"<u%v@w>", b"<\"x@y\"@z>", b"<",
              b">", b"@", b" ", b"SIZE=99999999999", b"SMTPUTF8", b"BODY=8BITMIME",
              b"\r\n", b"\r", b"\n", b"\x00", b".", b"\r\n.\r\n", b"\n.\n", b"\r.\r",
              b"\xc3\xa9", b"\xff", b"x" * 600, b"y" * 1200, b"=", b"AGZ1enoAcHc=", b"*"]
INTERESTING = b"\r\n\x00\x7f\xff.<>@\"%!: \t\x1b"
END_VARIANTS = [b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r",
                b"\r\n..\r\n", b".\r\n", b""]


# -- the system under test -----------------------------------------------------------


class Service:
    """``python -m <name>`` with ``env``; ready when it prints its ``{"ready": ...}`` line."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = {**os.environ, **env}
        self.env.pop("PETREL_CONFIG", None)
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.smtp_port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 30.0) -> Service:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", self.name], cwd=REPO,
                                         env=self.env, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.proc.stdout], [], [], 0.2)[0]:
                continue
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited: {self.stderr_path.read_text()[-2000:]}")
            with contextlib.suppress(ValueError):
                if json.loads(line).get("ready") == self.name:
                    return self
        raise TimeoutError(f"{self.name} did not get ready")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        assert self.proc is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def logged_errors(self) -> Counter[str]:
        """Error (and worse) log lines by logger."""
        errors: Counter[str] = Counter()
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    errors["<traceback>"] += 1
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                errors[str(entry.get("logger"))] += 1
        return errors


def make_certificate(directory: Path) -> tuple[str, str] | None:
    if shutil.which("openssl") is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=fuzz.petrel.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def start_services(workdir: Path) -> tuple[Service, Service, bool]:
    spool_address = f"127.0.0.1:{free_port()}"
    spool = Service("spool", {"PETREL_DATA_DIR": str(workdir), "PETREL_LOG_LEVEL": "WARNING",
                              "PETREL_SPOOL__LISTEN": spool_address,
                              "PETREL_SPOOL__BACKEND": "rocksdb"}, workdir).start()
    smtp_port, metrics_port = free_port(), free_port()
    env = {
        "PETREL_DATA_DIR": str(workdir), "PETREL_LOG_LEVEL": "WARNING",
        "PETREL_SPOOL__ADDRESS": spool_address,
        "PETREL_SCHEDULER__ADDRESS": f"127.0.0.1:{free_port()}",
        "PETREL_INGRESS__SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "PETREL_INGRESS__GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "PETREL_INGRESS__HOSTNAME": "fuzz.petrel.test",
        # Sessions from 127.0.0.1 relay; those from other loopback addresses do not and
        # get the (shortened) greeting pause.
        "PETREL_INGRESS__RELAY_NETWORKS": '["127.0.0.1/32"]',
        "PETREL_INGRESS__GREETING_PAUSE": "0.05",
        "PETREL_INGRESS__COMMAND_TIMEOUT": "2",
        "PETREL_INGRESS__MAX_MESSAGE_SIZE": "65536",
        "PETREL_INGRESS__AUTH_USERS": '{"fuzz": "secret"}',
        "PETREL_INGRESS__AUTH_REQUIRE_TLS": "false",
        "PETREL_INGRESS__MAX_CONNECTIONS_PER_IP": "1000",
        "PETREL_INGRESS__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    certificate = make_certificate(workdir)
    if certificate is not None:
        env["PETREL_INGRESS__TLS_CERTIFICATE"] = certificate[0]
        env["PETREL_INGRESS__TLS_PRIVATE_KEY"] = certificate[1]
    ingress = Service("ingress", env, workdir)
    ingress.smtp_port = smtp_port
    ingress.metrics_port = metrics_port
    ingress.start()
    return spool, ingress, certificate is not None


# -- sessions --------------------------------------------------------------------------


def valid_sessions(rng: random.Random) -> list[list[bytes]]:
    body = [b"Subject: fuzz\r\n", b"\r\n", b"..leading dot\r\n",
            bytes(rng.choice(b"abc def") for _ in range(rng.randint(0, 200))) + b"\r\n"]
    rcpt = [f"RCPT TO:<r{n}@example.net>\r\n".encode() for n in range(rng.randint(1, 3))]
    plain = [b"EHLO client.example\r\n", b"MAIL FROM:<s@example.com> SIZE=500\r\n", *rcpt,
             b"DATA\r\n", *body, b".\r\n", b"QUIT\r\n"]
    return [
        plain,
        [b"HELO client.example\r\n", b"MAIL FROM:<>\r\n", *rcpt, b"DATA\r\n", *body, b".\r\n",
         b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n"],
        [b"EHLO [127.0.0.1]\r\n", b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> SMTPUTF8\r\n",
         b"RCPT TO:<zo\xc3\xab@example.net>\r\n", b"DATA\r\n", *body, b".\r\n"],
        [b"EHLO client.example\r\n", b"AUTH PLAIN AGZ1enoAc2VjcmV0\r\n", *plain[1:]],
        [b"EHLO client.example\r\n", b"AUTH LOGIN\r\n", b"ZnV6eg==\r\n", b"c2VjcmV0\r\n",
         *plain[1:]],
        [b"EHLO client.example\r\n", b"STARTTLS\r\n",
         bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))],
        [b"EHLO client.example\r\n", b"VRFY postmaster\r\n", b"EXPN staff\r\n", b"HELP\r\n",
         b"HELP MAIL\r\n", b"BDAT 10 LAST\r\n", b"QUIT\r\n"],
    ]


def mutate(lines: list[bytes], rng: random.Random) -> list[bytes]:
    lines = list(lines) or [b""]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        line = lines[i]
        choice = rng.randrange(12)
        if choice == 0 and line:
            at = rng.randrange(len(line))
            lines[i] = line[:at] + bytes([line[at] ^ (1 << rng.randrange(8))]) + line[at + 1:]
        elif choice == 1:
            at = rng.randint(0, len(line))
            lines[i] = line[:at] + bytes([rng.choice(INTERESTING)]) + line[at:]
        elif choice == 2 and line:
            at = rng.randrange(len(line))
            lines[i] = line[:at] + line[at + 1:]
        elif choice == 3:
            lines.insert(i, line)
        elif choice == 4 and len(lines) > 1:
            del lines[i]
        elif choice == 5:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif choice == 6:
            lines[i] = line.rstrip(b"\r\n") + rng.choice([b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])
        elif choice == 7:
            lines.insert(i, bytes([rng.choice(b"AZaz09 .")]) * rng.randint(400, 5000) + b"\r\n")
        elif choice == 8:
            lines.insert(i, rng.choice(END_VARIANTS))
        elif choice == 9:
            lines.insert(i, b"".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 6))))
        elif choice == 10:
            lines[i] = line.swapcase()
        else:
            del lines[rng.randint(i, len(lines)) :]
            lines = lines or [b""]
    return lines


def random_session(rng: random.Random) -> list[bytes]:
    if rng.random() < 0.3:
        return [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000)))]
    return [b"".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 12)))
            for _ in range(rng.randint(1, 12))]


@dataclass
class Report:
    seconds: float = 0.0
    concurrency: int = 0
    seed: int = 0
    sessions: int = 0
    sessions_by_kind: Counter[str] = field(default_factory=Counter)
    replies_by_class: Counter[str] = field(default_factory=Counter)
    server_closed: int = 0
    refused_at_connect: int = 0
    malformed_replies: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    client_errors: Counter[str] = field(default_factory=Counter)
    crashes: int = 0
    logged_errors: dict[str, int] = field(default_factory=dict)
    lingering_sessions: int | None = None
    still_greeting: bool = False
    still_accepting: bool = False
    ingress_rss_mb: list[float] = field(default_factory=list)  # one sample per 10 s
    tls: bool = False

    def as_dict(self) -> dict[str, object]:
        return {f.name: dict(value) if isinstance(value := getattr(self, f.name), Counter)
                else value for f in fields(self)}

    def record(self, line: bytes) -> None:
        if not REPLY_LINE.match(line):
            self.malformed_replies += 1
            if len(self.malformed_examples) < 5:
                self.malformed_examples.append(repr(line[:120]))
            return
        if line[3:4] != b"-":
            code = line[:3].decode()
            self.replies_by_class[f"{code[0]}xx"] += 1
            if code == "421":
                self.replies_by_class["421"] += 1


class Session:
    def __init__(self, port: int, report: Report, rng: random.Random) -> None:
        self.port = port
        self.report = report
        self.rng = rng
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.closed_by_server = False

    async def read_replies(self, wait: float = IDLE) -> list[bytes]:
        """Reply lines until ``wait`` seconds pass without one, or the server closes."""
        assert self.reader is not None
        lines: list[bytes] = []
        while not self.closed_by_server:
            try:
                line = await asyncio.wait_for(self.reader.readline(), wait)
            except TimeoutError:
                break
            except (ValueError, asyncio.LimitOverrunError):
                self.report.malformed_replies += 1
                break
            if not line:
                self.closed_by_server = True
                break
            self.report.record(line)
            lines.append(line)
            wait = min(wait, 0.05) if line[3:4] != b"-" else wait
        return lines

    async def send(self, data: bytes) -> None:
        assert self.writer is not None and self.reader is not None
        if self.closed_by_server or self.writer.is_closing() or self.reader.at_eof():
            return
        self.writer.write(data)
        await self.writer.drain()

    async def play(self, lines: list[bytes]) -> None:
        mode = self.rng.randrange(3)
        if mode == 0:
            await self.send(b"".join(lines))
            await self.read_replies(0.5)
        elif mode == 1:
            for line in lines:
                await self.send(line)
                await self.read_replies()
                if self.closed_by_server:
                    return
        else:
            data = b"".join(lines)
            while data and not self.closed_by_server:
                cut = self.rng.randint(1, 64)
                piece, data = data[:cut], data[cut:]
                await self.send(piece)
                if self.rng.random() < 0.1:
                    await self.read_replies(0.02)
            await self.read_replies(0.5)

    async def run(self, kind: str, tls: bool) -> None:
        source = "127.0.0.1" if self.rng.random() < 0.7 else f"127.0.0.{self.rng.randint(2, 9)}"
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0), limit=1 << 16)
        try:
            greeting = await self.read_replies(1.0)
            if greeting and greeting[-1].startswith(b"421"):
                self.report.refused_at_connect += 1
                return
            rng = self.rng
            if kind == "random":
                await self.play(random_session(rng))
            elif kind == "tls" and tls:
                await self.send(b"EHLO tls.example\r\n")
                await self.read_replies()
                await self.send(b"STARTTLS\r\n")
                reply = await self.read_replies()
                if reply and reply[-1].startswith(b"220"):
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    await self.writer.start_tls(context)
                    await self.play(mutate(rng.choice(valid_sessions(rng)[:5]), rng))
            else:
                await self.play(mutate(rng.choice(valid_sessions(rng)), rng))
        finally:
            if self.closed_by_server:
                self.report.server_closed += 1
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


async def client_loop(port: int, report: Report, until: float, rng: random.Random,
                      tls: bool, check: Callable[[], bool]) -> None:
    while time.monotonic() < until and check():
        kind = rng.choices(["random", "mutated", "tls"], weights=[3, 6, 1 if tls else 0])[0]
        report.sessions += 1
        report.sessions_by_kind[kind] += 1
        try:
            await asyncio.wait_for(Session(port, report, rng).run(kind, tls), SESSION_LIMIT)
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            report.client_errors[type(exc).__name__] += 1


def open_sessions(metrics_port: int) -> int | None:
    """The ingress's own count of open SMTP sessions (``None`` when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    match = re.search(r"^petrel_ingress_smtp_sessions (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else None


async def lingering_sessions(metrics_port: int, wait: float) -> int | None:
    """Sessions still open ``wait`` seconds after every client left (the command deadline
    must have closed whatever the server was still waiting on)."""
    deadline = time.monotonic() + wait
    while True:
        count = await asyncio.to_thread(open_sessions, metrics_port)
        if not count or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


async def still_serving(port: int) -> tuple[bool, bool]:
    """(greets a new client, accepts a valid message)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False, False
    try:
        async with asyncio.timeout(10):
            greets = (await reader.readline()).startswith(b"220 ")
            script = [b"EHLO check.example\r\n", b"MAIL FROM:<check@example.com>\r\n",
                      b"RCPT TO:<check@example.net>\r\n", b"DATA\r\n"]
            for line in script:
                writer.write(line)
                await writer.drain()
                while (reply := await reader.readline())[3:4] == b"-":
                    pass
            writer.write(b"Subject: check\r\n\r\nstill here\r\n.\r\n")
            await writer.drain()
            accepted = (await reader.readline()).startswith(b"250 ")
            return greets, accepted and reply.startswith(b"354")
    except (TimeoutError, OSError):
        return False, False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def fuzz(args: argparse.Namespace, workdir: Path) -> Report:
    spool, ingress, tls = start_services(workdir)
    port = ingress.smtp_port
    report = Report(seconds=args.seconds, concurrency=args.concurrency, seed=args.seed, tls=tls)
    try:
        until = time.monotonic() + args.seconds
        master = random.Random(args.seed)

        async def sample_rss() -> None:
            while True:
                report.ingress_rss_mb.append(round(ingress.rss_mb(), 1))
                await asyncio.sleep(10)

        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(*(
            client_loop(port, report, until, random.Random(master.getrandbits(64)), tls,
                        lambda: ingress.alive)
            for _ in range(args.concurrency)))
        sampler.cancel()
        report.ingress_rss_mb.append(round(ingress.rss_mb(), 1))
        report.lingering_sessions = await lingering_sessions(ingress.metrics_port, 5.0)
        report.still_greeting, report.still_accepting = await still_serving(port)
        alive = ingress.alive
    finally:
        ingress.stop()
        spool.stop()
    errors = ingress.logged_errors()
    report.logged_errors = dict(errors)
    report.crashes = (0 if alive else 1) + sum(
        n for logger, n in errors.items() if logger in CRASH_LOGGERS or logger == "<traceback>")
    return report


def print_report(report: Report) -> None:
    total_replies = sum(v for k, v in report.replies_by_class.items() if k.endswith("xx"))
    print(f"SMTP fuzz: {report.seconds:g} s, {report.concurrency} clients, seed {report.seed}, "
          f"STARTTLS {'on' if report.tls else 'off'}")
    print(f"| sessions tried | {report.sessions} ({report.sessions / report.seconds:.0f}/s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(report.sessions_by_kind.items())) + ") |")
    print(f"| replies | {total_replies} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(report.replies_by_class.items())) + ") |")
    print(f"| sessions closed by the server | {report.server_closed} |")
    print(f"| refused at connect (421) | {report.refused_at_connect} |")
    print(f"| malformed replies | {report.malformed_replies} {report.malformed_examples or ''} |")
    print(f"| client-side errors | {dict(report.client_errors)} |")
    print(f"| crashes | {report.crashes} (error logs: {report.logged_errors}) |")
    print(f"| sessions still open 5 s after the clients left | {report.lingering_sessions} |")
    print(f"| still greeting / accepting | {report.still_greeting} / {report.still_accepting} |")
    rss = report.ingress_rss_mb
    print(f"| ingress RSS start / peak / end | {rss[0]} / {max(rss)} / {rss[-1]} MB |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="append the report as one JSON line")
    parser.add_argument("--workdir", type=Path,
                        help="keep the services' data and logs here (default: a temporary "
                             "directory, removed)")
    args = parser.parse_args()
    # Writes racing the server's close are expected here; asyncio would warn about each.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(fuzz(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="petrel-fuzz-") as tmp:
            report = asyncio.run(fuzz(args, Path(tmp)))
    print_report(report)
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps(report.as_dict()) + "\n")
    ok = (report.crashes == 0 and report.malformed_replies == 0 and report.still_greeting
          and report.still_accepting and report.lingering_sessions == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
