"""``ingress.smtp_setup`` must leave a protocol exactly as aiosmtpd's ``SMTP.__init__`` does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from ingress.smtp import SmtpListener
from petrel.config import IngressConfig


def _normalise(value: Any) -> Any:
    """Comparable form: bound methods by (function, bound object), readers by type."""
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_normalise(item) for item in value))
    if hasattr(value, "__func__") and hasattr(value, "__self__"):
        return ("bound", value.__func__, id(value.__self__))
    if isinstance(value, asyncio.StreamReader | asyncio.Future):
        return type(value)
    return value


def _state(protocol: SMTP) -> dict[str, Any]:
    state = {key: _normalise(value) for key, value in vars(protocol).items()}
    # Bound to each instance (when looked up): compare the functions.
    state["_smtp_methods"] = {k: v.__func__ for k, v in protocol._smtp_methods.items()}
    state["_auth_methods"] = {k: (v.method[1] if isinstance(v.method, tuple) else v.method,
                                  v.is_builtin)
                              for k, v in state["_auth_methods"].items()}
    for key in ("_client_connected_cb", "_stream_reader_wr", "_source_traceback",
                "_session_reader", "_stream_reader"):
        state.pop(key, None)
    return state


@pytest.mark.parametrize("auth_users", [{}, {"alice": "secret"}])
async def test_fast_setup_matches_aiosmtpd_constructor(monkeypatch: pytest.MonkeyPatch,
                                                       auth_users: dict[str, str]) -> None:
    config = IngressConfig(auth_users=auth_users)
    listener = SmtpListener(config, acceptor=None)  # type: ignore[arg-type]
    fast = listener._protocol()

    def reference(protocol: SMTP, handler: Any, *, reader: Any, **options: Any) -> None:
        SMTP.__init__(protocol, handler, **options)
        asyncio.StreamReaderProtocol.__init__(
            protocol, reader, client_connected_cb=protocol._cb_client_connected,
            loop=options["loop"])

    monkeypatch.setattr("ingress.strict.setup_smtp", reference)
    slow = listener._protocol()
    assert set(vars(fast)) == set(vars(slow))
    assert _state(fast) == _state(slow)
    assert fast._smtp_methods["EHLO"].__self__ is fast
    assert set(fast._smtp_methods) >= {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "QUIT", "STARTTLS"}
