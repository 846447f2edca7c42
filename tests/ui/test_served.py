"""The read API and the console as processes: a request line or header over the parser's limit.

aiohttp answers such a request itself, echoing the first 100 bytes of the offending header into
the answer and its log: an ``Authorization: Bearer <token>`` or a session ``Cookie`` over 8 KB
went back, credential and all, to whoever sent it, and the console logged it in a traceback
(found by a tester following the README). They now share ingest's server shell
(:mod:`streams.httpserve`).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from streams.devtools.broker import free_port
from streams.devtools.dev import Child
from tests.ui.test_browser import ROOT, pg_url, start_console  # noqa: F401 - pg_url is a fixture used here

pytestmark = pytest.mark.integration

API_TOKEN = "api-reader-token-0123456789"


def raw_request(port: int, header: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


def refused_quietly(port: int, header: str, marker: str, log: Path) -> None:
    data = raw_request(port, header)
    assert data.startswith(b"HTTP/1.0 400") and marker.encode() not in data, data[:300]
    assert b"malformed request line or header" in data
    assert marker not in log.read_text()


def test_an_oversized_credential_header_is_refused_without_echoing_it(opsloop_env, pg_url, tmp_path):  # noqa: F811
    url, _engine = pg_url
    marker = f"SECRET{uuid.uuid4().hex}"
    port, log = free_port(), tmp_path / "api.log"
    env = {**os.environ, **opsloop_env, "DATABASE_URL": url, "OPSLOOP_API_TOKENS": f"reader={API_TOKEN}"}
    api = Child("opsloop api", ["api", "--port", str(port)], env, ROOT, log).start()
    try:
        api.wait_http(f"http://127.0.0.1:{port}/healthz", 90)
        assert f"read API on 127.0.0.1:{port}" in log.read_text()
        refused_quietly(port, f"Authorization: Bearer {API_TOKEN}{marker}{'a' * 9000}", marker, log)
    finally:
        api.stop()

    console, base = start_console({**opsloop_env, "DATABASE_URL": url}, tmp_path / "ui.log")
    try:
        refused_quietly(
            int(base.rsplit(":", 1)[1]), f"Cookie: opsloop_session={marker}{'b' * 9000}", marker, tmp_path / "ui.log"
        )
    finally:
        console.stop()
