"""The short fuzz campaign through the real queue (bench/fuzz_queue.py runs the full one).

30,000 randomized and mutated frames (random flags and options, IPv4 options, IPv6
extension chains past the parser's limit, truncations, fragments) from blocked and
non-subscriber sources through the lab router, while the business subscriber makes
real connections: every queued packet gets exactly one verdict, nothing traces back,
nothing from a blocked source reaches the MX as TCP to port 25.
"""

from __future__ import annotations

import sys
from pathlib import Path

from op25b.lab.tools import Listener
from op25b.lab.topology import Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import fuzz_queue  # the benchmark's campaign, run short (found via sys.path above)


def test_fuzz_campaign_through_the_real_queue(
    lab: Lab, listeners: dict[str, Listener], tmp_path: Path
) -> None:
    campaign = fuzz_queue.Campaign(packets=30_000, rate=10_000, seed=7)
    r = fuzz_queue.run_campaign(lab, listeners["net"], tmp_path, campaign)
    fuzz_queue.print_results(r)
    assert r["sent"]["sent"] >= 30_000
    assert set(r["sent"]["kinds"]) == {"tcp4", "tcp6", "mutated", "truncated", "frag4", "frag6"}
    # The campaign reached the daemon's error paths, not only its happy path.
    assert r["daemon"]["parse_errors"] > 0 and r["daemon"]["drop"] > 0
    assert r["handed_to_daemon"] == r["answered_by_daemon"] > 10_000
    assert r["kernel"]["waiting"] == 0
    assert r["tracebacks"] == []
    assert r["blocked_peers_at_mx"] == []
    assert r["arrived_in_net"]["fuzz-blocked-tcp25-v4"] == 0
    assert r["arrived_in_net"]["fuzz-blocked-tcp25-v6"] == 0
    assert r["arrived_in_net"]["fuzz-open-v4"] > 0 and r["arrived_in_net"]["fuzz-open-v6"] > 0
    failed = [name for name, ok in r["checks"].items() if not ok]
    assert failed == []
