"""CLI errors are one line with file:line, and exit non-zero."""

from __future__ import annotations

import json

from streams.cli.main import main
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
