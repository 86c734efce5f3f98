"""Test messages and the three ways to inject them (SMTP, gRPC, REST), all over real sockets."""

from __future__ import annotations

import smtplib
import uuid

import grpc

from petrel.v1 import ingress_pb2, ingress_pb2_grpc


def make_message(sender: str, recipients: list[str], subject: str = "test",
                 body_size: int = 200, message_id: bool = True,
                 extra_headers: dict[str, str] | None = None) -> bytes:
    """An RFC 5322 message with CRLF line endings and a unique token in the body."""
    token = uuid.uuid4().hex
    headers = [f"From: <{sender}>", f"To: {', '.join(f'<{r}>' for r in recipients)}",
               f"Subject: {subject}", "Date: Thu, 26 Nov 2026 07:00:00 +0000"]
    if message_id:
        headers.append(f"Message-ID: <{token}@test.example>")
    for name, value in (extra_headers or {}).items():
        headers.append(f"{name}: {value}")
    line = f"token {token} " + "x" * 60
    lines, size = [], 0
    while size < body_size:
        lines.append(line)
        size += len(line) + 2
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()


def smtp_send(port: int, sender: str, recipients: list[str], data: bytes,
              host: str = "127.0.0.1", source: str | None = None) -> tuple[int, bytes]:
    """Send one message over SMTP; returns the DATA reply (code, text)."""
    source_address = (source, 0) if source else None
    with smtplib.SMTP(host, port, timeout=30, source_address=source_address) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender)
        if code != 250:
            return code, text
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code not in (250, 251):
                return code, text
        return client.data(data)


def grpc_inject(address: str, sender: str, recipients: list[str], data: bytes,
                timeout: float = 30.0, **fields: object) -> ingress_pb2.InjectMessageResponse:
    with grpc.insecure_channel(address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        return stub.InjectMessage(ingress_pb2.InjectMessageRequest(
            sender=sender, recipients=recipients, content=data, **fields), timeout=timeout)


def grpc_inject_stream(address: str, requests: list[ingress_pb2.InjectMessageRequest],
                       timeout: float = 120.0) -> list[ingress_pb2.InjectMessageResponse]:
    """Inject many messages over one InjectMessages stream; responses sorted by seq."""
    for seq, request in enumerate(requests, start=1):
        request.seq = seq
    with grpc.insecure_channel(address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        responses = list(stub.InjectMessages(iter(requests), timeout=timeout))
    return sorted(responses, key=lambda r: r.seq)
