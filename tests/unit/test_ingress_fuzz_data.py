"""Property tests of the DATA reader: only <CRLF>.<CRLF> ends the data, clean messages
survive dot-stuffing byte for byte, refused content is never kept, memory stays within the
size limit."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingress.data import DataReceiver, lines_within
from petrel import smtp_replies

PROPERTY = settings(max_examples=200, deadline=None)
READER_LIMIT = 64  # small, so long lines arrive in pieces as they do from the real reader


def has_bare_line_ending(data: bytes) -> bool:
    """Reference: ``data`` holds a CR or LF that is not part of a CRLF pair."""
    return bool(re.search(rb"\r(?!\n)|(?<!\r)\n", data))


def end_of_data(stream: bytes) -> int:
    """Reference: where the end-of-data line starts (-1 when absent). The start of DATA
    counts as following a CRLF."""
    at = 0
    while (at := stream.find(b".\r\n", at)) >= 0:
        if at == 0 or (at >= 2 and stream[at - 2:at] == b"\r\n"):
            return at
        at += 1
    return -1


def segments(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``stream`` as ``SessionReader.read_data_segment`` does: after each LF, and lines
    longer than the reader's limit in pieces (at the ``cuts`` offsets, else at the limit)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        lf = stream.find(b"\n", pos)
        end = len(stream) if lf < 0 else lf + 1
        while end - pos > READER_LIMIT:
            piece = cuts.pop() if cuts else READER_LIMIT
            out.append(stream[pos:pos + piece])
            pos += piece
        out.append(stream[pos:end])
        pos = end
    return out


def receive(stream: bytes, cuts: list[int], max_size: int = 10_000,
            max_line: int = 100) -> tuple[DataReceiver, int]:
    """Feed ``stream``; returns the receiver and the offset right after the end-of-data
    line (-1 when it never came)."""
    receiver = DataReceiver(max_size, max_line)
    offset = 0
    for segment in segments(stream, cuts):
        offset += len(segment)
        if receiver.feed(segment):
            return receiver, offset
        assert receiver.buffered <= max_size
    return receiver, -1


raw_stream = st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"a", b"\x00", b".\r\n",
                                       b"\r\n.\r\n", b"\n.\n", b"x" * 70]),
                      max_size=40).map(b"".join)
cuts = st.lists(st.integers(min_value=1, max_value=READER_LIMIT), max_size=10)


@PROPERTY
@given(st.one_of(raw_stream, st.binary(max_size=300)), cuts)
@example(b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", [])
@example(b"a\r\n.\nb\r\n.\r\n", [])
@example(b".\r\n", [])
@example(b"a\r" + b"\n.\r\n", [2])
@example(b"a" * 63 + b"\rb\r\n.\r\n", [])  # a bare CR at the end of a piece of a long line
@example(b"a" * 63 + b"\r\n.\r\n", [])  # a CRLF split between two pieces
def test_only_crlf_dot_crlf_ends_data(stream: bytes, cut_list: list[int]) -> None:
    receiver, consumed = receive(stream, list(cut_list))
    at = end_of_data(stream)
    assert consumed == (at + 3 if at >= 0 else -1)
    assert receiver.done == (at >= 0)
    if receiver.done and receiver.refusal is None:
        content = receiver.content()
        assert not has_bare_line_ending(content)
        assert b"\x00" not in content
        assert receiver.buffered == len(content) <= receiver.max_size
    if receiver.refusal is not None:
        assert receiver.buffered == 0


clean_line = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF),
                     max_size=60).map(lambda text: text.encode()[:98])


@PROPERTY
@given(st.lists(clean_line, max_size=30), cuts)
def test_clean_messages_round_trip_through_dot_stuffing(lines: list[bytes],
                                                        cut_list: list[int]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\nQUIT\r\n"
    receiver, consumed = receive(wire, list(cut_list))
    assert receiver.refusal is None
    assert receiver.content() == message
    assert wire[consumed:] == b"QUIT\r\n"


@PROPERTY
@given(st.lists(clean_line, min_size=1, max_size=30), st.integers(min_value=0, max_value=400))
def test_oversize_content_is_refused_and_dropped(lines: list[bytes], max_size: int) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"
    receiver, _ = receive(wire, [], max_size=max_size)
    assert receiver.done
    if len(message) > max_size:
        assert receiver.refusal == smtp_replies.TOO_BIG
        assert receiver.buffered == 0
    else:
        assert receiver.content() == message


@PROPERTY
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=60, max_value=200),
       cuts)
def test_line_length_limit(length: int, max_line: int, cut_list: list[int]) -> None:
    wire = b"Subject: x\r\n\r\n" + b"y" * length + b"\r\n.\r\n"
    receiver, _ = receive(wire, list(cut_list), max_line=max_line)
    assert receiver.done
    too_long = length + 2 > max_line
    assert (receiver.refusal == smtp_replies.LINE_TOO_LONG) == too_long


def receive_in_blocks(stream: bytes, arrivals: list[int], max_size: int = 10_000,
                      max_line: int = 100, block_limit: int = 150,
                      ) -> tuple[DataReceiver, int]:
    """Feed ``stream`` as ``SessionReader.read_data_block`` cuts it when the octets arrive
    in chunks of the ``arrivals`` sizes: the complete lines buffered (up to ``block_limit``,
    never a line starting with ``.``) through ``feed_block``, else one segment through
    ``feed``. Returns like ``receive``."""
    receiver = DataReceiver(max_size, max_line)
    arrived = 0
    offset = 0
    while offset < len(stream):
        if arrived <= offset:
            arrived = offset + (arrivals.pop() if arrivals else len(stream))
        buffer = stream[offset:arrived]
        end = buffer.rfind(b"\n", 0, block_limit)
        if end > 0 and not buffer.startswith(b"."):
            dot = buffer.find(b"\n.", 0, end)
            block = buffer[:(dot if dot >= 0 else end) + 1]
            offset += len(block)
            done = receiver.feed_block(block)
        else:
            segment = segments(stream[offset:], [])[0]
            offset += len(segment)
            done = receiver.feed(segment)
        if done:
            return receiver, offset
        assert receiver.buffered <= max_size
    return receiver, -1


arrivals = st.lists(st.integers(min_value=1, max_value=200), max_size=10)


@PROPERTY
@given(st.one_of(raw_stream, st.binary(max_size=300),
                 st.lists(clean_line, max_size=30).map(
                     lambda lines: b"".join(line + b"\r\n" for line in lines) + b".\r\n")),
       # max_line below the reader's limit, as in the real reader (limit = max line + CRLF):
       # which of two problems is reported first depends on where long lines are cut.
       arrivals, st.integers(min_value=0, max_value=2000),
       st.integers(min_value=20, max_value=READER_LIMIT - 2))
@example(b".\r\nQUIT\r\n", [], 100, 60)
@example(b"a\r\nb\r\n.\r\nQUIT\r\n", [], 100, 60)
@example(b"a\r\n..b\r\nc\r\n.\r\nQUIT\r\n", [4], 100, 60)
@example(b"a\r\nb\x00\r\n.\r\n", [], 100, 60)
@example(b"a\rb\r\n.\r\n", [], 100, 60)
@example(b"a" * 90 + b"\r\n.\r\n", [], 100, 50)
@example(b"a\r\nb\r\nc\r\n.\r\n", [], 5, 60)
@example(b"x" * 72 + b"\r\n", [], 0, 62)
def test_blocks_and_lines_agree(stream: bytes, arrival_list: list[int], max_size: int,
                                max_line: int) -> None:
    """Taking DATA in blocks of buffered lines gives what feeding it line by line gives:
    the same end, refusal and content."""
    by_line, line_end = receive(stream, [], max_size=max_size, max_line=max_line)
    by_block, block_end = receive_in_blocks(stream, list(arrival_list), max_size=max_size,
                                            max_line=max_line)
    assert block_end == line_end
    assert by_block.done == by_line.done
    assert by_block.refusal == by_line.refusal
    assert by_block.content() == by_line.content()
    assert by_block.size == by_line.size


@PROPERTY
@given(st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=30),
       st.integers(min_value=2, max_value=60))
@example([59, 0, 60], 60)
@example([60], 60)
@example([29, 30, 31], 60)
def test_lines_within_agrees_with_measuring_every_line(lengths: list[int], limit: int) -> None:
    """``lines_within``'s window scan gives the verdict of measuring each line."""
    block = b"".join(b"x" * n + b"\n" for n in lengths)
    assert lines_within(block, limit) == (max(lengths) + 1 <= limit)
