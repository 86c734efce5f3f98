"""A real SMTP server (aiosmtpd) standing in for a remote MX in tests.

It runs in its own thread and loop (``aiosmtpd.controller.Controller``) on 127.0.0.1 and
records every accepted transaction. Replies are scripted by the recipient's local part,
like KumoMTA's test sink:

* ``tempfail...``       -> ``451 4.3.0`` at RCPT
* ``permfail...`` / ``nouser...`` -> ``550 5.1.1`` at RCPT
* ``full...``           -> ``452 4.2.2`` at RCPT
* ``flaky...``          -> ``451 4.3.0`` on the first attempt for that address, then ``250``
* anything else         -> accepted

``sink.rcpt_reply`` / ``sink.data_reply`` override everything when set (e.g. refuse all
with ``"421 4.3.2 busy"``). ``sink.messages`` holds ``Received`` transactions. With
``tls_context`` it offers STARTTLS. It advertises PIPELINING, as most MX hosts do, unless
``pipelining`` is false. Subclasses serve through their own handler
(``handler()``), e.g. one that subclasses ``SinkHandler``.
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.net import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    peer: str


@dataclass
class SinkHandler:
    sink: SmtpSink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.sink.pipelining:
            # aiosmtpd reads pipelined commands in order but does not advertise it.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.sink.reply_for_rcpt(address)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data_reply:
            return self.sink.data_reply
        data = envelope.original_content or b""
        self.sink.record(Received(str(envelope.mail_from), list(envelope.rcpt_tos), data,
                                  str(session.peer[0] if session.peer else "")))
        return "250 2.0.0 OK queued"


@dataclass
class SmtpSink:
    port: int = 0
    host: str = "127.0.0.1"
    hostname: str = "sink.test"
    rcpt_reply: str | None = None
    data_reply: str | None = None
    messages: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None
    tls_context: ssl.SSLContext | None = None
    pipelining: bool = True

    def reply_for_rcpt(self, address: str) -> str:
        with self._lock:
            self.attempts[address] += 1
            count = self.attempts[address]
        if self.rcpt_reply:
            return self.rcpt_reply
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 Temporary failure, try later"
        if local.startswith(("permfail", "nouser")):
            return "550 5.1.1 No such user here"
        if local.startswith("full"):
            return "452 4.2.2 Mailbox full"
        if local.startswith("flaky") and count == 1:
            return "451 4.3.0 Greylisted, try again"
        return "250 2.1.5 OK"

    def record(self, message: Received) -> None:
        with self._lock:
            self.messages.append(message)

    def received_for(self, recipient: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if recipient in m.recipients]

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def handler(self) -> object:
        """The aiosmtpd handler serving this sink."""
        return SinkHandler(self)

    def start(self) -> Self:
        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {}
        if self.tls_context is not None:
            kwargs["tls_context"] = self.tls_context
        self._controller = Controller(
            self.handler(), hostname=self.host, port=self.port, server_hostname=self.hostname,
            data_size_limit=64 * 1024 * 1024, decode_data=False, **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
