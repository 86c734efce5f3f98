"""Translate KumoMTA rule regexes (Rust ``fancy-regex`` syntax) into Python ``re`` syntax.

Most rule regexes are already valid Python; this rewrites only the constructs Python cannot
parse or reads differently:

* ``(?<name>...)`` → ``(?P<name>...)``, ``\\k<name>`` → ``(?P=name)``;
* ``\\z`` → ``\\Z`` (end of text), Rust's ``\\Z`` → ``(?=\\n?\\Z)``;
* ``\\x{263A}`` → ``\\u263a``; ``\\h`` / ``\\H`` (hex digit) → explicit classes;
* POSIX classes inside brackets (``[[:alpha:]]``) → ASCII ranges;
* ``\\pL``, ``\\p{L}``, ``\\p{N}`` and their negations (common Unicode classes) → equivalents;
* inline flags in the middle of a pattern (``abc(?i)def``) → a scoped group
  (``abc(?i:def)``), since Python accepts global flags only at the start.

Anything else Python cannot express (class set operations, ``\\K``, ``(?U)``) raises
``UnsupportedRegex`` naming the construct, so a rule file fails to load with a clear error
instead of matching something else silently.
"""

from __future__ import annotations

import re

_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
# Unicode general categories Python's re can express (outside and inside brackets).
_UNICODE_OUT = {
    "L": "[^\\W\\d_]", "Letter": "[^\\W\\d_]", "Alphabetic": "[^\\W\\d_]",
    "N": "\\d", "Nd": "\\d", "Number": "\\d", "Decimal_Number": "\\d",
    "Z": "\\s", "Zs": "\\s", "White_Space": "\\s",
}
_UNICODE_OUT_NEG = {
    "L": "[\\W\\d_]", "Letter": "[\\W\\d_]", "Alphabetic": "[\\W\\d_]",
    "N": "\\D", "Nd": "\\D", "Number": "\\D", "Decimal_Number": "\\D",
    "Z": "\\S", "Zs": "\\S", "White_Space": "\\S",
}
_UNICODE_IN = {"N": "\\d", "Nd": "\\d", "Number": "\\d", "Z": "\\s", "Zs": "\\s",
               "White_Space": "\\s"}
_FLAG_CHARS = set("imsxuR-")


class UnsupportedRegex(ValueError):
    """The pattern uses a fancy-regex construct Python's ``re`` has no equivalent for."""


def translate(pattern: str) -> str:
    """Return the Python ``re`` spelling of a fancy-regex ``pattern``."""
    out: list[str] = []
    # Per open group: the inline-flag scopes opened inside it (closed with the group, and
    # closed and reopened around each "|" so the alternation keeps its meaning).
    groups: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
        elif ch == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif ch == "(":
            text, i, scope = _group_open(pattern, i, at_start=not "".join(out))
            out.append(text)
            if scope is None:
                groups.append([])
            elif scope:
                groups[-1].append(text)
        elif ch == ")":
            scopes = groups.pop() if len(groups) > 1 else []
            out.append(")" * len(scopes) + ")")
            i += 1
        elif ch == "|":
            scopes = groups[-1]
            out.append(")" * len(scopes) + "|" + "".join(scopes))
            i += 1
        else:
            out.append(ch)
            i += 1
    out.append(")" * len(groups[0]))
    return "".join(out)


def _group_open(p: str, i: int, at_start: bool) -> tuple[str, int, bool | None]:
    """Handle ``(`` at ``i``: returns (text, next index, scope) where scope is ``None`` for
    a group, True for an inline flag turned into a scoped group, False for a leading global
    flag kept as is (or an empty flag dropped)."""
    if p.startswith("(?<", i) and i + 3 < len(p) and p[i + 3] not in "=!":
        return "(?P<", i + 3, None
    if p.startswith("(?", i):
        j = i + 2
        while j < len(p) and p[j] in _FLAG_CHARS:
            j += 1
        flags = p[i + 2:j]
        if flags and j < len(p) and p[j] in "):":
            if "U" in flags:
                raise UnsupportedRegex("swap-greed flag (?U)")
            flags = flags.replace("R", "").replace("u", "")
            if p[j] == ":":
                return (f"(?{flags}:" if flags.strip("-") else "(?:"), j + 1, None
            if not flags.strip("-"):
                return "", j + 1, False
            if at_start and "-" not in flags:
                return f"(?{flags})", j + 1, False
            return f"(?{flags}:", j + 1, True
        if j < len(p) and p[j] == "U":
            raise UnsupportedRegex("swap-greed flag (?U)")
    return "(", i + 1, None


def _escape(p: str, i: int, in_class: bool) -> tuple[str, int]:
    if i + 1 >= len(p):
        raise UnsupportedRegex("trailing backslash")
    c = p[i + 1]
    if c == "z":
        if in_class:
            raise UnsupportedRegex("\\z inside a class")
        return "\\Z", i + 2
    if c == "Z":
        if in_class:
            raise UnsupportedRegex("\\Z inside a class")
        return "(?=\\n?\\Z)", i + 2
    if c == "x" and p.startswith("{", i + 2):
        end = p.find("}", i + 3)
        if end < 0:
            raise UnsupportedRegex("unterminated \\x{...}")
        value = int(p[i + 3:end], 16)
        return (f"\\u{value:04x}" if value <= 0xFFFF else f"\\U{value:08x}"), end + 1
    if c in "hH":
        body = "0-9A-Fa-f"
        if in_class:
            if c == "H":
                raise UnsupportedRegex("\\H inside a class")
            return body, i + 2
        return (f"[{body}]" if c == "h" else f"[^{body}]"), i + 2
    if c in "pP":
        if p.startswith("{", i + 2):
            end = p.find("}", i + 3)
            if end < 0:
                raise UnsupportedRegex("unterminated \\p{...}")
            name, nxt = p[i + 3:end], end + 1
        else:
            name, nxt = p[i + 2:i + 3], i + 3
        negated = c == "P"
        if in_class:
            if negated or name not in _UNICODE_IN:
                raise UnsupportedRegex(f"\\{c}{{{name}}} inside a class")
            return _UNICODE_IN[name], nxt
        table = _UNICODE_OUT_NEG if negated else _UNICODE_OUT
        if name not in table:
            raise UnsupportedRegex(f"Unicode class \\{c}{{{name}}}")
        return table[name], nxt
    if c == "k" and p.startswith("<", i + 2):
        end = p.find(">", i + 3)
        if end < 0:
            raise UnsupportedRegex("unterminated \\k<...>")
        return f"(?P={p[i + 3:end]})", end + 1
    if c == "K":
        raise UnsupportedRegex("\\K (keep out)")
    return p[i:i + 2], i + 2


def _char_class(p: str, i: int) -> tuple[str, int]:
    out = ["["]
    j = i + 1
    if j < len(p) and p[j] == "^":
        out.append("^")
        j += 1
    if j < len(p) and p[j] == "]":
        out.append("\\]")
        j += 1
    while j < len(p):
        ch = p[j]
        if ch == "]":
            out.append("]")
            return "".join(out), j + 1
        if ch == "\\":
            text, j = _escape(p, j, in_class=True)
            out.append(text)
        elif ch == "[":
            match = re.match(r"\[:(\^?)([a-z]+):\]", p[j:])
            if not match:
                raise UnsupportedRegex("nested character class")
            if match[1] or match[2] not in _POSIX:
                raise UnsupportedRegex(f"POSIX class {match[0]}")
            out.append(_POSIX[match[2]])
            j += match.end()
        elif p.startswith(("&&", "--", "~~"), j):
            raise UnsupportedRegex(f"class set operation {p[j:j + 2]!r}")
        else:
            out.append(ch)
            j += 1
    raise UnsupportedRegex("unterminated character class")
