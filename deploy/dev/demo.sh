#!/usr/bin/env bash
# The README's demo command: install what is missing, then run `opsloop demo`
# (local Kafka broker, topics, a worker, real alerts in, outbox out, clean exit).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/bootstrap.sh
exec .venv/bin/opsloop demo "$@"
