"""Human durations as operators write them in KumoMTA and Postfix configs ("20m", "1h30m", "7d")."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WORDS = {
    "second": "s", "seconds": "s", "sec": "s", "minute": "m", "minutes": "m", "min": "m",
    "hour": "h", "hours": "h", "day": "d", "days": "d", "week": "w", "weeks": "w",
}


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a number (seconds) or a string such as ``"90s"``, ``"1h30m"``,
    ``"5 minutes"``. Raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    text = value.strip().lower()
    for word, unit in _WORDS.items():
        text = re.sub(rf"(?<=\d)\s*{word}\b", unit, text)
    text = text.replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r}")
    return total
