"""The fleet lab on paper: N edge routers and their subscribers, a core, the far side.

This module owns the fleet's addressing and wiring plan, pure (no pyroute2, no I/O):
which namespaces exist, which veth joins which two of them with which addresses, and
which routes each one gets. ``op25b.lab.wiring`` builds a plan; ``op25b.lab.fleet``
names, records and removes fleets.

::

    r1res 100.64.1.10   ─┐                         ┌─ isp  203.0.113.25 (provider MTA)
    r1bot 100.64.1.66   ─┼─ r1 100.127.0.1 ─┐      ├─ net  192.0.2.25..89 (external MXes)
    r1biz 198.51.100.26 ─┘                  ├─ core┤
    r2... (100.64.2.x, 198.51.100.42)  ─ r2 ┤      └─ col  203.0.113.53 (rsyslogd, Prometheus)
    rN...                              ─ rN ┘

Each edge router ``rI`` has its own pools: residential 100.64.I.0/24 and
2001:db8:100:I::/64, business 198.51.100.16I/28 and 2001:db8:b00:I::/64. Routers reach
the core over a point-to-point link (router 100.127.0.I, core 100.127.255.254); the
provider MTA, the MXes and the collector hang off the core, so mail the MTA relays
never crosses an edge router, the way a provider's own servers sit behind its core.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ROUTERS = 14  # 198.51.100.0/24 holds 15 business /28s; /28 number 0 stays unused

# Shared far side (the same addresses as the one-router lab, see op25b.lab.topology).
ISP_MTA_V4, ISP_MTA_V6 = "203.0.113.25", "2001:db8:25::25"
NET_MX_V4, NET_MX_V6 = "192.0.2.25", "2001:db8:c0::25"
NET_MX_EXTRA_V4: tuple[str, ...] = tuple(f"192.0.2.{n}" for n in range(26, 90))
COLLECTOR_V4, COLLECTOR_V6 = "203.0.113.53", "2001:db8:25::53"
CORE_V4 = "100.127.255.254"  # the core's address on every router link
LL_GW, LL_PEER = "fe80::1", "fe80::2"  # next hops on every link: gateway side, far side
FORWARDING = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv6.icmp.ratelimit": "0",
}


@dataclass(frozen=True)
class Site:
    """One edge router ``rI`` and its three subscribers."""

    index: int

    @property
    def name(self) -> str:
        """``rI``: the namespace role, the daemon's host name, the collector's file name."""
        return f"r{self.index}"

    @property
    def uplink_v4(self) -> str:
        """The router's address towards the core (metrics are scraped here)."""
        return f"100.127.0.{self.index}"

    @property
    def uplink_v6(self) -> str:
        return f"2001:db8:ffff::{self.index:x}"

    @property
    def residential(self) -> tuple[str, str]:
        return f"100.64.{self.index}.0/24", f"2001:db8:100:{self.index:x}::/64"

    @property
    def business(self) -> tuple[str, str]:
        return f"198.51.100.{16 * self.index}/28", f"2001:db8:b00:{self.index:x}::/64"

    @property
    def res(self) -> tuple[str, str]:
        """The residential subscriber (v4, v6)."""
        return f"100.64.{self.index}.10", f"2001:db8:100:{self.index:x}::10"

    @property
    def bot(self) -> tuple[str, str]:
        """The infected residential subscriber (v4, v6)."""
        return f"100.64.{self.index}.66", f"2001:db8:100:{self.index:x}::66"

    @property
    def biz(self) -> tuple[str, str]:
        """The business-static subscriber (v4, v6)."""
        return f"198.51.100.{16 * self.index + 10}", f"2001:db8:b00:{self.index:x}::10"

    def gateway(self, role: str) -> tuple[str, str]:
        """The router's own addresses on the link to subscriber *role* (v4, v6)."""
        if role == "biz":
            return f"198.51.100.{16 * self.index + 1}", f"2001:db8:b00:{self.index:x}::1"
        return f"100.64.{self.index}.1", f"2001:db8:100:{self.index:x}::1"


@dataclass(frozen=True)
class Link:
    """A veth pair: end *a* (named ``ifname_a`` in namespace role *a*) owns it."""

    a: str
    ifname_a: str
    addrs_a: tuple[str, ...]
    b: str
    ifname_b: str
    addrs_b: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """A route in namespace role *role*: *dst* out of *dev*, via *via* when given."""

    role: str
    dst: str
    dev: str
    via: str = ""
    prefsrc: str = ""


@dataclass(frozen=True)
class Plan:
    """Everything a builder needs: roles (forwarding ones marked), links, routes."""

    roles: tuple[str, ...]
    forwarding: frozenset[str]
    links: tuple[Link, ...]
    routes: tuple[Route, ...]


def sites(routers: int) -> tuple[Site, ...]:
    """The sites of a fleet of *routers* edge routers."""
    if not 1 <= routers <= MAX_ROUTERS:
        raise ValueError(f"a fleet has 1 to {MAX_ROUTERS} routers, not {routers}")
    return tuple(Site(i) for i in range(1, routers + 1))


def subscriber_role(site: Site, kind: str) -> str:
    """The namespace role of subscriber *kind* (res, bot, biz) behind *site*."""
    return f"{site.name}{kind}"


def _host(role: str, dev: str, v4: tuple[str, ...], v6: tuple[str, ...], gw4: str) -> list[Route]:
    """A host on one link: an on-link route to its v4 gateway, defaults for both families."""
    return [
        Route(role, f"{gw4}/32", dev),
        Route(role, "0.0.0.0/0", dev, gw4, v4[0]),
        Route(role, "::/0", dev, LL_GW, v6[0]),
    ]


def _plen(addr: str) -> str:
    return f"{addr}/128" if ":" in addr else f"{addr}/32"


def fleet_plan(routers: int) -> Plan:
    """The plan of a fleet with *routers* edge routers (see the module docstring)."""
    links: list[Link] = []
    routes: list[Route] = []
    far = {
        "isp": ((ISP_MTA_V4,), (ISP_MTA_V6,), "203.0.113.1", "2001:db8:25::1"),
        "net": ((NET_MX_V4, *NET_MX_EXTRA_V4), (NET_MX_V6,), "192.0.2.1", "2001:db8:c0::1"),
        "col": ((COLLECTOR_V4,), (COLLECTOR_V6,), "203.0.113.1", "2001:db8:25::1"),
    }
    for role, (v4, v6, gw4, gw6) in far.items():
        dev = f"to-{role}"
        links.append(Link("core", dev, (gw4, gw6, LL_GW), role, "eth0", v4 + v6))
        routes += [Route("core", _plen(a), dev) for a in v4 + v6]
        routes += _host(role, "eth0", v4, v6, gw4)
    roles = ["core", *far]
    forwarding = {"core"}
    for site in sites(routers):
        r = site.name
        roles.append(r)
        forwarding.add(r)
        core_dev = f"to-{r}"
        uplink = (site.uplink_v4, site.uplink_v6, LL_PEER)
        links.append(Link("core", core_dev, (CORE_V4, LL_GW), r, "up", uplink))
        routes.append(Route("core", _plen(site.uplink_v4), core_dev))
        routes.append(Route("core", _plen(site.uplink_v6), core_dev, LL_PEER))
        for prefix in site.residential + site.business:
            via = LL_PEER if ":" in prefix else site.uplink_v4
            routes.append(Route("core", prefix, core_dev, via))
        routes += _host(r, "up", (site.uplink_v4,), (site.uplink_v6,), CORE_V4)
        for kind, (a4, a6) in (("res", site.res), ("bot", site.bot), ("biz", site.biz)):
            host = subscriber_role(site, kind)
            roles.append(host)
            gw4, gw6 = site.gateway(kind)
            dev = f"to-{kind}"
            links.append(Link(r, dev, (gw4, gw6, LL_GW), host, "eth0", (a4, a6)))
            routes += [Route(r, _plen(a4), dev), Route(r, _plen(a6), dev)]
            routes += _host(host, "eth0", (a4,), (a6,), gw4)
    return Plan(tuple(roles), frozenset(forwarding), tuple(links), tuple(routes))
