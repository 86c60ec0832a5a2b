"""Address and prefix text <-> integer conversion, shared by the loader, CLI and tools.

Also the syntax of a syslog address (``/path``, ``udp://host:port``, ``tcp://host:port``),
shared by the policy loader and ``op25b run --syslog``.

Addresses travel through op25b as ``(version, int)`` pairs because that is what the
packet parser produces from raw bytes without allocating ``ipaddress`` objects, and
integers make prefix masking a single AND.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from op25b.policy.model import Prefix, SyslogTransport

_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)

V4_BITS = 32
V6_BITS = 128


def bits(version: int) -> int:
    """Address width in bits for an IP version (4 or 6)."""
    return V4_BITS if version == 4 else V6_BITS


def parse_address(text: str) -> tuple[int, int]:
    """Parse an IPv4/IPv6 address into ``(version, int)``; ValueError with a reason."""
    t = text.strip()
    try:
        if ":" in t:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, t), "big")
        # inet_pton (not inet_aton) so that '10.1' or '1.2.3.04' style shorthands are refused
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, t), "big")
    except (OSError, ValueError):
        # ValueError: inet_pton's own complaint about a NUL or an unencodable character
        # ("embedded null character") says nothing about the value; keep one message.
        raise ValueError(f"not an IP address: {text!r}") from None


def format_address(version: int, value: int) -> str:
    """Render ``(version, int)`` as the canonical text form."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def parse_prefix(text: str, *, strict: bool = True) -> Prefix:
    """Parse ``a.b.c.d/len`` or ``x::/len`` (a bare address is a host prefix).

    With ``strict`` a prefix with host bits set is refused: in an ISP policy that is
    almost always a typo (``100.64.1.0/16``) and silently masking it would widen or
    move the pool.
    """
    t = text.strip()
    addr_text, slash, len_text = t.partition("/")
    version, value = parse_address(addr_text)
    width = bits(version)
    if slash:
        # isascii: str.isdigit() also accepts digits like '²' that int() then refuses
        if not (len_text.isascii() and len_text.isdigit()) or len(len_text) > 3:
            raise ValueError(f"bad prefix length in {text!r}")
        length = int(len_text)
        if length > width:
            raise ValueError(f"prefix length /{length} is longer than /{width} in {text!r}")
    else:
        length = width
    host_mask = (1 << (width - length)) - 1
    if value & host_mask:
        if strict:
            net = ipaddress.ip_network(t, strict=False)
            raise ValueError(f"host bits set in {text!r} (did you mean {net}?)")
        value &= ~host_mask
    return Prefix(version, value, length)


def prefix_text(prefix: Prefix) -> str:
    """Render a Prefix as ``network/len``."""
    return f"{format_address(prefix.version, prefix.network)}/{prefix.length}"


def range_prefixes(version: int, first: int, last: int) -> list[Prefix]:
    """The fewest prefixes that cover exactly the addresses ``first..last``."""
    width = bits(version)
    out: list[Prefix] = []
    while first <= last:
        # The biggest block that starts at ``first`` (alignment) and fits before ``last``.
        align = (first & -first).bit_length() - 1 if first else width
        fit = (last - first + 1).bit_length() - 1
        size = min(align, fit)
        out.append(Prefix(version, first, width - size))
        first += 1 << size
    return out


def size_text(version: int, n: int) -> str:
    """``n`` addresses as an engineer counts them: IPv4 addresses, IPv6 /64s."""
    if version == 6 and n >= 1 << 64:
        # Subscribers get a /64 or shorter, so /64s are the unit an ISP engineer counts;
        # a remainder (a host exemption cut out of a pool) is kept exact.
        nets, rest = divmod(n, 1 << 64)
        text = f"{nets:,} /64" + ("" if nets == 1 else "s")
        return text + (f" + {rest:,} address" + ("" if rest == 1 else "es") if rest else "")
    return f"{n:,} address" + ("" if n == 1 else "es")


def contains(prefix: Prefix, version: int, value: int) -> bool:
    """True when the address lies inside the prefix."""
    if version != prefix.version:
        return False
    shift = bits(version) - prefix.length
    return (value >> shift) == (prefix.network >> shift)


def parse_syslog_address(text: str) -> tuple[SyslogTransport, str, int]:
    """``/path``, ``udp://host:port`` or ``tcp://host:port`` (IPv6 host in brackets).

    Returns (transport, path or host, port; 0 for a socket path); ValueError with a
    message a person understands otherwise.
    """
    usage = "expected a socket path like /dev/log, udp://host:port or tcp://host:port"
    if text.startswith("/"):
        return SyslogTransport.UNIX, text, 0
    scheme, sep, rest = text.partition("://")
    transports = {"udp": SyslogTransport.UDP, "tcp": SyslogTransport.TCP}
    if not sep or scheme not in transports:
        raise ValueError(f"{usage}, got {text!r}")
    host, port = _host_port(rest, text, f"{scheme}://", f"{scheme}://[2001:db8::1]:514", usage)
    if ":" not in host and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{usage}, got {text!r}")
    if host.replace(".", "").isdigit():
        parse_address(host)  # its ValueError names the bad address
    return transports[scheme], host, port


def parse_listen_address(text: str) -> tuple[str, int]:
    """``address:port`` to listen on, an IP address (IPv6 in brackets); (host, port).

    Only addresses, never names: a daemon on a router binds to a management address,
    not to whatever a name resolves to at start.
    """
    usage = "expected address:port like 127.0.0.1:9125 or [::1]:9125"
    host, port = _host_port(text, text, "", "[2001:db8::1]:9125", usage)
    if ":" not in host:
        try:
            parse_address(host)
        except ValueError:
            raise ValueError(f"{usage} (an IP address, not a name), got {text!r}") from None
    return host, port


def _host_port(rest: str, text: str, after: str, example: str, usage: str) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port`` from ``rest`` (the tail of ``text``)."""
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
        try:
            version, _ = parse_address(host)
        except ValueError:
            version = 0
        if not sep or version != 6:
            where = f" after {after}" if after else ""
            raise ValueError(f"expected [IPv6 address]:port{where}, got {text!r}")
    else:
        host, sep, port_text = rest.rpartition(":")
        if ":" in host:
            raise ValueError(f"write IPv6 hosts in brackets ({example})")
        if not sep or not host:
            raise ValueError(f"{usage}, got {text!r}")
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not (digits and 1 <= int(port_text) <= 65535):
        raise ValueError(f"expected a port 1..65535 after the host, got {text!r}")
    return host, int(port_text)
