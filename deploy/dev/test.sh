#!/usr/bin/env bash
# The README's test command: install what is missing, then run the whole suite
# against a real Kafka broker and PostgreSQL that the suite starts (or the ones
# KAFKA_BOOTSTRAP / DATABASE_URL point at). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
