#!/usr/bin/env bash
# The test command (README, CI): set up everything, then run the whole pytest suite —
# unit tests and the root-only lab tests on real network namespaces and netfilter queues.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test: pytest collected no tests" >&2
    rc=0
fi
exit "$rc"
