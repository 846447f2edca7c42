"""The console on a SQLite audit store with a recording producer: login, CSRF, escaping, ack and silence events,
the silence preview and the route-test form (over the starter runbook set)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.api.auth import ApiAuth
from streams.model.matchers import make_matcher
from streams.ui.app import create_app
from streams.ui.auth import SessionSigner, console_auth
from tests.ui.seed import XSS

ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210"


def csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


def run(engine, script, **options: Any) -> tuple[list[dict[str, Any]], Any]:
    """Run ``script(client)`` against the console (``options``: create_app's, e.g. kafka=, route_test=)."""
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    auth = ApiAuth({"alice": ALICE, "bob": BOB}, {"bob": frozenset({"globex"})})

    async def go():
        app = create_app(engine, auth, send, signer=SessionSigner(b"k" * 32), **options)
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
        # a CR LF in next= made aiohttp refuse the Location header and drop the connection without an answer
        form = await (await client.get("/login")).text()
        crlf = await client.post(
            "/login",
            data={"csrf": csrf(form), "token": ALICE, "next": "/silences\r\nSet-Cookie: x=y"},
            allow_redirects=False,
        )
        out["crlf_next"] = (crlf.status, crlf.headers["Location"], "x=y" in crlf.headers.getall("Set-Cookie", []))
        return out

    sent, out = run(engine, script)
    assert out["page"][0] == 303 and out["page"][1] == "/login?next=%2F%3Ffilter%3Dx"
    assert out["post"] == 401 and out["forged"] == 303
    assert out["wrong"] == 401 and out["no_csrf"] == 403
    status, location, cookie = out["ok"]
    assert (status, location) == (303, "/silences")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ALICE not in cookie
    assert out["evil_next"] == "/"
    assert out["crlf_next"] == (303, "/", False)
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
    assert location.endswith("?" + urlencode({"done": "ack", "event": event["event_id"]}))
    assert any(f"ack of {key} (org acme) by alice" in r.getMessage() for r in caplog.records)


def test_the_buttons_name_the_incident_the_page_shows_so_a_page_left_open_does_not_act_on_the_next_one(engine):
    """As a message's signed links do: decide answers an action naming another incident ``stale-action``."""
    key = "acme:db:db-1"
    path = f"/incident/{quote(key, safe='')}"

    async def script(client):
        await login(client)
        text = await (await client.get(path)).text()
        form = {"csrf": csrf(text), "episode": re.search(r'name="episode" value="([^"]*)"', text).group(1)}
        as_shown = await client.post(f"{path}/ack", data=form, allow_redirects=False)
        bad = await client.post(f"{path}/approve", data={**form, "episode": "2; drop"}, allow_redirects=False)
        return text, as_shown.status, bad.status, await bad.text()

    sent, (text, as_shown, bad, reason) = run(engine, script)
    assert 'id="incident-episode">#1<' in text
    assert text.count('<input type="hidden" name="episode" value="1">') == text.count('class="action"') == 5
    assert as_shown == 303 and bad == 400 and "episode is not a number" in reason
    (event,) = sent  # the malformed one sent nothing
    assert event["type"] == "ack" and event["labels"]["episode"] == "1"


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


def test_a_silence_of_a_login_held_to_its_orgs_must_select_something_as_alertmanager_asks(engine):
    """The org matcher the console adds for such a login selects something by itself, so the check ran on it and
    `service!="web"` (every alert of the org but web's, and those without a service) was created, where the same
    silence through amtool is refused."""

    async def script(client):
        await login(client, BOB)
        form = await (await client.get("/silences")).text()
        fields = {"csrf": csrf(form), "duration": "1h", "org": "globex"}
        out = {}
        for matchers in ('service!="web"', 'alertname=~".*"', 'service="db",org=~"acme"', 'service="db",org!="globex"'):
            r = await client.post("/silences", data={**fields, "matchers": matchers}, allow_redirects=False)
            out[matchers] = (r.status, await r.text())
        ok = await client.post("/silences", data={**fields, "matchers": 'service="web"'}, allow_redirects=False)
        return out, ok.status

    sent, (refused, ok) = run(engine, script)
    for matchers, (status, text) in refused.items():
        # an org matcher naming another org was replaced by the login's own: a silence of all of db in globex
        why = "does not select org" if "org" in matchers else "a silence must select something"
        assert status == 400 and why in html.unescape(text), matchers
    assert ok == 303 and len(sent) == 1
    body = json.loads(sent[0]["payload"]["body_json"])
    assert body["matchers"] == ['service="web"', 'org="globex"']


def test_console_tokens_come_from_their_own_variable():
    auth = console_auth({"OPSLOOP_UI_TOKENS": f"alice={ALICE}", "OPSLOOP_API_TOKENS": "x=y"})
    assert auth.names == ["alice"]
    with pytest.raises(ValueError, match="OPSLOOP_UI_TOKENS"):
        console_auth({})


def test_silence_preview_lists_the_firing_incidents_it_would_mute_and_creates_nothing(engine, caplog):
    async def script(client):
        out = {}
        await login(client)
        form = csrf(await (await client.get("/silences")).text())
        fields = {"csrf": form, "matchers": 'service=~"db.*"', "duration": "1h", "org": "acme", "comment": "c"}
        out["no_csrf"] = (await client.post("/silences", data={**fields, "csrf": "", "action": "preview"})).status
        r = await client.post("/silences", data={**fields, "action": "preview"})
        out["preview"] = (r.status, await r.text())
        r = await client.post(
            "/silences", data={**fields, "matchers": str(make_matcher("service", "=", XSS)), "action": "preview"}
        )
        out["xss"] = (r.status, await r.text())
        r = await client.post("/silences", data={**fields, "matchers": "nonsense", "action": "preview"})
        out["bad"] = r.status
        await login(client, BOB)
        bob = csrf(await (await client.get("/silences")).text())
        r = await client.post("/silences", data={**fields, "csrf": bob, "org": "globex", "action": "preview"})
        out["bob"] = (r.status, await r.text())
        out["bob_acme"] = (await client.post("/silences", data={**fields, "csrf": bob, "action": "preview"})).status
        r = await client.post(
            "/silences",
            data={**fields, "csrf": bob, "org": "globex", "action": "create", "matchers": 'org="acme",service=~"db.*"'},
            allow_redirects=False,
        )
        out["create_acme"] = (r.status, await r.text())
        r = await client.post(
            "/silences",
            data={
                **fields,
                "csrf": bob,
                "org": "globex",
                "action": "create",
                "matchers": 'org=~"glob.*",service=~"db.*"',
            },
            allow_redirects=False,
        )
        out["create"] = r.status
        return out

    caplog.set_level("INFO", logger="streams.ui")
    sent, out = run(engine, script)
    assert out["no_csrf"] == 403
    status, text = out["preview"]
    assert status == 200
    preview = text.split('id="silence-preview"', 1)[1]
    keys = re.findall(r'href="/incident/([^"]+)"', preview)
    # firing incidents whose service matches db.* (db-x is globex's: alice reads every org), not the resolved one
    assert sorted(keys) == sorted(quote(k, safe="") for k in ("acme:db:db-1", "acme:db:db-2", "globex:db:db-9"))
    assert "3 firing incident(s) would be muted" in text
    assert 'value="service=~&quot;db.*&quot;"' in text  # the form keeps what was typed, for Create
    status, text = out["xss"]
    assert status == 200 and XSS not in text and html_escaped(XSS) in text
    assert re.findall(r'href="/incident/([^"]+)"', text.split('id="silence-preview"', 1)[1]) == [
        quote("acme:xss:x-1", safe="")
    ]
    assert out["bad"] == 400
    status, text = out["bob"]  # bob reads globex only: its incidents only
    assert status == 200 and "1 firing incident(s) would be muted" in text and "acme:db" not in text
    assert out["bob_acme"] == 403
    # bob may act for globex only: an org matcher naming acme is refused (it used to be replaced by globex's, a
    # silence of globex's db.* that bob never asked for), one that selects globex is narrowed to it
    status, text = out["create_acme"]
    assert status == 400 and "does not select org &#x27;globex&#x27;" in text
    assert out["create"] == 303
    (event,) = sent  # the previews and the refused Create produced nothing; Create produced one silence
    assert (event["type"], event["org"], event["payload"]["actor"]) == ("silence.created", "globex", "bob")
    assert json.loads(event["payload"]["body_json"])["matchers"] == ['service=~"db.*"', 'org="globex"']
    assert not any(ALICE in r.getMessage() or BOB in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def starter_route_test():
    from functools import partial

    from agents.sinks.channels import specs
    from streams.cli.runbooks import route_test
    from streams.model.runbooks import load_runbook_set
    from streams.settings import ROOT

    return partial(route_test, load_runbook_set(ROOT / "runbooks", channels=specs()))


def test_route_test_form_answers_what_the_cli_answers(engine, starter_route_test, caplog):
    from streams.cli.runbooks import route_test as cli_route_test

    def get(client, labels: str, org: str = ""):
        return client.get("/route?" + urlencode({"labels": labels, "org": org}))

    async def script(client):
        out = {"anonymous": (await client.get("/route?labels=a%3Db", allow_redirects=False)).status}
        await login(client)
        out["form"] = await (await client.get("/route")).text()
        r = await get(client, "alertname=PgDown,severity=critical,service=db", "acme")
        out["pg"] = (r.status, await r.text())
        r = await get(client, "alertname=HostHighCpuLoad,severity=warning," + str(make_matcher("service", "=", XSS)))
        out["xss"] = (r.status, await r.text())
        out["regex"] = (await get(client, 'service=~"db.*"')).status
        out["bad_severity"] = (await get(client, "alertname=X,severity=sky-high")).status
        await login(client, BOB)
        out["bob_acme"] = (await get(client, "alertname=PgDown", "acme")).status
        out["bob_label"] = (await get(client, "alertname=PgDown,org=acme", "globex")).status
        out["bob_globex"] = (await get(client, "alertname=PgDown,severity=critical", "globex")).status
        return out

    caplog.set_level("INFO", logger="streams.ui")
    sent, out = run(engine, script, route_test=starter_route_test)
    assert out["anonymous"] == 303
    assert 'id="route-test"' in out["form"] and 'id="route-answer"' not in out["form"]
    status, text = out["pg"]
    assert status == 200
    answer = dict(re.findall(r"<tr class=\"answer-[^\"]*\"><th>([^<]*)</th><td>([^<]*)</td></tr>", text))
    expected = cli_route_test(
        starter_route_test.args[0], ["alertname=PgDown", "severity=critical", "service=db", "org=acme"]
    )
    assert answer == {k.strip(): html_escaped(v.strip()) for k, _, v in (line.partition(":") for line in expected)}
    assert answer["runbook"].startswith("target-down") and answer["notify"] == "oncall-slack"
    assert "oncall-slack" in answer["route"] and "pagerduty-primary" in answer["escalation"]
    status, text = out["xss"]
    assert status == 200 and "<script" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "high-cpu" in text
    assert (out["regex"], out["bad_severity"]) == (400, 400)
    assert (out["bob_acme"], out["bob_label"], out["bob_globex"]) == (403, 403, 200)
    assert sent == []
    assert any("route test by alice: alertname=PgDown severity=critical service=db org=acme" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_pages_answer_503_without_what_they_need(engine):
    async def script(client):
        await login(client)
        return (await client.get("/route?labels=a%3Db")).status, (await client.get("/deadletters")).status

    assert run(engine, script)[1] == (503, 503)


def test_every_message_link_action_is_a_button_producing_the_links_event(engine, caplog):
    """Approve, Reject and Silence 1 h / 4 h produce what the signed links produce (streams.core.actions)."""
    from streams.core.acklinks import ACTIONS
    from streams.core.actions import action_event

    key = "acme:db:db-1"
    path = f"/incident/{quote(key, safe='')}"

    async def script(client):
        await login(client)
        text = await (await client.get(path)).text()
        statuses = {}
        for action in ACTIONS:
            r = await client.post(f"{path}/{action}", data={"csrf": csrf(text)}, allow_redirects=False)
            statuses[action] = (r.status, r.headers.get("Location", ""))
        statuses["bogus"] = ((await client.post(f"{path}/bogus", data={"csrf": csrf(text)})).status, "")
        statuses["no_csrf"] = ((await client.post(f"{path}/approve", data={}, allow_redirects=False)).status, "")
        return text, statuses

    caplog.set_level("INFO", logger="streams.ui")
    sent, (text, statuses) = run(engine, script)
    for action in ACTIONS:
        assert f'action="{path}/{action}"' in text and f'id="{action}"' in text
        status, location = statuses[action]
        assert status == 303 and f"done={action}" in location
    assert statuses["bogus"][0] == 405 and statuses["no_csrf"][0] == 403
    assert [e["type"] for e in sent] == [
        "ack",
        "remediation.approved",
        "remediation.rejected",
        "silence.created",
        "silence.created",
    ]
    for action, event in zip(ACTIONS, sent, strict=True):
        unique = event["payload"]["delivery_id"]
        link = action_event(
            action=action,
            session=key,
            org="acme",
            actor="alice",
            unique=unique,
            now=event["occurred_at"],
            via="console",
        )
        assert event == link  # the very event the link for this action would produce
    silence = json.loads(sent[3]["payload"]["body_json"])
    assert silence["matchers"] == [f'opsloop_session="{key}"'] and silence["ends_at"] - silence["starts_at"] == 3600_000
    # "Silence with these labels" fills the silences form with this incident's labels and org
    link = re.search(r'id="silence-matchers" href="([^"]+)"', text).group(1)
    assert "/silences?" in link and "org=acme" in link and "service%3D%22db-main%22" in html.unescape(link)


def test_expire_a_silence_from_its_row(engine):
    from streams.audit import store
    from streams.audit.store import Position
    from streams.model.silences import silence_event, silence_from_json

    now = int(time.time() * 1000)

    def made(sid: str, org: str, ends: int) -> dict:
        body = {"id": sid, "matchers": ['service="db-main"'], "starts_at": now - 60_000, "ends_at": ends}
        record = silence_event(silence_from_json({**body, "created_by": "ops"}), org=org, now_ms=now - 60_000)
        return {**record, "received_at": record["occurred_at"]}  # as the producer stamps it

    records = [made("sil-acme", "acme", now + 3600_000), made("sil-globex", "globex", now + 3600_000)]
    records.append(made("sil-old", "acme", now - 1000))
    store.write_batch(engine, [(Position("events.webhook", 0, 900 + i), r) for i, r in enumerate(records)])

    async def script(client):
        out = {}
        await login(client)
        page = await (await client.get("/silences")).text()
        out["buttons"] = re.findall(r'action="/silences/([^"/]+)/expire"', page)
        token = csrf(page)
        out["no_csrf"] = (await client.post("/silences/sil-acme/expire", data={})).status
        r = await client.post("/silences/sil-acme/expire", data={"csrf": token}, allow_redirects=False)
        out["ok"] = (r.status, r.headers.get("Location", ""))
        out["old"] = (await client.post("/silences/sil-old/expire", data={"csrf": token})).status
        out["unknown"] = (await client.post("/silences/nope/expire", data={"csrf": token})).status
        await login(client, BOB)  # bob: globex only
        bob = csrf(await (await client.get("/silences")).text())
        out["bob_acme"] = (await client.post("/silences/sil-acme/expire", data={"csrf": bob})).status
        return out

    sent, out = run(engine, script)
    assert sorted(out["buttons"]) == ["sil-acme", "sil-globex"]  # none on the expired one
    assert out["no_csrf"] == 403 and out["ok"] == (303, "/silences?expired=sil-acme")
    assert (out["old"], out["unknown"], out["bob_acme"]) == (409, 404, 403)
    (event,) = sent
    assert (event["type"], event["org"], event["payload"]["actor"]) == ("silence.expired", "acme", "alice")
    assert event["payload"]["subject"] == "sil-acme" or "sil-acme" in event["payload"]["body_json"]


def proxy_auth(addresses: str, orgs: str = "*", named: str = "") -> Any:
    from streams.ui.auth import ProxyAuth

    return ProxyAuth.from_environ(
        {
            "OPSLOOP_UI_PROXY_USER_HEADER": "X-Forwarded-User",
            "OPSLOOP_UI_TRUSTED_PROXIES": addresses,
            "OPSLOOP_UI_PROXY_ORGS": orgs,
            "OPSLOOP_UI_TOKEN_ORGS": named,
        }
    )


def test_a_trusted_proxy_logs_in_the_user_it_names_within_its_orgs(engine):
    key = "acme:db:db-1"
    action = f"/incident/{quote(key, safe='')}/ack"

    async def script(client):
        out = {}
        carol = {"X-Forwarded-User": "carol"}
        page = await client.get("/", headers=carol, allow_redirects=False)
        out["page"] = (page.status, await page.text())
        form = await (await client.get(f"/incident/{quote(key, safe='')}", headers=carol)).text()
        out["no_csrf"] = (await client.post(action, data={}, headers=carol)).status
        out["ack"] = (await client.post(action, data={"csrf": csrf(form)}, headers=carol, allow_redirects=False)).status
        out["bad_name"] = (await client.get("/", headers={"X-Forwarded-User": "carol<script>"})).status
        return out

    sent, out = run(engine, script, proxy=proxy_auth("127.0.0.1/32"))
    status, text = out["page"]
    assert status == 200 and "carol" in text and "acme:db:db-1" in text
    assert (out["no_csrf"], out["ack"], out["bad_name"]) == (403, 303, 400)
    (event,) = sent
    assert (event["type"], event["payload"]["actor"]) == ("ack", "carol")

    # The proxy's orgs for carol: globex only (OPSLOOP_UI_TOKEN_ORGS names her); acme is refused.
    async def limited(client):
        carol = {"X-Forwarded-User": "carol"}
        listing = await (await client.get("/", headers=carol)).text()
        form = await (await client.get("/silences", headers=carol)).text()
        acted = (await client.post(action, data={"csrf": csrf(form)}, headers=carol)).status
        # an acme key that does not exist: 403 as for one that does (a 404 told her which acme keys exist)
        missing = (await client.get(f"/incident/{quote('acme:db:nope', safe='')}", headers=carol)).status
        return listing, acted, missing

    sent, (listing, status, missing) = run(
        engine, limited, proxy=proxy_auth("127.0.0.1", orgs="acme", named="carol=globex")
    )
    assert status == 403 and sent == [] and "acme:db" not in listing and "globex:db:db-9" in listing
    assert missing == 403


def test_the_proxy_header_from_anywhere_else_is_ignored_and_proxy_config_is_checked():
    from streams.api.auth import ApiTokenConfigError

    async def script(client):
        r = await client.get("/", headers={"X-Forwarded-User": "alice"}, allow_redirects=False)
        return r.status, r.headers.get("Location", "")

    from streams.db import make_engine

    engine = make_engine("sqlite://")
    _, (status, location) = run(engine, script, proxy=proxy_auth("10.0.0.0/8"))
    assert status == 303 and location.startswith("/login")  # the test client is 127.0.0.1: not a proxy
    with pytest.raises(ApiTokenConfigError, match="go together"):
        proxy_auth("")
    with pytest.raises(ApiTokenConfigError, match="not an address"):
        proxy_auth("10.0.0.300")
    with pytest.raises(ApiTokenConfigError, match="OPSLOOP_UI_PROXY_ORGS"):
        proxy_auth("127.0.0.1", orgs="")


def _incident_page(engine, key: str, alerts: list[dict], first_offset: int) -> tuple[int, str]:
    """The incident page of ``key`` after one notified decision for each of ``alerts`` (their labels)."""
    from streams.audit import store
    from streams.audit.store import Position
    from tests.audit.records import decision, event

    records = []
    for n, labels in enumerate(alerts, first_offset):
        ev = event(n, key)
        ev.update(org="acme", labels=labels)
        dec = decision(n, key)
        dec.update(org="acme", outcome="notified", severity="warning", category="other", gates=[])
        records += [(Position("events.telemetry", 0, n), ev), (Position("decisions", 0, n), dec)]
    store.write_batch(engine, records)

    async def script(client):
        await login(client)
        page = await client.get(f"/incident/{quote(key, safe='')}")
        return page.status, await page.text()

    _, answer = run(engine, script)
    return answer


def test_an_incident_whose_labels_a_matcher_cannot_name_still_opens(engine):
    """Ingest keeps a label named 'a-b' (Prometheus 3 allows UTF-8 names); its incident page was a 500 because the
    "Silence with these labels" link made a matcher of every label. That label is left out of the link."""
    status, text = _incident_page(engine, "acme:odd:o-9", [{"alertname": "Odd", "a-b": "c", "service": "svc"}], 900)
    assert status == 200
    link = html.unescape(re.search(r'id="silence-matchers" href="([^"]+)"', text).group(1))
    assert "service%3D%22svc%22" in link and "a-b" not in link


def test_a_group_incident_shows_each_alert_and_silences_what_they_share(engine):
    """Two pods' alerts in one incident: the page showed the labels merged (the last pod with whichever
    container came last), and "Silence with these labels" named that one pod, so the silence left the other
    paging. Now the labels the alerts share, each alert by the ones that tell it apart."""
    crash = {"alertname": "KubePodCrashLooping", "namespace": "shop"}
    alerts = [{**crash, "pod": "cart-1"}, {**crash, "pod": "checkout-2"}]
    status, text = _incident_page(engine, "acme:alert:KubePodCrashLooping:shop", alerts, 910)
    assert status == 200
    link = html.unescape(re.search(r'id="silence-matchers" href="([^"]+)"', text).group(1))
    assert "namespace%3D%22shop%22" in link and "pod" not in link
    alerts = re.search(r'id="incident-alerts">(.*?)</td>', text).group(1)
    assert re.findall(r"<span>pod=([^<]+)</span>", alerts) == ["cart-1", "checkout-2"]
    shared = re.search(r'id="incident-labels">(.*?)</td>', text).group(1)
    assert "pod=" not in shared and "namespace=shop" in shared


def test_a_silence_for_an_org_no_org_may_be_named_is_refused(engine):
    """Every session key is <org>:...; ingest refuses an org named with ':', and so does the silence form."""

    async def script(client):
        await login(client)
        form = await (await client.get("/silences")).text()
        fields = {"csrf": csrf(form), "matchers": 'a="b"', "duration": "1h", "org": "acme:alert"}
        r = await client.post("/silences", data=fields, allow_redirects=False)
        return r.status, await r.text()

    sent, (status, text) = run(engine, script)
    assert status == 400 and "contains &#x27;:&#x27;, which separates a session key" in text and sent == []


def test_a_silence_no_list_could_show_is_refused_at_the_form(engine):
    """A hostile probe: a comment with a NUL was sent, decided (it muted alerts) and dead-lettered by the
    projector (PostgreSQL holds no NUL), so no list showed it; a 900,000-character comment was a 500."""

    async def script(client):
        await login(client)
        form = await (await client.get("/silences")).text()
        answers = []
        for name, value in (("comment", "hidden\x00"), ("matchers", 'service="a\x00"'), ("comment", "x" * 900_000)):
            fields = {"csrf": csrf(form), "matchers": 'service="a"', "duration": "1h", "org": "acme", name: value}
            r = await client.post("/silences", data=fields, allow_redirects=False)
            answers.append((r.status, html.unescape(await r.text())))
        return answers

    sent, answers = run(engine, script)
    assert [status for status, _ in answers] == [400, 400, 400] and sent == []
    assert "comment: contains a NUL character" in answers[0][1]
    assert "matchers: contains a NUL character" in answers[1][1]
    assert "comment: 900,000 characters; at most 65,536" in answers[2][1]


def test_a_control_character_in_a_path_or_query_is_a_400_not_a_500(engine):
    """PostgreSQL refuses a NUL in a text parameter: /incident/a%00b and a filter value with one were 500s."""

    async def script(client):
        await login(client)
        paths = ["/incident/a%00b", '/?filter=service%3D"%00"', "/silences?org=%0A"]
        return [((r := await client.get(p)).status, await r.text()) for p in paths]

    _, answers = run(engine, script)
    assert [status for status, _ in answers] == [400, 400, 400]
    assert "path: contains a control character" in answers[0][1]
    assert "filter: contains a control character" in answers[1][1]


def test_a_get_on_an_action_address_opens_the_incident_and_does_nothing(engine):
    """A reload or a copied button address (GET /incident/<key>/ack) was a 404 for a session named '<key>/ack'."""
    key = "acme:db:db-1"

    async def script(client):
        await login(client)
        action = await client.get(f"/incident/{quote(key, safe='')}/ack", allow_redirects=False)
        unknown = await client.get(f"/incident/{quote(key, safe='')}/nothing", allow_redirects=False)
        return action.status, action.headers.get("Location"), unknown.status

    sent, (status, location, unknown) = run(engine, script)
    assert (status, unquote(location or ""), unknown) == (303, f"/incident/{key}", 404)
    assert sent == []
