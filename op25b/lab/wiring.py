"""Build and remove a lab from a plan (``op25b.lab.fleetplan.Plan``): namespaces, veths, routes.

This module owns turning a pure wiring plan into kernel objects. It does not import
pyroute2: the netlink sockets and namespace primitives come from ``op25b.lab.topology``
(the one owner of that import). The rules are the one-router lab's: veths are created
inside the owning namespace with the peer placed straight into the other one, so the
root namespace never sees either end; addresses are /32 and /128 without DAD; every
link is awaited up, never slept on.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from op25b.lab import topology as T
from op25b.lab.fleetplan import FORWARDING, Plan
from op25b.lab.netns import netns_exists, terminate_netns_processes

_IFA_F_NODAD = 0x02
_RT_SCOPE_LINK = 253
_IFINDEX_BASE = 100  # explicit, distinct ifindexes for owned ends (see topology._build)
_LINK_UP_TIMEOUT = 10.0


def build(plan: Plan, ns_of: Callable[[str], str]) -> None:
    """Create every namespace of *plan* (named by *ns_of(role)*), link and route them.

    Not atomic: the caller removes a half-built lab with `destroy`.
    """
    for role in plan.roles:
        T.create_netns(ns_of(role), FORWARDING if role in plan.forwarding else {})
    with contextlib.ExitStack() as stack:
        # One netlink socket per namespace for the whole build: opening one costs a fork.
        iprs: dict[str, Any] = {
            role: stack.enter_context(T.open_ipr(ns_of(role))) for role in plan.roles
        }
        for ipr in iprs.values():
            ipr.link("set", index=T.link_index(ipr, "lo"), state="up")
        next_index: dict[str, int] = {}
        for link in plan.links:
            owner, peer = iprs[link.a], iprs[link.b]
            index = next_index.get(link.a, _IFINDEX_BASE)
            next_index[link.a] = index + 1
            owner.link(
                "add",
                ifname=link.ifname_a,
                index=index,
                kind="veth",
                peer={"ifname": link.ifname_b, "net_ns_fd": ns_of(link.b)},
            )
            for ipr, ifname, addrs in (
                (owner, link.ifname_a, link.addrs_a),
                (peer, link.ifname_b, link.addrs_b),
            ):
                idx = T.link_index(ipr, ifname)
                for addr in addrs:
                    if addr.startswith("fe80:"):
                        ipr.addr("add", index=idx, address=addr, prefixlen=64, flags=_IFA_F_NODAD)
                    else:
                        T.add_address(ipr, idx, addr)
                ipr.link("set", index=idx, state="up")
        for route in plan.routes:
            ipr = iprs[route.role]
            kw: dict[str, Any] = {
                "dst": route.dst,
                "oif": T.link_index(ipr, route.dev),
                "family": 10 if ":" in route.dst else 2,
            }
            if route.via:
                kw["gateway"] = route.via
            else:
                kw["scope"] = _RT_SCOPE_LINK
            if route.prefsrc:
                kw["prefsrc"] = route.prefsrc
            ipr.route("add", **kw)
        pending = {(link.a, link.ifname_a) for link in plan.links}
        pending |= {(link.b, link.ifname_b) for link in plan.links}
        T.await_links_up(iprs, pending, ns_of, time.monotonic() + _LINK_UP_TIMEOUT)


def destroy(plan: Plan, ns_of: Callable[[str], str]) -> None:
    """Remove everything of *plan*; safe on a half-built lab and when called twice.

    Processes first (they keep a namespace alive), then the owned veth ends (deleting
    one removes its peer at once), then the mounts. Every step runs; an interrupt that
    lands meanwhile is re-raised at the end, the first error after that.
    """
    errors: list[BaseException] = []

    def step(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # finish the teardown first, raise afterwards
            errors.append(exc)

    for role in plan.roles:
        step(functools.partial(terminate_netns_processes, ns_of(role)))
    for role in dict.fromkeys(link.a for link in plan.links):
        owned = [link.ifname_a for link in plan.links if link.a == role]
        step(functools.partial(_delete_links, ns_of(role), owned))
    for role in plan.roles:
        step(functools.partial(T.remove_netns, ns_of(role)))
    for exc in errors:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
            raise exc
    if errors:
        raise T.LabError(f"teardown incomplete: {errors[0]}") from errors[0]


def _delete_links(ns: str, ifnames: list[str]) -> None:
    if not netns_exists(ns):
        return
    with T.open_ipr(ns) as ipr:
        for ifname in ifnames:
            for idx in ipr.link_lookup(ifname=ifname):
                ipr.link("del", index=idx)
