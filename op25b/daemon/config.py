"""The daemon's settings: the policy's ``daemon`` section with command-line overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from op25b.errors import UsageError
from op25b.policy.addr import parse_syslog_address
from op25b.policy.daemonsection import MAX_PERIOD, MIN_PERIOD
from op25b.policy.model import DaemonConfig, SyslogConfig


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the policy's daemon section."""

    abuse_log: str | None = None
    syslog: str | None = None
    counters_interval: float | None = None
    abuse_window: float | None = None


def syslog_address(text: str, facility: str) -> SyslogConfig:
    """``--syslog``: the same syntax as the policy's ``daemon.syslog.address``."""
    try:
        transport, host, port = parse_syslog_address(text)
    except ValueError as e:
        raise UsageError(f"--syslog: {e}") from None
    return SyslogConfig(transport, host, port, facility)


def apply_overrides(cfg: DaemonConfig, ov: Overrides) -> DaemonConfig:
    """The daemon section with command-line overrides applied (UsageError if bad)."""
    if ov.abuse_log is not None:
        cfg = replace(cfg, abuse_log=ov.abuse_log)
    if ov.syslog is not None:
        cfg = replace(cfg, syslog=syslog_address(ov.syslog, cfg.syslog.facility))
    for name in ("counters_interval", "abuse_window"):
        value = getattr(ov, name)
        if value is not None:
            # The same range as the policy key: below a second the loop would spend its
            # time flushing, and a window longer than a day never reaches the desk.
            if not (math.isfinite(value) and MIN_PERIOD <= value <= MAX_PERIOD):
                raise UsageError(
                    f"--{name.replace('_', '-')}: must be {MIN_PERIOD:g} to {MAX_PERIOD:g} "
                    f"seconds, got {value:g}"
                )
            cfg = replace(cfg, **{name: value})
    return cfg
