"""The policy's ``daemon`` section, checked the way ``op25b run`` will use it.

Owns reading ``daemon:`` into ``model.DaemonConfig``, with every rule that keeps a
section `op25b check` accepts from failing later in `run` -- single values and the
rules across values:

- ``queue`` + ``workers`` - 1 <= 65535: worker N reads queue ``queue + N``
  (``--queue-balance queue:queue+workers-1``); a range past 65535 makes the kernel
  refuse the rules.
- ``block_cache_timeout`` <= 1073741 s: cached entries live twice the rotation
  period, and ipset refuses timeouts above 2147483 s.
- ``abuse_window`` and ``counters_interval`` in 1..86400 s: below a second the loop
  would wake without pause (and write a record or a counters line each time); above
  a day a window's end leaves the timestamp range and no record is ever due.
- ``abuse_log``: a file path without NUL bytes or a trailing slash, and never the
  policy file or one of its pool files (the daemon appends JSON lines to it); a
  relative path is a warning (the daemon resolves it against its working
  directory, ``/`` under systemd).
- ``syslog.address``: a socket path the kernel accepts (at most 107 bytes).
- ``metrics.listen``: an IP address and port (IPv6 in brackets), never a name;
  ``metrics.textfile``: a ``*.prom`` path (node_exporter's textfile collector reads
  nothing else), checked like ``abuse_log`` and never the abuse log itself;
  ``metrics.interval`` in 0.1..3600 s (each tick every worker sends a snapshot).

What a key *means* to the daemon is in README's daemon table; YAML reads go through
``op25b.policy.yamlnodes.NodeReader``.
"""

from __future__ import annotations

import os

from op25b.policy import addr
from op25b.policy.model import (
    SYSLOG_FACILITIES,
    DaemonConfig,
    DownMode,
    MetricsConfig,
    SyslogConfig,
    SyslogTransport,
)
from op25b.policy.yamlnodes import Node, NodeReader, is_null

LAST_QUEUE = 65535  # NFQUEUE numbers are 16 bits
MAX_WORKERS = 64
# ipset's largest timeout; the verdict cache gives entries twice the rotation period.
IPSET_MAX_TIMEOUT = 2147483
MAX_BLOCK_CACHE_TIMEOUT = IPSET_MAX_TIMEOUT // 2
MIN_PERIOD, MAX_PERIOD = 1.0, 86400.0  # abuse_window, counters_interval (seconds)
# The rule watchdog: each check runs iptables-save/ipset list (~10-30 ms of CPU), so
# far below 0.1 s it would cost a core; above an hour a flushed ruleset stays unnoticed.
MIN_CHECK, MAX_CHECK = 0.05, 3600.0
MIN_METRICS, MAX_METRICS = 0.1, 3600.0  # metrics.interval (seconds)
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

KEYS = (
    "queue",
    "workers",
    "on_daemon_down",
    "abuse_log",
    "syslog",
    "counters_interval",
    "on_error",
    "abuse_window",
    "v6_aggregate",
    "fast_path",
    "block_cache_timeout",
    "rules_check_interval",
    "metrics",
)


def read_daemon(reader: NodeReader, node: Node, policy_files: list[str]) -> DaemonConfig:
    """The daemon section; ``policy_files`` are the policy and pool files read so far."""
    if is_null(node):
        return DaemonConfig()
    keys = reader.mapping(node, "daemon", KEYS)
    values: dict[str, object] = {}
    for key, (_, value_node) in keys.items():
        values[key] = _value(reader, key, value_node, f"daemon.{key}", policy_files)
    cfg = DaemonConfig(**values)  # type: ignore[arg-type]
    last = cfg.queue + cfg.workers - 1
    if last > LAST_QUEUE:
        where = "workers" if "workers" in keys else "queue"
        reader.fail(
            keys[where][1],
            f"daemon.{where}",
            f"workers {cfg.workers} from queue {cfg.queue} need queues {cfg.queue}..{last},"
            f" but queue numbers end at {LAST_QUEUE} (queue + workers - 1 <= {LAST_QUEUE})",
        )
    textfile = cfg.metrics.textfile
    if textfile and os.path.realpath(textfile) == os.path.realpath(cfg.abuse_log):
        textfile_node = next(v for k, v in keys["metrics"][1].value if k.value == "textfile")
        reader.fail(
            textfile_node,
            "daemon.metrics.textfile",
            f"{textfile!r} is also daemon.abuse_log; give the metrics their own file",
        )
    return cfg


def _value(reader: NodeReader, key: str, node: Node, path: str, policy_files: list[str]) -> object:
    if key == "queue":
        return reader.integer(node, path, 0, LAST_QUEUE)
    if key == "workers":
        return reader.integer(node, path, 1, MAX_WORKERS)
    if key == "on_daemon_down":
        return DownMode(reader.choice(node, path, tuple(m.value for m in DownMode)))
    if key == "abuse_log":
        return _file_path(reader, node, path, policy_files)
    if key == "syslog":
        return _syslog(reader, node, path)
    if key in ("counters_interval", "abuse_window"):
        return _seconds(reader, node, path, MIN_PERIOD, MAX_PERIOD)
    if key == "rules_check_interval":
        return _seconds(reader, node, path, MIN_CHECK, MAX_CHECK)
    if key == "on_error":
        return reader.choice(node, path, ("accept", "drop"))
    if key == "v6_aggregate":
        return reader.integer(node, path, 0, 128)
    if key == "fast_path":
        return reader.boolean(node, path)
    if key == "metrics":
        return _metrics(reader, node, path, policy_files)
    # block_cache_timeout
    return reader.integer(node, path, 0, MAX_BLOCK_CACHE_TIMEOUT)


def _seconds(reader: NodeReader, node: Node, path: str, lo: float, hi: float) -> float:
    value = reader.positive_number(node, path)
    if not lo <= value <= hi:
        reader.fail(node, path, f"{node.value} is out of range ({lo:g}..{hi:g} seconds)")
    return value


def _metrics(reader: NodeReader, node: Node, path: str, policy_files: list[str]) -> MetricsConfig:
    keys = reader.mapping(node, path, ("listen", "textfile", "interval"))
    host, port, textfile = "", 0, ""
    if "listen" in keys:
        listen_node = keys["listen"][1]
        listen_path = f"{path}.listen"
        text = reader.text(listen_node, listen_path, "an address:port")
        try:
            host, port = addr.parse_listen_address(text)
        except ValueError as exc:
            reader.fail(listen_node, listen_path, str(exc))
    if "textfile" in keys:
        file_node = keys["textfile"][1]
        file_path = f"{path}.textfile"
        textfile = _file_path(reader, file_node, file_path, policy_files)
        if not textfile.endswith(".prom"):
            reader.fail(
                file_node,
                file_path,
                f"{textfile!r}: node_exporter's textfile collector only reads *.prom files",
            )
    interval = MetricsConfig.interval
    if "interval" in keys:
        interval_node = keys["interval"][1]
        interval = _seconds(reader, interval_node, f"{path}.interval", MIN_METRICS, MAX_METRICS)
    return MetricsConfig(host, port, textfile, interval)


def _file_path(reader: NodeReader, node: Node, path: str, policy_files: list[str]) -> str:
    """A file the daemon writes: ``abuse_log`` and ``metrics.textfile``."""
    text = reader.text(node, path, "a file path")
    if "\0" in text:
        reader.fail(node, path, f"a file path cannot contain a NUL byte: {text!r}")
    if text.endswith("/"):
        reader.fail(node, path, f"expected a file path, got a directory: {text!r}")
    target = os.path.realpath(text)
    for other in policy_files:
        if os.path.realpath(other) == target:
            reader.fail(node, path, f"{text!r} is {other}, a file this policy is read from")
    if not os.path.isabs(text):
        reader.warn(
            node,
            path,
            f"relative path {text!r}: the daemon opens it relative to its working"
            " directory (/ under systemd); give an absolute path",
        )
    return text


def _syslog(reader: NodeReader, node: Node, path: str) -> SyslogConfig:
    keys = reader.mapping(node, path, ("address", "facility"))
    default = SyslogConfig()
    transport, host, port = default.transport, default.address, default.port
    if "address" in keys:
        address_node = keys["address"][1]
        address_path = f"{path}.address"
        text = reader.text(address_node, address_path, "a syslog address")
        try:
            transport, host, port = addr.parse_syslog_address(text)
        except ValueError as exc:
            reader.fail(address_node, address_path, str(exc))
        if transport is SyslogTransport.UNIX:
            size = len(host.encode("utf-8", "surrogateescape"))
            if "\0" in host or size > UNIX_PATH_MAX:
                reader.fail(
                    address_node,
                    address_path,
                    f"not a usable socket path ({size} bytes; at most {UNIX_PATH_MAX},"
                    f" no NUL): {text!r}",
                )
    facility = default.facility
    if "facility" in keys:
        facility = reader.choice(keys["facility"][1], f"{path}.facility", tuple(SYSLOG_FACILITIES))
    return SyslogConfig(transport, host, port, facility)
