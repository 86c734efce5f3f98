"""The ESMTP listener: aiosmtpd on the service's own asyncio loop (no threaded Controller).

Reception policy, answered with the canonical replies of ``petrel.smtp_replies``:

* EHLO advertises SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, SMTPUTF8, STARTTLS (when
  a certificate is configured) and AUTH PLAIN LOGIN (when users are configured, and only over
  TLS unless ``auth_require_tls`` is off).
* MAIL: sender syntax (``<>`` is the null sender), SIZE parameter over the limit.
* RCPT: recipient syntax, relay only for peers in ``relay_networks`` or authenticated
  sessions, at most ``max_recipients``; a recipient on the global suppression list (tenant
  ``""``) is refused ``550 5.7.1 Recipient suppressed (...)`` with a ``Rejection`` record (the
  tenant's own list is checked after DATA, when ``X-Tenant`` is known: ``ingress.acceptor``).
  Recipients at the bounce domain or feedback addresses (``ingress.reports``) are accepted
  from anyone, never mixed with other recipients in one transaction (``452 4.5.3``), and their
  message is a report: classified and logged, not queued.
* EHLO/HELO: the name must be a host name or an address literal (``ingress.commands``).
* DATA: only ``<CRLF>.<CRLF>`` ends it; a bare CR or LF or a NUL anywhere in the data refuses
  the message, as does data over the size limit (``ingress.data``). The reply
  ``250 2.0.0 <id>`` is sent only after the spool's durable acknowledgement; a store failure
  answers ``451 4.3.0``.

Protocol strictness and resource limits (line rules, pipelining, paths, connection, error,
junk and time limits) live in ``ingress.strict.StrictSMTP``; docs/hardening.md lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import ssl
import weakref
from typing import Any

import grpc
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ingress import metrics
from ingress.acceptor import Acceptor, RecipientsSuppressed, Submission
from ingress.addresses import is_valid_mailbox
from ingress.commands import is_valid_helo
from ingress.limits import ConnectionLimiter
from ingress.message import InvalidMessage
from ingress.replies import normalize_reply
from ingress.reports import ReportFailed, Reports
from ingress.spool_writer import StoreFailed
from ingress.strict import StrictSMTP
from petrel import smtp_replies
from petrel.config import IngressConfig
from petrel.suppression import describe

log = logging.getLogger(__name__)

IDENT = "Petrel ESMTP"
NULL_SENDER = "<>"


def make_tls_context(certificate: str, private_key: str) -> ssl.SSLContext | None:
    if not (certificate and private_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, private_key)
    return context


def peer_ip(session: Session) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class RelayPolicy:
    """Which peers may relay without authenticating."""

    # Verdicts remembered per address text (a session asks at connect and per RCPT); the
    # memory is dropped whole when it reaches this many addresses.
    MEMORY = 4096

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._verdicts: dict[str, bool] = {}

    def allows(self, ip: str) -> bool:
        verdict = self._verdicts.get(ip)
        if verdict is None:
            if len(self._verdicts) >= self.MEMORY:
                self._verdicts.clear()
            verdict = self._verdicts[ip] = self._allows(ip)
        return verdict

    def _allows(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self._networks)


class SmtpHandler:
    """aiosmtpd handler hooks implementing the reception policy."""

    def __init__(self, config: IngressConfig, acceptor: Acceptor,
                 tls: ssl.SSLContext | None, reports: Reports | None = None) -> None:
        self._config = config
        self._acceptor = acceptor
        self._tls = tls
        self._reports = reports if reports is not None and reports.enabled else None
        # Transactions whose recipients are report addresses.
        self._report_envelopes: weakref.WeakSet[Envelope] = weakref.WeakSet()
        self._relay = RelayPolicy(config.relay_networks)
        self.draining = False
        self.storing: set[Session] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.transactions = metrics.TransactionClock()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        if not is_valid_helo(hostname):
            session.host_name = None
            return [smtp_replies.BAD_HELO]
        session.host_name = hostname
        keywords = [f"SIZE {self._config.max_message_size}", "8BITMIME", "PIPELINING",
                    "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        tls_active = session.ssl is not None
        if self._tls is not None and not tls_active:
            keywords.append("STARTTLS")
        if self._config.auth_users and (tls_active or not self._config.auth_require_tls):
            keywords.append("AUTH PLAIN LOGIN")
        lines = [server.hostname, *keywords]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        if not is_valid_helo(hostname):
            session.host_name = None
            return smtp_replies.BAD_HELO
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.draining:
            return smtp_replies.SHUTTING_DOWN
        if address != NULL_SENDER and not is_valid_mailbox(address):
            return smtp_replies.BAD_SENDER_SYNTAX
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.transactions.start(envelope)
        return smtp_replies.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not is_valid_mailbox(address):
            return smtp_replies.BAD_RECIPIENT_SYNTAX
        if self._reports is not None:
            report = self._reports.is_report_address(address)
            if envelope.rcpt_tos and report != (envelope in self._report_envelopes):
                return smtp_replies.MIXED_REPORT_RECIPIENTS
            if report:
                if len(envelope.rcpt_tos) >= self._config.max_recipients:
                    return smtp_replies.TOO_MANY_RECIPIENTS
                self._report_envelopes.add(envelope)
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(rcpt_options)
                return smtp_replies.RECIPIENT_OK
        if not (session.authenticated or self._relay.allows(peer_ip(session))):
            log.info("relay denied for %s to %s", peer_ip(session), address,
                     extra={"peer": peer_ip(session)})
            return smtp_replies.RELAY_DENIED
        if len(envelope.rcpt_tos) >= self._config.max_recipients:
            return smtp_replies.TOO_MANY_RECIPIENTS
        checker = self._acceptor.suppression
        if checker is not None:
            refused = await checker.check("", [address])
            if refused:
                sender = envelope.mail_from or ""
                await self._acceptor.log_rejections(
                    "" if sender == NULL_SENDER else sender, refused, tenant="", campaign="",
                    peer=peer_ip(session), protocol="ESMTP")
                return smtp_replies.suppressed(describe(refused[address]))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return smtp_replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # ``StrictSMTP.smtp_DATA`` calls this only for data its ``DataReceiver`` accepted:
        # CRLF line endings only, no NUL, lines and size within the limits (not scanned again
        # here: three passes over the content, a quarter of ingress's CPU at 100 KB).
        raw = envelope.original_content or b""
        if len(raw) > self._config.max_message_size:
            return smtp_replies.TOO_BIG
        sender = envelope.mail_from or ""
        if self._reports is not None and envelope in self._report_envelopes:
            return await self._report(session, envelope, raw)
        submission = Submission(
            sender="" if sender == NULL_SENDER else sender,
            recipients=tuple(envelope.rcpt_tos), content=raw,
            protocol="ESMTPA" if session.authenticated else "ESMTP",
            peer_ip=peer_ip(session), helo=session.host_name or "", partial_ok=True)
        self.storing.add(session)
        self.idle.clear()
        try:
            accepted = await self._acceptor.accept(submission)
        except StoreFailed as exc:
            log.warning("message from %s not stored: %s", submission.peer_ip, exc.details,
                        extra={"peer": submission.peer_ip})
            if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return smtp_replies.SPOOL_FULL
            return smtp_replies.SPOOL_UNAVAILABLE
        except InvalidMessage as exc:
            return f"{smtp_replies.INVALID_CONTENT}: {exc}"
        except RecipientsSuppressed as exc:
            return exc.reply
        finally:
            self.storing.discard(session)
            if not self.storing:
                self.idle.set()
        self.transactions.finish(envelope, accepted.trace_id)
        return smtp_replies.queued(accepted.id)

    async def _report(self, session: Session, envelope: Envelope, raw: bytes) -> str:
        """A report's DATA: events on disk before the 250 (``ingress.reports``)."""
        assert self._reports is not None
        sender = envelope.mail_from or ""
        self.storing.add(session)
        self.idle.clear()
        try:
            return await self._reports.process("" if sender == NULL_SENDER else sender,
                                               list(envelope.rcpt_tos), raw, peer_ip(session))
        except ReportFailed as exc:
            log.warning("report from %s not processed: %s", peer_ip(session), exc,
                        extra={"peer": peer_ip(session)})
            return smtp_replies.REPORT_UNAVAILABLE
        finally:
            self.storing.discard(session)
            if not self.storing:
                self.idle.set()

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error, exc_info=error)
        return smtp_replies.LOCAL_ERROR

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = self._config.auth_users.get(login)
        ok = expected is not None and hmac.compare_digest(
            expected.encode(), auth_data.password)
        if not ok:
            log.info("authentication failed for %r from %s", login, peer_ip(session))
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class PetrelSMTP(StrictSMTP):
    """The strict protocol (``ingress.strict``) with canonical, enhanced-code replies
    (``ingress.replies``) and connection tracking for graceful shutdown."""

    def __init__(self, handler: SmtpHandler, *, connections: set[PetrelSMTP],
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.refused:
            return
        self._connections.add(self)
        metrics.SMTP_CONNECTIONS.inc()

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = normalize_reply(status, self.verb)
            metrics.smtp_reply(status)
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(error)

    def shut_down(self) -> None:
        """Say goodbye and close (used at shutdown on sessions without DATA in progress)."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write(smtp_replies.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class SmtpListener:
    """Owns the listening socket and the live sessions."""

    def __init__(self, config: IngressConfig, acceptor: Acceptor,
                 reports: Reports | None = None) -> None:
        self._config = config
        self._tls = make_tls_context(config.tls_certificate, config.tls_private_key)
        self.handler = SmtpHandler(config, acceptor, self._tls, reports)
        self._server: asyncio.Server | None = None
        self.connections: set[PetrelSMTP] = set()
        self._relay = RelayPolicy(config.relay_networks)
        self.limiter = ConnectionLimiter(config.max_connections, config.max_connections_per_ip,
                                         self._relay.allows)

    def _protocol(self) -> PetrelSMTP:
        config = self._config
        auth_off = [] if config.auth_users else ["PLAIN", "LOGIN"]
        return PetrelSMTP(
            self.handler, connections=self.connections, config=config, limiter=self.limiter,
            trusted=self._relay.allows, data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True, decode_data=False, hostname=config.hostname, ident=IDENT,
            tls_context=self._tls, auth_require_tls=config.auth_require_tls,
            auth_exclude_mechanism=auth_off, authenticator=self.handler.authenticate,
            loop=asyncio.get_running_loop())

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound ``(host, port)``."""
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, host=host, port=port, reuse_address=True,
            reuse_port=self._config.reuse_port or None)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting connections and close every session, except those whose message is
        being stored: they get their reply first (waiting at most ``grace`` seconds)."""
        self.handler.draining = True
        if self._server is not None:
            self._server.close()
        for session in list(self.connections):
            if session.session not in self.handler.storing:
                session.shut_down()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.handler.idle.wait(), grace)
        for session in list(self.connections):
            session.shut_down()
        if self._server is not None:
            await self._server.wait_closed()
