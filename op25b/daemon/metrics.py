"""Prometheus metrics: names, help, the HTTP ``/metrics`` endpoint and the textfile.

The only ``import prometheus_client`` in op25b. Reads ``MetricsHub.view()`` at scrape
time through a custom collector, so nothing here runs per packet: the verdict loop
only hands the hub a snapshot once per ``daemon.metrics.interval``. The HTTP server
(``daemon.metrics.listen``) and the textfile writer (``daemon.metrics.textfile``)
run on their own threads in the leader; a scrape never waits on the loop.

Names follow Prometheus conventions: ``op25b_`` prefix, ``_total`` on counters, base
units (seconds, packets), labels only where a sum over them means something
(``verdict``/``reason``, ``result``, fast-path ``reason``). Every health counter of
the counters line has a metric; one added later to ``Worker.health_counters()``
appears as ``op25b_<name>_total`` without a change here. The full list with meanings
is docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import op25b
from op25b.daemon.metricshub import Channel, MetricsHub, View
from op25b.errors import EnvironmentFailure
from op25b.policy.model import MetricsConfig

# Sample key -> (metric name without _total, help). Counters.
COUNTERS: dict[str, tuple[str, str]] = {
    "parse_errors": ("op25b_parse_errors", "Queued packets the parser refused."),
    "undecidable": (
        "op25b_undecidable_packets",
        "Packets that could not be decided at all (daemon.on_error applied).",
    ),
    "block_cache_packets": (
        "op25b_block_cache_packets",
        "Verdict-cache hits: packets the kernel handled for cached blocked sources.",
    ),
    "block_cache_adds": ("op25b_block_cache_adds", "Blocked sources added to the verdict cache."),
    "block_cache_errors": ("op25b_block_cache_errors", "Failed verdict-cache kernel operations."),
    "block_cache_unattributed": (
        "op25b_block_cache_unattributed_packets",
        "Verdict-cache packets on entries no policy decision could be found for.",
    ),
    "queue_dropped": (
        "op25b_queue_dropped",
        "Packets the kernel dropped because a queue was full (daemon too slow).",
    ),
    "user_dropped": (
        "op25b_queue_user_dropped",
        "Packets the kernel dropped because the daemon's socket buffer was full.",
    ),
    "abuse_records_written": ("op25b_abuse_records_written", "Abuse-log records written."),
    "abuse_records_lost": ("op25b_abuse_records_lost", "Abuse-log records lost (disk trouble)."),
    "abuse_write_errors": ("op25b_abuse_write_errors", "Failed abuse-log writes."),
    "abuse_log_reopens": ("op25b_abuse_log_reopens", "Abuse-log reopens (rotation, deletion)."),
    "abuse_overflow_records": (
        "op25b_abuse_overflow_records",
        "Abuse-log overflow records (sources past a per-window cap, summed up).",
    ),
    "abuse_overflow_sources": (
        "op25b_abuse_overflow_sources",
        "Sources summed up in abuse-log overflow records.",
    ),
    "abuse_overflow_packets": (
        "op25b_abuse_overflow_packets",
        "Packets summed up in abuse-log overflow records.",
    ),
    "abuse_capped_records": (
        "op25b_abuse_capped_records",
        "Abuse-log records that hit the per-record destination cap.",
    ),
    "syslog_dropped": ("op25b_syslog_messages_dropped", "Syslog messages dropped."),
    "syslog_errors": ("op25b_syslog_send_errors", "Failed syslog sends."),
    "callback_errors": ("op25b_callback_errors", "Errors in the queue callback."),
    "rules_checks": ("op25b_rules_checks", "Checks that op25b's kernel rules are intact."),
    "rules_repaired": ("op25b_rules_repaired", "Repairs of damaged or missing kernel rules."),
    "rules_repair_failures": ("op25b_rules_repair_failures", "Failed kernel-rule repairs."),
    "kernel_errors": ("op25b_kernel_errors", "Failed kernel reads (rule state, counters)."),
}
# Sample key -> (metric name, help). Gauges.
GAUGES: dict[str, tuple[str, str]] = {
    "rules_ok": (
        "op25b_rules_ok",
        "1 when op25b's kernel rules and sets are present and intact (the rule watchdog).",
    ),
    "policy_loaded": (
        "op25b_policy_loaded_timestamp_seconds",
        "When the policy in force was loaded (start or last good reload), Unix time.",
    ),
    "block_cache_entries": (
        "op25b_block_cache_entries",
        "Sources in the kernel verdict cache (as of the leader's last read).",
    ),
    "queue_waiting": ("op25b_queue_waiting_packets", "Packets waiting in the queues now."),
    "abuse_records_pending": (
        "op25b_abuse_records_pending",
        "Abuse-log records waiting to be written (disk trouble).",
    ),
}


def families(view: View) -> Iterator[Metric]:
    """Every op25b metric family for one view of the hub."""
    c = view.counters
    decisions = CounterMetricFamily(
        "op25b_decisions", "Packets decided, by verdict and reason.", labels=["verdict", "reason"]
    )
    reloads = CounterMetricFamily(
        "op25b_reloads", "Policy reloads (SIGHUP) by result.", labels=["result"]
    )
    fast = CounterMetricFamily(
        "op25b_fast_path_accepted",
        "Packets the kernel fast path accepted ahead of the queue, by reason.",
        labels=["reason"],
    )
    reloads.add_metric(["ok"], c.get("reloads_ok", 0))
    reloads.add_metric(["failed"], c.get("reloads_failed", 0))
    plain: list[Metric] = []
    for key, value in sorted(c.items()):
        kind, _, rest = key.partition(":")
        if kind == "decisions":
            decisions.add_metric(rest.split(":"), value)
        elif kind == "fast":
            fast.add_metric([rest], value)
        elif not key.startswith("reloads_"):
            name, text = COUNTERS.get(key, (f"op25b_{key}", f"op25b counter {key}."))
            plain.append(CounterMetricFamily(name, text, value=value))
    yield decisions
    yield reloads
    if fast.samples:
        yield fast
    yield from plain
    for key, level in sorted(view.gauges.items()):
        name, text = GAUGES.get(key, (f"op25b_{key}", f"op25b gauge {key}."))
        yield GaugeMetricFamily(name, text, value=level)
    yield GaugeMetricFamily(
        "op25b_workers_reporting", "Queue workers whose numbers are in this view.", view.workers
    )
    info = GaugeMetricFamily("op25b_build_info", "op25b's version.", labels=["version"])
    info.add_metric([op25b.__version__], 1)
    yield info


class _Collector:
    """Reads the hub at scrape time (prometheus_client's custom-collector protocol)."""

    def __init__(self, hub: MetricsHub, exporter: Exporter | None = None) -> None:
        self.hub = hub
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        yield from families(self.hub.view())
        if self.exporter is not None and self.exporter.cfg.textfile:
            yield CounterMetricFamily(
                "op25b_metrics_textfile_errors",
                "Failed writes of daemon.metrics.textfile.",
                value=self.exporter.textfile_errors,
            )


def _registry(hub: MetricsHub, exporter: Exporter | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(hub, exporter))
    return registry


def render(hub: MetricsHub) -> bytes:
    """The text exposition of the hub now (what /metrics and the textfile hold)."""
    return generate_latest(_registry(hub))


class Exporter:
    """The leader's metrics outputs: HTTP server, textfile, followers' samples."""

    def __init__(self, cfg: MetricsConfig, hub: MetricsHub, channel: Channel) -> None:
        self.cfg = cfg
        self.hub = hub
        self.channel = channel
        self.registry = _registry(hub, self)
        self._server: WSGIServer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.textfile_errors = 0

    def open(self) -> None:
        """Bind the HTTP server and write the textfile once, before anything touches
        the kernel: a port in use or an unwritable directory is exit 3, not a daemon
        that enforces without the metrics its operators alert on."""
        if self.cfg.textfile:
            error = self.write_textfile()
            if error is not None:
                raise EnvironmentFailure(f"daemon.metrics.textfile: cannot write {error}")
        if not self.cfg.listen_host:
            return
        host, port = self.cfg.listen_host, self.cfg.listen_port
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise EnvironmentFailure(
                f"daemon.metrics.listen: cannot listen on {shown}: {e.strerror or e}"
            ) from None

    def in_follower(self) -> None:
        """After fork, in a follower: let go of the leader's listening socket."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.socket.close()
        self.channel.in_follower()

    def start(self) -> None:
        """The thread that takes the followers' samples and writes the textfile."""
        self._thread = threading.Thread(target=self._run, name="op25b-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.cfg.interval
        due = time.monotonic() + interval
        while not self._stop.is_set():
            sample = self.channel.receive(due - time.monotonic())
            if sample is not None:
                self.hub.publish(sample)
            if time.monotonic() >= due:
                due = time.monotonic() + interval
                if self.cfg.textfile:
                    self.write_textfile()

    def write_textfile(self) -> str | None:
        """Replace the textfile atomically (a temporary file in the same directory,
        then rename); the error text, or None."""
        path = self.cfg.textfile
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            data = generate_latest(self.registry)
            # 0644: node_exporter runs as its own user; these are counts, not secrets.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
        except OSError as e:
            self.textfile_errors += 1
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return f"{path}: {e.strerror or e}"
        return None

    def stop(self, clean: bool) -> None:
        """Stop the thread, take the followers' last samples, end both outputs.

        On a clean stop op25b's rules are gone, so the textfile goes too: its
        ``op25b_rules_ok 1`` would be a lie (the HTTP endpoint vanishes with us).
        After a crash it stays with the last numbers; node_exporter's
        ``node_textfile_mtime_seconds`` shows how old they are.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.channel.drain(self.hub)
        if self.cfg.textfile:
            if clean:
                with contextlib.suppress(OSError):
                    os.unlink(self.cfg.textfile)
            else:
                self.write_textfile()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.channel.close()
