"""Batched prediction, fallback below the threshold, and artifact checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import classifier
from classifier import (
    CATEGORIES,
    SEVERITIES,
    KeywordClassifier,
    ModelClassifier,
    ModelVersionError,
    Prediction,
    load_classifier,
)
from classifier.examples import load_examples
from classifier.features import tokens_batch
from classifier.model import ModelArtifactError, ModelNotFoundError, encode_artifact

from .conftest import alert


def _events(rules=None):
    events = [e.event for e in load_examples()]
    events.append(alert("HostOutOfMemory", severity="critical"))
    events.append({})
    return events


def test_public_api():
    assert classifier.SEVERITIES == ("info", "warning", "action", "urgent")
    assert len(CATEGORIES) == len(set(CATEGORIES)) and "other" in CATEGORIES
    assert KeywordClassifier().version == "keyword-1"


def test_predict_batch_shape_and_order(model):
    events = _events()
    preds = model.predict_batch(events)
    assert len(preds) == len(events) and all(isinstance(p, Prediction) for p in preds)
    assert {p.category for p in preds} <= set(CATEGORIES) and {p.severity for p in preds} <= set(SEVERITIES)
    assert all(0.0 <= p.category_p <= 1.0 and 0.0 <= p.severity_p <= 1.0 for p in preds)
    assert all(p.model_version == model.version and model.version.startswith("model-") for p in preds)
    # order and batch composition do not matter
    assert model.predict_batch(events[::-1]) == preds[::-1]
    assert [model.predict_batch([e])[0] for e in events[:20]] == preds[:20]
    assert model.predict_batch([]) == [] and KeywordClassifier().predict_batch([]) == []


def test_fast_path_equals_the_sklearn_pipeline(model):
    events = _events()
    reference = model.pipeline.predict_proba(events)
    fast = model.predict_proba_tokens(tokens_batch(events))
    for ref, got in zip(reference, fast):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_obvious_alerts(model):
    preds = model.predict_batch([
        alert("HostOutOfMemory", severity="critical"),
        alert("NodeFilesystemSpaceFillingUp", severity="warning"),
        alert("KubePodCrashLooping", severity="warning"),
        alert("CertificateExpiringSoon", severity="info"),
    ])
    assert [p.category for p in preds] == ["memory", "disk", "availability", "certificate"]
    assert [p.severity for p in preds] == ["urgent", "warning", "warning", "info"]


def test_fallback_below_threshold_uses_the_rules(model):
    events = _events()
    always = ModelClassifier(model.pipeline, model.meta, "f" * 12, threshold=1.01)
    rules = KeywordClassifier().predict_batch(events)
    for p, r in zip(always.predict_batch(events), rules):
        assert p.fallback and (p.category, p.severity) == (r.category, r.severity)
        assert p.model_version == always.version  # the record names the model that chose to fall back
    never = ModelClassifier(model.pipeline, model.meta, "f" * 12, threshold=0.0)
    assert not any(p.fallback for p in never.predict_batch(events))


def test_thresholds_come_from_the_artifact(model):
    assert 0.0 < model.category_threshold < 1.0 and 0.0 < model.severity_threshold < 1.0
    preds = model.predict_batch(_events())
    for p in preds:
        if not p.fallback:
            assert p.category_p >= model.category_threshold and p.severity_p >= model.severity_threshold


def test_load_classifier_default_is_the_committed_model(model):
    loaded = load_classifier()
    assert isinstance(loaded, ModelClassifier) and loaded.version == model.version
    assert loaded.meta["sklearn_version"] and loaded.meta["training_data_sha256"]
    assert loaded.meta["metrics"]["category_macro_f1_model"] > 0


def test_other_sklearn_version_is_refused_with_the_retrain_hint(model, tmp_path):
    path = tmp_path / "old.pkl"
    path.write_bytes(encode_artifact(model.pipeline, dict(model.meta, sklearn_version="0.23.2")))
    with pytest.raises(ModelVersionError, match=r"0\.23\.2.*opsloop classifier train"):
        load_classifier(path)


def test_broken_or_missing_artifacts_are_named(model, tmp_path):
    with pytest.raises(ModelNotFoundError, match="opsloop classifier train"):
        load_classifier(tmp_path / "nope.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelArtifactError):
        load_classifier(garbage)
    tampered = pickle.loads(encode_artifact(model.pipeline, model.meta))
    tampered["model"] = tampered["model"][:-1] + b"\x00"
    (tmp_path / "tampered.pkl").write_bytes(pickle.dumps(tampered))
    with pytest.raises(ModelArtifactError, match="corrupted"):
        load_classifier(tmp_path / "tampered.pkl")


def test_missing_default_artifact_degrades_to_rules(monkeypatch, tmp_path):
    import classifier.model as model_module

    monkeypatch.setattr(model_module, "DEFAULT_MODEL_PATH", tmp_path / "absent.pkl")
    assert isinstance(load_classifier(), KeywordClassifier)


def test_fast_path_when_the_token_memo_is_full(model, monkeypatch):
    import classifier.scoring as scoring

    monkeypatch.setattr(scoring, "_MEMO_LIMIT", 0)
    fresh = ModelClassifier(model.pipeline, model.meta, "0" * 12)
    events = _events()
    reference = model.pipeline.predict_proba(events)
    for ref, got in zip(reference, fresh.predict_proba_tokens(tokens_batch(events))):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert not fresh._scorer._memo
