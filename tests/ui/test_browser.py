"""The console in a real browser: Debian's Chromium (headless) driven by Selenium.

Two tests. The seeded one runs ``opsloop ui`` as a process on a PostgreSQL audit store
filled through the projector's write path: login (a wrong token first), the XSS probe as
text, filter and sort, Acknowledge's event read back from Kafka, POSTs without the CSRF
token (403) or a login (401). The full-stack one runs the whole loop as processes on the
session broker: ``opsloop ingest`` (alerts posted as Alertmanager does), ``opsloop worker``
(its sinks delivering to the local fake Slack and Teams of tests/sinks/fakes.py), ``opsloop
projector`` on PostgreSQL and ``opsloop ui``; what the browser does there is in its docstring.

Needs ``chromium`` and ``chromium-driver`` (apt; deploy/dev/bootstrap.sh installs them): without
them the tests fail, saying so. Screenshots go to the test's tmp dir (their paths are printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from streams.audit import store
from streams.devtools.broker import free_port
from streams.devtools.dev import Child
from streams.kafka.reader import TopicReader
from tests.ingest.conftest import IngestServer, bearer, ingest_env
from tests.sinks.fakes import Answer, FakeServices
from tests.ui.seed import XSS, seed

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "alice-console-token-0123456789"
T = TypeVar("T")


@pytest.fixture
def pg_url(postgres_url):
    schema = f"ui_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{postgres_url}?options={quote(f'-csearch_path={schema}')}"
    engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def start_console(env: dict[str, str], log: Path) -> tuple[Child, str]:
    """``opsloop ui`` as a child process (streams.devtools.dev's), ready when /healthz answers."""
    port = free_port()
    ui_env = {
        **os.environ,
        **env,
        "OPSLOOP_UI_TOKENS": f"alice={TOKEN}",
        "OPSLOOP_UI_SECRET": uuid.uuid4().hex,
        "OPSLOOP_UI_REFRESH_S": "300",
    }
    child = Child("opsloop ui", ["ui", "--port", str(port)], ui_env, ROOT, log).start()
    base = f"http://127.0.0.1:{port}"
    child.wait_http(base + "/healthz", 90)
    return child, base


@pytest.fixture
def console(topics, opsloop_env, pg_url, tmp_path):
    url, engine = pg_url
    seed(engine)
    log = tmp_path / "ui.log"
    child, base = start_console({**opsloop_env, "DATABASE_URL": url}, log)
    try:
        yield base, log, topics
    finally:
        child.stop()


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("needs chromium and chromium-driver (apt; deploy/dev/bootstrap.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def navigate(browser, action) -> None:
    """Do ``action`` (a click, a submit) and wait until the next page has loaded (no race with the old one).

    The old page is marked with a script variable rather than held as an element: chromedriver can
    answer a staleness probe on a node mid-navigation with "Node with given id does not belong to the
    document" (a WebDriverException, not StaleElementReferenceException), seen once in CI. A probe
    that fails while the page changes is "not loaded yet", and the wait goes on.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    marker = uuid.uuid4().hex
    browser.execute_script("window.__opsloopPage = arguments[0];", marker)
    action()

    def next_page_loaded(b: Any) -> bool:
        try:
            return bool(
                b.execute_script(
                    "return window.__opsloopPage !== arguments[0] && document.readyState === 'complete';", marker
                )
            )
        except WebDriverException:
            return False

    WebDriverWait(browser, 20).until(next_page_loaded)


def post_without_csrf(base: str, path: str, cookie: str) -> int:
    request = urllib.request.Request(base + path, data=b"x=1", method="POST", headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def read_acks(settings, session: str, timeout: float = 30.0) -> list[dict]:
    async def go():
        async with TopicReader(settings, ["events.webhook"]) as reader:
            records = await reader.collect(
                lambda rs: any(r.value and r.value["type"] == "ack" for r in rs), timeout=timeout
            )
        return [r.value for r in records if r.value and r.value["type"] == "ack" and r.value["session_key"] == session]

    return asyncio.run(go())


def test_log_in_filter_open_acknowledge(console, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, log, settings = console
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # not logged in: every page sends you to the login form
    browser.get(base + "/silences")
    assert browser.current_url.startswith(base + "/login?next=")
    browser.find_element(By.NAME, "token").send_keys("not-the-token")
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click)
    assert "Unknown token." in browser.page_source
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click)
    assert browser.current_url == base + "/silences"

    # incidents firing now; the XSS probe in a label is text, no alert
    browser.get(base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#incidents tbody tr.incident")
    keys = [r.find_element(By.CSS_SELECTOR, "td a").text for r in rows]
    assert set(keys) == {"acme:db:db-1", "acme:db:db-2", "acme:web:web-1", "acme:xss:x-1", "globex:db:db-9"}
    assert XSS in browser.find_element(By.ID, "incidents").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#incidents script, #incidents img")
    browser.save_screenshot(str(shots / "incidents.png"))

    # filter by a matcher, sort by session
    box = browser.find_element(By.NAME, "filter")
    box.clear()
    box.send_keys('service=~"db.*",severity="urgent"')
    navigate(browser, box.submit)
    navigate(browser, browser.find_element(By.LINK_TEXT, "session").click)
    keys = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#incidents tbody tr.incident td:first-child a")]
    assert keys == ["acme:db:db-1", "acme:db:db-2", "globex:db:db-9"]
    browser.save_screenshot(str(shots / "filtered.png"))

    # open one: its timeline; Acknowledge produces the ack event
    navigate(browser, browser.find_element(By.LINK_TEXT, "acme:db:db-1").click)
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr.entry")
    navigate(browser, browser.find_element(By.ID, "ack").click)
    notice = browser.find_element(By.ID, "done-ack").text
    browser.save_screenshot(str(shots / "acknowledged.png"))
    (ack,) = read_acks(settings, "acme:db:db-1")
    assert ack["event_id"] in notice
    assert (ack["org"], ack["payload"]["actor"]) == ("acme", "alice")
    assert json.loads(ack["payload"]["body_json"]) == {"action": "ack", "via": "console"}

    # a POST without the CSRF token is refused, even with the session cookie
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    assert post_without_csrf(base, "/incident/" + quote("acme:db:db-2", safe="") + "/ack", cookie) == 403
    assert post_without_csrf(base, "/silences", cookie) == 403
    assert post_without_csrf(base, "/silences", "") == 401
    assert read_acks(settings, "acme:db:db-2", timeout=2.0) == []

    for path in sorted(shots.iterdir()):
        print(f"screenshot: {path}")
    text = log.read_text()
    assert "ack of acme:db:db-1 (org acme) by alice" in text
    assert "CSRF token missing or wrong" in text
    assert TOKEN not in text


# -- the whole loop ------------------------------------------------------------------


def until(what: str, check: Callable[[], T | None], timeout: float = 90.0, every: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def am_alert(labels: dict[str, str], summary: str) -> dict[str, Any]:
    """One alert as Alertmanager's webhook (v4) carries it, firing since now."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": now,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.test/graph",
    }


def fire(ingest: IngestServer, *alerts: dict[str, Any]) -> None:
    body = {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "opsloop",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "alerts": list(alerts),
    }
    answer = httpx.post(ingest.url("/ingest/alertmanager"), json=body, headers=bearer("alertmanager"), timeout=30)
    assert answer.status_code == 200, answer.text


def sql(engine: sa.Engine, text: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(text), params)]


@pytest.fixture
def fake_services():
    services = FakeServices().start()
    yield services
    services.stop()


def test_full_stack_alerts_ack_silence_and_redrive_in_the_browser(
    topics, opsloop_env, kafka_bootstrap, pg_url, worker_factory, fake_services, browser, tmp_path
):
    """Alerts in through ingest; seen, filtered, acknowledged, silenced and redriven in the console.

    1. Log in; the route-test form says where a cost alert goes (teams-ops), before it is fired.
    2. Four alerts are posted to ingest's Alertmanager webhook; the incidents page shows them firing
       (the worker decided, the projector folded the decisions into PostgreSQL).
    3. Filter ``service=~"db.*"``: only the database's incident. Open it, press Acknowledge: the page
       shows it acknowledged by alice once the worker decided the ack and the projector folded it.
    4. A silence for ``service="cache-1"``: Preview lists the one firing incident it would mute; Create.
       The next alert of that service is decided silenced (its incident shows the silence) and nothing
       reaches Slack about it.
    5. Teams first answered 400, so the cost alert's notification was dead-lettered: the dead-letters
       page shows it with the reason. Teams is switched to answer 200; Redrive: the ledger delivers it,
       and Teams got it exactly once more (400, then one 200).
    """
    started = time.monotonic()
    from selenium.webdriver.common.by import By

    url, engine = pg_url
    store.migrate(engine)  # once, before the projector and the console start (both would)
    fakes = fake_services
    fakes.script("teams", "teams-ops", Answer(400, "Bad payload: try again after the fix"))
    env = {**opsloop_env, "DATABASE_URL": url}
    worker_factory(
        DATABASE_URL=url,  # the delivery ledger on PostgreSQL too
        OPSLOOP_ACK_SECRET=uuid.uuid4().hex,
        OPSLOOP_SLACK_INFRA_WEBHOOK=fakes.url("slack", "infra-slack"),
        OPSLOOP_SLACK_ONCALL_WEBHOOK=fakes.url("slack", "oncall-slack"),
        OPSLOOP_TEAMS_OPS_WEBHOOK=fakes.url("teams", "teams-ops"),
    )
    ingest = IngestServer(ingest_env(kafka_bootstrap, opsloop_env["OPSLOOP_TOPIC_PREFIX"]), tmp_path / "ingest.log")
    projector = Child("projector", ["projector"], {**os.environ, **env}, ROOT, tmp_path / "projector.log")
    children: list[Any] = [ingest]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    saved: list[Path] = []

    def shot(name: str) -> None:
        path = shots / f"{name}.png"
        browser.save_screenshot(str(path))
        saved.append(path)

    def text(css: str) -> str:
        found = browser.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""

    def keys(css: str = "#incidents tbody tr.incident td:first-child a") -> list[str]:
        return [a.text for a in browser.find_elements(By.CSS_SELECTOR, css)]

    def load(path: str) -> None:
        browser.get(base + path)

    try:
        ingest.start()
        children.append(projector.start())
        console, base = start_console(env, tmp_path / "ui.log")
        children.append(console)

        # 1. log in; where does a cost alert go?
        load("/route")
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        navigate(browser, browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click)
        assert browser.current_url.startswith(base + "/route")
        box = browser.find_element(By.NAME, "labels")
        box.send_keys("alertname=CloudCostAnomaly,severity=warning,service=billing")
        org = browser.find_element(By.NAME, "org")
        org.clear()
        org.send_keys("acme")
        navigate(browser, browser.find_element(By.ID, "route-submit").click)
        assert text("#route-answer tr.answer-notify td") == "teams-ops"
        assert text("#route-answer tr.answer-runbook td").startswith("cost-anomaly")
        shot("route-test")

        # 2. four alerts through ingest: firing on the incidents page
        fire(
            ingest,
            am_alert({"alertname": "PgDown", "service": "db-main", "severity": "warning"}, "db-main is down"),
            am_alert({"alertname": "HostHighCpuLoad", "service": "web-1", "severity": "warning"}, "web-1 cpu"),
            am_alert({"alertname": "DiskFilling", "service": "cache-1", "severity": "warning"}, "cache-1 disk"),
            am_alert({"alertname": "CloudCostAnomaly", "service": "billing", "severity": "warning"}, "cost spike"),
        )

        def four_firing() -> list[str] | None:
            load("/")
            found = keys()
            return found if len(found) == 4 else None

        firing = until("four firing incidents on the incidents page", four_firing, 120)
        db_key = next(k for k in firing if "PgDown" in k)
        cost_key = next(k for k in firing if "CloudCostAnomaly" in k)
        shot("incidents")

        # 3. filter, open, acknowledge; the projector folds the ack back
        box = browser.find_element(By.NAME, "filter")
        box.clear()
        box.send_keys('service=~"db.*"')
        navigate(browser, box.submit)
        assert keys() == [db_key]
        shot("filtered")
        navigate(browser, browser.find_element(By.LINK_TEXT, db_key).click)
        assert text("#incident-status") == "firing"
        navigate(browser, browser.find_element(By.ID, "ack").click)
        assert "Acknowledge: sent as event" in text("#done-ack")

        def acknowledged() -> bool:
            load("/incident/" + quote(db_key, safe=""))
            return text("#incident-status") == "acknowledged" and text("#incident-acked_by") == "alice"

        until("the incident acknowledged by alice", acknowledged)
        shot("acknowledged")

        # 4. a silence, previewed, created; the next alert of that service is silenced
        load("/silences")
        browser.find_element(By.NAME, "matchers").send_keys('service="cache-1"')
        org = browser.find_element(By.NAME, "org")
        org.clear()
        org.send_keys("acme")
        browser.find_element(By.NAME, "comment").send_keys("disk swap")
        navigate(browser, browser.find_element(By.ID, "preview").click)
        assert "1 firing incident(s) would be muted" in text("#silence-preview")
        assert keys("#preview tbody tr.incident td:first-child a") == [next(k for k in firing if "DiskFilling" in k)]
        shot("silence-preview")
        navigate(browser, browser.find_element(By.ID, "create").click)
        silence_id = text("#created code")
        assert silence_id

        def silence_active() -> bool:
            load("/silences")
            rows = browser.find_elements(By.CSS_SELECTOR, "#silences tr.silence.state-active")
            return any(silence_id in r.text and "alice" in r.text for r in rows)

        until("the silence listed active", silence_active)
        until(
            "decide to have kept the silence",
            lambda: sql(
                engine,
                "SELECT d.outcome FROM audit_decisions d JOIN audit_events e ON d.event_id = e.event_id "
                "WHERE e.type = 'silence.created'",
            ),
        )
        fire(ingest, am_alert({"alertname": "HostHighCpuLoad", "service": "cache-1", "severity": "warning"}, "c1-cpu"))

        def silenced() -> list[str] | None:
            load("/?status=silenced")
            return keys() or None

        (muted_key,) = until("the next cache-1 alert silenced", silenced)
        assert "HostHighCpuLoad" in muted_key
        navigate(browser, browser.find_element(By.LINK_TEXT, muted_key).click)
        assert text("#incident-status") == "silenced" and silence_id in text("#incident-silenced_by")
        shot("silenced")
        assert (
            sql(engine, "SELECT effect_id FROM audit_effects WHERE session_key = :k AND type = 'notify'", k=muted_key)
            == []
        )
        assert not [r for r in fakes.got() if b"c1-cpu" in r.body]

        # 5. the dead-lettered Teams notification, redriven after the fix
        def letter() -> bool:
            load("/deadletters")
            return bool(browser.find_elements(By.CSS_SELECTOR, "tr.letter"))

        until("the cost notification on the dead-letters page", letter)
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.letter")
        assert len(rows) == 1 and "400" in rows[0].text and "sink:teams" in rows[0].text
        assert [r.answered for r in fakes.got("teams", "teams-ops")] == [400]
        shot("deadletters")
        fakes.script("teams", "teams-ops", Answer(200, "1"))  # the fix: Teams accepts the card now
        navigate(browser, rows[0].find_element(By.CSS_SELECTOR, "button").click)
        assert "1 of 1 dead letter(s) redriven" in text("#redriven")
        assert "redriven" in text("tr.letter") and not browser.find_elements(By.CSS_SELECTOR, "tr.letter button")
        shot("redriven")
        until(
            "the redriven notification delivered (its receipt projected)",
            lambda: sql(
                engine,
                "SELECT status FROM audit_deliveries WHERE session_key = :k AND status = 'delivered'",
                k=cost_key,
            ),
            120,
        )
        assert [r.answered for r in fakes.got("teams", "teams-ops")] == [400, 200]  # once more, exactly once
        load("/incident/" + quote(cost_key, safe=""))
        assert "delivered" in text("#timeline")
        shot("cost-incident")
        ui_log = (tmp_path / "ui.log").read_text()
        assert f"ack of {db_key} (org acme) by alice" in ui_log and "by alice: redriven to outbox" in ui_log
        assert f"silence {silence_id} (org acme" in ui_log and TOKEN not in ui_log
    except BaseException:
        for child in children:
            tail = child.log()[-3000:] if isinstance(child, IngestServer) else child.tail(40)
            print(f"--- {child.name if isinstance(child, Child) else 'ingest'} log ---\n{tail}")
        raise
    finally:
        for child in reversed(children):
            child.stop()
        for path in saved:
            print(f"screenshot: {path}")
        print(f"took {time.monotonic() - started:.1f}s")
