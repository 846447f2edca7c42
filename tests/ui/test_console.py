"""The console on a SQLite audit store with a recording producer: login, CSRF, escaping, ack and silence events."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.api.auth import ApiAuth
from streams.db import make_engine
from streams.ui.app import create_app
from streams.ui.auth import SessionSigner, console_auth
from tests.ui.seed import XSS, seed

ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210"


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    seed(engine)
    yield engine
    engine.dispose()


def csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


def run(engine, script) -> tuple[list[dict[str, Any]], Any]:
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    auth = ApiAuth({"alice": ALICE, "bob": BOB}, {"bob": frozenset({"globex"})})

    async def go():
        app = create_app(engine, auth, send, signer=SessionSigner(b"k" * 32))
        async with TestClient(TestServer(app)) as client:
            return await script(client)

    return sent, asyncio.run(go())


async def login(client, token: str = ALICE, next_: str = "/"):
    form = await client.get("/login?next=" + quote(next_))
    return await client.post(
        "/login", data={"csrf": csrf(await form.text()), "token": token, "next": next_}, allow_redirects=False
    )


def test_every_page_needs_a_login_and_login_needs_the_right_token(engine):
    async def script(client):
        out = {}
        r = await client.get("/?filter=x", allow_redirects=False)
        out["page"] = (r.status, r.headers.get("Location"))
        out["post"] = (await client.post("/silences", data={"matchers": 'a="b"'})).status
        out["forged"] = (
            await client.get("/", cookies={"opsloop_session": "eyJ1IjoiYWxpY2UifQ.00"}, allow_redirects=False)
        ).status
        out["wrong"] = (await login(client, "nope")).status
        no_csrf = await client.post("/login", data={"token": ALICE}, allow_redirects=False)
        out["no_csrf"] = no_csrf.status
        r = await login(client, ALICE, "/silences")
        out["ok"] = (r.status, r.headers["Location"], r.headers["Set-Cookie"])
        out["evil_next"] = (await login(client, ALICE, "//evil.example")).headers["Location"]
        return out

    sent, out = run(engine, script)
    assert out["page"][0] == 303 and out["page"][1] == "/login?next=%2F%3Ffilter%3Dx"
    assert out["post"] == 401 and out["forged"] == 303
    assert out["wrong"] == 401 and out["no_csrf"] == 403
    status, location, cookie = out["ok"]
    assert (status, location) == (303, "/silences")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ALICE not in cookie
    assert out["evil_next"] == "/"
    assert sent == []


def test_incidents_filter_sort_pages_and_escape(engine, caplog):
    async def script(client):
        await login(client)
        pages = {}
        for name, path in {
            "firing": "/",
            "filtered": "/?filter=" + quote('service=~"db.*",severity="urgent"') + "&sort=session_key",
            "bad": "/?filter=" + quote("nonsense"),
            "paged": "/?sort=session_key&limit=2",
            "bob": "/",
        }.items():
            if name == "bob":
                await login(client, BOB)
            r = await client.get(path)
            pages[name] = (r.status, await r.text(), dict(r.headers))
        return pages

    caplog.set_level("INFO", logger="streams.ui")
    _, pages = run(engine, script)
    status, text, headers = pages["firing"]
    assert status == 200 and 'http-equiv="refresh"' in text
    assert "acme:db:db-1" in text and "globex:db:db-9" in text and "acme:old:o-1" not in text  # firing only
    assert XSS not in text and html_escaped(XSS) in text  # the probe is text
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert ALICE not in text and BOB not in text
    status, text, _ = pages["filtered"]
    assert re.findall(r'href="/incident/([^"]+)"', text) == [
        quote(k, safe="") for k in ("acme:db:db-1", "acme:db:db-2", "globex:db:db-9")
    ]
    assert pages["bad"][0] == 400 and "filter" in pages["bad"][1]
    assert 'rel="next"' in pages["paged"][1]
    assert "globex:db:db-9" in pages["bob"][1] and "acme:db:db-1" not in pages["bob"][1]  # bob: globex only
    assert any("GET / by alice -> 200" in r.getMessage() for r in caplog.records)
    assert not any(ALICE in r.getMessage() for r in caplog.records)


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_acknowledge_produces_the_ack_event_and_needs_csrf(engine, caplog):
    key = "acme:db:db-1"

    async def script(client):
        await login(client)
        page = await client.get("/incident/" + quote(key, safe=""))
        text = await page.text()
        action = f"/incident/{quote(key, safe='')}/ack"
        no_token = await client.post(action, data={}, allow_redirects=False)
        wrong = await client.post(action, data={"csrf": "x" * 43}, allow_redirects=False)
        ok = await client.post(action, data={"csrf": csrf(text)}, allow_redirects=False)
        await login(client, BOB)
        other_org = await client.post(action, data={"csrf": csrf(await (await client.get("/silences")).text())})
        return page.status, text, no_token.status, wrong.status, ok.status, ok.headers["Location"], other_org.status

    caplog.set_level("INFO", logger="streams.ui")
    sent, (status, text, no_token, wrong, ok, location, other_org) = run(engine, script)
    assert status == 200 and 'id="timeline"' in text and "alert.firing" in text
    assert (no_token, wrong, ok, other_org) == (403, 403, 303, 403)
    (event,) = sent
    assert (event["type"], event["session_key"], event["org"], event["payload"]["actor"]) == (
        "ack",
        key,
        "acme",
        "alice",
    )
    assert json.loads(event["payload"]["body_json"]) == {"action": "ack", "via": "console"}
    assert location.endswith("?acked=" + event["event_id"])
    assert any(f"ack of {key} (org acme) by alice" in r.getMessage() for r in caplog.records)


def test_a_silence_from_the_form_is_the_cli_event(engine):
    async def script(client):
        await login(client)
        form = await (await client.get("/silences")).text()
        bad = await client.post(
            "/silences", data={"csrf": csrf(form), "matchers": "nonsense", "duration": "2h", "org": "acme"}
        )
        ok = await client.post(
            "/silences",
            data={
                "csrf": csrf(form),
                "matchers": 'service="db-main"',
                "duration": "2h",
                "org": "acme",
                "comment": "deploy",
            },
            allow_redirects=False,
        )
        return bad.status, ok.status

    sent, (bad, ok) = run(engine, script)
    assert (bad, ok) == (400, 303)
    (event,) = sent
    body = json.loads(event["payload"]["body_json"])
    assert (event["type"], event["org"], event["session_key"]) == ("silence.created", "acme", "acme:silences")
    assert body["matchers"] == ['service="db-main"'] and body["created_by"] == "alice" and body["comment"] == "deploy"
    assert body["ends_at"] - body["starts_at"] == 2 * 3600 * 1000


def test_console_tokens_come_from_their_own_variable():
    auth = console_auth({"OPSLOOP_UI_TOKENS": f"alice={ALICE}", "OPSLOOP_API_TOKENS": "x=y"})
    assert auth.names == ["alice"]
    with pytest.raises(ValueError, match="OPSLOOP_UI_TOKENS"):
        console_auth({})
