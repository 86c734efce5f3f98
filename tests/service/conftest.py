"""Fixtures shared by the ingress service tests: a spool process per module, a self-signed
certificate, and a greeted raw SMTP session on the module's own ``ingress`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ingress.main import Ingress
from tests.service.test_ingress_hardening_harness import make_certificate
from tests.service.test_ingress_harness import RawSmtp, SpoolProcess, smtp_port


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpoolProcess]:
    process = SpoolProcess(tmp_path_factory.mktemp("spool")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def raw(ingress: Ingress) -> AsyncIterator[RawSmtp]:
    client = await RawSmtp.connect(smtp_port(ingress))
    assert (await client.reply()).startswith("220 ingress.petrel.test")
    assert (await client.command("EHLO client.test")).startswith("250")
    yield client
    await client.close()
