"""Ingest hardening and ingest logs (issue 16 items 6 and 7), against a real ``opsloop ingest``.

Before: deep JSON, a 5,000-digit integer, a lone surrogate or a broken deflate body
were 500s with a traceback; NaN, 1e999, duplicate keys and an empty label name were
accepted; a slow sender was never timed out; a GitHub delivery re-posted under new
delivery ids was accepted every time; a PagerDuty header with 120 bogus signatures
and one good one was accepted; a gzip bomb was inflated whole before its 413; the
Content-Type was ignored; ``?token=`` reached the access log verbatim, logs were
never JSON, and an oversized header was echoed into the answer and the log.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
import zlib
from pathlib import Path

import pytest

from tests.ingest.conftest import (
    TOKENS,
    IngestServer,
    apply_topics,
    bearer,
    github_signature,
    ingest_env,
    pagerduty_signature,
    settings_for,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
CT = {"Content-Type": "application/json"}
EVENT = {"kind": "telemetry", "type": "metric.sample", "source": "cli", "occurred_at": 1, "session_key": "acme:k"}


@pytest.fixture(scope="module")
def server(kafka_bootstrap, tmp_path_factory):
    env = ingest_env(
        kafka_bootstrap,
        f"h{uuid.uuid4().hex[:8]}.",
        OPSLOOP_INGEST_READ_TIMEOUT_S="1",
        OPSLOOP_INGEST_BODY_TIMEOUT_S="3",
        OPSLOOP_LOG_FORMAT="json",
    )
    apply_topics(settings_for(env))
    s = IngestServer(env, tmp_path_factory.mktemp("hard") / "ingest.log").start()
    try:
        yield s
    finally:
        s.stop()


def raw(body: bytes, **headers: str) -> dict:
    return {"content": body, "headers": {**bearer("scanner"), **CT, **headers}}


BAD_BODIES = [
    ("JSON nested 1000 deep", b"[" * 1000 + b"]" * 1000, "nested deeper than"),
    ("5,000-digit integer", b'{"kind": "telemetry", "n": ' + b"9" * 5000 + b"}", "out of range"),
    (
        "lone surrogate",
        json.dumps({**EVENT, "type": "\\ud800"}).replace("\\\\ud800", "\\ud800").encode(),
        "lone surrogate",
    ),
    ("NaN", json.dumps({**EVENT, "payload": {"value": float("nan")}}).encode(), "NaN"),
    ("1e999", json.dumps(EVENT).replace('"occurred_at": 1', '"occurred_at": 1e999').encode(), "out of range"),
    ("duplicate keys", b'{"kind": "telemetry", "kind": "scan"}', "duplicate key 'kind'"),
    ("empty label name", json.dumps({**EVENT, "labels": {"": "x"}}).encode(), "label name is empty"),
    ("NUL in a label name", json.dumps({**EVENT, "labels": {"a\u0000b": "x"}}).encode(), "NUL"),
    (
        "session key over 512",
        json.dumps({**EVENT, "session_key": "acme:" + "k" * 595}).encode(),
        "session_key: 600 characters; at most 512",
    ),
    (
        "org with the session key's separator",
        json.dumps({**EVENT, "org": "acme:alert", "session_key": "acme:alert:DiskFull:db"}).encode(),
        "org: 'acme:alert' contains ':', which separates a session key's org",
    ),
    (
        "org over 128",
        json.dumps({**EVENT, "org": "o" * 200, "session_key": "o" * 200 + ":k"}).encode(),
        "org: 200 characters; at most 128",
    ),
]


@pytest.mark.parametrize("name,body,reason", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_json_is_a_400_naming_the_reason(server, http, name, body, reason):
    """Guards item 6 (and item 2 at ingest): each of these used to be a 500 or accepted."""
    answer = http.post(server.url("/ingest/events"), **raw(body))
    assert answer.status_code == 400, (name, answer.text)
    assert reason in answer.json()["error"], answer.json()


def test_bodies_content_type_and_compression(server, http):
    """Guards item 6: strict Content-Type (415), broken deflate (400), bounded gzip bomb (413, fast), gzip works."""
    good = json.dumps({**EVENT, "event_id": uuid.uuid4().hex}).encode()
    wrong = http.post(
        server.url("/ingest/events"), content=good, headers={**bearer("scanner"), "Content-Type": "text/plain"}
    )
    assert wrong.status_code == 415 and "expected application/json" in wrong.json()["error"]
    none = http.post(server.url("/ingest/events"), content=good, headers=bearer("scanner"))
    assert none.status_code == 415
    broken = http.post(
        server.url("/ingest/events"), **raw(b"\x78\x9c not deflate at all", **{"Content-Encoding": "deflate"})
    )
    assert broken.status_code == 400 and "deflate" in broken.json()["error"]
    bomb = gzip.compress(b" " * (200 * 1024 * 1024), compresslevel=9)
    started = time.process_time(), time.monotonic()
    big = http.post(server.url("/ingest/events"), **raw(bomb, **{"Content-Encoding": "gzip"}))
    assert big.status_code == 413 and "decompressed body exceeds" in big.json()["error"]
    assert time.monotonic() - started[1] < 1.0
    ok = http.post(server.url("/ingest/events"), **raw(gzip.compress(good), **{"Content-Encoding": "gzip"}))
    assert ok.status_code == 200, ok.text
    ok = http.post(
        server.url("/ingest/events"),
        **raw(zlib.compress(good.replace(b"acme:k", b"acme:z")), **{"Content-Encoding": "deflate"}),
    )
    assert ok.status_code == 200, ok.text


def test_webhook_replays_and_signature_floods_are_refused(server, http):
    """Guards item 6: a signed GitHub body under a new delivery id is a replay (409); a redelivery with its
    own id stays a duplicate; 120 bogus v1= values plus a good one are refused."""
    pr = (
        (FIXTURES / "github_pull_request_opened.json")
        .read_bytes()
        .replace(b'"acme/api"', f'"acme/r-{uuid.uuid4().hex[:6]}"'.encode())
    )
    headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": github_signature(pr), **CT}
    answers = [
        http.post(server.url("/ingest/webhook/github"), content=pr, headers={**headers, "X-GitHub-Delivery": f"d-{i}"})
        for i in range(5)
    ]
    assert [a.status_code for a in answers] == [200, 409, 409, 409, 409]
    assert "replay" in answers[1].json()["error"]
    again = http.post(server.url("/ingest/webhook/github"), content=pr, headers={**headers, "X-GitHub-Delivery": "d-0"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    pd = (FIXTURES / "pagerduty_incident_acknowledged.json").read_bytes()
    for bogus, status in ((120, 400), (10, 403)):  # 120 values exceed the header size limit already
        flood = ",".join([f"v1={i:064x}" for i in range(bogus)] + [pagerduty_signature(pd)])
        answer = http.post(
            server.url("/ingest/webhook/pagerduty"), content=pd, headers={"X-PagerDuty-Signature": flood, **CT}
        )
        assert answer.status_code == status and "ZZZ" not in answer.text, answer.text
    assert "at most 4" in answer.json()["error"]


def test_a_slow_body_is_timed_out(server):
    """Guards item 6: a sender trickling its body gets 408 and Connection: close (it used to be kept open)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /ingest/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['scanner']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        started = time.monotonic()
        data = b""
        while b"}" not in data and (chunk := sock.recv(4096)):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, data[:200]
        assert b"Connection: close" in data


def test_logs_are_json_masked_and_echo_nothing(server, http):
    """Guards item 7: OPSLOOP_LOG_FORMAT=json is honoured, a ?token= value never reaches the log, and an
    oversized header is answered without echoing it into the answer or the log."""
    secret = f"qs-{uuid.uuid4().hex}"
    http.post(server.url(f"/ingest/events?token={secret}&org=acme"), json={}, headers=bearer("scanner"))
    big = "Z" * 20000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"POST /ingest/events HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 400") and b"ZZZZ" not in data, data[:300]
    log = server.settled_log()
    assert secret not in log and "ZZZZ" not in log
    assert "/ingest/events" in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["msg"] is not None for line in lines), lines[:3]


def test_a_broken_body_is_answered_without_echoing_it(server):
    """Guards item 7: a body the HTTP parser refuses (a malformed chunk) is a 400 that echoes none of
    its bytes into the answer or the log (aiohttp's own answer quoted the offending bytes)."""
    marker = f"BODYECHO{uuid.uuid4().hex}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /ingest/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['scanner']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            f'5\r\n{{"a":\r\n{marker}\r\n{marker}\r\n0\r\n\r\n'.encode()
        )
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 400") and marker.encode() not in data, data[:400]
    assert marker not in server.settled_log()


def test_the_secret_masking_filter_covers_ingest_logs(server, http):
    """Guards item 7: ingest's log handlers carry the secret-masking filter, so a secret that reaches a
    log line anyway (here a webhook secret or a producer token pasted into a URL path, which the access
    log records) is masked."""
    from tests.ingest.conftest import GITHUB_SECRET

    answer = http.post(server.url(f"/ingest/webhook/{GITHUB_SECRET}"), content=b"{}", headers=CT)
    assert answer.status_code == 404
    # a producer's bearer token pasted into a path is masked on its own too (ingest registers each token)
    assert http.post(server.url(f"/ingest/x{TOKENS['scanner']}"), content=b"{}", headers=CT).status_code == 404
    log = server.settled_log()
    assert "/ingest/webhook/" in log and GITHUB_SECRET not in log
    assert "/ingest/x" in log and TOKENS["scanner"] not in log
