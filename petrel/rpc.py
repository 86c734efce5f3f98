"""gRPC server and channel factories shared by every service.

* ``create_server`` builds a ``grpc.aio`` server with our limits and keepalive, registers the
  standard health service and reflection for the given service names.
* ``create_channel`` builds a client channel with matching limits, keepalive and a service
  config that retries ``UNAVAILABLE`` on unary calls.
* ``StreamCaller`` multiplexes many concurrent requests over one long-lived bidi stream
  (the shape of ``PutMessages``, ``Enqueue``, ``ReadMessages``, ``UpdateMessages``,
  ``InjectMessages``): each ``call`` gets its own response, matched by ``seq``, within its own
  deadline. A broken stream fails every pending call and the next call opens a new stream.

Tracing: servers and channels carry OpenTelemetry's gRPC interceptors, so unary and
server-streaming calls get CLIENT/SERVER spans and propagate the W3C context in metadata.
Health checks, reflection and the long-lived multiplexed bidi streams are left out
(``traced_method``): a span per stream would last for hours and make every item handled on
it look like part of one trace; their items carry each message's own trace context instead.

Security: both factories apply the process's ``petrel.grpc_auth`` setting (``none``, ``token``
or ``mtls``; set once at start by ``petrel.cli``) or the ``security`` passed to them: TLS
credentials on the port and the channel, and the token interceptors ahead of tracing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor

from petrel import grpc_auth, telemetry
from petrel.v1 import bounce_pb2, ingress_pb2, scheduler_pb2, spool_pb2

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_COMMON_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

SERVER_OPTIONS: list[tuple[str, Any]] = [
    *_COMMON_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.so_reuseport", 0),
]

_RETRY_POLICY = {
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 2,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
}

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    *_COMMON_OPTIONS,
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_RETRY_POLICY)),
    # Reconnect quickly after a peer restarts (default backoff grows to 120 s). The minimum
    # also bounds how long one connection attempt may take, so it stays above a busy peer's
    # handshake time.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.min_reconnect_backoff_ms", 1_000),
]


def _bidi_methods() -> frozenset[str]:
    methods = set()
    for module in (bounce_pb2, ingress_pb2, scheduler_pb2, spool_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.client_streaming and method.server_streaming:
                    methods.add(f"/{service.full_name}/{method.name}")
    return frozenset(methods)


UNTRACED_METHODS = _bidi_methods()
UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def traced_method(details: Any) -> bool:
    """Interceptor filter: False for health, reflection and Petrel's bidi streams."""
    method = getattr(details, "method", "")
    if isinstance(method, bytes):
        method = method.decode()
    return not (method in UNTRACED_METHODS or method.startswith(UNTRACED_PREFIXES))


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    # Only the unary-request kinds: bidi streams are untraced, and without a stream
    # interceptor their calls keep gRPC's plain call objects.
    return [i for i in aio_client_interceptors(filter_=traced_method)
            if isinstance(i, grpc.aio.UnaryUnaryClientInterceptor
                          | grpc.aio.UnaryStreamClientInterceptor)]


class _Registrar(Protocol):
    def __call__(self, servicer: Any, server: grpc.aio.Server) -> None: ...


def create_server(listen: str, services: Iterable[tuple[_Registrar, Any, str]],
                  security: grpc_auth.GrpcSecurity | None = None, *, reuse_port: bool = False,
                  ) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Create, bind and register a server; returns ``(server, health_servicer, bound_port)``.

    ``services`` holds ``(add_XxxServicer_to_server, servicer, full_service_name)`` triples.
    The server is not started; ``petrel.runtime.serve_grpc_until`` (or ``set_serving``) marks
    the services SERVING once it is. ``security`` defaults to ``grpc_auth.current()``. The
    port is exclusive unless ``reuse_port`` (processes sharing it, each taking connections).
    """
    security = security or grpc_auth.current()
    options = SERVER_OPTIONS
    if reuse_port:  # gRPC takes the first value of a repeated option: replace ours
        options = [(k, v) for k, v in SERVER_OPTIONS if k != "grpc.so_reuseport"]
        options.append(("grpc.so_reuseport", 1))
    server = grpc.aio.server(options=options,
                             interceptors=[*security.server_interceptors(),
                                           aio_server_interceptor(filter_=traced_method)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    for register, servicer, name in services:
        register(servicer, server)
        names.append(name)
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    credentials = security.server_credentials()
    port = (server.add_secure_port(listen, credentials) if credentials is not None
            else server.add_insecure_port(listen))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, health_servicer, port


async def set_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str],
                      serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ["", *names]:
        await health_servicer.set(name, status)


def create_channel(address: str, security: grpc_auth.GrpcSecurity | None = None,
                   ) -> grpc.aio.Channel:
    """Channel to ``address`` (``host:port`` or any gRPC target string), secured as
    ``security`` (default ``grpc_auth.current()``) says."""
    security = security or grpc_auth.current()
    interceptors = [*client_interceptors(), *security.client_interceptors()]
    credentials = security.channel_credentials()
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)


Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")


class StreamBroken(Exception):
    """The stream carrying a call failed before its response arrived."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


# Bounds of one batch: far below MAX_MESSAGE_BYTES even with large bodies. ``take_ready``
# stops once a batch reaches the byte bound, so a batch exceeds it by at most its last item
# (at most the largest message size); ``split_bounded`` puts an oversize item in a run alone.
BATCH_MAX_ITEMS = 256
BATCH_MAX_BYTES = 4 * 1024 * 1024


def take_ready(queue: asyncio.Queue[T | None], first: T, *, max_items: int = BATCH_MAX_ITEMS,
               max_bytes: int = BATCH_MAX_BYTES) -> tuple[list[T], bool]:
    """``first`` and the items already waiting in ``queue`` (never waits), up to the bounds;
    sizes come from ``ByteSize()`` when the items are protobuf messages. The flag says a
    ``None`` (end of stream) was taken: the caller sends the batch and stops."""
    items = [first]
    size = _size_of(first)
    while len(items) < max_items and size < max_bytes:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            return items, False
        if item is None:
            return items, True
        items.append(item)
        size += _size_of(item)
    return items, False


class Pacer:
    """When a sender of one-way batches (no responses to wait for) holds its next batch.

    A gRPC stream message costs the same fixed work (completion queue, poller thread, event
    loop wake-up) whether it carries one item or a hundred, ≈ 90 µs of CPU on each side here;
    an item costs a few µs. ``hold(ready)`` sleeps ``linger`` seconds before a batch is taken
    when fewer than ``gather`` items are ready and items have lately been arriving fast
    enough that the hold will gather at least that many (rate * linger >= ``gather``); it
    returns at once otherwise, so a quiet or slow stream pays neither latency nor a timer
    (a hold on a slow stream would only stretch every round trip that waits for it, such as
    an egress's credit loop), and items that come in bursts go as they came. The rate is
    the items sent (``sent``) per second over the last ``WINDOW``: long enough that a burst
    of a slow stream (an egress's deliveries ending together) does not read as a fast one.
    ``linger = 0`` never holds."""

    WINDOW = 0.25

    def __init__(self, linger: float, gather: int = 4) -> None:
        self.linger = linger
        self.gather = gather
        self.rate = 0.0
        self._window_start: float | None = None
        self._window_items = 0

    async def hold(self, ready: int = 1) -> None:
        """Wait (or not) before a batch of the ``ready`` items (and more) is taken."""
        if self.linger > 0 and ready < self.gather <= self.rate * self.linger:
            await asyncio.sleep(self.linger)

    def sent(self, items: int) -> None:
        """A batch of ``items`` left now."""
        now = asyncio.get_running_loop().time()
        if self._window_start is None:
            self._window_start = now
        self._window_items += items
        elapsed = now - self._window_start
        if elapsed >= self.WINDOW:
            self.rate = self._window_items / elapsed
            self._window_start, self._window_items = now, 0


async def paced_batches(queue: asyncio.Queue[T | None], pacer: Pacer,
                        before_take: Callable[[], Awaitable[None]] | None = None,
                        ) -> AsyncIterator[list[T]]:
    """The items of ``queue`` as batches until a ``None`` (end of stream): each batch starts
    with an item that arrived, waits for ``before_take`` (when given) and ``pacer.hold()``,
    then takes what is ready behind it (``take_ready``)."""
    while True:
        item = await queue.get()
        if item is None:
            return
        if before_take is not None:
            await before_take()
        await pacer.hold(queue.qsize() + 1)
        items, ended = take_ready(queue, item)
        pacer.sent(len(items))
        yield items
        if ended:
            return


class _InFlight:
    """Items of one stream sent and not answered yet; ``idle`` is set when there are none."""

    __slots__ = ("count", "idle")

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def sent(self, n: int) -> None:
        self.count += n
        self.idle.clear()

    def answered(self, n: int) -> None:
        self.count = max(0, self.count - n)
        if not self.count:
            self.idle.set()


def split_bounded(items: list[T], *, max_items: int = BATCH_MAX_ITEMS,
                  max_bytes: int = BATCH_MAX_BYTES) -> Iterator[list[T]]:
    """``items`` in order, cut into runs within the batch bounds (an item larger than
    ``max_bytes`` forms a run of its own)."""
    run: list[T] = []
    size = 0
    for item in items:
        item_size = _size_of(item)
        if run and (len(run) >= max_items or size + item_size > max_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run


def _size_of(item: object) -> int:
    byte_size = getattr(item, "ByteSize", None)
    return int(byte_size()) if byte_size is not None else 0


# How often a ``StreamCaller`` looks for calls past their deadline: a call's timeout fires
# within this much after it (timeouts here are seconds long).
DEADLINE_TICK = 0.1


class StreamCaller(Generic[Req, Resp]):
    """Concurrent request/response calls over one bidi stream, matched by a ``seq`` field.

    ``open_stream`` is a bound stub method such as ``stub.PutMessages``. Requests must have a
    ``seq`` field; ``call`` sets it. ``max_pending`` bounds calls in flight (callers wait).
    ``call`` raises ``StreamBroken`` when the stream fails and ``TimeoutError`` when its own
    deadline passes (checked every ``DEADLINE_TICK``); in both cases the outcome of the
    request is unknown to the caller.

    With ``batch`` (the batch message class of a ``...Batches`` method, whose ``items`` repeat
    the request type) every stream message carries the requests that were waiting when it was
    sent (see ``take_ready``), and responses arrive as batches with ``items`` too: under load
    one stream message serves many calls.

    ``linger`` (batched streams only) paces the batches like a group commit one hop early: a
    request that finds nothing in flight leaves at once; one that finds earlier requests still
    unanswered waits until they are all answered or ``linger`` seconds have passed, and then
    leaves with everything that queued meanwhile. A server that commits in groups (the spool)
    would have held those requests for its next group anyway, so the wait costs little latency
    and saves a stream message per request (see ``Pacer`` for what one costs).

    ``pace`` and ``gather`` (batched streams only) are a ``Pacer``'s linger and gather: a busy
    stream's batch is held up to ``pace`` seconds to fill.
    """

    def __init__(self, open_stream: Callable[..., Any], *, max_pending: int = 4096,
                 name: str = "stream", batch: Callable[[], Any] | None = None,
                 linger: float = 0.0, pace: float = 0.0, gather: int = 4) -> None:
        self._open_stream = open_stream
        self._name = name
        self._batch = batch
        self._linger = linger
        self._pace = pace
        self._gather = gather
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Resp]] = {}
        self._deadlines: dict[int, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(max_pending)
        self._outbox: asyncio.Queue[Req | None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def call(self, request: Req, timeout: float) -> Resp:
        async with self._slots:
            seq = next(self._seq)
            request.seq = seq  # type: ignore[attr-defined]
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Resp] = loop.create_future()
            self._pending[seq] = future
            self._deadlines[seq] = loop.time() + timeout
            if self._sweep is None:
                self._sweep = loop.call_later(DEADLINE_TICK, self._expire)
            try:
                outbox = self._outbox or await self._ensure_open()
                outbox.put_nowait(request)
                return await future
            finally:
                self._pending.pop(seq, None)
                self._deadlines.pop(seq, None)

    def _expire(self) -> None:
        """Fail the calls whose deadline passed with ``TimeoutError``; runs every
        ``DEADLINE_TICK`` while calls are pending (one timer per stream, not one per call)."""
        self._sweep = None
        if not self._deadlines:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for seq, deadline in self._deadlines.items():
            if deadline <= now:
                future = self._pending.get(seq)
                if future is not None and not future.done():
                    future.set_exception(TimeoutError())
        self._sweep = loop.call_later(DEADLINE_TICK, self._expire)

    async def _ensure_open(self) -> asyncio.Queue[Req | None]:
        if self._outbox is not None:
            return self._outbox
        async with self._lock:
            if self._outbox is None:
                outbox: asyncio.Queue[Req | None] = asyncio.Queue()
                in_flight = _InFlight()
                # The stream serves every later caller: it must not keep the trace of the
                # call that happened to open it.
                with telemetry.detached():
                    stream = self._open_stream(self._drain(outbox, in_flight))
                    self._reader = asyncio.create_task(self._read(stream, outbox, in_flight),
                                                       name=f"{self._name}-reader")
                self._outbox = outbox
            return self._outbox

    async def _drain(self, outbox: asyncio.Queue[Req | None],
                     in_flight: _InFlight) -> AsyncIterator[Any]:
        make_batch = self._batch
        if make_batch is None:
            while (item := await outbox.get()) is not None:
                yield item
            return

        async def answered() -> None:
            if self._linger and in_flight.count:
                # Bounded: a response that never comes costs ``linger``, not a stall.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await in_flight.idle.wait()

        async for items in paced_batches(outbox, Pacer(self._pace, self._gather), answered):
            batch = make_batch()
            batch.items.extend(items)
            in_flight.sent(len(items))
            yield batch

    async def _read(self, stream: Any, outbox: asyncio.Queue[Req | None],
                    in_flight: _InFlight) -> None:
        error = StreamBroken(grpc.StatusCode.UNAVAILABLE, f"{self._name} stream closed")
        try:
            batched = self._batch is not None
            async for message in stream:
                responses = message.items if batched else (message,)
                for response in responses:
                    future = self._pending.get(response.seq)
                    if future is not None and not future.done():
                        future.set_result(response)
                in_flight.answered(len(responses))
        except grpc.aio.AioRpcError as exc:
            error = StreamBroken(exc.code(), exc.details() or "")
            log.warning("%s stream failed: %s", self._name, error)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        finally:
            if self._outbox is outbox:
                self._outbox = None
            outbox.put_nowait(None)
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(error)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


async def abort_invalid(context: grpc.aio.ServicerContext, field: str, message: str) -> None:
    """Abort with INVALID_ARGUMENT naming ``field`` in the details and the trailers."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}",
                        trailing_metadata=(("petrel-field", field),))
