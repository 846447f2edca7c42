#!/usr/bin/env bash
# `opsloop dev` after the bootstrap: a local broker, PostgreSQL (or SQLite), ingest, a
# worker and the projector, kept in .opsloop/dev between runs, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/bootstrap.sh
exec .venv/bin/opsloop dev "$@"
