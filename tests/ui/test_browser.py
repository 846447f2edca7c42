"""The console in a real browser: Debian's Chromium (headless) driven by Selenium, `opsloop ui` as a
process on a seeded PostgreSQL audit store, and the Acknowledge button's event read back from Kafka.

Needs ``chromium`` and ``chromium-driver`` (apt; deploy/dev/bootstrap.sh installs them); skipped without.
Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from streams.devtools.broker import free_port
from streams.kafka.reader import TopicReader
from tests.ui.seed import XSS, seed

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "alice-console-token-0123456789"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromium-driver (apt)")


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


@pytest.fixture
def console(topics, opsloop_env, pg_url, tmp_path):
    url, engine = pg_url
    seed(engine)
    port = free_port()
    env = {
        **os.environ,
        **opsloop_env,
        "DATABASE_URL": url,
        "OPSLOOP_UI_TOKENS": f"alice={TOKEN}",
        "OPSLOOP_UI_SECRET": uuid.uuid4().hex,
        "OPSLOOP_UI_REFRESH_S": "300",
    }
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "ui", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"opsloop ui did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield base, log, topics
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
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
    """Do ``action`` (a click, a submit) and wait until the next page has loaded (no race with the old one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(old))
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return document.readyState") == "complete")


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
    notice = browser.find_element(By.ID, "acked").text
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

    text = log.read_text()
    assert "ack of acme:db:db-1 (org acme) by alice" in text
    assert "CSRF token missing or wrong" in text
    assert TOKEN not in text
