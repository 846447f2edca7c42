"""`opsloop classifier eval` prints the comparison; version mismatches exit 2 with the hint."""

from __future__ import annotations

import pytest

from classifier.cli import main
from classifier.model import encode_artifact


@pytest.mark.slow  # the whole leave-one-source-out evaluation: ~2 minutes of CPU
def test_eval_prints_model_and_baseline(split, capsys):
    assert main(["eval", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "category macro-F1" in out and "keyword" in out and "latency_errors" in out


def test_eval_refuses_another_sklearn(model, tmp_path, capsys):
    path = tmp_path / "old.pkl"
    path.write_bytes(encode_artifact(model.pipeline, dict(model.meta, sklearn_version="1.0")))
    assert main(["eval", "--model", str(path), "--no-report"]) == 2
    assert "opsloop classifier train" in capsys.readouterr().err
