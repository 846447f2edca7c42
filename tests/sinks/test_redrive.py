"""`opsloop dlq list / redrive` on the real broker with a real worker: a dead letter re-enters once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from streams.cli.main import main
from streams.kafka import redrive
from streams.kafka.producer import EventProducer
from tests.sinks.fakes import FakeServices
from tests.sinks.helpers import make_effect
from tests.sinks.test_agent import put, read, routing_file

pytestmark = pytest.mark.integration


def test_a_notification_dead_lettered_for_a_missing_variable_is_redriven_and_delivered_once(
    app_topics, worker_factory, fakes: FakeServices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    tag = uuid.uuid4().hex[:6]
    effect = make_effect("slack-a", "slack", title=f"redrive {tag}", session_key=f"r-{tag}", effect_id=f"eff-{tag}")
    eid = effect["effect_id"]

    def sent() -> int:
        return sum(1 for r in fakes.requests if f"redrive {tag}" in r.body.decode(errors="replace"))

    def receipts(records, status: str) -> list:
        return [
            r
            for r in records
            if r.topic == "deliveries" and r.value["effect_id"] == eid and r.value["status"] == status
        ]

    # 1. The receiver's variable is missing: the effect is dead-lettered, naming the variable.
    first = worker_factory(**{k: v for k, v in env.items() if k != "OPSLOOP_E2E_SLACK_A"})
    asyncio.run(put(settings, [effect]))
    records = asyncio.run(read(settings, lambda rs: receipts(rs, "dead") and any(r.topic == "outbox.dlq" for r in rs)))
    letter = next(r for r in records if r.topic == "outbox.dlq")
    assert "OPSLOOP_E2E_SLACK_A" in letter.value["reason"] and letter.value["key"] == f"r-{tag}".encode()
    assert sent() == 0
    first.stop()

    # 2. Listed with reason, stage, source position and key.
    assert main(["dlq", "list", "--topic", "outbox.dlq"]) == 0
    listed = capsys.readouterr().out
    source = f"outbox[{letter.value['partition']}]@{letter.value['offset']}"
    assert f"source={source}" in listed and "stage=sink:slack" in listed and f"key=r-{tag}" in listed
    assert "OPSLOOP_E2E_SLACK_A" in listed and "0 already redriven" in listed

    # 3. Fixed (the variable set, the worker restarted), redriven: delivered once.
    worker_factory(**env)
    assert main(["dlq", "redrive", "--topic", "outbox.dlq", "--reason", "OPSLOOP_E2E_SLACK_A"]) == 0
    assert "redriven to outbox" in capsys.readouterr().out
    records = asyncio.run(read(settings, lambda rs: receipts(rs, "delivered")))
    assert sent() == 1

    # 4. Redriven again: refused by the mark; nothing is produced.
    assert main(["dlq", "redrive", "--topic", "outbox.dlq", "--offset", str(letter.value["offset"])]) == 0
    assert "already redriven" in capsys.readouterr().out
    assert main(["dlq", "list", "--topic", "outbox.dlq"]) == 0
    assert "redriven  reason=" in capsys.readouterr().out

    # 5. The record produced twice anyway (a crash between the record and its mark): the ledger skips the copy.
    mark = f"outbox:{letter.value['partition']}:{letter.value['offset']}"

    async def copy() -> None:
        async with EventProducer(settings) as producer:
            await producer.send_raw(
                "outbox", letter.value["key"], letter.value["value"], [(redrive.HEADER, mark.encode())]
            )

    asyncio.run(copy())
    records = asyncio.run(read(settings, lambda rs: receipts(rs, "skipped")))
    assert "already delivered" in receipts(records, "skipped")[0].value["error"]
    assert sent() == 1, "a redriven notification was sent twice"
    engine = sa.create_engine(settings.ledger_url())
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, claims, redrive FROM delivery_ledger WHERE effect_id = :e"), {"e": eid}
        ).one()
    engine.dispose()
    # refused at intake the first time (the variable missing: no ledger row, no claim), so the redriven
    # record's delivery is the row's first claim, and the copy was skipped as already delivered
    assert tuple(row) == ("delivered", 1, None), mark


def test_a_notification_that_an_incident_fires_is_not_redriven_after_the_outbox_resolved_it(
    app_topics, worker_factory, fakes: FakeServices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fault probe: notices dead-lettered in 45 s of 429s, redriven ten minutes later, reached Slack after the
    same incidents' "resolved" (and a PagerDuty trigger would re-open the incident). A trigger whose session the
    outbox resolved after it is left where it is, saying so; --include-superseded redrives it all the same."""
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    tag = uuid.uuid4().hex[:6]
    session = f"r-{tag}"
    trigger = make_effect("slack-a", "slack", title=f"fires {tag}", session_key=session, effect_id=f"t-{tag}")
    resolve = make_effect("slack-a", "slack", title=f"resolved {tag}", session_key=session, action="resolve")
    other = make_effect("slack-a", "slack", title=f"other {tag}", session_key=f"o-{tag}", effect_id=f"o-{tag}")

    def dead(rs) -> list:
        return [r for r in rs if r.topic == "outbox.dlq" and tag.encode() in (r.value.get("value") or b"")]

    first = worker_factory(**{k: v for k, v in env.items() if k != "OPSLOOP_E2E_SLACK_A"})
    asyncio.run(put(settings, [trigger, other, resolve]))  # all dead-lettered: the variable is missing
    asyncio.run(read(settings, lambda rs: len(dead(rs)) == 3))
    first.stop()
    assert main(["dlq", "redrive", "--topic", "outbox.dlq", "--reason", "OPSLOOP_E2E_SLACK_A"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("not redriven: the incident resolved since (outbox[" in line for line in lines) == 1, lines
    assert sum("redriven to outbox" in line for line in lines) == 2, lines  # the other session's, the resolve
    assert (
        main(["dlq", "redrive", "--topic", "outbox.dlq", "--reason", "OPSLOOP_E2E_SLACK_A", "--include-superseded"])
        == 0
    )
    assert "redriven to outbox" in capsys.readouterr().out
