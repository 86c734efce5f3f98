"""STARTTLS and AUTH: authenticated sessions relay from anywhere; AUTH only over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from ingress.main import Ingress
from ingress.message import split_headers
from petrel import smtp_replies
from tests.service.test_ingress_harness import (
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_message,
)


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess,
                  certificate: tuple[str, str]) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, relay_networks=["127.0.0.1/32"],
                            tls_certificate=certificate[0], tls_private_key=certificate[1],
                            auth_users={"alice": "s3cret"})
    async with running_ingress(config) as running:
        yield running


def client(ingress: Ingress) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(ingress), start_tls=False,
                           validate_certs=False, source_address=("127.0.0.2", 0), timeout=10)


async def test_auth_is_offered_only_after_starttls(ingress: Ingress) -> None:
    async with client(ingress) as smtp:
        await smtp.ehlo()
        assert "starttls" in smtp.esmtp_extensions
        assert "auth" not in smtp.esmtp_extensions
        response = await smtp.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlAHMzY3JldA==")
        assert response.code == 538
        await smtp.starttls()
        await smtp.ehlo()
        assert "starttls" not in smtp.esmtp_extensions
        assert smtp.esmtp_extensions["auth"].split() == ["PLAIN", "LOGIN"]


async def test_wrong_password_refused_and_relay_still_denied(ingress: Ingress) -> None:
    async with client(ingress) as smtp:
        await smtp.starttls()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            await smtp.login("alice", "wrong")
        assert info.value.code == 535
        await smtp.mail("a@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("b@example.net")
        assert f"{refused.value.code} {refused.value.message}" == smtp_replies.RELAY_DENIED


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_authenticated_client_relays_from_anywhere(
        ingress: Ingress, spool: SpoolProcess, method: str) -> None:
    async with client(ingress) as smtp:
        await smtp.starttls()
        await smtp.ehlo()
        auth = smtp.auth_plain if method == "PLAIN" else smtp.auth_login
        assert (await auth("alice", "s3cret")).code == 235
        _, message = await smtp.sendmail("a@example.com", ["b@example.net"],
                                         b"Subject: auth\r\n\r\nhi\r\n")
    message_id = message.split()[1]
    stored = await spool_message(spool.address, message_id)
    assert stored is not None
    assert stored.meta.peer_address == "127.0.0.2"
    assert stored.meta.reception_protocol == "ESMTP"
    received = split_headers(stored.body)[0][0].value
    assert f"with ESMTPA id {message_id}" in received
