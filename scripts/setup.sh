#!/usr/bin/env bash
# Set up this checkout on a fresh machine: system packages the tests and the lab need
# (BIND9, etcd, iptables, PostgreSQL 15 binaries, systemd-analyze, cloud-init, shellcheck), then a
# virtualenv with the package.
# Needs Python 3.11+ and root or sudo. Safe to rerun: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v named >/dev/null 2>&1 || missing+=(bind9 bind9-utils)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
command -v useradd >/dev/null 2>&1 || [ -x /usr/sbin/useradd ] || missing+=(passwd)
# systemd-analyze verifies the unit under packaging/systemd/ (nothing is started).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The Terraform tests check the region module's user data as a host would take it:
# `cloud-init schema` (nothing runs) and shellcheck on its scripts.
command -v cloud-init >/dev/null 2>&1 || missing+=(cloud-init)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# PostgreSQL 15 from Debian: the second server version the tests run on. The
# default cluster is not wanted: only the binaries.
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
    as_root mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11 or newer is needed ($python is $("$python" --version 2>&1))" >&2; exit 2; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,lab]'
echo "setup: ready (.venv/bin/failover)"
