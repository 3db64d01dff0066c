"""Caps on the websockets one replica holds: per user, per client address, in total.

    caps = ConnectionCaps(total=5000, per_user=8, per_client=64)
    slot = caps.admit(user="acme/alice", client=client_key("203.0.113.9"))
    ...                                   # the connection is served
    slot.release()                        # idempotent

:meth:`ConnectionCaps.admit` checks and takes a slot in one step (no ``await`` in
between), before the upgrade is accepted, so concurrent handshakes cannot overshoot
a cap; it raises :class:`~query_gateway.errors.GatewayBusy` (503) when the replica is
full and :class:`~query_gateway.errors.TooManyConnections` (429) when the user or the
client address holds its maximum. Each refusal counts in
``aichat_gateway_connections_refused_total{limit}``.

The caps are per replica (a load balancer spreads a user's connections over replicas;
the per-user query budget is what is shared, through Redis). A client address is an
IPv4 address or an IPv6 /64 (one host usually owns a whole /64); behind a proxy it is
the address the proxy forwards, from proxies in ``AICHAT_GATEWAY_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from query_gateway.errors import GatewayBusy, TooManyConnections
from query_gateway.metrics import CONNECTIONS_REFUSED

UNKNOWN_CLIENT = "unknown"


def client_key(host: str | None) -> str:
    """The address a per-client cap counts: IPv4, an IPv6 /64, or the host as given
    (a test client, a unix socket), cut to 64 characters."""
    if not host:
        return UNKNOWN_CLIENT
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Slot:
    """One admitted connection; :meth:`release` gives its place back (once)."""

    __slots__ = ("_caps", "_client", "_released", "_user")

    def __init__(self, caps: ConnectionCaps, user: str, client: str) -> None:
        self._caps = caps
        self._user = user
        self._client = client
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._caps._release(self._user, self._client)


class ConnectionCaps:
    def __init__(self, *, total: int, per_user: int, per_client: int) -> None:
        self.total = total
        self.per_user = per_user
        self.per_client = per_client
        self._open = 0
        self._users: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Connections admitted and not yet released (handshakes in progress included)."""
        return self._open

    def admit(self, user: str, client: str) -> Slot:
        if self._open >= self.total:
            CONNECTIONS_REFUSED.labels(limit="total").inc()
            raise GatewayBusy(
                f"this gateway replica holds its maximum of {self.total} connections: "
                "retry later (another replica may have room)",
                reason="total",
            )
        if self._clients[client] >= self.per_client:
            CONNECTIONS_REFUSED.labels(limit="client").inc()
            raise TooManyConnections(
                f"your address holds {self._clients[client]} connections to this replica; "
                f"the limit is {self.per_client}: close one first",
                reason="client",
            )
        if self._users[user] >= self.per_user:
            CONNECTIONS_REFUSED.labels(limit="user").inc()
            raise TooManyConnections(
                f"this user holds {self._users[user]} connections to this replica; "
                f"the limit is {self.per_user}: close one first",
                reason="user",
            )
        self._open += 1
        self._users[user] += 1
        self._clients[client] += 1
        return Slot(self, user, client)

    def _release(self, user: str, client: str) -> None:
        self._open -= 1
        for counts, key in ((self._users, user), (self._clients, client)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]  # the maps hold only who has a connection open
