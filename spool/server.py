"""The ``SpoolService`` servicer: validation and protobuf mapping around ``spool.store.Spool``.

Per-item problems in the bidi streams come back in the item's ``ItemStatus``
(INVALID_ARGUMENT naming the field, UNAVAILABLE or RESOURCE_EXHAUSTED when the store failed:
nothing of that item was written); unary RPCs abort with the status code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NoReturn, TypeVar

import grpc

from petrel.ids import is_message_id, new_message_id
from petrel.rpc import abort_invalid
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.backend import Op, OpResult, PutOp, QuarantineOp, RemoveOp, ReplaceMetaOp
from spool.plan import parse_meta
from spool.store import Spool, status_for_error
from spool.streams import answer_batches, answer_concurrently

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

SERVICE_NAME = spool_pb2.DESCRIPTOR.services_by_name["SpoolService"].full_name
DEFAULT_SCAN_BATCH = 1000
MAX_SCAN_BATCH = 10_000
MAX_IDEMPOTENCY_KEY_BYTES = 512
# Requests of one stream handled (or answered but unsent) at once.
STREAM_WINDOW = 4096


def _invalid(field: str, message: str) -> common_pb2.ItemStatus:
    return common_pb2.ItemStatus(code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                 message=f"{field}: {message}", field=field)


def _failed(exc: Exception) -> common_pb2.ItemStatus:
    return common_pb2.ItemStatus(code=status_for_error(exc).value[0],
                                 message=f"spool store failed: {exc}")


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                 details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("context.abort returned")


def _id_problem(value: str) -> str:
    return f"expected 32 lower-case hex digits, got {value[:64]!r}"


# An operation to write and the trace carrier of the message it concerns.
_Planned = tuple[Op, Mapping[str, str] | None]


def _put_op(request: spool_pb2.PutMessageRequest) -> _Planned | common_pb2.ItemStatus:
    """The operation a put asks for (a new id when it names none), or why it cannot be done."""
    meta = request.meta
    if meta.id and not is_message_id(meta.id):
        return _invalid("meta.id", _id_problem(meta.id))
    if len(meta.idempotency_key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        return _invalid("meta.idempotency_key",
                        f"longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes")
    if not meta.id:
        meta.id = new_message_id()
    meta.size = len(request.body)
    return PutOp(meta.id, meta.SerializeToString(deterministic=True), request.body,
                 meta.idempotency_key, request.records), meta.trace_context


def _answer_put(response: spool_pb2.PutMessageResponse, result: OpResult) -> None:
    response.id = result.id
    response.duplicate = result.duplicate


def _update_op(request: spool_pb2.UpdateMessageRequest) -> _Planned | common_pb2.ItemStatus:
    """The operation an update asks for, or why it cannot be done."""
    kind = request.WhichOneof("op")
    if kind == "replace_meta":
        meta = request.replace_meta
        if not is_message_id(meta.id):
            return _invalid("replace_meta.id", _id_problem(meta.id))
        return ReplaceMetaOp(meta.id, meta.SerializeToString(deterministic=True)), \
            meta.trace_context
    if kind == "remove_id":
        if not is_message_id(request.remove_id):
            return _invalid("remove_id", _id_problem(request.remove_id))
        return RemoveOp(request.remove_id), None
    return _invalid("op", "set replace_meta or remove_id")


def _answer_update(response: spool_pb2.UpdateMessageResponse, result: OpResult) -> None:
    response.found = result.found


class SpoolServicer(spool_pb2_grpc.SpoolServiceServicer):
    def __init__(self, spool: Spool, *, stream_window: int = STREAM_WINDOW) -> None:
        self._spool = spool
        self._window = stream_window

    async def PutMessages(self, request_iterator: AsyncIterator[spool_pb2.PutMessageRequest],
                          context: grpc.aio.ServicerContext,
                          ) -> AsyncIterator[spool_pb2.PutMessageResponse]:
        async for response in answer_concurrently(request_iterator, self._put, self._window):
            yield response

    async def PutMessageBatches(self, request_iterator: AsyncIterator[spool_pb2.PutMessageBatch],
                                context: grpc.aio.ServicerContext,
                                ) -> AsyncIterator[spool_pb2.PutMessageResponseBatch]:
        async for batch in answer_batches(request_iterator, self._put_items, self._window,
                                          spool_pb2.PutMessageResponseBatch):
            yield batch

    async def _put(self, request: spool_pb2.PutMessageRequest) -> spool_pb2.PutMessageResponse:
        return (await self._put_items((request,)))[0]

    async def _put_items(self, requests: Sequence[spool_pb2.PutMessageRequest],
                         ) -> list[spool_pb2.PutMessageResponse]:
        responses = [spool_pb2.PutMessageResponse(seq=request.seq) for request in requests]
        await self._write_items(requests, responses, _put_op, _answer_put)
        return responses

    async def UpdateMessages(self,
                             request_iterator: AsyncIterator[spool_pb2.UpdateMessageRequest],
                             context: grpc.aio.ServicerContext,
                             ) -> AsyncIterator[spool_pb2.UpdateMessageResponse]:
        async for response in answer_concurrently(request_iterator, self._update, self._window):
            yield response

    async def UpdateMessageBatches(
            self, request_iterator: AsyncIterator[spool_pb2.UpdateMessageBatch],
            context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[spool_pb2.UpdateMessageResponseBatch]:
        async for batch in answer_batches(request_iterator, self._update_items, self._window,
                                          spool_pb2.UpdateMessageResponseBatch):
            yield batch

    async def _update(self, request: spool_pb2.UpdateMessageRequest,
                      ) -> spool_pb2.UpdateMessageResponse:
        return (await self._update_items((request,)))[0]

    async def _update_items(self, requests: Sequence[spool_pb2.UpdateMessageRequest],
                            ) -> list[spool_pb2.UpdateMessageResponse]:
        responses = [spool_pb2.UpdateMessageResponse(seq=request.seq) for request in requests]
        await self._write_items(requests, responses, _update_op, _answer_update)
        return responses

    async def _write_items(self, requests: Sequence[Req], responses: Sequence[Resp],
                           make_op: Callable[[Req], _Planned | common_pb2.ItemStatus],
                           answer: Callable[[Resp, OpResult], None]) -> None:
        """Write the operations of ``requests`` together (one group-commit entry); each
        response gets its operation's result (``answer``), or why it was refused or failed
        in its ``status``."""
        ops: list[Op] = []
        carriers: list[Mapping[str, str] | None] = []
        writing: list[Resp] = []
        for request, response in zip(requests, responses, strict=True):
            planned = make_op(request)
            if isinstance(planned, common_pb2.ItemStatus):
                response.status.CopyFrom(planned)  # type: ignore[attr-defined]
                continue
            ops.append(planned[0])
            carriers.append(planned[1])
            writing.append(response)
        results = await self._spool.write_many(ops, carriers) if ops else []
        for response, result in zip(writing, results, strict=True):
            if isinstance(result, Exception):
                response.status.CopyFrom(_failed(result))  # type: ignore[attr-defined]
            else:
                answer(response, result)

    async def ReadMessages(self, request_iterator: AsyncIterator[spool_pb2.ReadMessageRequest],
                           context: grpc.aio.ServicerContext,
                           ) -> AsyncIterator[spool_pb2.ReadMessageResponse]:
        async for response in answer_concurrently(request_iterator, self._read, self._window):
            yield response

    async def ReadMessageBatches(self,
                                 request_iterator: AsyncIterator[spool_pb2.ReadMessageBatch],
                                 context: grpc.aio.ServicerContext,
                                 ) -> AsyncIterator[spool_pb2.ReadMessageResponseBatch]:
        async for batch in answer_batches(request_iterator, self._read_items, self._window,
                                          spool_pb2.ReadMessageResponseBatch):
            yield batch

    async def _read(self, request: spool_pb2.ReadMessageRequest,
                    ) -> spool_pb2.ReadMessageResponse:
        return (await self._read_items((request,)))[0]

    async def _read_items(self, requests: Sequence[spool_pb2.ReadMessageRequest],
                          ) -> list[spool_pb2.ReadMessageResponse]:
        responses = [spool_pb2.ReadMessageResponse(seq=request.seq) for request in requests]
        reads: list[tuple[str, bool]] = []
        reading: list[spool_pb2.ReadMessageResponse] = []
        for request, response in zip(requests, responses, strict=True):
            if not is_message_id(request.id):
                response.status.CopyFrom(_invalid("id", _id_problem(request.id)))
                continue
            reads.append((request.id, request.want_body))
            reading.append(response)
        results = await self._spool.get_many(reads) if reads else []
        for (message_id, _), response, stored in zip(reads, reading, results, strict=True):
            if isinstance(stored, Exception):
                response.status.CopyFrom(_failed(stored))
                continue
            if stored is None:
                continue
            meta = await self._checked_meta(message_id, stored.meta)
            if meta is None:
                continue
            response.found = True
            response.meta.CopyFrom(meta)
            if stored.body is not None:
                response.body = stored.body
        return responses

    async def _checked_meta(self, message_id: str, stored: bytes) -> common_pb2.MessageMeta | None:
        """The parsed metadata, or None after quarantining a damaged record (one bad record
        must not stop scans, reads or the queues of every other message)."""
        meta = parse_meta(stored, message_id)
        if meta is not None:
            return meta
        log.error("quarantining message %s: damaged metadata record", message_id,
                  extra={"message_id": message_id})
        try:
            await self._spool.write(QuarantineOp(message_id, "damaged metadata"))
        except Exception as exc:
            log.error("quarantine of %s failed: %s", message_id, exc)
        return None

    async def ScanMessages(self, request: spool_pb2.ScanMessagesRequest,
                           context: grpc.aio.ServicerContext,
                           ) -> AsyncIterator[spool_pb2.ScanMessagesResponse]:
        if request.after_id and not is_message_id(request.after_id):
            await abort_invalid(context, "after_id", _id_problem(request.after_id))
        batch_size = min(request.batch_size or DEFAULT_SCAN_BATCH, MAX_SCAN_BATCH)
        after = request.after_id
        while True:
            try:
                metas = await self._spool.scan(after, batch_size)
            except Exception as exc:
                await _abort(context, status_for_error(exc), f"spool scan failed: {exc}")
            if not metas:
                return
            response = spool_pb2.ScanMessagesResponse()
            for message_id, stored in metas:
                meta = await self._checked_meta(message_id, stored)
                if meta is not None:
                    response.messages.append(meta)
            after = metas[-1][0]
            if response.messages:
                yield response
            if len(metas) < batch_size:
                return

    async def GetMessage(self, request: spool_pb2.GetMessageRequest,
                         context: grpc.aio.ServicerContext) -> spool_pb2.GetMessageResponse:
        if not is_message_id(request.id):
            await abort_invalid(context, "id", _id_problem(request.id))
        try:
            stored = await self._spool.get(request.id, request.want_body)
        except Exception as exc:
            await _abort(context, status_for_error(exc), f"spool read failed: {exc}")
        if stored is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"message {request.id} is not in the spool")
        meta = await self._checked_meta(request.id, stored.meta)
        if meta is None:
            await _abort(context, grpc.StatusCode.DATA_LOSS,
                         f"message {request.id} was damaged and has been quarantined")
        response = spool_pb2.GetMessageResponse()
        response.meta.CopyFrom(meta)
        if stored.body is not None:
            response.body = stored.body
        return response

    async def GetSpoolStats(self, request: spool_pb2.GetSpoolStatsRequest,
                            context: grpc.aio.ServicerContext,
                            ) -> spool_pb2.GetSpoolStatsResponse:
        return spool_pb2.GetSpoolStatsResponse(
            messages=self._spool.count(), backend=self._spool.backend.name,
            commits=self._spool.commits, committed_writes=self._spool.committed_writes)
