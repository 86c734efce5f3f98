"""The spool's span: ``spool commit``, one per group-commit batch.

A batch holds writes of many messages, so its span starts a trace of its own and links to
each message's trace (the context stored in the metadata written, for puts and metadata
replacements), at most ``telemetry.MAX_LINKS`` of them; ``messaging.batch.message_count`` is
the batch size. The gRPC streams that carry the writes are not traced (see ``petrel.rpc``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind

from petrel import telemetry

_tracer = telemetry.tracer("petrel.spool")


def links(carriers: Sequence[Mapping[str, str] | None]) -> list[Link]:
    out: list[Link] = []
    for carrier in carriers:
        if carrier:
            link = telemetry.link_from_carrier(carrier)
            if link is not None:
                out.append(link)
                if len(out) == telemetry.MAX_LINKS:
                    break
    return out


@contextmanager
def commit_span(size: int, carriers: Sequence[Mapping[str, str] | None],
                backend: str) -> Iterator[Span]:
    if not telemetry.recording(_tracer):
        # A batch span starts a trace of its own: with nothing recorded there is none.
        with telemetry.current_context_only(None) as span:
            yield span
        return
    with _tracer.start_as_current_span(
            "spool commit", context=Context(), kind=SpanKind.INTERNAL, links=links(carriers),
            attributes={"messaging.batch.message_count": size,
                        "petrel.spool.backend": backend}) as span:
        yield span
