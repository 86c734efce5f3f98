"""Request body limits, as ASGI middleware in front of the routes.

The whole body is read, bounded, before any route sees it (every route that takes a body
needs all of it anyway):

* a declared ``Content-Length`` over the limit is refused with ``413`` without storing it;
* a body growing past the limit while read is refused with ``413``;
* before a ``413``, a bounded amount of the rest is read and discarded so the client can read
  the answer (``DRAIN_BYTES``), then the connection is closed;
* ``Content-Encoding: gzip`` or ``deflate`` bodies are accepted (as KumoMTA does) and the limit
  applies after decompression, so a small compressed bomb is refused too; other encodings get
  ``415``, a corrupt compressed body ``400``;
* a client that does not finish sending its body within ``read_timeout`` gets ``408``.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

_COMPRESSED = frozenset({"gzip", "x-gzip", "deflate"})
# Before refusing a body, this much more of it is read and discarded (within DRAIN_TIME):
# closing a connection with unread data makes TCP reset it, and the client would see a reset
# instead of our 413. Anything bigger is cut off.
DRAIN_BYTES = 1024 * 1024
DRAIN_TIME = 1.0


class _Refused(Exception):
    def __init__(self, status: int, error: str, unread_body: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.unread_body = unread_body


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int, read_timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"]
                   if k not in (b"content-length", b"content-encoding")]
        try:
            encoding = self._encoding(scope)
            self._check_declared_length(scope)
            async with asyncio.timeout(self.read_timeout):
                body = await self._read(receive)
            if body is None:
                return  # the client went away
            if encoding != "identity":
                body = self._decompress(body)
        except _Refused as refused:
            if refused.unread_body:
                await _drain(receive)
            response = error_response(refused.status, refused.error)
            # The rest of the body is not read: close rather than keep the connection.
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        except TimeoutError:
            response = error_response(408, f"request body not received within "
                                      f"{self.read_timeout:g}s")
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return

        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)

    @staticmethod
    def _encoding(scope: Scope) -> str:
        for key, value in scope["headers"]:
            if key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
                if encoding in ("", "identity"):
                    return "identity"
                if encoding not in _COMPRESSED:
                    raise _Refused(415, f"unsupported Content-Encoding {encoding!r} "
                                   "(gzip and deflate are accepted)")
                return encoding
        return "identity"

    def _check_declared_length(self, scope: Scope) -> None:
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value.decode("latin-1").strip()
                if declared.isdigit() and int(declared) > self.limit:
                    # A client that sent "Expect: 100-continue" has not sent the body (and
                    # reading would invite it to).
                    expects = any(k == b"expect" for k, _ in scope["headers"])
                    raise _Refused(413, f"request body of {declared} bytes exceeds the limit "
                                   f"of {self.limit} bytes", unread_body=not expects)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise _Refused(413, f"request body exceeds the limit of {self.limit} bytes",
                               unread_body=bool(message.get("more_body", False)))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _decompress(self, body: bytes) -> bytes:
        # wbits 32+MAX_WBITS accepts both gzip and zlib framing.
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, self.limit + 1)
            if len(out) > self.limit or inflater.unconsumed_tail:
                raise _Refused(413, f"decompressed request body exceeds the limit of "
                               f"{self.limit} bytes")
            out += inflater.flush()
        except zlib.error as exc:
            raise _Refused(400, f"corrupt compressed request body: {exc}") from exc
        if len(out) > self.limit:
            raise _Refused(413, f"decompressed request body exceeds the limit of "
                           f"{self.limit} bytes")
        if not inflater.eof:
            raise _Refused(400, "truncated compressed request body")
        return out


async def _drain(receive: Receive) -> None:
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_TIME):
            while drained < DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                drained += len(message.get("body", b""))
    except TimeoutError:
        return
