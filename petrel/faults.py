"""Crash points for fault-injection tests: the process kills itself (SIGKILL, no cleanup) at a
named place in the message path, so tests can prove nothing accepted is lost there.

Armed from configuration (``fault_points = ["spool.after_commit:50"]``, or the environment
``PETREL_FAULT_POINTS``): ``name`` fires on the first pass, ``name:N`` on the N-th. Unarmed,
``fault_point`` is one empty-dict lookup. The points:

* ``spool.after_commit``      a batch is synced, its writers not yet acknowledged
* ``ingress.after_store``     the spool acknowledged, the client not yet answered
* ``scheduler.after_events``  final events are on disk, the spool not yet updated
* ``egress.after_delivery``   the remote server said 250, the result not yet reported
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

log = logging.getLogger(__name__)

POINTS = ("spool.after_commit", "ingress.after_store", "scheduler.after_events",
          "egress.after_delivery")
_armed: dict[str, int] = {}


def arm(specs: Iterable[str]) -> None:
    """Arm the given ``name`` / ``name:N`` points (replacing any armed before)."""
    _armed.clear()
    for spec in specs:
        name, _, count = spec.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
        _armed[name] = int(count or 1)


def fault_point(name: str) -> None:
    """Kill this process here when ``name`` is armed and its count is reached."""
    if not _armed or name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        log.warning("fault point %s reached: killing the process", name)
        os.kill(os.getpid(), signal.SIGKILL)
