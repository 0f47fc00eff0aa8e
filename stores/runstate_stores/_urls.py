"""Parsing the Redis URLs a user puts in a Secret: one server, Sentinel, Cluster.

Owns the URL syntax of the three topologies (documented in stores/README.md):

    redis://[[user]:password@]host[:port][/db][?option=value...]     one server (redis-py's own
    rediss://...                                                      syntax and options); TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=N...]            one server, Unix socket
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
                     [?sentinel_password=...&client_name=...]          port default 26379
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][?client_name=...]
                                                                       port default 6379
    rediss+sentinel://..., rediss+cluster://...                       the same over TLS

User and password authenticate to Redis itself (master and replicas, cluster nodes) and are
percent-decoded, so reserved characters (`@ : / ? # , %`) must be percent-encoded. Sentinels
are contacted without a password unless `sentinel_password` is given.

It must not do I/O, and an error must name the part that is wrong but never echo the URL or any
piece of it: a URL may carry a password, and error messages end up in logs and Events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["REDIS_SCHEMES", "RedisTarget", "parse_redis_url", "redact_url"]

Topology = Literal["single", "sentinel", "cluster"]

#: scheme -> (topology, TLS)
REDIS_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}

# Query options whose value may be shown in a redacted URL; every other value is hidden.
_SHOWN_OPTIONS = frozenset({"db", "client_name", "socket_timeout", "socket_connect_timeout"})

_DEFAULT_PORT: dict[Topology, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_OPTIONS: dict[Topology, frozenset[str]] = {
    "single": frozenset(),  # redis-py parses the query of a single-server URL itself
    "sentinel": frozenset({"sentinel_password", "client_name"}),
    "cluster": frozenset({"client_name"}),
}


@dataclass(frozen=True)
class RedisTarget:
    """Where a store connects to, parsed from its URL. Secrets stay out of `repr`."""

    topology: Topology
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster startup nodes
    service: str = ""  # Sentinel service name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    client_name: str | None = None
    url: str = field(default="", repr=False)  # single server: handed to redis-py as it is

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message (decoded and as written in the URL)."""
        found: set[str] = set()
        for value in (self.password, self.sentinel_password):
            if value:
                found.add(value)
        if self.url:
            raw = urlsplit(self.url).password
            if raw:
                found.update({raw, unquote(raw)})
        # Longest first, so redacting a secret never leaves the tail of a longer one.
        return tuple(sorted(found, key=len, reverse=True))


def parse_redis_url(url: str) -> RedisTarget:
    """Parse `url`; `ValueError` names the scheme and the faulty part, never the URL."""
    scheme, sep, rest = url.partition("://")
    kind = REDIS_SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        label = scheme.lower() if sep else "(none)"
        raise ValueError(
            f"redis URL scheme {label!r} is not supported; use one of "
            f"{', '.join(s + '://' for s in REDIS_SCHEMES)}"
        )
    topology, tls = kind
    if topology == "single":
        return _single(scheme.lower(), url, tls)
    return _multi(scheme.lower(), topology, tls, rest)


def _single(scheme: str, url: str, tls: bool) -> RedisTarget:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a non-numeric or out-of-range port
        username, password = parts.username, parts.password
    except ValueError:
        raise ValueError(f"{scheme} URL: the port must be a number in 1-65535") from None
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix URL: the socket path is missing (unix:///path/to/redis.sock)")
    elif not parts.hostname:
        raise ValueError(f"{scheme} URL: the host is missing ({scheme}://host:port/db)")
    del port
    return RedisTarget(
        topology="single",
        tls=tls,
        username=unquote(username) if username else None,
        password=unquote(password) if password else None,
        url=url,
    )


def _multi(scheme: str, topology: Topology, tls: bool, rest: str) -> RedisTarget:
    if "#" in rest:
        raise ValueError(f"{scheme} URL: a fragment ('#') is not allowed; percent-encode it")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon and user:
            # "user@host" without a colon: redis-py reads a lone userinfo as a password too,
            # but an ACL user without a password is rarely meant; say how to write either.
            raise ValueError(f"{scheme} URL: credentials must be ':password@' or 'user:password@'")
    hosts = tuple(
        _host(scheme, i, part, _DEFAULT_PORT[topology])
        for i, part in enumerate(hostlist.split(","), start=1)
    )
    segments = [unquote(s) for s in path.split("/")] if path else []
    if len(segments) > 1 and not segments[-1]:
        segments.pop()  # one trailing slash is harmless
    service, db = "", 0
    if topology == "sentinel":
        if not segments or not segments[0]:
            raise ValueError(
                f"{scheme} URL: the service name is missing "
                f"({scheme}://host:port[,host:port...]/service_name[/db])"
            )
        service = segments[0]
        if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
            raise ValueError(f"{scheme} URL: after the service name, only a db number may follow")
        db = int(segments[1]) if len(segments) == 2 else 0
    elif any(segments):
        raise ValueError(f"{scheme} URL: a Redis Cluster has no databases; remove the path")
    options = _options(scheme, topology, query)
    return RedisTarget(
        topology=topology,
        tls=tls,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password"),
        client_name=options.get("client_name"),
    )


def _host(scheme: str, index: int, part: str, default_port: int) -> tuple[str, int]:
    """`host[:port]` or `[v6]:port`, the `index`-th in the list (named by position only)."""
    if part.startswith("["):
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"{scheme} URL: host {index}: an IPv6 address needs '[addr]:port'")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError(f"{scheme} URL: host {index} is empty")
    if any(c.isspace() for c in host):
        raise ValueError(f"{scheme} URL: host {index} contains whitespace")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{scheme} URL: the port of host {index} must be a number in 1-65535")
    return host, int(port_text)


def _options(scheme: str, topology: Topology, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for index, (name, value) in enumerate(parse_qsl(query, keep_blank_values=True), start=1):
        if name not in _OPTIONS[topology]:
            allowed = ", ".join(sorted(_OPTIONS[topology]))
            # Named by position: a mistyped option may well be a password.
            raise ValueError(f"{scheme} URL: option {index} is unknown (supported: {allowed})")
        if name in options:
            raise ValueError(f"{scheme} URL: option {name!r} is given twice")
        if not value:
            raise ValueError(f"{scheme} URL: option {name!r} is empty")
        options[name] = value
    return options


def redact_url(url: str) -> str:
    """`url` fit for a log line: the password and every query value that might be a secret
    become `***`. It never raises and needs no valid URL (several hosts, a bad port).

    For example `redis+sentinel://:pw@s1:26379,s2/m?sentinel_password=x` gives
    `redis+sentinel://:***@s1:26379,s2/m?sentinel_password=***`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"  # not a URL: nothing in it can be told apart from a secret
    rest = rest.partition("#")[0]  # a fragment has no use here and may hide anything
    rest, question, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        # A lone userinfo ("secret@host") is read as a password by some clients.
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    shown = []
    for pair in query.split("&") if query else []:
        name = pair.partition("=")[0]
        if name in _SHOWN_OPTIONS:
            shown.append(pair)
        elif name in _OPTIONS["sentinel"] or name in ("password", "username", "ssl_password"):
            shown.append(f"{name}=***")
        else:
            shown.append("***")  # an unknown name may itself be a mistyped secret
    return f"{scheme}://{netloc}{slash}{path}{question}{'&'.join(shown)}"
