#!/usr/bin/env bash
# Installs everything op25b's demo, tests and benchmarks need on a Debian machine (as root):
# the kernel tools (iptables, ipset, conntrack), the netfilter queue library the Python
# binding is compiled against, real mail/syslog software for the lab, a venv and the package,
# and the package's compiled hot path.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (the lab creates network namespaces and firewall rules inside them)" >&2
    exit 1
fi

APT_PACKAGES=(iptables nftables ipset conntrack iproute2 libnetfilter-queue-dev libnfnetlink-dev
              build-essential python3-dev python3-venv rsyslog swaks libio-socket-inet6-perl
              netsniff-ng procps systemd logrotate
              man-db groff-base prometheus)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import op25b, netfilterqueue, prometheus_client, pyroute2, scapy, yaml, pytest, matplotlib, duckdb" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.op25b-installed ]; then
    echo "bootstrap: installing op25b and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[daemon,lab,replay,report,report-fast,test]"
    touch .venv/.op25b-installed
fi
# The per-packet path compiled with mypyc from the same typed sources (op25b/native.py;
# ~10 s); rebuilt only when one of its sources changed. OP25B_PURE_PYTHON=1 runs without.
.venv/bin/python scripts/build_native.py --if-stale
echo "bootstrap: ready"
