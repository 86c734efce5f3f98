"""Where mail for a domain goes: MX resolution, overrides and the destination *site*.

Shared by the scheduler (which shapes traffic per site) and egress (which connects to the
hosts). ``Router.resolve(domain)`` returns a ``Route``:

* a per-domain route from config (``routing.routes``) or the smarthost, when configured;
* otherwise MX records via dnspython (async), hosts in preference order, each host's A/AAAA
  addresses resolved with the same resolver (so a test DNS server works end to end);
* no MX records but an A/AAAA record → the implicit MX (RFC 5321 §5.1);
* a null MX (``0 .``, RFC 7505) → a permanent failure ``556 5.1.10``;
* NXDOMAIN → permanent ``550 5.1.2``; timeouts and SERVFAIL → transient ``451 4.4.3``;
* an address literal ``[192.0.2.1]`` → that address.

The *site* names the set of hosts: domains whose MX records point at the same hosts share a
site, hence one ready queue and one set of limits (KumoMTA's "MX rollup"). Answers are cached
for their TTL, capped by ``dns_max_cache_ttl``; failures for a few seconds.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from petrel.config import RoutingConfig, split_hostport
from petrel.smtp_replies import Reply

NEGATIVE_TTL = 5.0
MAX_CACHE_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Host:
    """One destination host: its name, the port to use and the addresses to try in order."""

    name: str
    port: int
    preference: int = 0
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach ``domain``. ``failure`` is set when it cannot be reached (then ``hosts``
    is empty): a permanent or transient SMTP-style reply explaining why."""

    domain: str
    site: str
    kind: str
    hosts: tuple[Host, ...] = ()
    failure: Reply | None = None

    @property
    def deliverable(self) -> bool:
        return self.failure is None and bool(self.hosts)


@dataclass
class _Entry:
    route: Route
    expires: float


@functools.lru_cache(maxsize=16_384)
def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (IDNA) form of ``domain``; address literals are kept as they are.
    Cached: every message's recipients go through it, over a few thousand domains."""
    domain = domain.strip().rstrip(".")
    if domain.startswith("["):
        return domain.lower()
    try:
        return dns.name.from_unicode(domain).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return domain.lower()


def site_name(host_names: list[str]) -> str:
    """Deterministic name of a set of MX hosts (order and duplicates do not matter)."""
    return ",".join(sorted({h.rstrip(".").lower() for h in host_names}))


@dataclass
class Router:
    config: RoutingConfig
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Task[Route]] = field(default_factory=dict)
    _resolver: dns.asyncresolver.Resolver | None = None
    _routes: dict[str, str] = field(default_factory=dict)
    # Told of every route resolved without the cache and how many seconds it took (metrics).
    observer: Callable[[Route, float], None] | None = None

    def __post_init__(self) -> None:
        if self.config.dns_nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(self.config.dns_nameservers)
            resolver.port = self.config.dns_port
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = self.config.dns_timeout
        resolver.timeout = min(self.config.dns_timeout, 2.0)
        self._resolver = resolver
        # Route keys as operators write them ("Example.COM", "bücher.example") match the
        # normalized form every lookup uses.
        self._routes = {normalize_domain(k): v for k, v in self.config.routes.items()}

    async def resolve(self, domain: str) -> Route:
        """The route for ``domain`` (cached; concurrent lookups of one domain share one query,
        which runs in its own task so a cancelled caller does not fail the others)."""
        domain = normalize_domain(domain)
        entry = self._cache.get(domain)
        if entry is not None and entry.expires > time.monotonic():
            return entry.route
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.create_task(self._resolve_and_cache(domain),
                                       name=f"resolve-{domain}")
            self._inflight[domain] = task
            task.add_done_callback(lambda done: self._lookup_done(domain, done))
        return await asyncio.shield(task)

    def _lookup_done(self, domain: str, task: asyncio.Task[Route]) -> None:
        self._inflight.pop(domain, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it itself

    async def _resolve_and_cache(self, domain: str) -> Route:
        started = time.monotonic()
        route, ttl = await self._lookup(domain)
        now = time.monotonic()
        if self.observer is not None:
            self.observer(route, now - started)
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._evict(now)
        self._cache[domain] = _Entry(route, now + ttl)
        return route

    def _evict(self, now: float) -> None:
        """Keep the cache bounded: drop expired entries, then the oldest quarter if needed."""
        for key in [k for k, e in self._cache.items() if e.expires <= now]:
            del self._cache[key]
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            for key in list(self._cache)[:MAX_CACHE_ENTRIES // 4]:
                del self._cache[key]

    async def _lookup(self, domain: str) -> tuple[Route, float]:
        configured = self._routes.get(domain)
        if configured:
            return self._static(domain, "route", configured), self.config.dns_max_cache_ttl
        if self.config.smarthost:
            return (self._static(domain, "smarthost", self.config.smarthost),
                    self.config.dns_max_cache_ttl)
        if domain.startswith("[") and domain.endswith("]"):
            return self._literal(domain), self.config.dns_max_cache_ttl
        return await self._mx(domain)

    def _static(self, domain: str, kind: str, target: str) -> Route:
        host, port = split_hostport(target)
        addresses = (host,) if _is_ip(host) else ()
        return Route(domain, f"{kind}:{host}:{port}", kind,
                     (Host(host, port, 0, addresses),))

    def _literal(self, domain: str) -> Route:
        text = domain[1:-1]
        if text.lower().startswith("ipv6:"):
            text = text[5:]
        if not _is_ip(text):
            return Route(domain, domain, "literal",
                         failure=Reply(550, "5.1.2", f"Bad address literal {domain}"))
        return Route(domain, f"[{text}]", "literal",
                     (Host(text, self.config.smtp_port, 0, (text,)),))

    async def _mx(self, domain: str) -> tuple[Route, float]:
        ttl_cap = self.config.dns_max_cache_ttl
        try:
            answer = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return Route(domain, domain, "nxdomain", failure=Reply(
                550, "5.1.2", f"Domain {domain} does not exist")), NEGATIVE_TTL * 12
        except dns.resolver.NoAnswer:
            return await self._implicit(domain)
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.exception.DNSException) as exc:
            return self._dns_failure(domain, exc), NEGATIVE_TTL
        records = sorted(((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                          for r in answer), key=lambda pe: pe[0])
        if any(name in ("", ".") for _, name in records) or (
                len(records) == 1 and records[0][1] in ("", ".")):
            return Route(domain, f"nullmx:{domain}", "null_mx", failure=Reply(
                556, "5.1.10", f"Domain {domain} accepts no mail (null MX)")), ttl_cap
        resolved = await asyncio.gather(*(self._addresses(name) for _, name in records))
        hosts = [Host(name, self.config.smtp_port, preference, addresses)
                 for (preference, name), (addresses, _) in zip(records, resolved, strict=True)]
        if not any(h.addresses for h in hosts):
            return Route(domain, site_name([n for _, n in records]), "mx", failure=Reply(
                451, "4.4.3", f"No address for any MX host of {domain}")), NEGATIVE_TTL
        ttl = min(float(answer.rrset.ttl) if answer.rrset else ttl_cap, ttl_cap)
        return Route(domain, site_name([n for _, n in records]), "mx", tuple(hosts)), ttl

    async def _implicit(self, domain: str) -> tuple[Route, float]:
        addresses, errors = await self._addresses(domain)
        if not addresses:
            if errors:
                return self._dns_failure(domain, errors[0]), NEGATIVE_TTL
            return Route(domain, domain, "implicit", failure=Reply(
                550, "5.1.2", f"Domain {domain} has no MX and no address record")), NEGATIVE_TTL
        return (Route(domain, domain, "implicit",
                      (Host(domain, self.config.smtp_port, 0, addresses),)),
                self.config.dns_max_cache_ttl)

    async def _addresses(self, name: str) -> tuple[tuple[str, ...], list[Exception]]:
        """A then AAAA addresses of ``name``, and the lookups that failed (not "no such
        record", which is an answer) so callers can tell "no address" from "DNS trouble"."""
        if _is_ip(name):
            return (name,), []
        found: list[str] = []
        errors: list[Exception] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._query(name, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                errors.append(exc)
                continue
            found.extend(r.to_text() for r in answer)
        return tuple(found), errors

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        assert self._resolver is not None
        return await self._resolver.resolve(name, rdtype, search=False)

    @staticmethod
    def _dns_failure(domain: str, exc: Exception) -> Route:
        return Route(domain, domain, "unresolved", failure=Reply(
            451, "4.4.3", f"DNS lookup for {domain} failed: {type(exc).__name__}"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
