"""``egress.pipeline.ReplyGroup`` parses pipelined replies however the bytes are split, as
aiosmtplib parses one reply, and stops at the first malformed or over-long one."""

from __future__ import annotations

import asyncio
import itertools

import aiosmtplib
import pytest
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.pipeline import ReplyGroup

REPLIES = [b"250 2.1.0 Sender OK\r\n",
           b"250-first line\r\n250-second\r\n250 2.1.5 last\r\n",
           b"550 5.1.1 no such user\r\n",
           b"354 go ahead\r\n"]
EXPECTED = [(250, "2.1.0 Sender OK"), (250, "first line\nsecond\n2.1.5 last"),
            (550, "5.1.1 no such user"), (354, "go ahead")]


def feed(chunks: list[bytes], expected: int) -> ReplyGroup:
    async def run() -> ReplyGroup:
        group = ReplyGroup(SMTPProtocol(), expected)
        for chunk in chunks:
            group.data_received(chunk)
        return group
    return asyncio.run(run())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_replies_are_the_same_however_the_bytes_arrive(cuts: list[int]) -> None:
    group = feed(split(b"".join(REPLIES), cuts), len(REPLIES))
    assert [(r.code, r.message) for r in group.replies] == EXPECTED
    assert group.done.done() and group.done.exception() is None


def test_the_group_completes_only_with_every_reply() -> None:
    group = feed([REPLIES[0], b"250-first line\r\n"], 2)
    assert len(group.replies) == 1 and not group.done.done()


def test_aiosmtplib_reads_one_reply_the_same_way() -> None:
    async def parse(raw: bytes) -> aiosmtplib.SMTPResponse | None:
        protocol = SMTPProtocol()
        protocol._buffer.extend(raw)
        return protocol._read_response_from_buffer()
    for raw, expected in zip(REPLIES, EXPECTED, strict=True):
        assert asyncio.run(parse(raw)) == expected


def test_a_malformed_reply_ends_the_group_with_an_error() -> None:
    group = feed([REPLIES[0], b"hello there\r\n"], 3)
    assert len(group.replies) == 1
    with pytest.raises(aiosmtplib.SMTPResponseException, match="Malformed"):
        group.done.result()


def test_an_endless_reply_ends_the_group_with_an_error() -> None:
    group = feed([b"250-" + b"x" * 100 + b"\r\n"] * (MAX_RESPONSE_LENGTH // 100), 1)
    assert group.replies == []
    with pytest.raises(aiosmtplib.SMTPException, match="too long"):
        group.done.result()
