"""Sinks: deliver notify effects from ``outbox`` to Slack, Teams, PagerDuty, email, webhooks and the log.

``base`` (the contract and the registry), one module per channel (pure formatters),
``delivery`` (the shared client: retries, backoff, rate limits, circuit breaker),
``ledger`` (deliver once), ``dispatch`` (per-destination queues, receipts, dead
letters) and ``agent`` (the faust shell reading ``outbox``).
"""
