"""The ``opsloop`` command line.

Each subcommand is a thin shell: parse arguments, read settings from the
environment, call the module that does the work, print, and exit. Errors are
:class:`streams.errors.OpsloopError`: printed as one line (with the file and line
where there is one) and mapped to the exit code the help text lists
(:data:`streams.errors.EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DIFFERS,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    InvalidInputError,
    NotFoundError,
    OpsloopError,
    UsageParser,
    exit_codes_help,
)
from streams.progress import Progress
from streams.settings import Settings, port_number

if TYPE_CHECKING:
    import sqlalchemy as sa

    from streams.model.receivers import ChannelSpec


def _settings() -> Settings:
    return Settings.from_env()


# -- topics ---------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.kafka.catalogue import load_catalogue

    settings = _settings()
    path = Path(args.file) if args.file else settings.topics_file
    specs = load_catalogue(path)
    if args.action == "check":
        print(f"{path}: {len(specs)} topics ok")
        return 0
    from streams.kafka.admin import apply, render

    result = asyncio.run(apply(settings, specs, dry_run=args.dry_run))
    print(render(result, dry_run=args.dry_run))
    return EXIT_DIFFERS if result.drift else 0


# -- produce --------------------------------------------------------------------


class LineError(InvalidInputError):
    """A line of a JSON-lines input is not a valid event; the message has file:line."""


def read_json_lines(stream: Iterable[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each line's event, validated and test-encoded; the first bad one raises :class:`LineError` (file:line).

    Bytes in, decoded line by line, so a line that is not UTF-8 is named by its number (a text stream
    raised UnicodeDecodeError, a traceback, from a buffer ahead of the line read)."""
    from streams.ingest.errors import BadRequest
    from streams.ingest.fields import parse_json
    from streams.kafka.codec import CodecError, default_codec
    from streams.kafka.producer import encode_event, prepare_event
    from streams.model.records import InvalidEventError

    for number, data in enumerate(stream, 1):
        if number == 1 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]  # an editor's byte order mark, not part of the first event
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LineError(f"{name}:{number}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
        if not line.strip():
            continue
        try:
            # ingest's strict reading: NaN, duplicate keys, deep nesting, NUL and lone surrogates refused, each
            # named (json.loads took the last of duplicate keys and raised RecursionError, a traceback, on `[[[…`)
            raw = parse_json(data)
        except BadRequest as exc:
            raise LineError(f"{name}:{number}: {str(exc).removeprefix('body: ')}") from None
        try:
            encode_event(default_codec(), prepare_event(raw))  # what send will do: a field, and the record's size
        except (InvalidEventError, CodecError) as exc:
            raise LineError(f"{name}:{number}: {exc}") from None
        yield number, raw


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.kafka.producer import EventProducer

    settings = _settings()
    name = args.file or "<stdin>"
    try:
        stream = open(args.file, "rb") if args.file else sys.stdin.buffer
    except OSError as exc:
        raise LineError(f"{name}: cannot read it: {exc.strerror}") from None
    with stream:
        events = [raw for _, raw in read_json_lines(stream, name)]  # validate all before sending any
    if not events:
        print(f"produced 0 events ({name} holds none)")
        return 0

    async def run() -> int:
        sent = 0
        progress = Progress(len(events), enabled=len(events) >= 1000 or args.progress)
        async with EventProducer(settings) as producer:
            for start in range(0, len(events), 500):
                chunk = events[start : start + 500]
                await producer.send_many(chunk)
                sent += len(chunk)
                progress.update(sent)
        progress.done()
        return sent

    sent = asyncio.run(run())
    print(f"produced {sent} events")
    return 0


# -- tail -----------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.kafka.reader import TopicReader

    settings = _settings()

    async def run() -> None:
        count = 0
        async with TopicReader(settings, args.topics, from_beginning=not args.new) as reader:
            async for rec in reader.records(idle_timeout=args.idle):
                out = {
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                    "key": rec.key.decode(errors="replace") if rec.key else None,
                }
                out["value" if rec.error is None else "error"] = rec.value if rec.error is None else rec.error
                print(json.dumps(out, default=_bytes_repr), flush=True)
                count += 1
                if args.max and count >= args.max:
                    return

    asyncio.run(run())
    return 0


def _bytes_repr(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


# -- dlq ------------------------------------------------------------------------


SHOWN_KEY_CHARS = 120


def shown_key(raw: bytes | None) -> str:
    """A record's key as one terminal line: control characters escaped, cut past SHOWN_KEY_CHARS with its size (a
    10,000-byte binary key was printed raw, escape sequences and all)."""
    from streams.model.records import CONTROL_CHARS

    text = CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", (raw or b"").decode(errors="replace"))
    return text if len(text) <= SHOWN_KEY_CHARS else f"{text[:SHOWN_KEY_CHARS]}… ({len(raw or b'')} bytes)"


def cmd_dlq(args: argparse.Namespace) -> int:
    from streams.errors import NotFoundError
    from streams.kafka import redrive

    settings = _settings()
    dlqs = [args.topic] if args.topic else list(redrive.SOURCES)
    letters, marks = asyncio.run(redrive.read(settings, dlqs))
    chosen = redrive.select(letters, reason=args.reason, offset=args.offset, partition=args.partition)
    if args.action == "list":
        for letter in chosen:
            r = letter.record
            print(
                f"{letter.dlq}[{letter.partition}]@{letter.offset}  stage={r['stage']}  "
                f"source={letter.source}[{r['partition']}]@{r['offset']}  "
                f"key={shown_key(r['key'])}  "
                f"{'redriven  ' if letter.mark in marks else ''}reason={r['reason']}"
            )
        print(f"{len(chosen)} dead letter(s), {sum(1 for x in chosen if x.mark in marks)} already redriven")
        return 0
    if not chosen:
        raise NotFoundError(f"no dead letter in {', '.join(dlqs)} matches")
    done = asyncio.run(redrive.redrive(settings, chosen, marks, include_superseded=args.include_superseded))
    for letter, what in done:
        print(f"{letter.dlq}[{letter.partition}]@{letter.offset} ({letter.mark}): {what}")
    return 0


# -- worker ---------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import run_worker

    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    return run_worker(Settings.from_env(**overrides))


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.devtools.demo import run_demo

    return run_demo(alerts=args.alerts)


def cmd_dev(args: argparse.Namespace) -> int:
    from streams.devtools.dev import run_dev

    return run_dev(Path(args.data_dir), sqlite=args.sqlite, ingest_port=args.ingest_port)


def cmd_classifier(argv: Sequence[str]) -> int:
    from classifier.cli import main as classifier_main

    return classifier_main(list(argv))


def cmd_ingest(argv: Sequence[str]) -> int:
    from streams.ingest.server import main as ingest_main

    return ingest_main(list(argv))


# -- audit ----------------------------------------------------------------------


def cmd_projector(args: argparse.Namespace) -> int:
    from streams.audit.projector import run_projector

    metrics_at = (args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    return run_projector(_settings(), batch_max=args.batch_max, metrics_at=metrics_at)


def _audit_engine() -> sa.Engine:
    from streams.audit.store import migrate
    from streams.db import make_engine

    engine = make_engine(_settings().database_url.get_secret_value())
    migrate(engine)
    return engine


def cmd_audit(args: argparse.Namespace) -> int:
    from streams.audit import store, timeline

    target = args.target
    if target == "migrate":
        _audit_engine()
        print("audit database is at the newest schema")
        return 0
    if target == "prune":
        if not args.older_than:
            print("opsloop: audit prune needs --older-than (e.g. 30d)", file=sys.stderr)
            return 1
        from streams.model.yamlfile import parse_duration_ms

        try:
            age = parse_duration_ms(args.older_than)
        except ValueError as exc:
            print(f"opsloop: --older-than: {exc}", file=sys.stderr)
            return 1
        import time

        deleted = store.prune(_audit_engine(), int(time.time() * 1000) - age)
        print("pruned " + ", ".join(f"{n} {table}" for table, n in deleted.items()))
        return 0
    entries = timeline.build(store.session_rows(_audit_engine(), target))
    if args.json:
        print(json.dumps({"session_key": target, "timeline": entries}, indent=2, default=str))
    else:
        print(timeline.render(target, entries))
    return 0 if entries else EXIT_NOT_FOUND


# -- the read side: incidents, silences (streams.audit.queries, as the read API) ------


def _when(ms: int | None) -> str:
    from streams.model.records import utc_text

    return "-" if ms is None else utc_text(ms)


def cmd_incidents(args: argparse.Namespace) -> int:
    from streams.audit import queries
    from streams.audit.incidents import common_labels

    q = queries.IncidentQuery.parse(filter=args.filter, status=args.status, sort=args.sort, limit=args.limit)
    page = queries.list_incidents(_audit_engine(), q)
    if args.json:
        print(json.dumps(page.to_json(), indent=2, default=str))
        return 0
    print(f"{'LAST SEEN':<20} {'STATUS':<13} {'SEVERITY':<9} {'CATEGORY':<12} {'SESSION':<40} LABELS")
    for i in page.items:
        # several alerts (a group of pods, disks): the labels they share, and how many (`--json` lists each)
        labels = ",".join(f"{k}={v}" for k, v in sorted(common_labels(i).items()))
        if len(i.get("alerts") or []) > 1:
            labels += f" ({len(i['alerts'])} alerts)"
        print(
            f"{_when(i['last_seen']):<20} {i['status']:<13} {i['severity']:<9} {i['category']:<12} "
            f"{i['session_key']:<40} {labels}"
        )
    more = " (more: raise --limit)" if page.next_cursor else ""
    print(f"{len(page.items)} incident(s){more}")
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    import time

    from streams.audit import queries

    found = queries.list_silences(_audit_engine(), int(time.time() * 1000), state=args.state)
    if args.json:
        print(json.dumps({"silences": found}, indent=2))
        return 0
    print(f"{'ID':<28} {'STATE':<8} {'STARTS':<20} {'ENDS':<20} {'BY':<12} MATCHERS  COMMENT")
    for s in found:
        ends = s["expired_at"] if s["expired_at"] is not None and s["expired_at"] < s["ends_at"] else s["ends_at"]
        print(
            f"{s['id']:<28} {s['state']:<8} {_when(s['starts_at']):<20} {_when(ends):<20} {s['created_by']:<12} "
            f"{','.join(s['matchers'])}  {s['comment']}"
        )
    print(f"{len(found)} silence(s)")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from streams.api.app import serve

    return serve(args.host, args.port)


def cmd_ui(args: argparse.Namespace) -> int:
    from functools import partial

    from streams.cli.runbooks import route_test
    from streams.model.runbooks import load_runbook_set
    from streams.ui.app import serve

    # The console's route-test form answers what `opsloop route test` does, over the set loaded now.
    rset = load_runbook_set(_settings().runbooks_dir, channels=channel_specs())
    return serve(args.host, args.port, route_test=partial(route_test, rset))


# -- runbooks, routing, silences (streams.cli.runbooks) -----------------------------


def channel_specs() -> dict[str, ChannelSpec]:
    """The channels routing.yaml's receivers may name: the CLI, the top layer, asks agents (streams never does)."""
    from agents.sinks.channels import specs

    return specs()


def cmd_bench(args: argparse.Namespace) -> int:
    from streams.devtools import bench

    try:
        bench.run(
            events=args.events,
            timeout=args.timeout,
            progress=not args.no_progress,
            baseline=Path(args.baseline) if args.baseline else None,
            ladder=args.ladder,
            repeat=args.repeat,
            storms=bench.parse_storms(args.storms),
            rate_seconds=args.rate_seconds,
            channels=channel_specs(),
            e2e_modes=bench.parse_e2e_modes(args.e2e_modes),
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from streams.cli.runbooks import run_check

    return run_check(args.dir, channel_specs())


def cmd_route(args: argparse.Namespace) -> int:
    if args.action == "rules":
        from streams.cli.alertrules import run_route_rules

        return run_route_rules(args.dir, args.labels, channel_specs(), args.org, args.json)
    from streams.cli.runbooks import run_route_test

    return run_route_test(args.dir, args.labels, channel_specs(), args.verify_receivers)


def cmd_silence(args: argparse.Namespace) -> int:
    if args.action == "list":
        return cmd_silence_list(args)
    if not args.args:
        raise InvalidInputError(
            f"silence {args.action}: needs {'matchers' if args.action == 'add' else 'a silence id'}"
        )
    from streams.cli.runbooks import run_silence
    from streams.model.records import InvalidEventError, check_org_name

    org = args.org or "default"
    try:
        check_org_name(org)
    except InvalidEventError as exc:
        raise InvalidInputError(f"--org: {exc.reason}") from None
    if args.action == "expire" and len(args.args) == 1 and not args.force:
        org = _silence_to_expire(args.args[0], args.org)
    return run_silence(
        args.action, args.args, duration=args.duration, start=args.start, comment=args.comment, by=args.by, org=org
    )


def _silence_to_expire(silence_id: str, org: str | None) -> str:
    """The org of the silence ``silence expire`` names, from the audit store, as the console and
    Alertmanager's API check it: an unknown or already expired id is an error, not a quiet no-op
    (the worker ignores an expiry of a silence it does not hold)."""
    import time

    from streams.audit import queries

    now = int(time.time() * 1000)
    found = [s for s in queries.list_silences(_audit_engine(), now) if s["id"] == silence_id]
    if not found or (org is not None and found[0]["org"] != org):
        where = f" in org {org!r}" if org is not None else ""
        raise NotFoundError(
            f"silence expire: no silence {silence_id!r}{where} in the audit store ('opsloop silence list' shows "
            "them; one added seconds ago may not be recorded yet: --force sends the expiry unchecked)"
        )
    if found[0]["state"] == "expired":
        raise InvalidInputError(f"silence expire: silence {silence_id!r} has already expired")
    return str(found[0]["org"])


# -- replay (streams.replay.run) --------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay.run import ReplayError
    from streams.replay.run import main as replay_main

    try:
        return replay_main(
            _settings(),
            args.since,
            args.until,
            channels=channel_specs(),
            session=args.session,
            runbooks_dir=args.runbooks,
            model=args.model,
            as_json_output=args.json,
            baseline_dir=args.baseline_runbooks,
        )
    except ReplayError as exc:
        print(f"opsloop: replay: {exc}", file=sys.stderr)
        return 1


# -- entry point ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="opsloop",
        description="Event-sourced autonomous operations on Kafka.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    topics = sub.add_parser("topics", help="validate topics.yaml, or create its topics on the cluster")
    topics.add_argument("action", choices=["check", "apply"])
    topics.add_argument("--file", help="topics file (default: topics.yaml of this install)")
    topics.add_argument("--dry-run", action="store_true", help="apply: report only")
    topics.set_defaults(func=cmd_topics)

    produce = sub.add_parser("produce", help="append events from JSON lines (a file or stdin)")
    produce.add_argument("file", nargs="?", help="JSON-lines file of event envelopes (default: stdin)")
    produce.add_argument("--progress", action="store_true", help="show a progress bar even for small inputs")
    produce.set_defaults(func=cmd_produce)

    tail = sub.add_parser("tail", help="print decoded records of topics (no consumer group)")
    tail.add_argument("topics", nargs="+")
    tail.add_argument("--new", action="store_true", help="only records appended from now on")
    tail.add_argument("--max", type=int, default=0, help="stop after this many records")
    tail.add_argument("--idle", type=float, default=None, help="stop after this many idle seconds")
    tail.set_defaults(func=cmd_tail)

    dlq = sub.add_parser("dlq", help="list dead letters, or redrive them through the normal path (once each)")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument("--topic", choices=["events.dlq", "outbox.dlq"], help="one dead-letter topic (default: both)")
    how = dlq.add_mutually_exclusive_group()
    how.add_argument("--reason", help="only dead letters whose reason contains this text")
    how.add_argument("--offset", type=int, help="only the dead letter of the record at this source offset")
    dlq.add_argument(
        "--partition",
        type=int,
        help="only dead letters of records from this source partition (with --offset: the one record)",
    )
    dlq.add_argument(
        "--include-superseded",
        action="store_true",
        help="redrive a notification that an incident fires even when the outbox resolved that incident since",
    )
    dlq.set_defaults(func=cmd_dlq)

    worker = sub.add_parser("worker", help="run a faust worker (joins the consumer group)")
    worker.add_argument("--web-port", type=int, default=None)
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo", help="run the zero-setup demo: local broker, worker, real alerts")
    demo.add_argument("--alerts", type=int, default=6)
    demo.set_defaults(func=cmd_demo)

    dev = sub.add_parser(
        "dev", help="run a local broker, database, ingest, a worker and the projector until Ctrl-C (data kept)"
    )
    dev.add_argument("--data-dir", default=".opsloop/dev", help="where everything is kept (default .opsloop/dev)")
    dev.add_argument("--sqlite", action="store_true", help="SQLite even when PostgreSQL is installed")
    dev.add_argument("--ingest-port", type=int, default=None, help="ingest's port (default: the last run's, or free)")
    dev.set_defaults(func=cmd_dev)

    projector = sub.add_parser(
        "projector", help="fold events, decisions, effects, deliveries into the SQL audit tables"
    )
    projector.add_argument("--batch-max", type=int, default=1000)
    projector.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on /metrics at this port (default: none)",
    )
    projector.add_argument("--metrics-host", default="127.0.0.1", help="the metrics address (default 127.0.0.1)")
    projector.set_defaults(func=cmd_projector)

    audit = sub.add_parser(
        "audit",
        help="a session's timeline (`audit SESSION_KEY [--json]`), `audit prune --older-than 30d`, `audit migrate`",
    )
    audit.add_argument("target", help="a session key, or `prune`, or `migrate`")
    audit.add_argument("--json", action="store_true", help="the timeline as JSON")
    audit.add_argument("--older-than", help="prune: delete rows older than this (e.g. 30d)")
    audit.set_defaults(func=cmd_audit)

    replay = sub.add_parser(
        "replay", help="re-run decide on recorded events and compare; what-if with --runbooks/--model"
    )
    replay.add_argument("--since", required=True, help="ISO 8601, epoch ms or now-2h")
    replay.add_argument("--until", default="now")
    replay.add_argument("--session", help="compare only this session key")
    replay.add_argument("--runbooks", help="what-if: a changed runbook directory")
    replay.add_argument("--model", help="what-if: a classifier artifact to re-classify with")
    replay.add_argument(
        "--baseline-runbooks", help="the runbook directory the recorded decisions used (default: OPSLOOP_RUNBOOKS_DIR)"
    )
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)

    bench = sub.add_parser(
        "bench", help="the ladder: aiokafka, app floor, faust, one and two workers, Alertmanager, on a local broker"
    )
    bench.add_argument("--events", type=int, default=20_000, help="events to pre-load (default 20000)")
    bench.add_argument(
        "--ladder",
        default="L1,L2,L3,L4,R50,L5,L7",
        help="rungs: L1 L2 L3 L4 L4b L5 L6 L7 FLAT E2E and R<pct> (fixed rate, %% of the L4 drain); default %(default)s",
    )
    bench.add_argument("--repeat", type=int, default=1, help="runs of the ladder; the report gives median (range)")
    bench.add_argument(
        "--storms", default="1000,100000", help="FLAT: alerts firing before the measured events (default %(default)s)"
    )
    bench.add_argument("--rate-seconds", type=float, default=20.0, help="how long each R rung sends (default 20)")
    bench.add_argument(
        "--e2e-modes", default="prompt,slow", help="E2E: the receivers, prompt and/or slow (default %(default)s)"
    )
    bench.add_argument("--timeout", type=float, default=600.0, help="seconds each rung may take (default 600)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.add_argument(
        "--baseline", metavar="DIR", help="also time a worker run from this checkout (L4b; e.g. `git archive main`)"
    )
    bench.set_defaults(func=cmd_bench)

    check = sub.add_parser("check", help="validate the runbook set (runbooks, routing, schedules); file:line on error")
    check.add_argument("--dir", help="runbook directory (default: OPSLOOP_RUNBOOKS_DIR or runbooks/)")
    check.set_defaults(func=cmd_check)

    route = sub.add_parser(
        "route",
        help="`route test label=value ...`: the runbook, routes and receivers an event gets; "
        "`route rules FILE...`: the same for every alert of Prometheus rule files",
    )
    route.add_argument("action", choices=["test", "rules"])
    route.add_argument(
        "labels",
        nargs="+",
        help="test: label=value pairs (also category, severity, kind, event_type, source, org); "
        "rules: Prometheus rule files (groups:, or PrometheusRule objects)",
    )
    route.add_argument("--json", action="store_true", help="rules: a JSON array, one object per rule")
    route.add_argument("--org", default="default", help="rules: the org the alerts come from (default: default)")
    route.add_argument("--dir", help="runbook directory (default: OPSLOOP_RUNBOOKS_DIR or runbooks/)")
    route.add_argument(
        "--verify-receivers", help="exit 1 unless the first notification goes to exactly these (comma-separated)"
    )
    route.set_defaults(func=cmd_route)

    silence = sub.add_parser(
        "silence", help="`silence add MATCHER... --duration 2h`, `silence expire ID`, `silence list [--state S]`"
    )
    silence.add_argument("action", choices=["add", "expire", "list"])
    silence.add_argument("args", nargs="*", help='matchers like service="db" (add) or a silence id (expire)')
    silence.add_argument("--state", choices=["active", "pending", "expired"], help="list: only silences in this state")
    silence.add_argument("--json", action="store_true", help="list: as JSON")
    silence.add_argument("--duration", default="1h")
    silence.add_argument("--start", help="ISO 8601 start (default: now)")
    silence.add_argument("--comment", default="")
    silence.add_argument("--by", default="cli", help="who silences (recorded)")
    silence.add_argument("--org", help="add: the silence's org (default: default); expire: must be the silence's org")
    silence.add_argument(
        "--force", action="store_true", help="expire: send the expiry without looking the id up in the audit store"
    )
    silence.set_defaults(func=cmd_silence)

    incidents = sub.add_parser(
        "incidents", help="`incidents list [--filter MATCHERS] [--status S] [--json]`: the incidents table"
    )
    incidents.add_argument("action", choices=["list"])
    incidents.add_argument(
        "--filter", action="append", help='Alertmanager matchers, e.g. \'service=~"db.*",severity="urgent"\''
    )
    incidents.add_argument("--status", help="firing, acknowledged, silenced, resolved (comma-separated)")
    incidents.add_argument("--sort", default="-last_seen", help="last_seen, first_seen, session_key; '-' descending")
    incidents.add_argument("--limit", type=int, default=50)
    incidents.add_argument("--json", action="store_true")
    incidents.set_defaults(func=cmd_incidents)

    api = sub.add_parser("api", help="serve the read API (/api/v1: incidents, silences, dead letters)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=port_number, default=8081)
    api.set_defaults(func=cmd_api)

    ui = sub.add_parser(
        "ui",
        help="serve the web console (incidents, timelines, acknowledge, silences, dead letters and redrive, route test)",
    )
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=port_number, default=8082)
    ui.set_defaults(func=cmd_ui)

    sub.add_parser(
        "classifier", help="train / eval the incident classifier (see `opsloop classifier -h`)", add_help=False
    )
    sub.add_parser("ingest", help="serve the HTTP ingest endpoints (see `opsloop ingest -h`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["classifier"]:
        return cmd_classifier(argv[1:])
    if argv[:1] == ["ingest"]:
        return cmd_ingest(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)  # each subcommand's cmd_* returns an exit code
        return code
    except OpsloopError as exc:
        print(f"opsloop: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of the output went away (`opsloop audit KEY --json | head`): stop quietly, as a Unix
        # tool stopped by SIGPIPE does, not with a traceback (and none when Python flushes stdout at exit)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
            print(f"opsloop: {kafka_unreachable(exc)}", file=sys.stderr)
        elif isinstance(exc, OperationalError):
            print(f"opsloop: {database_unreachable(exc)}", file=sys.stderr)
        else:
            raise
        return EXIT_UNAVAILABLE


def database_unreachable(exc: Exception) -> str:
    """One line for a database that cannot be used, with any secret the environment holds masked all the same."""
    from streams.db import outage_reason
    from streams.logs import SECRETS, register_secret_env

    register_secret_env()
    return SECRETS.mask(f"the database is unavailable ({outage_reason(exc)}): is it up, and DATABASE_URL right?")


def kafka_unreachable(exc: Exception) -> str:
    """One line for a broker that cannot be reached: aiokafka's bootstrap error lists (host, port, family) tuples."""
    import re

    hosts = re.findall(r"\('([^']*)', (\d+), <AddressFamily", str(exc))
    where = (
        ", ".join(f"{host}:{port}" for host, port in hosts)
        if hosts
        else str(exc).removeprefix("KafkaConnectionError: ")
    )
    return f"Kafka is unreachable ({where or type(exc).__name__}): is the broker up, and KAFKA_BOOTSTRAP right?"


if __name__ == "__main__":
    sys.exit(main())
