"""The console's dead-letters page on the real broker: listed with reasons, redriven once, refused without a grant.

Dead letters are put on ``outbox.dlq`` as the sinks write them (streams.kafka.deadletter);
a redrive is read back from ``outbox`` and ``dlq.redriven`` (the functions ``opsloop dlq``
uses). The delivery that follows a redrive is the full-stack browser test's (test_browser.py).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

from streams.kafka import redrive
from streams.kafka.deadletter import dead_letter
from streams.kafka.producer import EventProducer, now_ms
from streams.kafka.reader import TopicReader
from streams.logs import register_secrets
from tests.ui.seed import XSS
from tests.ui.test_console import ALICE, BOB, csrf, html_escaped, login, run

SECRET = "dlq-page-SECRET-0b6c1d2e3f"  # registered as the log mask's, as opsloop ui registers its settings' secrets
PAYLOAD_SECRET = "payload-SECRET-never-shown-77"  # inside a letter's record: the page never renders records
SAME = f"slack answered 400: invalid_payload {XSS}"


async def put_letters(settings) -> list[str]:
    """Three dead letters of outbox records (two of one reason); their marks."""
    source = settings.topic_prefix + "outbox"
    letters = [
        (3, SAME, b"s-1"),
        (4, SAME, b"s-2"),
        (9, f"OPSLOOP_SLACK_X is not set; the URL was {SECRET}", b"s-3"),
    ]
    async with EventProducer(settings) as producer:
        # a well-formed record of another type on the dead-letter topic (any producer can write one): the
        # page answered 500 (KeyError: 'source_topic'), as `opsloop dlq list` stopped; now it is not listed
        stray = {"effect_id": "x", "channel": "slack", "status": "delivered", "completed_at": 1}
        await producer.send_record("outbox.dlq", b"stray", "opsloop.Delivery", stray)
        for offset, reason, key in letters:
            record = dead_letter(
                reason=reason,
                error="PermanentError",
                topic=source,
                partition=0,
                offset=offset,
                key=key,
                value=b"effect-bytes " + key + b" " + PAYLOAD_SECRET.encode(),
                failed_at=now_ms(),
                stage="sink:slack",
            )
            await producer.send_record("outbox.dlq", key, "opsloop.DeadLetter", record)
    return [f"outbox:0:{offset}" for offset, _, _ in letters]


async def outbox_values(settings) -> list[bytes]:
    async with TopicReader(settings, ["outbox"]) as reader:
        return [r.raw for r in await reader.read_to_end()]


def test_dead_letters_are_listed_and_redriven_once_by_a_login_with_every_org(topics, engine, caplog):
    settings = topics
    register_secrets(SECRET)
    marks = asyncio.run(put_letters(settings))

    async def script(client):
        out = {
            "anonymous": (await client.get("/deadletters", allow_redirects=False)).status,
            "anonymous_post": (await client.post("/deadletters/redrive", data={"mark": marks[2]})).status,
        }
        await login(client, BOB)  # limited to globex: dead letters hold every org's records
        token = csrf(await (await client.get("/silences")).text())
        out["bob"] = (await client.get("/deadletters")).status
        r = await client.post("/deadletters/redrive", data={"csrf": token, "mark": marks[2]})
        out["bob_post"] = r.status
        await login(client, ALICE)
        r = await client.get("/deadletters")
        text = await r.text()
        out["page"] = (r.status, text)
        token = csrf(text)
        out["no_csrf"] = (await client.post("/deadletters/redrive", data={"mark": marks[2]})).status
        out["outbox_after_refusals"] = len(await outbox_values(settings))

        async def press(**fields):
            r = await client.post("/deadletters/redrive", data={"csrf": token, **fields}, allow_redirects=False)
            return r.status, parse_qs(urlsplit(r.headers.get("Location", "")).query)

        out["one"] = await press(mark=marks[2])
        out["again"] = await press(mark=marks[2])
        out["reason"] = await press(reason=html_unescape_reason(text))
        out["unknown"] = (await press(mark="outbox:0:999"))[0]
        r = await client.get("/deadletters?sent=3&of=3")
        out["after"] = await r.text()
        return out

    caplog.set_level("INFO", logger="streams.ui")
    sent, out = run(engine, script, kafka=settings)
    assert (out["anonymous"], out["anonymous_post"]) == (303, 401)
    assert (out["bob"], out["bob_post"]) == (403, 403)
    status, text = out["page"]
    assert status == 200
    assert text.count('class="letter"') == 3 and "Redrive all 2 with this reason" in text
    assert XSS not in text and html_escaped(SAME) in text  # a reason is text
    assert SECRET not in text and "OPSLOOP_SLACK_X is not set" in text  # masked as in the log
    assert PAYLOAD_SECRET not in text and ALICE not in text
    assert out["no_csrf"] == 403 and out["outbox_after_refusals"] == 0
    assert out["one"] == (303, {"sent": ["1"], "of": ["1"]})
    assert out["again"] == (303, {"sent": ["0"], "of": ["1"]})  # the mark: once per source record
    assert out["reason"] == (303, {"sent": ["2"], "of": ["2"]})
    assert out["unknown"] == 404
    assert "3 of 3 dead letter(s) redriven." in out["after"] and out["after"].count('class="letter redriven"') == 3
    assert 'id="redrive-' not in out["after"]
    # Each letter's record is back on outbox once, byte for byte, and marked.
    values = asyncio.run(outbox_values(settings))
    assert sorted(values) == sorted(b"effect-bytes s-%d %s" % (i, PAYLOAD_SECRET.encode()) for i in (1, 2, 3))
    _, done = asyncio.run(redrive.read(settings, ["outbox.dlq"]))
    assert done == set(marks)
    assert sent == []
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"redrive of {marks[2]} (outbox.dlq) by alice: redriven to outbox" in m for m in logged)
    assert any(f"redrive of {marks[2]} (outbox.dlq) by alice: already redriven" in m for m in logged)
    assert not any(ALICE in m or PAYLOAD_SECRET in m for m in logged)


def html_unescape_reason(text: str) -> str:
    """The reason the "Redrive all" button posts, read from the page's form (what a browser sends)."""
    import html
    import re

    found = re.search(r'name="reason" value="([^"]*)"', text)
    assert found, "no Redrive all button"
    return html.unescape(found.group(1))
