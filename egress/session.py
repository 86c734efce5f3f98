"""One SMTP connection to one remote address, from banner to QUIT, on aiosmtplib's low-level API.

``Session.open`` connects, reads the banner, says EHLO (HELO when EHLO is refused), upgrades
with STARTTLS when the server offers it and policy allows (``tls = "required"`` refuses hosts
that do not offer it), then says EHLO again. ``Session.transaction`` sends one message: MAIL,
one RCPT per recipient, DATA; it returns one reply per recipient. Every step has a timeout
(``connect_timeout`` for the connection and banner, ``command_timeout`` per command,
``data_timeout`` for the message data and its final reply).

A failure that makes the host unusable for this message (no connection, a 4xx/5xx banner,
EHLO or MAIL reply, a TLS policy failure, a timeout before RCPT) raises ``HostFailed``; the
caller decides whether to try the next host (transient) or give up (permanent). Failures
after MAIL was accepted become per-recipient replies instead: by then the host has the
envelope, and trying another host would risk a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX

from egress import metrics
from egress.data import END_OF_DATA, START_INPUT, send_content, send_data, wire_content
from egress.pipeline import send_group
from egress.replies import (
    SMTPUTF8_NOT_SUPPORTED,
    TLS_NOT_OFFERED,
    connect_failed,
    connection_lost,
    from_response,
    timed_out,
)
from petrel.config import EgressConfig
from petrel.routing import normalize_domain
from petrel.smtp_replies import Reply

log = logging.getLogger(__name__)

QUIT_TIMEOUT = 5.0
INVALID_SENDER = Reply(553, "5.1.7", "Invalid sender address")
INVALID_RECIPIENT = Reply(553, "5.1.3", "Invalid recipient address")


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a session connects: the host's name (for TLS and logs), an address and a port."""

    host: str
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.host} [{self.address}]:{self.port}"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    ehlo_name: str
    tls: str
    tls_context: ssl.SSLContext
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    pipelining: bool = True

    @classmethod
    def from_config(cls, config: EgressConfig) -> SessionOptions:
        return cls(config.ehlo_name, config.tls, make_tls_context(config.tls_verify),
                   config.connect_timeout, config.command_timeout, config.data_timeout,
                   config.pipelining)


def make_tls_context(verify: bool) -> ssl.SSLContext:
    """Client context for STARTTLS. Unverified by default: opportunistic TLS to MX hosts
    protects against passive eavesdropping only, and most MX certificates would not verify."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HostFailed(Exception):
    """The host cannot take this message. ``reply`` says why; ``from_server`` is true when it
    is the server's own reply (not one egress made up); ``permanent`` replies end the attempt
    for every recipient, transient ones let the caller try the next host."""

    def __init__(self, reply: Reply, peer: Peer, *, from_server: bool) -> None:
        super().__init__(f"{peer}: {reply}")
        self.reply = reply
        self.peer = peer
        self.from_server = from_server

    @property
    def permanent(self) -> bool:
        return self.reply.is_permanent


def encode_address(address: str, smtputf8: bool) -> bytes | None:
    """``<address>`` as bytes for MAIL/RCPT. A Unicode domain with an ASCII local part is sent
    as its IDNA A-label; anything else non-ASCII needs SMTPUTF8 (``None`` when unavailable)."""
    if address.isascii():
        return f"<{address}>".encode("ascii")
    local, at, domain = address.rpartition("@")
    if at and local.isascii():
        ascii_domain = normalize_domain(domain)
        if ascii_domain.isascii():
            return f"<{local}@{ascii_domain}>".encode("ascii")
    if smtputf8:
        return f"<{address}>".encode()
    return None


class Session:
    """An open, greeted SMTP connection (see the module docstring)."""

    def __init__(self, smtp: aiosmtplib.SMTP, peer: Peer, site: str, tls: bool,
                 options: SessionOptions) -> None:
        self.smtp = smtp
        self.peer = peer
        self.site = site
        self.tls = tls
        self.options = options
        self.deliveries = 0
        self.last_used = time.monotonic()
        # Set when the server said 421 (it is closing the connection).
        self.closing = False
        # No transaction left open: greeted, or the last one ended with DATA's final reply
        # (RFC 5321 4.1.1.4: the server has reset its state), so a new MAIL needs no RSET.
        self.clean = True
        self._counted = True
        metrics.CONNECTIONS_OPEN.inc()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            metrics.CONNECTIONS_OPEN.dec()

    @classmethod
    async def open(cls, peer: Peer, site: str, options: SessionOptions, *,
                   allow_tls: bool = True) -> Session:
        smtp = aiosmtplib.SMTP(hostname=peer.address, port=peer.port,
                               local_hostname=options.ehlo_name,
                               timeout=options.command_timeout, start_tls=False,
                               tls_context=options.tls_context)
        try:
            await smtp.connect(timeout=options.connect_timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise HostFailed(from_response(exc.code, exc.message), peer, from_server=True) from exc
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            raise HostFailed(connect_failed(f"Connection to {peer} timed out"), peer,
                             from_server=False) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise HostFailed(connect_failed(f"Connection to {peer} failed: {exc}"), peer,
                             from_server=False) from exc
        try:
            await _greet(smtp, peer, options)
            tls = False
            if options.tls != "disabled" and allow_tls and smtp.supports_extension("starttls"):
                tls = await _starttls(smtp, peer, options)
                if not tls and not smtp.is_connected:
                    # The handshake failed and took the connection with it; opportunistic
                    # policy means delivering in plain text is better than not delivering.
                    log.info("TLS handshake with %s failed, reconnecting without TLS", peer,
                             extra={"peer": str(peer)})
                    return await cls.open(peer, site, options, allow_tls=False)
                if tls:
                    await _greet(smtp, peer, options)
            elif options.tls == "required":
                raise HostFailed(TLS_NOT_OFFERED, peer, from_server=False)
        except HostFailed:
            await _quit(smtp)
            raise
        except BaseException:
            smtp.close()
            raise
        return cls(smtp, peer, site, tls, options)

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected and not self.closing

    async def transaction(self, sender: str, recipients: Sequence[str],
                          body: bytes) -> list[Reply]:
        """Send one message; one reply per recipient, in order. Raises ``HostFailed`` when MAIL
        is refused or the connection fails before any recipient was given."""
        self.last_used = time.monotonic()
        self.clean = False
        smtp, timeout = self.smtp, self.options.command_timeout
        smtputf8 = smtp.supports_extension("smtputf8")
        sender_arg = encode_address(sender, smtputf8)
        if sender_arg is None:
            raise HostFailed(SMTPUTF8_NOT_SUPPORTED, self.peer, from_server=False)
        needs_utf8 = smtputf8 and (not sender.isascii() or any(
            encode_address(r, False) is None for r in recipients))
        params = []
        if smtp.supports_extension("size"):
            params.append(f"SIZE={len(body)}".encode())
        if smtp.supports_extension("8bitmime") and not body.isascii():
            params.append(b"BODY=8BITMIME")
        if needs_utf8:
            params.append(b"SMTPUTF8")
        if self.options.pipelining and smtp.supports_extension("pipelining"):
            mail = b" ".join([b"MAIL", b"FROM:" + sender_arg, *params])
            return await self._pipelined(mail, recipients, body, smtputf8)
        try:
            response = await smtp.execute_command(b"MAIL", b"FROM:" + sender_arg, *params,
                                                  timeout=timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise HostFailed(_failure("MAIL FROM", exc), self.peer, from_server=False) from exc
        except ValueError as exc:  # a control character in the address
            raise HostFailed(INVALID_SENDER, self.peer, from_server=False) from exc
        if not 200 <= response.code < 300:
            raise HostFailed(from_response(response.code, response.message), self.peer,
                             from_server=True)

        replies: list[Reply | None] = [None] * len(recipients)
        accepted: list[int] = []
        for index, recipient in enumerate(recipients):
            address = encode_address(recipient, smtputf8)
            if address is None:
                replies[index] = SMTPUTF8_NOT_SUPPORTED
                continue
            try:
                response = await smtp.execute_command(b"RCPT", b"TO:" + address,
                                                      timeout=timeout)
            except ValueError:
                replies[index] = INVALID_RECIPIENT
                continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                return _abort(replies, _failure("RCPT TO", exc))
            if (closing := self._note_rcpt(replies, accepted, index, response)) is not None:
                return _abort(replies, closing)
        if not accepted:
            return _fill(replies, SMTPUTF8_NOT_SUPPORTED)  # every entry is set by now
        data_reply = await self._data_reply(send_data(smtp, body, self.options.data_timeout))
        return self._delivered(replies, accepted, data_reply)

    async def _pipelined(self, mail: bytes, recipients: Sequence[str], body: bytes,
                         smtputf8: bool) -> list[Reply]:
        """``transaction`` with MAIL, every RCPT and DATA in one group (RFC 2920), then the
        content: the same replies and failures, one round trip before the content."""
        if COMMAND_INJECTION_REGEX.search(mail):
            raise HostFailed(INVALID_SENDER, self.peer, from_server=False)
        replies: list[Reply | None] = [None] * len(recipients)
        sent: list[int] = []
        commands = [mail]
        for index, recipient in enumerate(recipients):
            address = encode_address(recipient, smtputf8)
            if address is None:
                replies[index] = SMTPUTF8_NOT_SUPPORTED
            elif COMMAND_INJECTION_REGEX.search(address):
                replies[index] = INVALID_RECIPIENT
            else:
                commands.append(b"RCPT TO:" + address)
                sent.append(index)
        if not sent:
            self.clean = True  # nothing was sent
            return _fill(replies, SMTPUTF8_NOT_SUPPORTED)  # every entry is set
        commands.append(b"DATA")
        responses, error = await send_group(self.smtp, commands, self.options.command_timeout)
        if not responses:
            raise HostFailed(_failure("MAIL FROM", error), self.peer, from_server=False)
        mail_response, data_start = responses[0], responses[-1]
        if not 200 <= mail_response.code < 300:
            if error is None and data_start.code == START_INPUT:
                await self._end_empty_data()
            raise HostFailed(from_response(mail_response.code, mail_response.message),
                             self.peer, from_server=True)
        accepted: list[int] = []
        for index, response in zip(sent, responses[1:], strict=False):
            if (closing := self._note_rcpt(replies, accepted, index, response)) is not None:
                return _abort(replies, closing)
        if error is not None:
            stage = "RCPT TO" if len(responses) <= len(sent) else "DATA"
            return _abort(replies, _failure(stage, error))
        if not accepted:
            if data_start.code == START_INPUT:
                await self._end_empty_data()
            return _fill(replies, SMTPUTF8_NOT_SUPPORTED)  # every entry is set by now
        if data_start.code != START_INPUT:
            data_reply = from_response(data_start.code, data_start.message)
        else:
            data_reply = await self._data_reply(
                send_content(self.smtp, wire_content(body), self.options.data_timeout))
        return self._delivered(replies, accepted, data_reply)

    def _note_rcpt(self, replies: list[Reply | None], accepted: list[int], index: int,
                   response: aiosmtplib.SMTPResponse) -> Reply | None:
        """Record RCPT's ``response`` for recipient ``index``; its reply when the server
        said 421 (it is closing the connection: the transaction ends here)."""
        reply = from_response(response.code, response.message)
        replies[index] = reply
        if 200 <= response.code < 300:
            accepted.append(index)
        elif response.code == 421:
            self.closing = True
            return reply
        return None

    async def _end_empty_data(self) -> None:
        """RFC 2920 3.1: the server took a pipelined DATA although no recipient was accepted;
        a lone dot ends that transaction (its reply says nothing about any recipient)."""
        await self._data_reply(send_content(self.smtp, END_OF_DATA, self.options.data_timeout))

    async def _data_reply(self, exchange: Awaitable[aiosmtplib.SMTPResponse]) -> Reply:
        """DATA's final reply, from ``exchange``, as a ``Reply``; sets ``clean`` when the server
        answered (refused before or after the content, the transaction is over either way)."""
        try:
            response = await exchange
        except aiosmtplib.SMTPResponseException as exc:
            self.clean = True
            return from_response(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _failure("DATA", exc)
        self.clean = True
        return from_response(response.code, response.message)

    def _delivered(self, replies: list[Reply | None], accepted: list[int],
                   data_reply: Reply) -> list[Reply]:
        """The replies once DATA was answered: ``data_reply`` for every accepted recipient."""
        self.closing = data_reply.code == 421
        for index in accepted:
            replies[index] = data_reply
        self.deliveries += 1
        self.last_used = time.monotonic()
        return _fill(replies, data_reply)

    async def reset(self) -> bool:
        """RSET before reusing the connection; false (and closed) when the server is gone.
        ``clean`` afterwards."""
        try:
            response = await self.smtp.execute_command(b"RSET",
                                                       timeout=self.options.command_timeout)
        except (aiosmtplib.SMTPException, OSError):
            self.close()
            return False
        if response.code != 250:
            await self.quit()
            return False
        self.clean = True
        return True

    async def quit(self) -> None:
        self._uncount()
        await _quit(self.smtp)

    def close(self) -> None:
        self._uncount()
        self.smtp.close()


def _fill(replies: list[Reply | None], default: Reply) -> list[Reply]:
    return [default if reply is None else reply for reply in replies]


def _abort(replies: list[Reply | None], failure: Reply) -> list[Reply]:
    """The replies of a transaction that ended before DATA's final reply: ``failure`` for
    every recipient without a refusal of its own, accepted ones included (their RCPT's 250
    delivered nothing)."""
    return [failure if reply is None or 200 <= reply.code < 300 else reply
            for reply in replies]


def _failure(stage: str, error: BaseException | None) -> Reply:
    """The reply egress makes up when ``stage`` got no answer because of ``error``."""
    if isinstance(error, aiosmtplib.SMTPTimeoutError):
        return timed_out(stage)
    return connection_lost(stage, str(error))


async def _greet(smtp: aiosmtplib.SMTP, peer: Peer, options: SessionOptions) -> None:
    try:
        try:
            await smtp.ehlo(timeout=options.command_timeout)
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code < 500 or not smtp.is_connected:
                raise
            await smtp.helo(timeout=options.command_timeout)
    except aiosmtplib.SMTPResponseException as exc:
        raise HostFailed(from_response(exc.code, exc.message), peer, from_server=True) from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise HostFailed(timed_out("EHLO"), peer, from_server=False) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise HostFailed(connection_lost("EHLO", str(exc)), peer, from_server=False) from exc


async def _starttls(smtp: aiosmtplib.SMTP, peer: Peer, options: SessionOptions) -> bool:
    """True when the connection is now encrypted. False when the server refused STARTTLS
    (the connection is still usable in plain text) or the handshake failed (the connection
    is closed). With ``tls = "required"`` both raise ``HostFailed`` instead."""
    required = options.tls == "required"
    try:
        await smtp.starttls(server_hostname=peer.host, tls_context=options.tls_context,
                            timeout=options.command_timeout)
    except aiosmtplib.SMTPResponseException as exc:
        if required:
            raise HostFailed(Reply(451, "4.7.4", f"STARTTLS refused by {peer}: "
                                   f"{exc.code} {exc.message}"), peer, from_server=False) from exc
        return False
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        if required:
            raise HostFailed(Reply(451, "4.7.5", f"TLS negotiation with {peer} failed: {exc}"),
                             peer, from_server=False) from exc
        return False
    return True


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    """QUIT politely, but never wait long or fail for it."""
    if smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await smtp.execute_command(b"QUIT", timeout=QUIT_TIMEOUT)
    smtp.close()
