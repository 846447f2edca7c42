"""Fixtures of the ingest tests: a real ``opsloop ingest`` process on its own topic prefix.

``IngestServer`` runs ``python -m streams.cli.main ingest`` (the same entry point
production uses) and waits for /healthz by polling, with a deadline. Module-scoped
servers share one start-up across a module's tests; each module gets its own topic
prefix on the session broker, so what one module produces never shows in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.devtools import childproc
from streams.devtools.broker import free_port
from streams.kafka.reader import Record, TopicReader
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# Random per run, so the "never logged" test greps for values that cannot occur by chance.
TOKENS = {name: f"{name}-{secrets.token_hex(12)}" for name in ("prometheus", "alertmanager", "scanner")}
GITHUB_SECRET = f"gh-{secrets.token_hex(16)}"
PAGERDUTY_SECRET = f"pd-{secrets.token_hex(16)}"
EVENT_TOPICS = ["events.telemetry", "events.webhook", "events.scan", "events.timer"]


def bearer(name: str = "prometheus") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def pagerduty_signature(body: bytes, secret: str = PAGERDUTY_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def ingest_env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP": bootstrap,
        "OPSLOOP_TOPIC_PREFIX": prefix,
        "OPSLOOP_INGEST_TOKENS": ",".join(f"{k}={v}" for k, v in TOKENS.items()),
        "OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB": GITHUB_SECRET,
        "OPSLOOP_INGEST_WEBHOOK_SECRET_PAGERDUTY": PAGERDUTY_SECRET,
        "OPSLOOP_INGEST_DEFAULT_ORG": "acme",
        "OPSLOOP_LOG_LEVEL": "info",
        **extra,
    }


def settings_for(env: Mapping[str, str]) -> Settings:
    database = {"DATABASE_URL": env["DATABASE_URL"]} if "DATABASE_URL" in env else {}
    return Settings(KAFKA_BOOTSTRAP=env["KAFKA_BOOTSTRAP"], topic_prefix=env["OPSLOOP_TOPIC_PREFIX"], **database)


def apply_topics(settings: Settings) -> None:
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue

    asyncio.run(apply(settings, load_catalogue(settings.topics_file)))


class IngestServer:
    """One ``opsloop ingest`` subprocess; its output goes to ``log_path``."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self, timeout: float = 30.0) -> IngestServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = childproc.spawn(
            [sys.executable, "-m", "streams.cli.main", "ingest", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"opsloop ingest exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url("/healthz"), timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"opsloop ingest did not answer /healthz within {timeout:.0f}s:\n{self.log()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        childproc.stop(self.proc, 15)
        self.proc = None

    def restart(self) -> IngestServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def settled_log(self, timeout: float = 10.0) -> str:
        """The log once every request answered before this call is in it: a sentinel request's
        access line comes after theirs (one process, lines written as answers go out)."""
        sentinel = f"/sentinel-{uuid.uuid4().hex}"
        assert httpx.get(self.url(sentinel), timeout=5).status_code == 404
        deadline = time.monotonic() + timeout
        while sentinel not in (text := self.log()):
            assert time.monotonic() < deadline, f"the sentinel {sentinel} never reached the log"
            time.sleep(0.05)
        return text


def read_events(
    settings: Settings,
    until: Callable[[list[Record]], bool],
    timeout: float = 30.0,
    topics: Sequence[str] = EVENT_TOPICS,
) -> list[Record]:
    """Records of the event topics (from the beginning) once ``until`` holds."""

    async def run() -> list[Record]:
        async with TopicReader(settings, topics) as reader:
            return await reader.collect(until, timeout=timeout)

    return asyncio.run(run())


def read_all_events(settings: Settings, idle: float = 1.5, topics: Sequence[str] = EVENT_TOPICS) -> list[Record]:
    """Everything on the event topics, stopping after ``idle`` seconds without a new record."""

    async def run() -> list[Record]:
        async with TopicReader(settings, topics) as reader:
            return [r async for r in reader.records(idle_timeout=idle)]

    return asyncio.run(run())


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


@pytest.fixture(scope="module")
def module_env(kafka_bootstrap: str) -> dict[str, str]:
    """An ingest environment with its own topic prefix (topics created) for one test module."""
    env = ingest_env(kafka_bootstrap, f"i{uuid.uuid4().hex[:8]}.")
    apply_topics(settings_for(env))
    return env


@pytest.fixture(scope="module")
def module_settings(module_env: dict[str, str]) -> Settings:
    return settings_for(module_env)


@pytest.fixture(scope="module")
def ingest_server(module_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestServer]:
    server = IngestServer(module_env, tmp_path_factory.mktemp("ingest") / "ingest.log").start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def scoped_ingest(
    bootstrap: str, scopes: Mapping[str, Any], log_dir: Path, **extra: str
) -> Iterator[tuple[IngestServer, Settings]]:
    """A real ingest with these producer scopes (``OPSLOOP_INGEST_SCOPES``), on topics of its own."""
    env = ingest_env(bootstrap, f"sc{uuid.uuid4().hex[:8]}.", OPSLOOP_INGEST_SCOPES=json.dumps(scopes), **extra)
    apply_topics(settings_for(env))
    server = IngestServer(env, log_dir / "ingest.log").start()
    try:
        yield server, settings_for(env)
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """On failure, attach the tail of each ingest server's log the test used."""
    if call.when != "call" or call.excinfo is None or not hasattr(item, "funcargs"):
        return
    for name, value in item.funcargs.items():
        if isinstance(value, IngestServer):
            item.add_report_section("call", f"{name} log", "\n".join(value.log().splitlines()[-80:]))


def metric_value(text: str, sample: str) -> float:
    """The value of one exposition line (``name{labels}``) in a /metrics body, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
