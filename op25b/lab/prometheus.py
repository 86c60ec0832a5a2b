"""A real Prometheus for the fleet lab, and PromQL queries against it from inside its namespace.

This module owns the scrape configuration (``scrape_config``, pure), running Debian's
``prometheus`` binary in a lab namespace with a private config and TSDB
(``Prometheus``), and asking it PromQL questions over its HTTP API. The API listens
inside the namespace only, so queries go through one long-lived helper process in
that namespace (``python -m op25b.lab.prometheus``: a URL per stdin line, the answer
as one JSON line) rather than a process per query.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import child_env, popen_in, stop_process, tcp_listening

API_PORT = 9090
METRICS_PORT = 9125  # where every router's daemon serves /metrics (daemon.metrics.listen)
JOB = "op25b"


class PrometheusError(EnvironmentFailure):
    """Prometheus did not start, or a query failed."""


def scrape_config(targets: Mapping[str, str], interval: float = 1.0) -> str:
    """prometheus.yml: one job scraping each ``host:port`` target, labelled ``router=NAME``."""
    every, timeout = f"{round(interval * 1000)}ms", f"{round(interval * 900)}ms"
    lines = [
        f"global: {{scrape_interval: {every}, scrape_timeout: {timeout},"
        f" evaluation_interval: {every}}}",
        "scrape_configs:",
        f"  - job_name: {JOB}",
        "    static_configs:",
    ]
    for name, target in targets.items():
        lines.append(f"      - {{targets: ['{target}'], labels: {{router: '{name}'}}}}")
    return "\n".join(lines) + "\n"


class Prometheus:
    """Debian's prometheus in namespace *ns* listening on *address*, storage in *work*."""

    def __init__(
        self, ns: str, address: str, work: Path, config: str, timeout: float = 60.0
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus not installed (apt-get install prometheus)")
        work.mkdir(parents=True, exist_ok=True)
        (work / "prometheus.yml").write_text(config)
        self.url = f"http://{address}:{API_PORT}"
        self.logfile = work / "prometheus.log"
        with self.logfile.open("w") as log:
            self.proc = popen_in(
                ns,
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address={address}:{API_PORT}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._client = popen_in(
            ns,
            [sys.executable, "-m", "op25b.lab.prometheus"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            deadline = time.monotonic() + timeout
            while not tcp_listening(self.proc.pid, API_PORT) or not self._ready():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise PrometheusError(f"prometheus in {ns} not ready: {self.errors()}")
                time.sleep(0.1)  # polling the HTTP API, with a deadline
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        return self._get("/-/ready").get("status") == 200

    def errors(self) -> str:
        text = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
        return " | ".join(text.strip().splitlines()[-3:]) or "no output"

    def _get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        client = self._client
        if client.poll() is not None or client.stdin is None or client.stdout is None:
            raise PrometheusError("the query helper has exited")
        client.stdin.write(url + "\n")
        client.stdin.flush()
        answer: dict[str, Any] = json.loads(client.stdout.readline() or "{}")
        return answer

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (each: ``metric`` labels, ``value``)."""
        answer = self._get("/api/v1/query", {"query": promql})
        if answer.get("status") != 200:
            raise PrometheusError(f"query {promql!r}: {answer.get('error', answer)}")
        doc = json.loads(answer["body"])
        if doc.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {doc.get('error', doc)}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def by_label(self, promql: str, labels: Sequence[str]) -> dict[tuple[str, ...], float]:
        """An instant query's samples keyed by the values of *labels*."""
        return {
            tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1])
            for s in self.query(promql)
        }

    def await_query(
        self, promql: str, wanted: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Poll *promql* until ``wanted(result)``; scrapes come every interval."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if wanted(result):
                return result
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise PrometheusError(f"{promql} never satisfied the wait: {result}")
            time.sleep(0.2)  # polling a remote API: no event to wait on

    def stop(self) -> None:
        if self._client.stdin is not None:
            self._client.stdin.close()
        stop_process(self._client)
        stop_process(self.proc)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    """The query helper: one URL per stdin line, one JSON answer per stdout line."""
    for line in sys.stdin:
        url = line.strip()
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer = {"status": resp.status, "body": resp.read().decode()}
        except urllib.error.HTTPError as e:
            answer = {"status": e.code, "body": e.read().decode(errors="replace")}
        except OSError as e:
            answer = {"status": 0, "error": str(e)}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
