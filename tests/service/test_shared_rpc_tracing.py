"""Trace context over petrel.rpc's servers and channels (real gRPC on 127.0.0.1).

Unary calls carry the caller's context in ``traceparent`` metadata and the servicer runs in
it; multiplexed bidi streams carry none (their items bring their own), nor do health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import context as otel_context

from petrel import telemetry
from petrel.rpc import StreamCaller, create_channel, create_server, traced_method
from petrel.v1 import bounce_pb2, bounce_pb2_grpc, ingress_pb2, ingress_pb2_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CARRIER = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}


class Recorder(bounce_pb2_grpc.BounceServiceServicer, ingress_pb2_grpc.InjectServiceServicer):
    def __init__(self) -> None:
        self.trace_ids: list[str] = []
        self.metadata: list[dict[str, str]] = []

    def _record(self, context: grpc.aio.ServicerContext) -> None:
        self.trace_ids.append(telemetry.current_trace_id())
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()
                              if isinstance(v, str)})

    async def ClassifyReplies(self, request: bounce_pb2.ClassifyRepliesRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> bounce_pb2.ClassifyRepliesResponse:
        self._record(context)
        return bounce_pb2.ClassifyRepliesResponse()

    async def InjectMessages(self, request_iterator: AsyncIterator[
                                 ingress_pb2.InjectMessageRequest],
                             context: grpc.aio.ServicerContext,
                             ) -> AsyncIterator[ingress_pb2.InjectMessageResponse]:
        self._record(context)
        async for request in request_iterator:
            yield ingress_pb2.InjectMessageResponse(seq=request.seq, id="x")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, grpc.aio.Channel]]:
    recorder = Recorder()
    server, _, port = create_server("127.0.0.1:0", [
        (bounce_pb2_grpc.add_BounceServiceServicer_to_server, recorder,
         "petrel.v1.BounceService"),
        (ingress_pb2_grpc.add_InjectServiceServicer_to_server, recorder,
         "petrel.v1.InjectService")])
    await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield recorder, channel
    finally:
        await channel.close()
        await server.stop(None)


async def test_unary_calls_carry_the_callers_context(
        served: tuple[Recorder, grpc.aio.Channel]) -> None:
    recorder, channel = served
    stub = bounce_pb2_grpc.BounceServiceStub(channel)
    token = otel_context.attach(telemetry.context_from_carrier(CARRIER))
    try:
        await stub.ClassifyReplies(bounce_pb2.ClassifyRepliesRequest(), timeout=5)
    finally:
        otel_context.detach(token)
    await stub.ClassifyReplies(bounce_pb2.ClassifyRepliesRequest(), timeout=5)
    assert recorder.trace_ids == [TRACE_ID, ""]
    assert recorder.metadata[0]["traceparent"].split("-")[1] == TRACE_ID
    assert "traceparent" not in recorder.metadata[1]


async def test_bidi_streams_do_not_inherit_the_opening_callers_trace(
        served: tuple[Recorder, grpc.aio.Channel]) -> None:
    recorder, channel = served
    caller: StreamCaller[ingress_pb2.InjectMessageRequest, ingress_pb2.InjectMessageResponse]
    caller = StreamCaller(ingress_pb2_grpc.InjectServiceStub(channel).InjectMessages)
    token = otel_context.attach(telemetry.context_from_carrier(CARRIER))
    try:
        response = await caller.call(ingress_pb2.InjectMessageRequest(), timeout=5)
    finally:
        otel_context.detach(token)
        await caller.close()
    assert response.id == "x"
    assert recorder.trace_ids == [""]
    assert "traceparent" not in recorder.metadata[0]


def test_health_reflection_and_bidi_streams_are_not_traced() -> None:
    for method in ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                   "/petrel.v1.SpoolService/PutMessages", "/petrel.v1.SchedulerService/Dispatch",
                   b"/petrel.v1.InjectService/InjectMessages"):
        assert not traced_method(type("Details", (), {"method": method})()), method
    for method in ("/petrel.v1.BounceService/ClassifyReplies",
                   "/petrel.v1.SpoolService/ScanMessages", b"/petrel.v1.SpoolService/GetMessage"):
        assert traced_method(type("Details", (), {"method": method})()), method
