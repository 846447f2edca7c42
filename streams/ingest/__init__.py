"""opsloop's HTTP ingest: the endpoints Prometheus, Alertmanager, code hosts, PagerDuty
and scanners already speak, in front of the one producer path (``EventProducer``).

Why a separate ``opsloop ingest`` process (aiohttp) and not faust web views inside
the worker: ingest is stateless and must stay up while workers restart, rebalance
or lag; it scales with request rate, workers scale with partitions. A faust web view
lives in a consumer-group member, so every ingest restart or scale-out would
rebalance the decide agents, and every worker stall (a long rebalance, a slow
batch) would stall the producers' posts. Separately, ingest restarts in a second,
runs as many replicas behind a load balancer as needed, and never joins a consumer
group. aiohttp is already installed with faust.

Configuration (environment; see :mod:`streams.ingest.settings`):

* ``OPSLOOP_INGEST_TOKENS=prometheus=<t1>,alertmanager=<t2>,scanner=<t3>`` and/or
  ``OPSLOOP_INGEST_TOKEN_<NAME>=<token>`` (one variable per producer): one bearer
  token per producer for the unsigned endpoints. 401 without a token, 403
  with a wrong one; compared in constant time; never logged (logs and metrics name
  the producer, not its token).
* ``OPSLOOP_INGEST_WEBHOOK_SECRET_<PROVIDER>`` (``..._GITHUB``, ``..._PAGERDUTY``):
  the HMAC secret of each signed-webhook provider, the variable derived from the
  provider's name in ``streams.ingest.webhooks.PROVIDERS``; a provider without one is off (404).
* ``OPSLOOP_INGEST_SESSIONS_FILE`` (default ``runbooks/sessions.yaml``): session-key rules.
* ``OPSLOOP_INGEST_MAX_BODY_BYTES`` (1 MiB), ``..._SEND_TIMEOUT_S`` (5),
  ``..._MAX_IN_FLIGHT`` (20000), ``..._RETRY_AFTER_S`` (5), ``..._HOST``, ``..._PORT`` (8080).
* Kafka: the usual ``KAFKA_BOOTSTRAP`` / ``OPSLOOP_KAFKA_*`` / ``OPSLOOP_TOPIC_PREFIX``.

Producers point at it with one line of their own configuration: Prometheus
``alerting.alertmanagers[].static_configs.targets: [ingest:8080]`` with
``authorization: {type: Bearer, credentials: <token>}``; Alertmanager a
``webhook_configs: [{url: http://ingest:8080/ingest/alertmanager, http_config:
{authorization: {type: Bearer, credentials: <token>}}}]``; GitHub a webhook to
``/ingest/webhook/github`` with the secret; PagerDuty a v3 webhook subscription to
``/ingest/webhook/pagerduty``.
"""
