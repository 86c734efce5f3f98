"""Per-connection set-up of an aiosmtpd ``SMTP`` protocol without re-introspecting its class.

aiosmtpd's ``SMTP.__init__`` builds three lookup tables on every connection by walking the
protocol and the handler with ``inspect.getmembers`` and ``dir`` (about 15 % of the ingress
CPU with one connection per message). The tables depend only on the protocol class and the
handler, so :func:`setup_smtp` computes the unbound tables once per ``(class, handler)``
and only binds them per connection. Everything else it sets mirrors ``SMTP.__init__`` of the
aiosmtpd release pinned in ``pyproject.toml``; ``tests/unit/test_ingress_smtp_setup.py``
compares the result with the real ``SMTP.__init__`` attribute by attribute, so an aiosmtpd
upgrade that changes the constructor fails that test instead of misbehaving.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP, _AuthMechAttr, login_always_fail

_ClassTables = tuple[dict[str, tuple[str, Callable[..., Any]]], dict[str, Callable[..., Any]]]
_class_cache: dict[type, _ClassTables] = {}


def _class_tables(cls: type[SMTP]) -> _ClassTables:
    """``auth_*`` mechanisms (name → (attribute, function)) and ``smtp_*`` commands of ``cls``."""
    cached = _class_cache.get(cls)
    if cached is not None:
        return cached
    auth: dict[str, tuple[str, Callable[..., Any]]] = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("auth_") and callable(member):
            mechanism = getattr(member, "__auth_mechanism_name__",
                                name.replace("auth_", "").replace("__", "-"))
            auth[mechanism] = (name, member)
    commands = {name.replace("smtp_", ""): getattr(cls, name)
                for name in dir(cls) if name.startswith("smtp_")}
    _class_cache[cls] = (auth, commands)
    return auth, commands


def _handler_tables(handler: Any) -> tuple[dict[str, _AuthMechAttr], dict[str, Any], str | None]:
    """The handler's ``auth_*`` mechanisms, ``handle_*`` hooks and EHLO hook version,
    computed once per handler object (kept on the handler)."""
    cached = getattr(handler, "_petrel_smtp_tables", None)
    if cached is not None:
        return cached
    auth = {getattr(member, "__auth_mechanism_name__",
                    name.replace("auth_", "").replace("__", "-")): _AuthMechAttr(member, False)
            for name, member in inspect.getmembers(handler) if name.startswith("auth_")}
    hooks = {name.replace("handle_", ""): getattr(handler, name)
             for name in dir(handler) if name.startswith("handle_")}
    ehlo = hooks.get("EHLO")
    version = None
    if ehlo is not None:
        arity = len(inspect.signature(ehlo).parameters)
        if arity not in (4, 5):
            raise RuntimeError("Unsupported EHLO Hook")
        version = "old" if arity == 4 else "new"
    tables = (auth, hooks, version)
    handler._petrel_smtp_tables = tables
    return tables


class BoundCommands(Mapping[str, Callable[..., Any]]):
    """A protocol's ``smtp_*`` methods by command name, bound when looked up (a session uses
    five or six of the twenty-odd commands; binding them all cost every connection)."""

    __slots__ = ("_functions", "_protocol")

    def __init__(self, protocol: SMTP, functions: dict[str, Callable[..., Any]]) -> None:
        self._protocol = protocol
        self._functions = functions

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self._functions[name].__get__(self._protocol)

    def get(self, name: str, default: Any = None) -> Any:
        function = self._functions.get(name)
        return default if function is None else function.__get__(self._protocol)

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)


def setup_smtp(protocol: SMTP, handler: Any, *, loop: asyncio.AbstractEventLoop,
               hostname: str, ident: str, timeout: float, data_size_limit: int | None,
               enable_SMTPUTF8: bool, decode_data: bool, tls_context: ssl.SSLContext | None,
               auth_require_tls: bool, auth_exclude_mechanism: Iterable[str] = (),
               authenticator: Any = None, require_starttls: bool = False,
               reader: asyncio.StreamReader | None = None) -> None:
    """Initialise ``protocol`` as ``SMTP.__init__(handler, ...)`` would with these options
    (no AUTH requirement, no command call limit, no PROXY protocol), reading from ``reader``
    (by default a plain ``StreamReader`` with aiosmtpd's line limit)."""
    protocol.__ident__ = ident
    protocol.loop = loop
    if reader is None:
        reader = asyncio.StreamReader(loop=loop, limit=protocol.line_length_limit)
    asyncio.StreamReaderProtocol.__init__(
        protocol, reader, client_connected_cb=protocol._cb_client_connected, loop=loop)
    protocol.event_handler = handler
    protocol.data_size_limit = data_size_limit
    protocol.enable_SMTPUTF8 = enable_SMTPUTF8
    protocol._decode_data = decode_data
    protocol.command_size_limits.clear()
    protocol.hostname = hostname
    protocol.tls_context = tls_context
    protocol.require_starttls = tls_context and require_starttls
    protocol._timeout_duration = timeout
    protocol._timeout_handle = None
    protocol._tls_handshake_okay = True
    protocol._tls_protocol = None
    protocol._original_transport = None
    protocol.session = None
    protocol.envelope = None
    protocol.transport = None
    protocol._handler_coroutine = None
    protocol._auth_require_tls = auth_require_tls
    protocol._proxy_timeout = None
    if authenticator is not None:
        protocol._authenticator = authenticator
        protocol._auth_callback = None
    else:
        protocol._auth_callback = login_always_fail
        protocol._authenticator = None
    protocol._auth_required = False

    class_auth, class_commands = _class_tables(type(protocol))
    handler_auth, hooks, ehlo_version = _handler_tables(handler)
    auth_methods = {mechanism: _AuthMechAttr(function.__get__(protocol), True)
                    for mechanism, (_, function) in class_auth.items()}
    auth_methods.update(handler_auth)
    for mechanism in auth_exclude_mechanism:
        auth_methods.pop(mechanism, None)
    protocol._auth_methods = auth_methods
    protocol._handle_hooks = hooks
    protocol._ehlo_hook_ver = ehlo_version
    # aiosmtpd declares a dict; it only calls .get() on it and iterates it.
    protocol._smtp_methods = BoundCommands(protocol, class_commands)  # type: ignore[assignment]
    protocol._enforce_call_limit = False
