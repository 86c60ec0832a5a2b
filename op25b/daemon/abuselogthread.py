"""The abuse-log writer on its own thread: an fsync never stalls a verdict.

The thread owns the ``AbuseLogWriter`` (it is not thread-safe): writes, retries of
what a failing disk left pending, reopening after rotation and the final close all
run there, in order. Each job returns the writer's events (failing, records lost,
reopened, writing again), each told once, which the loop sends to syslog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from op25b.daemon.abuselog import AbuseLogEvent, AbuseLogWriter
from op25b.daemon.syslogformat import Severity
from op25b.dataplane.abuserecord import AbuseRecord

LogFn = Callable[[Severity, str, str], None]


class AbuseLogThread:
    """Queue writer jobs; ``collect()`` (in the loop) reports what they said."""

    def __init__(self, writer: AbuseLogWriter, log: LogFn) -> None:
        self.writer = writer
        self.log = log
        self._io = ThreadPoolExecutor(1, thread_name_prefix="op25b-abuselog")
        self._jobs: deque[Future[list[AbuseLogEvent]]] = deque()

    def write(self, records: list[AbuseRecord]) -> None:
        """Append ``records`` (and retry what is pending), off the loop."""
        writer = self.writer
        if not records and not writer.stats.pending:
            return

        def job() -> list[AbuseLogEvent]:
            writer.write(records) if records else writer.retry()
            return writer.pop_events()

        self._jobs.append(self._io.submit(job))

    def reopen(self) -> None:
        """SIGUSR1: logrotate renamed the file."""

        def job() -> list[AbuseLogEvent]:
            self.writer.reopen()
            return [*self.writer.pop_events(), AbuseLogEvent(False, "reopened abuse log")]

        self._jobs.append(self._io.submit(job))

    def collect(self, wait: bool = False) -> None:
        """Report the events of finished jobs (all jobs with ``wait``)."""
        while self._jobs and (wait or self._jobs[0].done()):
            for event in self._jobs.popleft().result():
                severity = Severity.ERR if event.error else Severity.NOTICE
                self.log(severity, f"{event.message} ({self.writer.path})", "abuse_log")

    def close(self) -> None:
        """Close the file after every queued job; report their events."""
        def job() -> list[AbuseLogEvent]:
            self.writer.close()
            return self.writer.pop_events()

        self._jobs.append(self._io.submit(job))
        self._io.shutdown(wait=True)
        self.collect(wait=True)
