"""``opsloop ingest``: run the HTTP front door until SIGTERM / SIGINT.

Refuses to start (exit 1, one line on stderr) when no producer could ever post
(no tokens, no webhook secrets), when OPSLOOP_INGEST_TOKENS is malformed, or when
the sessions file is invalid (file:line: reason). A broker that is down is *not* a
reason to refuse: ingest starts, /readyz says 503, posts get 503 with Retry-After,
and it connects as soon as the broker is there.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streams.errors import UnavailableError, UsageParser
from streams.model.yamlfile import ConfigError
from streams.settings import port_number


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="opsloop ingest", description="Serve the ingest HTTP endpoints.")
    parser.add_argument("--host", help="listen address (default OPSLOOP_INGEST_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=port_number, help="listen port (default OPSLOOP_INGEST_PORT or 8080)")
    parser.add_argument("--log-level", default=None, help="default OPSLOOP_LOG_LEVEL or info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    from streams.ingest.app import create_app
    from streams.ingest.auth import TokenConfigError
    from streams.ingest.scopes import ScopeConfigError
    from streams.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:  # names each variable, never its value
        print(f"opsloop ingest: {exc}", file=sys.stderr)
        return exc.exit_code
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = settings.ingest.model_copy(update=overrides)
    from streams.ingest.logs import configure_ingest_logging
    from streams.logs import register_secrets

    configure_ingest_logging(settings, args.log_level)
    try:
        app = create_app(settings, config)
    except (ConfigError, TokenConfigError, ScopeConfigError) as exc:
        print(f"opsloop ingest: {exc}", file=sys.stderr)
        return 1
    from streams.ingest.pipeline import INGEST

    ingest = app[INGEST]
    # Each token and webhook secret masked on its own, wherever it shows up (a pasted URL, a path).
    register_secrets(*ingest.auth.secrets(), *(s.get_secret_value() for s in ingest.webhook_secrets.values()))
    if not ingest.auth.producers and not ingest.webhook_secrets:
        print(
            "opsloop ingest: no producer can post: set OPSLOOP_INGEST_TOKENS (name=token,...) "
            "and/or OPSLOOP_INGEST_WEBHOOK_SECRET_<PROVIDER>",
            file=sys.stderr,
        )
        return 1

    def serving() -> None:
        logging.getLogger("streams.ingest").info(
            "ingest on http://%s:%d (producers: %s; webhooks: %s; topics prefix %r; kafka %s)",
            config.host,
            config.port,
            ", ".join(ingest.auth.producers) or "none",
            ", ".join(sorted(ingest.webhook_secrets)) or "none",
            settings.topic_prefix,
            settings.kafka_bootstrap,
        )

    from streams.ingest.logs import serve

    try:
        serve(app, config, serving)
    except UnavailableError as exc:
        print(f"opsloop ingest: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
