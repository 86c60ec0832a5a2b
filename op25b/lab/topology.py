"""The lab topology: a router namespace between subscribers and the outside, v4 and v6.

This module owns building and tearing down the lab of the README ("The lab") and is the only
module that imports pyroute2. The record that lets the CLI (`op25b lab up|down|status`)
find labs again from another process is ``op25b.lab.labstate``'s.

Topology: one point-to-point veth pair per host, rtr end named ``to-<role>``, host end
``eth0``. Each host has /32 and /128 addresses, a host route to its gateway and a
default route via rtr; rtr has a host route back to every host address. Point-to-point
links (rather than a bridge) give every subscriber its own ingress interface on rtr,
the way a BNG sees subscribers, and keep ARP/ND trivially scoped.

::

    res  100.64.0.10  (+7.7, 8.8, 200.2)  ─ to-res ┐
    bot  100.64.0.66                      ─ to-bot ┼─ rtr ─ to-isp ─ isp 203.0.113.25
    biz  198.51.100.10                    ─ to-biz ┘      └ to-net ─ net 192.0.2.25..89

Nothing here touches the root namespace: namespaces are created empty, veths are created
inside rtr with their peer placed straight into the host namespace, and sysctls are
written from processes inside each namespace.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import (
    netns_exists,
    popen_in,
    run_in,
    sysctl_in,
    terminate_netns_processes,
)

__all__ = [
    "BIZ_V4",
    "BIZ_V6",
    "BOT_V4",
    "BOT_V6",
    "BUSINESS_CARVE_V4",
    "BUSINESS_CARVE_V6",
    "DEFAULT_STATE_DIR",
    "HOSTS",
    "ISP_MTA_V4",
    "ISP_MTA_V6",
    "NET_MX_EXTRA_V4",
    "NET_MX_EXTRA_V6",
    "NET_MX_V4",
    "NET_MX_V6",
    "RES_BUSINESS_V4",
    "RES_BUSINESS_V6",
    "RES_EXEMPT2_V4",
    "RES_EXEMPT2_V6",
    "RES_EXEMPT_V4",
    "RES_EXEMPT_V6",
    "RES_V4",
    "RES_V6",
    "ROLES",
    "RTR_IFNAMES",
    "SUBSCRIBER_ROLES",
    "Host",
    "Lab",
    "LabError",
    "add_address",
    "await_links_up",
    "create_lab",
    "create_netns",
    "destroy_lab",
    "lab_session",
    "link_index",
    "new_name",
    "ns_addresses",
    "open_ipr",
    "popen_in",
    "remove_netns",
    "run_in",
]

# --- addresses -------------------------------------------------------------------------
# Subscriber side.
RES_V4 = "100.64.0.10"  # residential subscriber (plan: residential 100.64.0.0/16)
RES_V6 = "2001:db8:100::10"  # residential, v6 (plan: 2001:db8:100::/40)
RES_EXEMPT_V4 = "100.64.7.7"  # on res: the single-subscriber exemption
RES_EXEMPT_V6 = "2001:db8:100::7"
RES_EXEMPT2_V4 = "100.64.8.8"  # extra on res: a second exemption case (e.g. an expired one)
RES_EXEMPT2_V6 = "2001:db8:100::8"
RES_BUSINESS_V4 = "100.64.200.2"  # extra on res: inside a business block carved out of
RES_BUSINESS_V6 = "2001:db8:100:200::2"  # the residential pool (longest-prefix match test)
BUSINESS_CARVE_V4 = "100.64.200.0/29"
BUSINESS_CARVE_V6 = "2001:db8:100:200::/56"
BOT_V4 = "100.64.0.66"  # infected residential subscriber
BOT_V6 = "2001:db8:100::66"
BIZ_V4 = "198.51.100.10"  # business-static subscriber (plan: 198.51.100.0/24, exempt)
BIZ_V6 = "2001:db8:b00::10"
# Far side.
ISP_MTA_V4 = "203.0.113.25"  # provider MTA / smarthost
ISP_MTA_V6 = "2001:db8:25::25"
NET_MX_V4 = "192.0.2.25"  # external MX
NET_MX_V6 = "2001:db8:c0::25"
# Many more MXes on net, for "a bot bursts to many MXes": .26..89, and v6 ::26..::89
# (same digits, read as hex groups, so v4 and v6 line up by eye).
NET_MX_EXTRA_V4: tuple[str, ...] = tuple(f"192.0.2.{n}" for n in range(26, 90))
NET_MX_EXTRA_V6: tuple[str, ...] = tuple(f"2001:db8:c0::{n}" for n in range(26, 90))

# rtr's v6 next hop as seen from every host: the same link-local on every rtr port, so
# host routes do not depend on which link they sit on.
RTR_LL_V6 = "fe80::1"

ROLES: tuple[str, ...] = ("rtr", "res", "bot", "biz", "isp", "net")
SUBSCRIBER_ROLES: tuple[str, ...] = ("res", "bot", "biz")
HOST_IFNAME = "eth0"
RTR_IFNAMES: dict[str, str] = {role: f"to-{role}" for role in ROLES if role != "rtr"}

DEFAULT_STATE_DIR = "/run/op25b-lab"
DEFAULT_PREFIX = "op25b"

# Set in every lab namespace *before* links exist, so addresses (including the kernel's
# own link-locals) are usable at once: no DAD, so no tentative state to wait out.
_NS_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    # Hosts are hosts: no SLAAC or router solicitation noise on the links.
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.default.autoconf": "0",
}
_RTR_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    # ICMP errors rtr sends (e.g. REJECT) should not be rate-limited away in tests.
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv6.icmp.ratelimit": "0",
}

_IFA_F_NODAD = 0x02
_IFA_F_TENTATIVE = 0x40
_IFA_F_DADFAILED = 0x08
_RT_SCOPE_LINK = 253
_RTR_IFINDEX_BASE = 100
_LINK_UP_TIMEOUT = 5.0

_LAB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*-[0-9a-f]{6}$")
NS_NAME_RE = re.compile(r"^(?P<lab>[A-Za-z0-9][A-Za-z0-9_.]*-[0-9a-f]{6})-(?P<role>[a-z]+)$")


class LabError(EnvironmentFailure):
    """Building, finding or removing a lab failed."""


@dataclass(frozen=True)
class Host:
    """One lab host: its addresses (first of each family is the primary) and gateway."""

    role: str
    v4: tuple[str, ...]
    v6: tuple[str, ...]
    gw_v4: str  # rtr's address on this host's link

    @property
    def addresses(self) -> tuple[str, ...]:
        """All addresses, v4 first."""
        return self.v4 + self.v6


HOSTS: dict[str, Host] = {
    "res": Host(
        "res",
        (RES_V4, RES_EXEMPT_V4, RES_EXEMPT2_V4, RES_BUSINESS_V4),
        (RES_V6, RES_EXEMPT_V6, RES_EXEMPT2_V6, RES_BUSINESS_V6),
        "100.64.0.1",
    ),
    "bot": Host("bot", (BOT_V4,), (BOT_V6,), "100.64.0.1"),
    "biz": Host("biz", (BIZ_V4,), (BIZ_V6,), "198.51.100.1"),
    "isp": Host("isp", (ISP_MTA_V4,), (ISP_MTA_V6,), "203.0.113.1"),
    "net": Host("net", (NET_MX_V4, *NET_MX_EXTRA_V4), (NET_MX_V6, *NET_MX_EXTRA_V6), "192.0.2.1"),
}

# rtr's global v6 address per link (ICMPv6 errors from rtr then carry a global source).
_RTR_GW_V6: dict[str, str] = {
    "res": "2001:db8:100::1",
    "bot": "2001:db8:100::1",
    "biz": "2001:db8:b00::1",
    "isp": "2001:db8:25::1",
    "net": "2001:db8:c0::1",
}


@dataclass(frozen=True)
class Lab:
    """A running (or remembered) lab: its name and one namespace name per role."""

    name: str
    rtr: str
    res: str
    bot: str
    biz: str
    isp: str
    net: str

    @classmethod
    def from_name(cls, name: str) -> Lab:
        """The lab whose namespaces are ``<name>-<role>``."""
        if not _LAB_NAME_RE.match(name):
            raise LabError(f"not a lab name (expected PREFIX-xxxxxx): {name!r}")
        return cls(name, *(f"{name}-{role}" for role in ROLES))

    @property
    def namespaces(self) -> tuple[str, ...]:
        """All namespace names, rtr first."""
        return tuple(self.ns(role) for role in ROLES)

    def ns(self, role: str) -> str:
        """Namespace name for *role* (one of `ROLES`)."""
        if role not in ROLES:
            raise LabError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        value: str = getattr(self, role)
        return value

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the state file body)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lab:
        """Inverse of `to_json`; checks the names are the ones this lab would use."""
        name = data.get("name")
        if not isinstance(name, str):
            raise LabError("lab state has no name")
        lab = cls.from_name(name)
        if any(data.get(role) != lab.ns(role) for role in ROLES):
            raise LabError(f"lab state for {name} has unexpected namespace names")
        return lab


def new_name(prefix: str) -> str:
    """A fresh lab name ``<prefix>-xxxxxx`` (random, so two runs never collide)."""
    return _new_name(prefix)


def _new_name(prefix: str) -> str:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.]*$", prefix) or len(prefix) > 32:
        raise LabError(f"bad lab prefix {prefix!r} (letters, digits, '_' and '.')")
    return f"{prefix}-{secrets.token_hex(3)}"


def _ipr(ns: str) -> IPRoute:
    # flags=0: never let pyroute2 create a namespace as a side effect of opening it.
    return IPRoute(netns=ns, flags=0)


# --- the primitives other lab builders use (op25b.lab.wiring): pyroute2 stays here ------


def open_ipr(ns: str) -> Any:
    """A pyroute2 ``IPRoute`` socket inside *ns* (a context manager); never creates it."""
    return _ipr(ns)


def create_netns(ns: str, sysctls: dict[str, str]) -> None:
    """Create namespace *ns* (an existing one is an error) and write *sysctls* in it."""
    _pr_netns.create(ns)  # O_EXCL: an existing namespace is an error, not reused
    sysctl_in(ns, sysctls | _NS_SYSCTLS)


def remove_netns(ns: str) -> None:
    """Unmount namespace *ns* if it exists."""
    _remove_netns(ns)


def add_address(ipr: Any, index: int, addr: str) -> None:
    """A /32 or /128 address on link *index*, usable at once (no DAD)."""
    _add_addr(ipr, index, addr)


def link_index(ipr: Any, ifname: str) -> int:
    """The ifindex of *ifname*; LabError when absent."""
    return _link_index(ipr, ifname)


def _family(addr: str) -> int:
    return 10 if ":" in addr else 2


def _plen(addr: str) -> int:
    return 128 if ":" in addr else 32


def _add_addr(ipr: IPRoute, index: int, addr: str) -> None:
    if ":" in addr:
        # Belt and braces with accept_dad=0: NODAD makes the address usable immediately.
        ipr.addr("add", index=index, address=addr, prefixlen=128, flags=_IFA_F_NODAD)
    else:
        ipr.addr("add", index=index, address=addr, prefixlen=32)


def _link_index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"link {ifname} not found")
    return int(found[0])


def _build(lab: Lab) -> None:
    for ns in lab.namespaces:
        _pr_netns.create(ns)  # O_EXCL: an existing namespace is an error, not reused
        sysctl_in(ns, _RTR_SYSCTLS | _NS_SYSCTLS if ns == lab.rtr else _NS_SYSCTLS)
    # One netlink socket per namespace for the whole build: opening one costs a fork.
    with contextlib.ExitStack() as stack:
        iprs = {role: stack.enter_context(_ipr(lab.ns(role))) for role in ROLES}
        for ipr in iprs.values():
            ipr.link("set", index=_link_index(ipr, "lo"), state="up")
        rtr = iprs["rtr"]
        for n, (role, host) in enumerate(HOSTS.items()):
            ifname = RTR_IFNAMES[role]
            # The peer is created directly in the host namespace: the root namespace
            # never sees either end, not even for a moment.
            rtr.link(
                "add",
                ifname=ifname,
                # An explicit, high ifindex for the rtr end: when both ends of a veth
                # share an ifindex (each is "2" in its fresh namespace), the kernel's
                # linkwatch treats carrier-up as non-urgent and delays operstate UP by
                # up to a second. Distinct indexes make it immediate.
                index=_RTR_IFINDEX_BASE + n,
                kind="veth",
                peer={"ifname": HOST_IFNAME, "net_ns_fd": lab.ns(role)},
            )
            idx = _link_index(rtr, ifname)
            rtr.addr("add", index=idx, address=host.gw_v4, prefixlen=32)
            rtr.addr("add", index=idx, address=RTR_LL_V6, prefixlen=64, flags=_IFA_F_NODAD)
            _add_addr(rtr, idx, _RTR_GW_V6[role])
            rtr.link("set", index=idx, state="up")
            for addr in host.addresses:
                rtr.route("add", dst=f"{addr}/{_plen(addr)}", oif=idx, family=_family(addr))

            hipr = iprs[role]
            hidx = _link_index(hipr, HOST_IFNAME)
            for addr in host.addresses:
                _add_addr(hipr, hidx, addr)
            hipr.link("set", index=hidx, state="up")
            # v4: /32 addresses, so the gateway needs its own on-link host route.
            hipr.route("add", dst=f"{host.gw_v4}/32", oif=hidx, scope=_RT_SCOPE_LINK)
            # prefsrc pins the primary address as the default source; the extras are
            # only used when a client binds them explicitly.
            hipr.route("add", dst="0.0.0.0/0", gateway=host.gw_v4, oif=hidx, prefsrc=host.v4[0])
            hipr.route(
                "add", dst="::/0", gateway=RTR_LL_V6, oif=hidx, family=10, prefsrc=host.v6[0]
            )
        _await_links_up(lab, iprs, time.monotonic() + _LINK_UP_TIMEOUT)
        _check_no_tentative(iprs)


def _await_links_up(lab: Lab, iprs: dict[str, IPRoute], deadline: float) -> None:
    """Wait until every lab veth reports operstate UP (set asynchronously by linkwatch).

    Polls the link state at a short interval with a hard deadline: the condition itself
    is awaited, not a guessed delay.
    """
    pending = {("rtr", ifname) for ifname in RTR_IFNAMES.values()}
    pending |= {(role, HOST_IFNAME) for role in HOSTS}
    await_links_up(iprs, pending, lab.ns, deadline)


def await_links_up(
    iprs: dict[str, Any],
    pending: set[tuple[str, str]],
    ns_of: Callable[[str], str],
    deadline: float,
) -> None:
    """Wait until every (role, ifname) in *pending* reports operstate UP, or LabError.

    *iprs* maps each role to its open netlink socket; *pending* is consumed.
    """
    while True:
        for role in sorted({role for role, _ in pending}):
            for msg in iprs[role].link("dump"):
                key = (role, str(msg.get("IFLA_IFNAME")))
                if key in pending and msg.get("IFLA_OPERSTATE") == "UP":
                    pending.discard(key)
        if not pending:
            return
        if time.monotonic() >= deadline:
            where = sorted(f"{ns_of(role)}:{ifname}" for role, ifname in pending)
            raise LabError(f"links not up in time: {where}")
        time.sleep(0.01)  # polling the link state, with a hard deadline


def _check_no_tentative(iprs: dict[str, IPRoute]) -> None:
    """Fail loudly if any v6 address is still tentative or failed DAD.

    With accept_dad=0 and NODAD this cannot happen; checking beats a silent sleep and
    beats flaky tests if a kernel ever behaves differently.
    """
    for role, ipr in iprs.items():
        for msg in ipr.addr("dump", family=10):
            flags = int(msg.get("IFA_FLAGS") or msg["flags"])
            if flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
                addr = msg.get("IFA_ADDRESS")
                raise LabError(f"{role}: {addr} not usable (flags {flags:#x})")


def create_lab(prefix: str = DEFAULT_PREFIX) -> Lab:
    """Build a new lab with a random name ``<prefix>-xxxxxx``; undone on any failure."""
    lab = Lab.from_name(_new_name(prefix))
    try:
        _build(lab)
    except BaseException:
        # Includes KeyboardInterrupt: a half-built lab must not outlive the call.
        destroy_lab(lab)
        raise
    return lab


def destroy_lab(lab: Lab) -> None:
    """Remove everything of *lab*; safe to call twice or on a half-built lab.

    Order matters: processes first (they would keep a namespace alive after its mount
    is gone), then the veths (deleting the rtr end removes both ends synchronously,
    instead of waiting for the kernel's asynchronous namespace cleanup), then the mounts.

    Every step runs even if an earlier one failed *or was interrupted*: a Ctrl-C or a
    SIGTERM turned KeyboardInterrupt that lands mid-teardown is held until the teardown
    is finished and then re-raised, so an interrupt never leaves half a lab behind.
    Otherwise the first error is raised as `LabError`.
    """
    errors: list[BaseException] = []

    def step(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # see docstring: finish first, raise afterwards
            errors.append(exc)

    for ns in lab.namespaces:
        step(functools.partial(terminate_netns_processes, ns))
    step(functools.partial(_delete_rtr_links, lab))
    for ns in lab.namespaces:
        step(functools.partial(_remove_netns, ns))
    for exc in errors:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
            raise exc
    if errors:
        raise LabError(f"teardown of {lab.name} incomplete: {errors[0]}") from errors[0]


def _delete_rtr_links(lab: Lab) -> None:
    if not netns_exists(lab.rtr):
        return
    with _ipr(lab.rtr) as rtr:
        for ifname in RTR_IFNAMES.values():
            for idx in rtr.link_lookup(ifname=ifname):
                rtr.link("del", index=idx)


def _remove_netns(ns: str) -> None:
    if netns_exists(ns):
        _pr_netns.remove(ns)


@contextlib.contextmanager
def lab_session(prefix: str = DEFAULT_PREFIX) -> Iterator[Lab]:
    """``with lab_session() as lab:`` — a lab that is always torn down on exit."""
    lab: Lab | None = None
    try:
        lab = create_lab(prefix)  # cleans up after itself if it fails
        yield lab
    finally:
        if lab is not None:
            destroy_lab(lab)


# --- addresses, for status lines ---------------------------------------------------------


def _ns_addresses(ns: str) -> list[str]:
    with _ipr(ns) as ipr:
        names = {int(m["index"]): str(m.get("IFLA_IFNAME")) for m in ipr.link("dump")}
        out: list[str] = []
        for msg in ipr.addr("dump"):
            ifname = names.get(int(msg["index"]), "?")
            addr = str(msg.get("IFA_ADDRESS"))
            # Kernel-made link-locals are noise here; rtr's fixed fe80::1 is not.
            if ifname == "lo" or (addr.startswith("fe80:") and addr != RTR_LL_V6):
                continue
            out.append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}@{ifname}")
        return out


def ns_addresses(ns: str) -> list[str]:
    """``addr/len@ifname`` of every address in *ns* worth showing (for status lines)."""
    return _ns_addresses(ns)
