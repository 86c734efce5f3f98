"""The ``SpoolService`` servicer: validation and protobuf mapping around ``spool.store.Spool``.

Per-item problems in the bidi streams come back in the item's ``ItemStatus``
(INVALID_ARGUMENT naming the field, UNAVAILABLE or RESOURCE_EXHAUSTED when the store failed:
nothing of that item was written); unary RPCs abort with the status code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from petrel.ids import is_message_id, new_message_id
from petrel.rpc import abort_invalid
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc
from spool.backend import Op, PutOp, QuarantineOp, RemoveOp, ReplaceMetaOp
from spool.plan import parse_meta
from spool.store import Spool, status_for_error
from spool.streams import answer_batches, answer_concurrently

log = logging.getLogger(__name__)

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
        async for batch in answer_batches(request_iterator, self._put, self._window,
                                          spool_pb2.PutMessageResponseBatch):
            yield batch

    async def _put(self, request: spool_pb2.PutMessageRequest) -> spool_pb2.PutMessageResponse:
        response = spool_pb2.PutMessageResponse(seq=request.seq)
        meta = request.meta
        if meta.id and not is_message_id(meta.id):
            response.status.CopyFrom(_invalid("meta.id", _id_problem(meta.id)))
            return response
        if len(meta.idempotency_key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
            response.status.CopyFrom(_invalid(
                "meta.idempotency_key", f"longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes"))
            return response
        if not meta.id:
            meta.id = new_message_id()
        meta.size = len(request.body)
        op = PutOp(meta.id, meta.SerializeToString(deterministic=True), request.body,
                   meta.idempotency_key, request.records)
        try:
            result = await self._spool.write(op, meta.trace_context)
        except Exception as exc:
            response.status.CopyFrom(_failed(exc))
            return response
        response.id = result.id
        response.duplicate = result.duplicate
        return response

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
        async for batch in answer_batches(request_iterator, self._update, self._window,
                                          spool_pb2.UpdateMessageResponseBatch):
            yield batch

    async def _update(self, request: spool_pb2.UpdateMessageRequest,
                      ) -> spool_pb2.UpdateMessageResponse:
        response = spool_pb2.UpdateMessageResponse(seq=request.seq)
        op: Op
        kind = request.WhichOneof("op")
        if kind == "replace_meta":
            meta = request.replace_meta
            if not is_message_id(meta.id):
                response.status.CopyFrom(_invalid("replace_meta.id", _id_problem(meta.id)))
                return response
            op = ReplaceMetaOp(meta.id, meta.SerializeToString(deterministic=True))
        elif kind == "remove_id":
            if not is_message_id(request.remove_id):
                response.status.CopyFrom(_invalid("remove_id", _id_problem(request.remove_id)))
                return response
            op = RemoveOp(request.remove_id)
        else:
            response.status.CopyFrom(_invalid("op", "set replace_meta or remove_id"))
            return response
        trace_context = request.replace_meta.trace_context if kind == "replace_meta" else None
        try:
            result = await self._spool.write(op, trace_context)
        except Exception as exc:
            response.status.CopyFrom(_failed(exc))
            return response
        response.found = result.found
        return response

    async def ReadMessages(self, request_iterator: AsyncIterator[spool_pb2.ReadMessageRequest],
                           context: grpc.aio.ServicerContext,
                           ) -> AsyncIterator[spool_pb2.ReadMessageResponse]:
        async for response in answer_concurrently(request_iterator, self._read, self._window):
            yield response

    async def ReadMessageBatches(self,
                                 request_iterator: AsyncIterator[spool_pb2.ReadMessageBatch],
                                 context: grpc.aio.ServicerContext,
                                 ) -> AsyncIterator[spool_pb2.ReadMessageResponseBatch]:
        async for batch in answer_batches(request_iterator, self._read, self._window,
                                          spool_pb2.ReadMessageResponseBatch):
            yield batch

    async def _read(self, request: spool_pb2.ReadMessageRequest,
                    ) -> spool_pb2.ReadMessageResponse:
        response = spool_pb2.ReadMessageResponse(seq=request.seq)
        if not is_message_id(request.id):
            response.status.CopyFrom(_invalid("id", _id_problem(request.id)))
            return response
        try:
            stored = await self._spool.get(request.id, request.want_body)
        except Exception as exc:
            response.status.CopyFrom(_failed(exc))
            return response
        if stored is not None:
            meta = await self._checked_meta(request.id, stored.meta)
            if meta is None:
                return response
            response.found = True
            response.meta.CopyFrom(meta)
            if stored.body is not None:
                response.body = stored.body
        return response

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
