#!/usr/bin/env bash
# The flood benchmark (bench/README.md): set up everything like the demo, then hold a
# trafgen SYN flood against op25b in a private network-namespace lab and compare it with
# a bare queue consumer and kernel-only DROP. Results go to bench/results/flood-*.json,
# a short table to stdout. Pass --quick for a ~2 minute run (100k-prefix policy).
# Root only; nothing outside the namespaces the run creates is touched.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || exit 1
exec .venv/bin/python bench/bench_flood.py "$@"
