"""A fake ``op25b.kernel.seam.Kernel`` for daemon unit tests: records calls, fails on demand.

It keeps a model of op25b's kernel state (a ``KernelState`` built from what was
"installed") that tests can damage the way a shared firewall gets damaged (flush,
a moved jump, a destroyed set), a verdict cache with packet counters tests can bump,
and fake queues whose packets tests feed in as raw bytes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from op25b.errors import EnvironmentFailure
from op25b.kernel.integrity import KernelState, TableState
from op25b.kernel.names import set_name
from op25b.kernel.nfttext import expected_table
from op25b.kernel.queuestats import QueueStats
from op25b.kernel.ruletext import RuleConfig, render_rules
from op25b.kernel.seam import Handler
from op25b.kernel.setcontents import SetContents, compute_sets
from op25b.policy.model import Policy


class KernelFailure(EnvironmentFailure):
    """What the fake raises when told to fail (as a real command failure would)."""


class FakeQueue:
    """A bound queue: ``feed`` raw packets, the worker's ``process`` decides them."""

    def __init__(self, queue_num: int, handler: Handler, on_error: int) -> None:
        self.queue_num = queue_num
        self.handler = handler
        self.on_error = on_error
        self.pending: list[bytes] = []
        self.verdicts: list[int] = []
        self.closed = False
        self.callback_errors = 0
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)

    def feed(self, *payloads: bytes) -> None:
        """Queue packets and make the descriptor readable."""
        self.pending.extend(payloads)
        self._w.send(b"p")

    def fileno(self) -> int:
        return self._r.fileno()

    def process(self) -> bool:
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass
        batch, self.pending = self.pending, []
        for payload in batch:
            try:
                self.verdicts.append(self.handler(payload))
            except Exception:
                self.callback_errors += 1
                self.verdicts.append(self.on_error)
        return False

    def close(self) -> None:
        self.closed = True
        self._r.close()
        self._w.close()


@dataclass
class FakeKernel:
    """Records every call as (name, detail); ``fail[name] = n`` fails the next n calls."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    current: KernelState = field(default_factory=lambda: KernelState({}, {}))
    cfg: RuleConfig | None = None
    sets: SetContents | None = None
    queues: dict[int, FakeQueue] = field(default_factory=dict)
    cache: dict[tuple[int, int], int] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)  # queue -> kernel drops
    # What stage_sets loaded into temporaries (not in force), until install or discard.
    staged: tuple[Policy, datetime] | None = None
    # Set: stage_sets waits for it (a test orders the staging against the compile).
    stage_gate: threading.Event | None = None

    def _call(self, name: str, detail: str = "") -> None:
        self.calls.append((name, detail))
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            raise KernelFailure(f"{name} failed (injected)")

    def names(self) -> list[str]:
        """The calls made so far, names only."""
        return [n for n, _ in self.calls]

    # -- rules and sets ------------------------------------------------------------

    def _model(self, cfg: RuleConfig, sets: SetContents) -> KernelState:
        tables: dict[tuple[int, str], TableState] = {}
        for v in (4, 6):
            text = render_rules(cfg, v)
            for table_text in text.split("COMMIT\n"):
                if not table_text.strip():
                    continue
                table = table_text.split("\n", 1)[0].lstrip("*")
                body = tuple(
                    line[len("-A OP25B ") :]
                    for line in table_text.splitlines()
                    if line.startswith("-A OP25B ")
                )
                jumps = tuple(
                    line.split(" ", 3)[3]
                    for line in table_text.splitlines()
                    if line.startswith("-I FORWARD 1 ")
                )
                tables[(v, table)] = TableState(True, body, tuple(reversed(jumps)), True)
        counts: dict[str, int] = {}
        for fam in (sets.v4, sets.v6):
            counts[set_name("mta", fam.version)] = len(fam.mta)
            counts[set_name("allow", fam.version)] = len(fam.allow)
            counts[set_name("subs", fam.version)] = len(fam.subs)
            if cfg.uses_block_cache:
                counts[set_name("block", fam.version)] = 0
        return KernelState(tables, counts, expected_table(cfg.guarded_ports))

    def install(self, cfg: RuleConfig, policy: Policy, now: datetime) -> None:
        staged, self.staged = self.staged, None
        used = staged is not None and staged[0] is policy and staged[1] == now
        self._call("install", f"{cfg.action.value} fast_path={cfg.fast_path}" + " staged" * used)
        self.cfg, self.sets = cfg, compute_sets(policy, now)
        self.current = self._model(cfg, self.sets)

    def stage_sets(self, policy: Policy, now: datetime) -> None:
        self.staged = None
        if self.stage_gate is not None:
            self.stage_gate.wait(10)
        self._call("stage_sets")
        self.staged = (policy, now)  # beside the live sets: ``current`` is unchanged

    def discard_staged(self) -> None:
        self._call("discard_staged")
        self.staged = None

    def update_sets(self, policy: Policy, now: datetime) -> None:
        self._call("update_sets")
        assert self.cfg is not None
        self.sets = compute_sets(policy, now)
        self.current = self._model(self.cfg, self.sets)

    def install_rules(self, cfg: RuleConfig) -> None:
        self._call("install_rules")
        assert self.sets is not None
        model = self._model(cfg, self.sets)
        self.current = KernelState(model.tables, self.current.sets, model.nft)

    def state(self) -> KernelState:
        self._call("state")
        return self.current

    def remove(self) -> None:
        self._call("remove")
        self.current = KernelState({}, {})

    # -- damage, as a shared firewall does it -----------------------------------------

    def flush_ruleset(self) -> None:
        """``nft flush ruleset``: every rule, chain and nft table gone (ipsets survive it)."""
        self.current = KernelState({}, self.current.sets)

    def move_jump(self, version: int = 4, table: str = "filter") -> None:
        """Someone inserted a rule above op25b's jump."""
        tables = dict(self.current.tables)
        tables[(version, table)] = replace(tables[(version, table)], jumps_first=False)
        self.current = replace(self.current, tables=tables)

    def destroy_set(self, name: str) -> None:
        """``ipset destroy NAME`` (or a flush to 0 entries with ``empty=True``)."""
        sets = {k: v for k, v in self.current.sets.items() if k != name}
        self.current = replace(self.current, sets=sets)

    # -- queue and counters ----------------------------------------------------------

    def queue_stats(self, queues: Iterable[int]) -> dict[int, QueueStats]:
        return {
            q: QueueStats(q, 1, 0, 2, 256, self.dropped.get(q, 0), 0, 0)
            for q in queues
            if q in self.queues
        }

    def fast_path_counters(self) -> dict[str, int]:
        self._call("fast_path_counters")
        return {"provider_mta": 0, "exempt": 0, "not_subscriber": 0}

    def bind_queue(self, queue_num: int, handler: Handler, on_error: int) -> FakeQueue:
        self._call("bind_queue", str(queue_num))
        q = FakeQueue(queue_num, handler, on_error)
        self.queues[queue_num] = q
        return q

    # -- verdict cache -----------------------------------------------------------------

    def cache_add(self, entries: Sequence[tuple[int, int]], timeout: int) -> None:
        self._call("cache_add", str(len(entries)))
        for e in entries:
            self.cache.setdefault(e, 0)

    def cache_counts(self) -> dict[tuple[int, int], int]:
        self._call("cache_counts")
        return dict(self.cache)

    def cache_rotate(self, timeout: int) -> dict[tuple[int, int], int]:
        self._call("cache_rotate")
        old, self.cache = self.cache, {}
        return old

    def hit(self, version: int, address: int, packets: int) -> None:
        """The kernel dropped ``packets`` more for a cached source."""
        self.cache[(version, address)] += packets
