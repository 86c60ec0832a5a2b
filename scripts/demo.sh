#!/usr/bin/env bash
# The demo command (README): set up everything, then run OP25B end to end in a private
# network-namespace lab with real SMTP traffic. Exits non-zero if any scenario fails.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || exit 1
exec .venv/bin/op25b demo "$@"
