"""The DATA stream, read strictly and with bounded memory (pure; ``ingress.strict`` feeds it).

``DataReceiver.feed`` takes the stream in segments: each one ends with the first LF after the
previous segment, or is a piece of an over-long line without one (the reader never holds more
than its line limit). ``feed_block`` takes several complete lines at once (what arrived in
one read), with the same outcome as feeding them one by one. Rules:

* Only ``<CRLF>.<CRLF>`` ends the data: a line that is exactly ``.`` CRLF, following a line
  that ended with CRLF (the start of DATA counts as one). ``\\n.\\n``, ``\\r\\n.\\n``,
  ``\\n.\\r\\n``, ``\\r.\\r\\n`` and every other variant are ordinary data, and refused.
* A CR or LF that is not part of a CRLF pair, or a NUL, refuses the message
  (``BARE_LINE_ENDING`` / ``NUL_IN_DATA``); so does a text line longer than ``max_line``
  octets including CRLF once unstuffed (``LINE_TOO_LONG``, RFC 5321 4.5.3.1.6) and content
  over ``max_size`` octets (``TOO_BIG``). The first problem wins.
* Dot-stuffing is undone (RFC 5321 4.5.2). Content is kept only while nothing is wrong and
  the size is within ``max_size``: after a refusal the rest is read and dropped, so a
  session never holds more than ``max_size`` octets of message whatever the client sends.
"""

from __future__ import annotations

from petrel import smtp_replies

CRLF = b"\r\n"
END_OF_DATA = b".\r\n"


class DataReceiver:
    def __init__(self, max_size: int, max_line: int) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.size = 0  # unstuffed content octets seen, kept or not
        self.refusal: str | None = None
        self.done = False
        self._parts: list[bytes] = []
        self._line_octets = 0  # of the current line so far, when it came in pieces
        self._line_start = True
        self._after_crlf = True
        self._pending_cr = False  # the previous piece ended with CR inside a line

    def feed(self, segment: bytes) -> bool:
        """Take the next segment; ``True`` when it was the end-of-data line (nothing after
        it belongs to the message)."""
        if self.done:
            raise RuntimeError("end of data already seen")
        if self._line_start and self._after_crlf and segment == END_OF_DATA:
            self.done = True
            return True
        complete = segment.endswith(b"\n")
        body = segment[1:] if self._line_start and segment.startswith(b".") else segment
        self._check(segment, body, complete)
        self.size += len(body)
        if self.refusal is None and self.size > self.max_size:
            self._refuse(smtp_replies.TOO_BIG)
        if self.refusal is None:
            self._parts.append(body)
        if complete:
            self._after_crlf = segment.endswith(CRLF) or (segment == b"\n" and self._pending_cr)
            self._line_octets = 0
            self._pending_cr = False
        else:
            self._line_octets += len(body)
            self._pending_cr = segment.endswith(b"\r")
        self._line_start = complete
        return False

    def feed_block(self, block: bytes) -> bool:
        """Take several complete lines at once, with the result of feeding them one by one
        (``feed``): ``block`` ends with LF, and no line of it but possibly the first starts
        with ``.``. A block of clean text lines is checked with a few scans of the whole
        block instead of per line; anything else goes through ``feed`` line by line."""
        if (self._line_start and self._after_crlf and self.refusal is None
                and not block.startswith(b".") and block.endswith(CRLF)
                and self._clean(block)):
            self.size += len(block)
            if self.size > self.max_size:
                self._refuse(smtp_replies.TOO_BIG)
            else:
                self._parts.append(block)
            return False
        lines = block.split(b"\n")
        return any(self.feed(line + b"\n") for line in lines[:-1])

    def _clean(self, block: bytes) -> bool:
        """Every line ends with CRLF, no other CR or LF, no NUL, none longer than the limit."""
        pairs = block.count(CRLF)
        return (block.count(b"\n") == pairs and block.count(b"\r") == pairs
                and b"\0" not in block and lines_within(block, self.max_line))

    def _check(self, segment: bytes, body: bytes, complete: bool) -> None:
        if self.refusal is not None:
            return
        if self._line_octets + len(body) > self.max_line:
            self._refuse(smtp_replies.LINE_TOO_LONG)
            return
        if self._pending_cr and not segment.startswith(b"\n"):
            self._refuse(smtp_replies.BARE_LINE_ENDING)
            return
        if complete:
            joined_crlf = segment == b"\n" and self._pending_cr
            if not segment.endswith(CRLF) and not joined_crlf:
                self._refuse(smtp_replies.BARE_LINE_ENDING)
                return
            inner = segment[:-2] if segment.endswith(CRLF) else b""
        else:
            inner = segment[:-1] if segment.endswith(b"\r") else segment
        if b"\r" in inner or b"\n" in inner:
            self._refuse(smtp_replies.BARE_LINE_ENDING)
        elif b"\0" in segment:
            self._refuse(smtp_replies.NUL_IN_DATA)

    def _refuse(self, reply: str) -> None:
        self.refusal = reply
        self._parts.clear()

    @property
    def buffered(self) -> int:
        """Octets of content held in memory."""
        return sum(len(part) for part in self._parts)

    def content(self) -> bytes:
        """The unstuffed message (only meaningful when ``done`` and no ``refusal``)."""
        return b"".join(self._parts)


def lines_within(block: bytes, limit: int) -> bool:
    """Every line of ``block`` (lines ending with LF, the last one included) is at most
    ``limit`` octets long, its line ending included.

    A line over the limit holds at least ``limit`` octets without an LF, and so covers a
    whole window ``[k * w, (k + 1) * w)`` of ``w = limit // 2`` octets. When every such
    window holds an LF (one ``memchr`` each, stopping at the first LF) no line can be over
    the limit; otherwise the lines are measured one by one. A fifth of the CPU of splitting
    every block into lines, for ordinary text."""
    width = max(1, limit // 2)
    find = block.find
    for start in range(0, len(block), width):
        if find(b"\n", start, start + width) < 0:
            return max(map(len, block.split(b"\n"))) + 1 <= limit
    return True
