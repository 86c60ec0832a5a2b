"""The typed policy model: what a validated policy *is*, independent of YAML.

Everything here is a frozen dataclass so a compiled policy can be shared by the
daemon loop, reload and tools without defensive copies. Locations travel with every
rule so a decision can name the policy line that made it.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class Action(enum.Enum):
    """What happens to a blocked connection attempt."""

    DROP = "drop"
    REJECT = "reject"
    MONITOR = "monitor"  # accept, but log and count as would-block


class DownMode(enum.Enum):
    """What the kernel does with guarded traffic while no daemon listens."""

    STATIC = "static"  # kernel allow-sets accept, the rest gets the policy action
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a policy file; line and col are 1-based as editors show them."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Prefix:
    """An IP prefix as integers: ``network`` has no host bits set."""

    version: int
    network: int
    length: int


_MASK64 = (1 << 64) - 1


class NetworkColumn:
    """Prefix networks (IPv4 or IPv6 ints) as two ``array('Q')`` halves, 16 bytes each.

    A list of a million Python ints costs ~36-40 MB and its deallocation is one long C
    call; two flat arrays cost 16 MB, free at once, and pickle as two byte strings, so
    a policy loaded in a forked child crosses a pipe to the daemon in milliseconds
    (``op25b.daemon.loadchild``). Values are built on access.
    """

    __slots__ = ("hi", "lo")

    def __init__(self, hi: array[int], lo: array[int]) -> None:
        self.hi = hi
        self.lo = lo

    @classmethod
    def of(cls, values: Iterable[int]) -> NetworkColumn:
        """A column holding ``values`` (non-negative ints below 2**128)."""
        vals = values if isinstance(values, list) else list(values)
        return cls(array("Q", [v >> 64 for v in vals]), array("Q", [v & _MASK64 for v in vals]))

    def __len__(self) -> int:
        return len(self.lo)

    def __getitem__(self, i: int) -> int:
        return (self.hi[i] << 64) | self.lo[i]

    def __iter__(self) -> Iterator[int]:
        if not any(self.hi):  # IPv4-only (or low IPv6) pools: no shifts at all
            return iter(self.lo)
        return ((h << 64) | v for h, v in zip(self.hi, self.lo, strict=True))

    def __reduce__(self) -> tuple[type[NetworkColumn], tuple[array[int], array[int]]]:
        return (NetworkColumn, (self.hi, self.lo))

    def release(self) -> None:
        """Drop the contents (arrays free in one cheap call, no per-item work)."""
        self.hi = array("Q")
        self.lo = array("Q")


@dataclass(frozen=True, eq=False)
class PrefixList:
    """The prefixes of one plan, stored compactly as parallel arrays.

    A plan may pull in a million pool prefixes from a ``prefixes_file``; one ``Prefix``
    and one ``Location`` object per prefix would cost well over 100 MB, so prefixes are
    kept as (version, network, length) columns and positions as arrays, and objects
    are built only when something asks for one (a decision naming its rule, say).
    """

    versions: bytes
    networks: NetworkColumn
    lengths: bytes
    files: tuple[str, ...]  # file of prefix i is files[file_index[i]]
    file_index: bytes | tuple[int, ...]
    lines: tuple[int, ...] | object  # array('I') in practice; indexable ints
    cols: tuple[int, ...] | object

    @classmethod
    def build(
        cls,
        prefixes: Sequence[Prefix],
        files: tuple[str, ...],
        file_index: bytes | tuple[int, ...],
        lines: tuple[int, ...] | object,
        cols: tuple[int, ...] | object,
    ) -> PrefixList:
        """A PrefixList from Prefix objects (small policies, tests)."""
        return cls(
            bytes(p.version for p in prefixes),
            NetworkColumn.of([p.network for p in prefixes]),
            bytes(p.length for p in prefixes),
            files,
            file_index,
            lines,
            cols,
        )

    def __len__(self) -> int:
        return len(self.networks)

    def __getitem__(self, i: int) -> Prefix:
        return Prefix(self.versions[i], self.networks[i], self.lengths[i])

    def __iter__(self) -> Iterator[Prefix]:
        return map(Prefix, self.versions, self.networks, self.lengths)

    @property
    def prefixes(self) -> tuple[Prefix, ...]:
        """All prefixes as objects; builds them, so not for million-prefix hot paths."""
        return tuple(self)

    def release(self) -> None:
        """Free the networks now; the list is unusable afterwards."""
        self.networks.release()

    def location(self, i: int) -> Location:
        """Where prefix ``i`` was written."""
        lines = self.lines
        cols = self.cols
        return Location(
            self.files[self.file_index[i]],
            lines[i],  # type: ignore[index]
            cols[i],  # type: ignore[index]
        )


@dataclass(frozen=True)
class Plan:
    """A subscriber plan: a named pool of source prefixes, exempt or not."""

    name: str
    exempt: bool
    prefixes: PrefixList
    location: Location


@dataclass(frozen=True)
class ProviderMta:
    """A provider MTA every subscriber may reach on guarded ports."""

    name: str
    addresses: tuple[tuple[int, int], ...]  # (version, int)
    locations: tuple[Location, ...]  # one per address
    location: Location


@dataclass(frozen=True)
class Exemption:
    """A single subscriber let through, with its audit trail."""

    prefix: Prefix
    ticket: str
    expires: datetime  # aware UTC; the exemption is active while now < expires
    reason: str
    location: Location

    def active(self, now: datetime) -> bool:
        """True until the expiry instant (a date expires at the end of that UTC day)."""
        return now < self.expires


# RFC 5424 facility names and codes; the policy accepts exactly these names.
SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}


class SyslogTransport(enum.Enum):
    """How counters and notices reach syslog."""

    UNIX = "unix"
    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True)
class SyslogConfig:
    """Where syslog lines go: a unix socket path, or udp/tcp host and port."""

    transport: SyslogTransport = SyslogTransport.UNIX
    address: str = "/dev/log"  # path for UNIX, host for UDP/TCP
    port: int = 0
    facility: str = "local5"


@dataclass(frozen=True)
class MetricsConfig:
    """Where the daemon's Prometheus metrics go; both outputs off by default."""

    listen_host: str = ""  # an IP address to serve HTTP /metrics on; "" = no server
    listen_port: int = 0
    textfile: str = ""  # a *.prom file for node_exporter's textfile collector; "" = none
    interval: float = 1.0  # seconds between the workers' snapshots (and textfile writes)

    @property
    def enabled(self) -> bool:
        """True when the daemon exports metrics at all."""
        return bool(self.listen_host or self.textfile)


@dataclass(frozen=True)
class DaemonConfig:
    """The ``daemon`` section; only ``op25b run`` reads it."""

    queue: int = 0
    workers: int = 1
    on_daemon_down: DownMode = DownMode.STATIC
    abuse_log: str = "/var/log/op25b/blocked.jsonl"
    syslog: SyslogConfig = field(default_factory=SyslogConfig)
    counters_interval: float = 60.0
    # What happens to a packet that cannot be parsed or decided: accept keeps mail
    # flowing through a bug, drop keeps a bot from slipping through one.
    on_error: str = "accept"
    abuse_window: float = 300.0  # seconds an abuse-log aggregation window stays open
    v6_aggregate: int = 64  # IPv6 sources are aggregated per /N in the abuse log
    fast_path: bool = False
    block_cache_timeout: int = 0  # seconds; 0 = no kernel verdict cache
    # Seconds between checks that op25b's rules and sets are still intact in the
    # (shared) firewall; anything missing, moved or changed is repaired at once.
    rules_check_interval: float = 1.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass(frozen=True)
class Policy:
    """A validated policy, version 1."""

    source: str
    guarded_ports: frozenset[int]
    action: Action
    plans: tuple[Plan, ...]
    provider_mtas: tuple[ProviderMta, ...]
    exemptions: tuple[Exemption, ...]
    daemon: DaemonConfig
    guarded_ports_location: Location
    action_location: Location
