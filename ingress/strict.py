"""aiosmtpd's SMTP protocol made strict and bounded (docs/hardening.md lists every rule).

aiosmtpd 1.4.6 already reads DATA lines only up to CRLF (CVE-2024-27305) and drops the
plaintext buffer when TLS starts (CVE-2024-34083). ``StrictSMTP`` adds the rest:

* every command line passes ``ingress.commands.check_command_line`` (CRLF only, no NUL or
  control character, 512 octets) before aiosmtpd parses it; a refusal never echoes input;
* protocol synchronisation: input before the greeting, or pipelined behind a command that
  must end a group (``ingress.commands.breaks_synchronization``, DATA included, so content
  sent before the ``354`` is refused), answers ``554 5.5.0`` and closes;
* DATA is read by ``ingress.data.DataReceiver``: only ``<CRLF>.<CRLF>`` ends it, bare CR/LF,
  NUL, long lines and oversize content refuse the message, memory stays within the size
  limit;
* MAIL/RCPT paths go through ``ingress.addresses.parse_path`` (brackets required, no source
  routes or ``%``/``!``/quoted ``@`` routing, UTF-8 only with SMTPUTF8);
* limits: connections in total and per address (``421 4.7.0`` at connect), errors and junk
  commands per session (``421 4.7.0`` and close), a per-request deadline with a minimum
  DATA rate (``421 4.4.2`` and close), VRFY disabled. Counters restart after each
  accepted message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, NoReturn

from aiosmtpd.smtp import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    MISSING,
    SMTP,
    TLSSetupException,
    syntax,
)

from ingress.addresses import PathError, parse_path
from ingress.commands import (
    breaks_synchronization,
    check_command_line,
    line_limit,
    verb_of,
)
from ingress.data import DataReceiver
from ingress.limits import ConnectionLimiter, RequestDeadline
from ingress.smtp_setup import setup_smtp
from petrel import smtp_replies
from petrel.config import IngressConfig

log = logging.getLogger(__name__)

# While the handler stores a message the client waits on us; the store has its own deadlines.
HANDLER_TIMEOUT = 600.0
_UNLIMITED = 1 << 30
# DATA is taken in blocks of the complete lines already received, up to this many octets.
DATA_BLOCK_BYTES = 256 * 1024


class ProtocolViolation(Exception):
    """Raised while reading or parsing a command: ``reply`` is sent instead of running it,
    and the session is closed after it when ``close``."""

    def __init__(self, reply: str, *, close: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.close = close


def peer_address(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class SessionReader(asyncio.StreamReader):
    """The session's input. Command lines (``readuntil()`` with its default separator, as
    aiosmtpd and its AUTH challenges call it) are checked by the owner; DATA is read with
    ``read_data_segment``."""

    def __init__(self, owner: StrictSMTP, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._owner = owner
        self._mid_line = False

    @property
    def pending(self) -> int:
        """Octets received and not read yet."""
        return len(self._buffer)  # type: ignore[attr-defined]  # StreamReader's own buffer

    def discard_line_state(self) -> None:
        self._mid_line = False

    def release(self) -> None:
        """Forget the owner and the transport (the session is over; see
        ``StrictSMTP._release``)."""
        self._owner = None  # type: ignore[assignment]
        self._transport = None

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        if separator != b"\n":
            return await super().readuntil(separator)
        continued = self._mid_line
        if not continued:
            self._owner.request_started()
        self._mid_line = True
        line = await super().readuntil(separator)  # LimitOverrunError: still mid-line
        self._mid_line = False
        self._owner.command_received(line, self.pending, continued)
        return line

    async def read_command_line(self) -> bytes:
        """The next command line (checked by the owner); an over-long one is dropped through
        its end and refused with ``ProtocolViolation``. The end of input raises
        ``IncompleteReadError``."""
        try:
            return await self.readuntil()
        except asyncio.LimitOverrunError as exc:
            return await self._refuse_overrun(exc)

    async def readline(self) -> bytes:
        """``read_command_line`` for aiosmtpd's AUTH responses, except that the end of input
        returns what was there."""
        try:
            return await self.readuntil()
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            return await self._refuse_overrun(exc)

    async def _refuse_overrun(self, overrun: asyncio.LimitOverrunError) -> NoReturn:
        while True:  # readuntil raises ProtocolViolation once the rest of the line is in
            await self.read(overrun.consumed)
            try:
                await self.readuntil()
            except asyncio.LimitOverrunError as exc:
                overrun = exc

    async def read_data_block(self, max_bytes: int) -> tuple[bytes, bool]:
        """The complete lines already received (at most ``max_bytes``, stopping before any
        line that starts with ``.``), flagged ``True``; otherwise ``read_data_segment()``
        flagged ``False``. A line starting with ``.`` (the end-of-data line among them) is
        always read alone, so nothing after the end of data is ever taken."""
        buffer = self._buffer  # type: ignore[attr-defined]  # StreamReader's own buffer
        end = buffer.rfind(b"\n", 0, max_bytes)
        if end > 0 and buffer[0] != 0x2E:  # not "."
            dot = buffer.find(b"\n.", 0, end)
            if dot >= 0:
                end = dot
            return await self.readexactly(end + 1), True
        return await self.read_data_segment(), False

    async def read_data_segment(self) -> bytes:
        """Up to and including the next LF, or a piece of a line longer than the limit."""
        try:
            return await super().readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            return await self.read(exc.consumed)


class StrictSMTP(SMTP):
    """``SMTP`` with the rules of the module docstring. ``limiter`` is shared by the
    listener's sessions; ``trusted(ip)`` says whether a peer is in the relay networks (no
    greeting pause, no per-address connection limit)."""

    def __init__(self, handler: Any, *, config: IngressConfig,
                 limiter: ConnectionLimiter | None, trusted: Callable[[str], bool],
                 **kwargs: Any) -> None:
        limit = max(config.max_line_length, line_limit("MAIL", config.max_command_line)) + 2
        self._session_reader = SessionReader(self, limit, kwargs["loop"])
        # Not SMTP.__init__: it re-introspects the class on every connection (smtp_setup).
        setup_smtp(self, handler, timeout=config.command_timeout,
                   reader=self._session_reader, **kwargs)
        self._config = config
        self._limiter = limiter
        self._trusted = trusted
        self.refused = False  # by the connection limits, before any SMTP
        self._lost = False
        self._admitted_ip: str | None = None
        self._errors = 0
        self._junk = 0
        self._close_after_reply = False
        self._served = False  # the command loop has ended
        self._continued: list[bytes] = []
        # The command being run ("" between commands).
        self.verb = ""
        self._data_deadline: RequestDeadline | None = None
        self._deadline_at = 0.0
        self._timer_armed = False
        # aiosmtpd keeps these limits in a class-level dict that every EHLO grows; ours are
        # enforced by the reader.
        self.command_size_limits = collections.defaultdict(lambda: _UNLIMITED)
        self.command_size_limit = _UNLIMITED

    # -- connection limits ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._limiter is not None:
            ip = peer_address(transport.get_extra_info("peername"))
            refusal = self._limiter.admit(ip)
            if refusal is not None:
                self.refused = True
                log.info("connection from %s refused: %s", ip, refusal, extra={"peer": ip})
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._admitted_ip = ip
        super().connection_made(transport)
        if self._original_transport is not None:
            self._session_reader.discard_line_state()

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            self._release()
            return
        if self._lost:
            return
        self._lost = True
        if self._admitted_ip is not None and self._limiter is not None:
            self._limiter.release(self._admitted_ip)
            self._admitted_ip = None
        super().connection_lost(error)
        # aiosmtpd calls this itself with the exception of a failed TLS handshake; nobody
        # awaits the stream's "closed" future, so mark its exception as seen.
        closed = getattr(self, "_closed", None)
        if isinstance(closed, asyncio.Future) and closed.done() and not closed.cancelled():
            closed.exception()
        if self._served:
            self._release()

    def _release(self) -> None:
        """Drop the references that lead from the session back to itself (its reader, writer,
        command table, task and connect callback), once it is over: disconnected and its
        command loop ended. Reference counting then frees a session the moment it ends; left
        to the cyclic garbage collector, ≈ 40 objects per session cost ≈ 5 % of ingress's
        CPU in collections."""
        self._client_connected_cb = None
        self._smtp_methods = {}
        self._handler_coroutine = None
        self._reader = None  # type: ignore[assignment]
        self._writer = None  # type: ignore[assignment]
        self._session_reader.release()

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return False
        return super().eof_received()

    # -- greeting, reading, replies ---------------------------------------------------

    @property
    def peer_ip(self) -> str:
        return peer_address(self.session.peer if self.session is not None else None)

    async def _handle_client(self) -> None:
        try:
            pause = 0.0 if self._trusted(self.peer_ip) else self._config.greeting_pause
            if pause > 0:
                await asyncio.sleep(pause)
            if self._session_reader.pending:
                log.info("%s talked before the greeting", self.peer_ip,
                         extra={"peer": self.peer_ip})
                self.hang_up(smtp_replies.SYNC_ERROR)
                return
            await self._serve_commands()
        finally:
            self._served = True
            if self._lost:
                self._release()

    async def _serve_commands(self) -> None:
        """Greet, then read and run commands until the connection is closing (QUIT, a
        hang-up) or gone.

        The command loop of aiosmtpd's ``SMTP._handle_client`` (release pinned in
        pyproject.toml) for the options we use (no PROXY protocol, no command call limits,
        no per-command size limits: the reader enforces ours), with the same replies and
        exception handling, minus its two log calls per line, which sanitized and formatted
        the line even with the logger off. ``verb`` names the command being run."""
        assert self.session is not None
        await self.push(f"220 {self.hostname} {self.__ident__}")
        bogus_budget = BOGUS_LIMIT
        reader = self._session_reader
        while not self._closing():
            try:
                line = (await reader.read_command_line()).rstrip(b"\r\n")
                if not line:
                    await self.push("500 Error: bad syntax")
                    continue
                command_bytes, _, arg_bytes = line.partition(b" ")
                try:
                    command = command_bytes.upper().decode("ascii")
                except UnicodeDecodeError:
                    await self.push("500 Error: bad syntax")
                    continue
                arg: str | None = None
                if arg_bytes:
                    arg_bytes = arg_bytes.strip()
                    if self.enable_SMTPUTF8:
                        arg = str(arg_bytes, encoding="utf-8", errors="surrogateescape")
                    else:
                        try:
                            arg = str(arg_bytes, encoding="ascii", errors="strict")
                        except UnicodeDecodeError:
                            await self.push("500 Error: strict ASCII mode")
                            continue
                if not self._tls_handshake_okay and command != "QUIT":
                    await self.push("554 Command refused due to lack of security")
                    continue
                if (self.require_starttls and not self._tls_protocol
                        and command not in ALLOWED_BEFORE_STARTTLS):
                    await self.push("530 Must issue a STARTTLS command first")
                    continue
                method = self._smtp_methods.get(command)
                if method is None:
                    log.info("%s sent an unknown command", self.peer_ip,
                             extra={"peer": self.peer_ip})
                    bogus_budget -= 1
                    if bogus_budget < 1:
                        await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                        self.hang_up()
                        continue
                    await self.push(smtp_replies.UNKNOWN_COMMAND)
                    continue
                self._reset_timeout()
                self.verb = command
                try:
                    await method(arg)
                finally:
                    self.verb = ""
            except asyncio.CancelledError:
                self._writer.close()
                raise
            except ConnectionResetError:
                self._writer.close()
                raise
            except Exception as error:
                await self._answer_exception(error)

    async def _answer_exception(self, error: Exception) -> None:
        """What aiosmtpd's loop does with an exception from reading or running a command."""
        status = "500 Error: Cannot describe error"
        try:
            status = await self.handle_exception(error)
        except Exception as inner:
            log.exception("%s: exception in handle_exception()", self.peer_ip)
            status = f"500 Error: ({inner.__class__.__name__}) {inner}"
        finally:
            if isinstance(error, TLSSetupException):
                assert self.transport is not None
                self.transport.close()
                self.connection_lost(error)
            else:
                await self.push(status)

    def request_started(self) -> None:
        """The reader starts waiting for a new command line."""
        self._reset_timeout(self._config.command_timeout)

    def command_received(self, line: bytes, pending: int, continued: bool) -> None:
        """Check a complete command line (``continued``: the tail of an over-long one)."""
        verb = verb_of(line)
        refusal = smtp_replies.COMMAND_TOO_LONG if continued else \
            check_command_line(line, self._config.max_command_line, verb)
        if refusal is not None:
            raise ProtocolViolation(refusal)
        if not pending:
            return
        session = self.session
        pipelining = bool(session is not None and session.extended_smtp and session.host_name)
        if breaks_synchronization(verb, pending, pipelining):
            log.info("%s pipelined without permission", self.peer_ip,
                     extra={"peer": self.peer_ip})
            raise ProtocolViolation(smtp_replies.SYNC_ERROR, close=True)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, ProtocolViolation):
            if error.close:
                self._close_after_reply = True
            return error.reply
        if isinstance(error, TLSSetupException):
            # The client's handshake failed (garbage, wrong version, reset): aiosmtpd closes
            # the connection without a reply.
            log.info("%s TLS handshake failed: %r", self.peer_ip, error.__cause__,
                     extra={"peer": self.peer_ip})
            return smtp_replies.TLS_HANDSHAKE_FAILED
        return await super().handle_exception(error)

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def push(self, status: Any) -> None:
        if self._closing():
            return
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        if status[3:4] == b"-":
            # A continuation line (EHLO's extensions): sent with the final line in one
            # write instead of one send() per line.
            self._continued.append(status + b"\r\n")
            return
        final = status
        if self._continued:
            status = b"".join(self._continued) + status
            self._continued.clear()
        # aiosmtpd's push without its debug log line and with a drain only when the reply
        # did not go out at once (a client that does not read): the common case is a write.
        self._writer.write(status + b"\r\n")
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():  # type: ignore[attr-defined]
            await self._writer.drain()
        if self._close_after_reply:
            self.hang_up()
            return
        if final[:1] in (b"4", b"5") and final[3:4] in (b" ", b""):
            self._errors += 1
            if self._errors >= self._config.max_errors and not final.startswith(b"421"):
                log.info("%s made too many errors", self.peer_ip, extra={"peer": self.peer_ip})
                self.hang_up(smtp_replies.TOO_MANY_ERRORS)

    def _handshaking(self) -> bool:
        return self._tls_protocol is not None and (self.session is None or
                                                   self.session.ssl is None)

    def hang_up(self, reply: str | None = None) -> None:
        """Send ``reply`` (when given) and close the connection."""
        if self._lost:
            return
        if self._handshaking():
            self._abandon()
            return
        if self._closing():
            return
        assert self.transport is not None
        if reply is not None:
            self._writer.write(reply.encode() + b"\r\n")
        self.transport.close()

    def _abandon(self) -> None:
        """Drop a connection asyncio will not report lost: closing the TLS layer in the
        middle of a handshake aborts the socket but tells neither the protocol nor, as an
        error, the STARTTLS command (it sees a completed handshake). Without this such a
        session would hold its connection slot and memory forever."""
        if isinstance(self._original_transport, asyncio.Transport):
            self._original_transport.abort()
        self.connection_lost(None)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the session's deadline to ``duration`` seconds from now (aiosmtpd calls this
        for every command). One timer serves the session: a later deadline keeps the armed
        timer, which re-arms itself for the rest when it fires early; only an earlier
        deadline replaces it. (A new timer per command cost ≈ 5 % of ingress's CPU.)"""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline_at = deadline
        handle = self._timeout_handle
        if handle is not None and self._timer_armed:
            if handle.when() <= deadline:
                return
            handle.cancel()
        self._arm_timer()

    def _arm_timer(self) -> None:
        self._timeout_handle = self.loop.call_at(self._deadline_at, self._deadline_reached)
        self._timer_armed = True

    def _deadline_reached(self) -> None:
        # The handle stays set (aiosmtpd's connection_lost cancels it) but no longer counts.
        self._timer_armed = False
        if self.loop.time() < self._deadline_at:
            self._arm_timer()
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        if self._data_deadline is not None:
            remaining = self._data_deadline.remaining(self.loop.time())
            if remaining > 0:
                self._reset_timeout(remaining)
                return
        if self._closing():
            self._abandon()  # closed long ago and still not gone
            return
        log.info("%s timed out", self.peer_ip, extra={"peer": self.peer_ip})
        self.hang_up(smtp_replies.TIMEOUT)

    def _transaction_done(self) -> None:
        """A message was accepted: the session starts over with clean counters."""
        self._errors = 0
        self._junk = 0

    async def _count_junk(self) -> bool:
        """Count a junk command; ``True`` when the session was closed for it."""
        self._junk += 1
        if self._junk > self._config.max_junk_commands:
            log.info("%s sent too many junk commands", self.peer_ip,
                     extra={"peer": self.peer_ip})
            self.hang_up(smtp_replies.TOO_MANY_JUNK_COMMANDS)
            return True
        return False

    # -- commands ---------------------------------------------------------------------

    @syntax("NOOP [ignored]")
    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._count_junk():
            await super().smtp_NOOP(arg)

    @syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:
        if not await self._count_junk():
            await super().smtp_RSET(arg)

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        if not await self._count_junk():
            await super().smtp_HELP(arg)

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._count_junk():
            await self.push(smtp_replies.VRFY_DISABLED)

    async def smtp_EXPN(self, arg: str) -> None:
        if not await self._count_junk():
            await super().smtp_EXPN(arg)

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str) -> None:
        """aiosmtpd's QUIT, except that the connection is closed without cancelling the
        command loop (which ends by itself once the connection is closing): no
        ``CancelledError`` and its traceback per session."""
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        status = await self._call_handler_hook("QUIT")
        await self.push("221 Bye" if status is MISSING else status)
        if self.transport is not None:
            self.transport.close()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self._handshaking() and not self._lost:
            log.info("%s left in the middle of the TLS handshake", self.peer_ip,
                     extra={"peer": self.peer_ip})
            self._abandon()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        verb = self.verb
        if verb not in ("MAIL", "RCPT"):
            return super()._getaddr(arg)
        mail = verb == "MAIL"
        bad = smtp_replies.BAD_SENDER_SYNTAX if mail else smtp_replies.BAD_RECIPIENT_SYNTAX
        try:
            address, parameters = parse_path(arg, null_allowed=mail, smtputf8=True)
        except PathError as exc:
            log.info("%s %s path refused: %s", self.peer_ip, verb, exc,
                     extra={"peer": self.peer_ip})
            raise ProtocolViolation(bad) from exc
        if mail:
            smtputf8 = "SMTPUTF8" in parameters.upper().split()
        else:
            smtputf8 = self.envelope is not None and self.envelope.smtp_utf8
        if not address.isascii() and not smtputf8:
            raise ProtocolViolation(smtp_replies.NEED_SMTPUTF8)
        return address or "<>", parameters

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if self._session_reader.pending:
            self._close_after_reply = True
            await self.push(smtp_replies.SYNC_ERROR)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        receiver = DataReceiver(self.data_size_limit or _UNLIMITED, self._config.max_line_length)
        self._data_deadline = RequestDeadline(self._config.command_timeout,
                                              self._config.min_data_rate, self.loop.time())
        try:
            while True:
                segment, whole_lines = await self._session_reader.read_data_block(
                    DATA_BLOCK_BYTES)
                if (receiver.feed_block(segment) if whole_lines
                        else receiver.feed(segment)):
                    break
                self._data_deadline.received(len(segment), self.loop.time())
        finally:
            self._data_deadline = None
        if receiver.refusal is not None:
            log.info("%s DATA refused: %s", self.peer_ip, receiver.refusal,
                     extra={"peer": self.peer_ip})
            self._set_post_data_state()
            await self.push(receiver.refusal)
            return
        content = receiver.content()
        self.envelope.content = content
        self.envelope.original_content = content
        self._reset_timeout(HANDLER_TIMEOUT)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        reply = "250 OK" if status is MISSING else str(status)
        if reply.startswith("250"):
            self._transaction_done()
        await self.push(reply)
