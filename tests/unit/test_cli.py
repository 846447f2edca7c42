"""CLI errors are one line with file:line, and exit non-zero."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from streams.cli.main import main
from streams.devtools.broker import free_port
from streams.errors import EXIT_INVALID, EXIT_UNAVAILABLE
from streams.kafka.catalogue import TOPICS_FILE


def test_topics_check_ok(capsys):
    assert main(["topics", "check"]) == 0
    assert "11 topics ok" in capsys.readouterr().out


def test_topics_check_with_a_typo_exits_1_naming_file_line_topic_field(tmp_path, capsys):
    bad = tmp_path / "topics.yaml"
    bad.write_text(
        TOPICS_FILE.read_text().replace(
            "    cleanup_policy: delete\n    key: effect_id", "    cleanup_polcy: delete\n    key: effect_id"
        )
    )
    assert main(["topics", "check", "--file", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "cleanup_polcy" in text)
    assert (
        err
        == f"opsloop: {bad}:{line}: topic 'deliveries': unknown field 'cleanup_polcy' (did you mean 'cleanup_policy'?)"
    )


def test_produce_rejects_a_bad_line_before_sending_anything(tmp_path, capsys, monkeypatch):
    # No broker is reachable here: validation must fail first, naming file and line.
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    good = {"session_key": "s", "kind": "telemetry", "type": "alert.firing", "source": "cli", "occurred_at": 1}
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(good), json.dumps({**good, "kind": "metric"}), "{not json"]) + "\n")
    assert main(["produce", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"opsloop: {path}:2: kind: unknown kind 'metric'; expected one of telemetry, webhook, timer, scan"
    )
    path.write_text(json.dumps(good) + "\n{not json\n")
    assert main(["produce", str(path)]) == 1
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line,reason",
    [
        ("[" * 100_000, "nested deeper than 32 levels"),  # was a RecursionError traceback
        ('{"kind": "telemetry", "kind": "scan"}', "duplicate key 'kind' in an object"),  # the last one won
        ('{"session_key": "s", "value": NaN}', "NaN is not a JSON number (NaN and Infinity are refused)"),
        ('{"session_key": "s\\u0000"}', "session_key: contains a NUL character at character 1"),
    ],
)
def test_produce_reads_each_line_as_strictly_as_ingest_reads_a_body(line, reason, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n")
    assert main(["produce", str(path)]) == EXIT_INVALID
    assert capsys.readouterr().err.strip() == f"opsloop: {path}:1: {reason}"


def test_produce_takes_a_byte_order_mark_and_an_empty_file_sends_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # an empty file needs no broker; the BOM line is read
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"kind": "metric"}).encode() + b"\n")
    assert main(["produce", str(path)]) == EXIT_INVALID
    assert capsys.readouterr().err.strip() == f"opsloop: {path}:1: session_key: required"  # not "Unexpected UTF-8 BOM"
    path.write_text("\n  \n")
    assert main(["produce", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"produced 0 events ({path} holds none)"


def test_produce_names_a_file_it_cannot_read_and_a_line_that_is_not_utf8(tmp_path, capsys, monkeypatch):
    """These were tracebacks (FileNotFoundError, UnicodeDecodeError)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    good = {"session_key": "s", "kind": "telemetry", "type": "alert.firing", "source": "cli", "occurred_at": 1}
    path = tmp_path / "events.jsonl"
    path.write_bytes(json.dumps(good).encode() + b"\n\n" + b'{"a": "\xe9t\xe9"}\n')
    assert main(["produce", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"opsloop: {path}:3: not UTF-8 text (byte 8 of the line)"
    for missing, reason in ((tmp_path / "absent.jsonl", "No such file or directory"), (tmp_path, "Is a directory")):
        assert main(["produce", str(missing)]) == 1
        assert capsys.readouterr().err.strip() == f"opsloop: {missing}: cannot read it: {reason}"


@pytest.mark.parametrize("argv", [["topics", "apply"], ["tail", "outbox"], ["worker"]])
def test_an_unreachable_broker_is_one_line_and_exit_4(argv, tmp_path, capsys, monkeypatch):
    port = free_port()  # nothing listens there: connection refused at once
    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPSLOOP_SINK_SINGLE_NODE", "true")
    assert main(argv) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"opsloop: Kafka is unreachable (127.0.0.1:{port}): is the broker up, and KAFKA_BOOTSTRAP right?"
    )


def test_a_bad_setting_is_one_line_and_exit_1(capsys, monkeypatch):
    monkeypatch.setenv("OPSLOOP_DECIDE_BATCH_MAX", "many")
    assert main(["worker"]) == EXIT_INVALID
    assert capsys.readouterr().err.strip() == (
        "opsloop: invalid settings: OPSLOOP_DECIDE_BATCH_MAX: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_a_reader_that_cannot_start_closes_its_consumer(monkeypatch):
    from aiokafka.errors import KafkaConnectionError

    from streams.kafka.reader import TopicReader
    from streams.settings import Settings

    readers: list[TopicReader] = []

    async def enter() -> None:
        readers.append(TopicReader(Settings.from_env(kafka_bootstrap=f"127.0.0.1:{free_port()}"), ["outbox"]))
        async with readers[0]:
            raise AssertionError("started without a broker")

    with pytest.raises(KafkaConnectionError):
        asyncio.run(enter())
    assert readers[0]._consumer._closed  # noqa: SLF001 - what aiokafka's "Unclosed AIOKafkaConsumer" warning checks


def test_the_console_names_a_bad_refresh_period_before_it_touches_the_database(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPSLOOP_UI_TOKENS", "alice=t0ken-for-the-test")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'console.db'}")
    monkeypatch.setenv("OPSLOOP_UI_REFRESH_S", "0")
    assert main(["ui", "--port", "0"]) == EXIT_INVALID
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("opsloop: invalid settings: OPSLOOP_UI_REFRESH_S: should be a whole number of seconds, at least 1")
    )
    assert not (tmp_path / "console.db").exists()


def test_produce_refuses_an_event_too_large_for_one_kafka_record_before_sending_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing is sent: the line is refused first
    good = {"session_key": "s", "kind": "telemetry", "type": "alert.firing", "source": "cli", "occurred_at": 1}
    path = tmp_path / "events.jsonl"
    big = {f"dump{i}": "x" * 240_000 for i in range(5)}  # each string within the reader's bound, the event not
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "labels": big}) + "\n")
    assert main(["produce", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        rf"opsloop: {re.escape(str(path))}:2: event: 1,200,\d{{3}} bytes encoded, over the 1,000,000-byte limit of "
        r"one Kafka record",
        err,
    ), err


def test_an_unreachable_database_is_one_line_and_exit_4_without_its_password(capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://opsloop:pw-s3cr3t-value@127.0.0.1:{port}/audit")
    assert main(["incidents", "list"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err == (
        f'opsloop: the database is unavailable (OperationalError: connection failed: connection to server at "127.0.0.1", '
        f"port {port} failed: Connection refused): is it up, and DATABASE_URL right?"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://opsloop:pw-s3cr3t-value@db/audit", "'mysql' is not supported"),
        ("postgresql+psycopg2://opsloop:pw-s3cr3t-value@db/audit", "its driver is not installed (psycopg2)"),
        ("pw-s3cr3t-value", "not a URL"),
    ],
)
def test_a_database_url_this_build_cannot_use_is_named_without_repeating_it(url, why, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["incidents", "list"]) == EXIT_INVALID
    assert capsys.readouterr().err.strip() == (
        f"opsloop: invalid settings: DATABASE_URL (or OPSLOOP_SINK_DATABASE_URL): {why}; expected "
        "postgresql+psycopg://user:password@host:port/database or sqlite:///path"
    )


@pytest.mark.parametrize(
    "argv",
    [["ui", "--port", "99999"], ["api", "--port", "-1"], ["ingest", "--port", "http"], ["route", "test"], ["audit"]],
)
def test_a_usage_error_is_argparse_s_one_line_error_and_exit_1(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_INVALID  # not argparse's 2: opsloop's 2 says something differs
    if "--port" in argv:
        assert capsys.readouterr().err.strip().endswith(f"argument --port: {argv[2]!r} is not a port (0-65535)")


@pytest.mark.parametrize("command", ["api", "ingest"])
def test_a_port_in_use_is_one_line_and_exit_4(command, tmp_path, capsys, monkeypatch):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setenv("OPSLOOP_API_TOKENS", "alice=t0ken-for-the-test")
    monkeypatch.setenv("OPSLOOP_INGEST_TOKENS", "prom=t0ken-for-the-test")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # ingest starts without Kafka (503s)
    try:
        assert main([command, "--host", "127.0.0.1", "--port", str(port)]) == EXIT_UNAVAILABLE
    finally:
        taken.close()
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith(
            f"cannot listen on 127.0.0.1:{port}: error while attempting to bind on address ('127.0.0.1', {port}): "
            "address already in use"
        )
    )


def test_a_silence_for_an_org_no_org_may_be_named_is_refused_before_anything_is_sent(capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing is reached: the org is refused first
    assert main(["silence", "add", 'a="b"', "--duration", "1h", "--org", "acme:alert"]) == 1
    assert capsys.readouterr().err.strip() == (
        "opsloop: --org: 'acme:alert' contains ':', which separates a session key's org"
    )


def test_a_silence_that_has_ended_already_is_refused_before_anything_is_sent(capsys, monkeypatch):
    """As ingest's Alertmanager API answers it (400 "endsAt: in the past"): it would mute nothing, ever.
    The CLI took it (exit 0) and printed its end as raw epoch milliseconds."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing is reached: refused first
    argv = ["silence", "add", 'service="x"', "--duration", "1h", "--start", "2020-01-01T00:00:00Z"]
    assert main(argv) == EXIT_INVALID
    assert capsys.readouterr().err.strip() == (
        "opsloop silence: --start + --duration ends at 2020-01-01 01:00:00, in the past"
    )


def test_a_dead_letters_key_is_one_line_with_its_controls_escaped_and_a_long_one_cut():
    """`opsloop dlq list` printed a 10,000-byte binary key raw: terminal escapes and all."""
    from streams.cli.main import SHOWN_KEY_CHARS, shown_key

    assert shown_key(b"acme:alert:x") == "acme:alert:x" and shown_key(None) == ""
    assert shown_key(b"\x1b[31mred\x00") == "\\x1b[31mred\\x00"
    long = shown_key(b"k" * 10_000)
    assert long == "k" * SHOWN_KEY_CHARS + "… (10000 bytes)"
