"""gRPC security between services: a real spool server (memory backend) on a free port in each
mode, called through ``petrel.rpc``'s factories by unary, server-streaming and bidi calls;
then a whole pipeline (processes) in mtls mode delivering one message to a real sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petrel.certs import ensure_certs
from petrel.config import ConfigError, SecurityConfig, load_config
from petrel.grpc_auth import GrpcSecurity
from petrel.healthcheck import probe
from petrel.rpc import StreamBroken, StreamCaller, create_channel, create_server, set_serving
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.backend import open_backend
from spool.server import SERVICE_NAME, SpoolServicer
from spool.store import Spool
from tests.support.messages import make_message
from tests.support.net import wait_for
from tests.support.pipeline import Pipeline
from tests.support.sink import SmtpSink

TIMEOUT = 5.0
TOKEN = "t0ken-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    ensure_certs(out)
    return out


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another deployment's CA: same names, different trust."""
    out = tmp_path_factory.mktemp("foreign-certs")
    ensure_certs(out, identities=("spool", "client"))
    return out


def mtls(certs_dir: Path, identity: str = "client") -> GrpcSecurity:
    return GrpcSecurity.from_config(
        SecurityConfig(grpc_auth="mtls", certs_dir=str(certs_dir)), identity)


def token(value: str = TOKEN, open_health: bool = True) -> GrpcSecurity:
    return GrpcSecurity.from_config(SecurityConfig.model_validate(
        {"grpc_auth": "token", "token": value, "open_health": open_health}))


@contextlib.asynccontextmanager
async def spool_server(security: GrpcSecurity) -> AsyncIterator[tuple[str, Spool]]:
    spool = Spool(open_backend(load_config(env={}, overrides={"spool": {"backend": "memory"}})))
    server, health, port = create_server("127.0.0.1:0", [
        (spool_pb2_grpc.add_SpoolServiceServicer_to_server, SpoolServicer(spool),
         SERVICE_NAME)], security=security)
    await server.start()
    await set_serving(health, [SERVICE_NAME], True)
    try:
        yield f"127.0.0.1:{port}", spool
    finally:
        await server.stop(None)
        await spool.close()


async def every_kind_of_call(address: str, security: GrpcSecurity) -> None:
    """One unary, one server-streaming and one bidi call; raises the first call's error."""
    async with create_channel(address, security=security) as channel:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        await stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)
        async for _ in stub.ScanMessages(spool_pb2.ScanMessagesRequest(), timeout=TIMEOUT):
            pass
        putter: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
            StreamCaller(stub.PutMessages, name="put")
        try:
            ack = await putter.call(spool_pb2.PutMessageRequest(
                meta=common_pb2.MessageMeta(sender="s@example.com"), body=b"x\r\n"), TIMEOUT)
        finally:
            await putter.close()
        assert ack.status.code == 0 and len(ack.id) == 32


async def refused_code(address: str, security: GrpcSecurity) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await every_kind_of_call(address, security)
    return refused.value.code()


async def test_mtls_accepts_a_client_with_a_certificate_of_the_ca(certs: Path) -> None:
    async with spool_server(mtls(certs, "spool")) as (address, _):
        await every_kind_of_call(address, mtls(certs, "ingress"))
        healthy, detail = await asyncio.to_thread(probe, address, service=SERVICE_NAME,
                                                  security=mtls(certs))
        assert healthy, detail


async def test_mtls_refuses_a_plaintext_client_and_one_without_a_certificate(
        certs: Path) -> None:
    no_cert = GrpcSecurity("mtls", ca=(certs / "ca.crt").read_bytes())
    async with spool_server(mtls(certs, "spool")) as (address, _):
        assert await refused_code(address, GrpcSecurity()) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(
                address, grpc.ssl_channel_credentials(no_cert.ca)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await spool_pb2_grpc.SpoolServiceStub(channel).GetSpoolStats(
                    spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Health needs a certificate too: the whole port is TLS.
        healthy, detail = await asyncio.to_thread(probe, address, security=GrpcSecurity())
        assert not healthy and detail.startswith("UNAVAILABLE")


async def test_mtls_refuses_a_certificate_of_another_ca(certs: Path,
                                                        foreign_certs: Path) -> None:
    foreign_client = GrpcSecurity("mtls", ca=(certs / "ca.crt").read_bytes(),
                                  cert=(foreign_certs / "client.crt").read_bytes(),
                                  key=(foreign_certs / "client.key").read_bytes())
    async with spool_server(mtls(certs, "spool")) as (address, _):
        assert await refused_code(address, foreign_client) == grpc.StatusCode.UNAVAILABLE
    # The other way round: a client of our CA does not trust a server of another one.
    async with spool_server(mtls(foreign_certs, "spool")) as (address, _):
        assert await refused_code(address, mtls(certs)) == grpc.StatusCode.UNAVAILABLE


async def test_token_mode_refuses_missing_and_wrong_tokens_before_the_servicer(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with spool_server(token()) as (address, spool):
        assert await refused_code(address, GrpcSecurity()) == grpc.StatusCode.UNAUTHENTICATED
        wrong = token("x" * len(TOKEN))
        assert await refused_code(address, wrong) == grpc.StatusCode.UNAUTHENTICATED
        assert await refused_code(address, token(TOKEN + "x")) == \
            grpc.StatusCode.UNAUTHENTICATED
        async with create_channel(address, security=GrpcSecurity()) as channel:
            putter: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
                StreamCaller(spool_pb2_grpc.SpoolServiceStub(channel).PutMessages)
            with pytest.raises(StreamBroken) as broken:
                await putter.call(spool_pb2.PutMessageRequest(body=b"x\r\n"), TIMEOUT)
            await putter.close()
            assert broken.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert spool.count() == 0
        await every_kind_of_call(address, token())
        assert spool.count() == 1
    assert "refused /petrel.v1.SpoolService/GetSpoolStats" in caplog.text
    assert TOKEN not in caplog.text and "x" * len(TOKEN) not in caplog.text


async def test_token_mode_leaves_health_open_unless_configured() -> None:
    async with spool_server(token()) as (address, _):
        healthy, detail = await asyncio.to_thread(probe, address, service=SERVICE_NAME,
                                                  security=GrpcSecurity())
        assert healthy, detail
    async with spool_server(token(open_health=False)) as (address, _):
        healthy, detail = await asyncio.to_thread(probe, address, security=GrpcSecurity())
        assert not healthy and detail.startswith("UNAUTHENTICATED")
        healthy, detail = await asyncio.to_thread(probe, address, security=token())
        assert healthy, detail
        async with create_channel(address, security=token()) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_incomplete_security_settings_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token mode needs token"):
        load_config(env={"PETREL_SECURITY__GRPC_AUTH": "token",
                         "PETREL_SECURITY__TOKEN": "short"})
    with pytest.raises(ConfigError, match="mtls mode needs certs_dir"):
        load_config(env={"PETREL_SECURITY__GRPC_AUTH": "mtls"})
    config = load_config(env={"PETREL_SECURITY__GRPC_AUTH": "mtls",
                              "PETREL_SECURITY__CERTS_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"security\.certs_dir: cannot read"):
        GrpcSecurity.from_config(config.security, "spool")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = load_config(env={"PETREL_SECURITY__GRPC_AUTH": "token",
                              "PETREL_SECURITY__TOKEN_FILE": str(token_file)})
    security = GrpcSecurity.from_config(config.security)
    assert security.token == TOKEN.encode()
    assert TOKEN not in repr(config) and TOKEN not in repr(security)


def test_a_pipeline_in_mtls_mode_delivers(tmp_path: Path, certs: Path) -> None:
    with SmtpSink() as sink, Pipeline(tmp_path / "pipeline", {
            "PETREL_SECURITY__GRPC_AUTH": "mtls", "PETREL_SECURITY__CERTS_DIR": str(certs),
            "PETREL_ROUTING__SMARTHOST": sink.address}) as pipeline:
        pipeline.start_all()
        message = make_message("sender@petrel.test", ["rcpt@dest.test"], subject="mtls")
        reply = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
            "envelope_sender": "sender@petrel.test", "recipients": [{"email": "rcpt@dest.test"}],
            "content": message.decode(), "template_dialect": "Static"})
        assert reply.status_code == 200, reply.text
        wait_for(lambda: sink.received_for("rcpt@dest.test"), timeout=30,
                 message="the message at the sink")
        wait_for(lambda: pipeline.events_of("Delivery"), timeout=15)
        # The services really run TLS: a plaintext client is not let in.
        healthy, _ = probe(pipeline.spool_address, security=GrpcSecurity())
        assert not healthy
        assert probe(pipeline.spool_address, security=mtls(certs))[0]
