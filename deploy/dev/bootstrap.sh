#!/usr/bin/env bash
# Installs everything opsloop's demo and tests need on a fresh Debian machine with
# Python 3.11, Java 17 and Maven: a virtualenv with the locked dependencies (deploy/requirements.lock)
# and the package,
# the Apache Kafka jars from Maven Central, and (from Debian's packages, if missing)
# PostgreSQL, Prometheus and Alertmanager. Safe to run again: each step is skipped
# when already done.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '==> %s\n' "$*" >&2; }

# Debian packages the tests use as real components.
APT_PACKAGES=(postgresql prometheus prometheus-alertmanager openssl chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages' own services are not wanted: the tests start private instances.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for svc in prometheus prometheus-alertmanager postgresql; do
    command -v systemctl >/dev/null 2>&1 && $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true
    command -v service >/dev/null 2>&1 && $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.opsloop-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ deploy/requirements.lock -nt "$stamp" ]; then
  # The exact versions the suite ran with (deploy/requirements.lock, from `uv pip compile` of
  # pyproject.toml's ranges with the test, dev and eval extras), then opsloop itself.
  say "installing the locked dependencies and opsloop into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r deploy/requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$stamp"
fi

say "fetching the Apache Kafka broker jars (Maven Central, cached)"
.venv/bin/python -c "from streams.devtools.broker import fetch_jars; print(fetch_jars())" >&2
