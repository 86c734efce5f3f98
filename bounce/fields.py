"""RFC 822-style field blocks as used by DSNs (RFC 3464) and feedback reports (RFC 5965).

``parse_fields`` reads ``Name: value`` lines with folded continuation lines and returns
``(name_lower, value)`` pairs in order, with ``None`` marking a blank line between blocks,
so callers can use block boundaries where they exist and cope when a report omits them.
"""

from __future__ import annotations

import re

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")

Field = tuple[str, str] | None


def parse_fields(text: str) -> list[Field]:
    out: list[Field] = []
    current: list[str] | None = None
    name = ""

    def flush() -> None:
        if current is not None:
            out.append((name, " ".join(s.strip() for s in current).strip()))

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            flush()
            current = None
            if out and out[-1] is not None:
                out.append(None)
            continue
        if line[:1] in " \t" and current is not None:
            current.append(line)
            continue
        match = _FIELD.match(line)
        flush()
        if match:
            name = match.group(1).lower()
            current = [match.group(2)]
        else:
            current = None
    flush()
    while out and out[-1] is None:
        out.pop()
    return out
