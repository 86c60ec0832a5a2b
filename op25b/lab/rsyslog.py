"""Real rsyslogd instances for the fleet lab: the central collector and one agent per router.

This module owns their configurations (pure text, ``collector_conf`` and ``agent_conf``)
and running them (``Rsyslogd``): each instance is the system's ``rsyslogd`` binary with
its own config, pid file and work directory in a directory the caller owns, started
inside a lab namespace. The system's syslog is never touched: no ``imuxsock`` (so no
``/dev/log``), internal messages processed by the instance itself into its own file.

The shipping path, the way an ISP runs it::

    op25b run ──RFC 5424/TCP──▶ agent (router) ──▶ the router's own log file
    abuse log (JSON lines) ─imfile─▶ agent ──RFC 5424/TCP, octet counting──▶ collector
                                                                    ├▶ DIR/<host>.log
                                                                    └▶ DIR/abuse/<host>.jsonl

The collector files by the HOSTNAME field: one log per router, and the abuse records
(app-name ``op25b-abuse``) as bare JSON lines that ``op25b report`` reads as they are.
The agent's forwarding action has a disk-assisted queue: a collector outage delays
records rather than lose them (imfile also remembers its file offset);
tests/lab/test_fleet_collector.py takes the collector away and checks it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import popen_in, stop_process, tcp_listening

COLLECTOR_PORT = 514  # syslog over TCP (RFC 6587), the conventional port
AGENT_PORT = 5514  # the agent's local input for the daemon, on 127.0.0.1
ABUSE_APP = "op25b-abuse"  # app-name the agent gives the abuse log's lines

# RFC 5424 out, without the trailing LF RSYSLOG_SyslogProtocol23Format adds: with
# octet-counted framing the LF would become part of every forwarded MSG.
_FORWARD = (
    "<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% "
    "%STRUCTURED-DATA% %msg%"
)
# One readable line per message; the structured data is kept whole so the counters
# can be read back from the file.
_LINE = (
    "%timereported:::date-rfc3339% %hostname% %app-name% %procid% %msgid% "
    "%structured-data% %msg%\\n"
)


class RsyslogError(EnvironmentFailure):
    """rsyslogd could not be started or did not become ready."""


def _common(work: Path, hostname: str = "") -> str:
    host = f' localHostName="{hostname}"' if hostname else ""
    return (
        f'global(workDirectory="{work}" maxMessageSize="64k"'
        f' processInternalMessages="on"{host})\n'
        # Internal messages (errors about our config, queue states) stay in the instance's
        # directory; the default ruleset sees nothing else.
        f'action(type="omfile" file="{work}/rsyslogd-internal.log")\n'
        f'template(name="op25b_line" type="string" string="{_LINE}")\n'
    )


def collector_conf(work: Path, out: Path, address: str, port: int = COLLECTOR_PORT) -> str:
    """The collector: imtcp on *address*:*port*, one file per sending host under *out*."""
    # secpath-replace: a host name is a file name here; '/' and '..' must not escape.
    host = "%hostname:::secpath-replace%"
    return _common(work) + (
        'module(load="imtcp" maxSessions="4000")\n'
        f'template(name="op25b_hostfile" type="string" string="{out}/{host}.log")\n'
        f'template(name="op25b_abusefile" type="string" string="{out}/abuse/{host}.jsonl")\n'
        'template(name="op25b_json" type="string" string="%msg%\\n")\n'
        'ruleset(name="op25b_fleet") {\n'
        f'  if $app-name == "{ABUSE_APP}" then {{\n'
        '    action(type="omfile" dynaFile="op25b_abusefile" template="op25b_json"'
        ' createDirs="on" dynaFileCacheSize="1000")\n'
        "  } else {\n"
        '    action(type="omfile" dynaFile="op25b_hostfile" template="op25b_line"'
        ' createDirs="on" dynaFileCacheSize="1000")\n'
        "  }\n"
        "}\n"
        # Octet-counted framing (RFC 6587 3.4.1) is on by default in imtcp.
        f'input(type="imtcp" address="{address}" port="{port}" ruleset="op25b_fleet")\n'
    )


def agent_conf(
    work: Path,
    hostname: str,
    own_log: Path,
    abuse_log: Path,
    collector: str,
    port: int = COLLECTOR_PORT,
) -> str:
    """A router's agent: the daemon's messages in, the router's own log and the collector out."""
    return _common(work, hostname) + (
        'module(load="imtcp")\n'
        'module(load="imfile" mode="inotify")\n'
        f'template(name="op25b_forward" type="string" string="{_FORWARD}")\n'
        'ruleset(name="op25b_forward") {\n'
        f'  action(type="omfwd" target="{collector}" port="{port}" protocol="tcp"'
        ' TCP_Framing="octet-counted" template="op25b_forward"'
        ' queue.type="LinkedList" queue.filename="op25b_forward" queue.saveOnShutdown="on"'
        ' action.resumeRetryCount="-1" action.resumeInterval="1")\n'
        "}\n"
        'ruleset(name="op25b_daemon") {\n'
        f'  action(type="omfile" file="{own_log}" template="op25b_line")\n'
        "  call op25b_forward\n"
        "}\n"
        f'input(type="imtcp" address="127.0.0.1" port="{AGENT_PORT}" ruleset="op25b_daemon")\n'
        f'input(type="imfile" file="{abuse_log}" tag="{ABUSE_APP}" facility="local5"'
        ' severity="info" ruleset="op25b_forward" addMetadata="off" reopenOnTruncate="on")\n'
    )


class Rsyslogd:
    """One rsyslogd in namespace *ns* with *conf* written to *work*; awaited listening."""

    def __init__(self, ns: str, work: Path, conf: str, port: int, timeout: float = 20.0) -> None:
        binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        if not Path(binary).exists():
            raise RsyslogError("rsyslogd not installed (apt-get install rsyslog)")
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        path = work / "rsyslog.conf"
        path.write_text(conf)
        self.log = work / "rsyslogd.out"
        with self.log.open("w") as log:
            self.proc = popen_in(
                ns,
                [binary, "-n", "-f", str(path), "-i", str(work / "rsyslogd.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not tcp_listening(self.proc.pid, port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RsyslogError(f"rsyslogd in {ns} not listening on {port}: {self.errors()}")
            time.sleep(0.02)  # polling the listening state, with a deadline

    def errors(self) -> str:
        """What rsyslogd said about itself (its output and internal log), condensed."""
        text = ""
        for f in (self.log, self.work / "rsyslogd-internal.log"):
            if f.exists():
                text += f.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-5:]) or "no output"

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Rsyslogd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def await_file(
    path: Path, pred: Callable[[list[str]], bool], timeout: float, what: str
) -> list[str]:
    """The lines of *path* once ``pred(lines)`` holds (rsyslog writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        if pred(lines):
            return lines
        if time.monotonic() > deadline:
            raise RsyslogError(f"timed out waiting for {what} in {path} ({len(lines)} lines)")
        time.sleep(0.05)  # polling a file another process writes, with a deadline
