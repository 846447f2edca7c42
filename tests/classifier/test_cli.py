"""`opsloop classifier eval` prints the comparison; version mismatches exit 2 with the hint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from classifier import cli
from classifier.cli import main
from classifier.crosssource import SYSTEM_NAMES, SYSTEMS
from classifier.dataset import default_rules_path
from classifier.model import encode_artifact

# Three of the catalogue's 13 groups: the leave-one-source-out evaluation in seconds, not minutes
REDUCED_GROUPS = ("Message brokers", "Storage", "Other")


@pytest.fixture
def reduced_rules(tmp_path: Path) -> Path:
    """The vendored catalogue cut to REDUCED_GROUPS, written where `--rules` can read it."""
    doc = yaml.safe_load(default_rules_path().read_text())
    doc["groups"] = [g for g in doc["groups"] if g["name"] in REDUCED_GROUPS]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_eval_prints_both_views_and_writes_the_report(reduced_rules, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    monkeypatch.setattr(cli, "REPORT_PATH", out_dir / "REPORT.md")
    monkeypatch.setattr(
        cli, "PNG_PATHS", {head: out_dir / f"confusion_{head}.png" for head in ("category", "severity")}
    )
    monkeypatch.setattr(cli, "RELIABILITY_PNG", out_dir / "reliability_severity.png")

    assert main(["eval", "--rules", str(reduced_rules)]) == 0

    captured = capsys.readouterr()
    # the committed model was trained on the whole catalogue, and eval says so
    assert "the training data changed since this model was trained" in captured.err
    out = captured.out
    assert "category macro-F1" in out and "keyword" in out and "latency_errors" in out
    assert "leave-one-source-out" in out and all(SYSTEM_NAMES[s] in out for s in SYSTEMS)
    report = (out_dir / "REPORT.md").read_text()
    held_out_rows = [line for line in report.splitlines() if line.startswith(tuple(f"| {g} |" for g in REDUCED_GROUPS))]
    assert len(held_out_rows) == len(REDUCED_GROUPS)  # one per-source row for each group held out
    assert sorted(p.name for p in out_dir.glob("*.png")) == [
        "confusion_category.png",
        "confusion_severity.png",
        "reliability_severity.png",
    ]


def test_eval_refuses_another_sklearn(model, tmp_path, capsys):
    path = tmp_path / "old.pkl"
    path.write_bytes(encode_artifact(model.pipeline, dict(model.meta, sklearn_version="1.0")))
    assert main(["eval", "--model", str(path), "--no-report"]) == 2
    assert "opsloop classifier train" in capsys.readouterr().err
