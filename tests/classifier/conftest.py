"""Shared fixtures for the classifier tests: the catalogue, the split, the committed model."""

from __future__ import annotations

import pytest

from classifier.dataset import Rule, load_rules


@pytest.fixture(scope="session")
def rules() -> list[Rule]:
    """The awesome-prometheus-alerts catalogue vendored in the repository."""
    return load_rules()


@pytest.fixture(scope="session")
def split(rules):
    """(train, test, sources) exactly as `opsloop classifier train` builds them."""
    from classifier.training import load_corpus_split

    return load_corpus_split()


@pytest.fixture(scope="session")
def model():
    """The committed model artifact."""
    from classifier.model import DEFAULT_MODEL_PATH, ModelClassifier

    assert DEFAULT_MODEL_PATH.is_file(), f"the committed classifier artifact {DEFAULT_MODEL_PATH} is missing"
    return ModelClassifier.from_bytes(DEFAULT_MODEL_PATH.read_bytes(), DEFAULT_MODEL_PATH)


def alert(name: str, **labels: str) -> dict:
    """A minimal Alertmanager-style event."""
    return {
        "event_id": "e1",
        "session_key": "acme:alert:1",
        "kind": "telemetry",
        "type": "alert.firing",
        "source": "alertmanager",
        "org": "acme",
        "occurred_at": 1_700_000_000_000,
        "received_at": 1_700_000_000_000,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": name},
        "payload": None,
    }
