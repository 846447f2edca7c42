"""Batched prediction, fallback below the threshold, and artifact checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

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
from classifier.model import ModelArtifactError, ModelNotFoundError, TokenColumns, encode_artifact

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
    # order and batch composition do not matter (computed afresh: the memo forgotten)
    model.clear_caches()
    assert model.predict_batch(events[::-1]) == preds[::-1]
    model.clear_caches()
    assert [model.predict_batch([e])[0] for e in events[:20]] == preds[:20]
    # remembered predictions are the computed ones, whatever batch asked first
    assert model.predict_batch(events[5:] + events[:5]) == preds[5:] + preds[:5]
    assert model.predict_batch(events + events) == preds + preds
    assert model.predict_batch([]) == [] and KeywordClassifier().predict_batch([]) == []


def test_fast_path_equals_the_sklearn_pipeline(model):
    events = _events()
    reference = model.pipeline.predict_proba(events)
    fast = model.predict_proba_tokens(tokens_batch(events))
    for ref, got in zip(reference, fast):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_obvious_alerts(model):
    preds = model.predict_batch(
        [
            alert("HostOutOfMemory", severity="critical"),
            alert("NodeFilesystemSpaceFillingUp", severity="warning"),
            alert("KubePodCrashLooping", severity="warning"),
            alert("CertificateExpiringSoon", severity="info"),
        ]
    )
    assert [p.category for p in preds] == ["memory", "disk", "availability", "certificate"]
    assert [p.severity for p in preds] == ["urgent", "warning", "warning", "info"]
    assert not any(p.severity_inferred for p in preds)


def test_fallback_below_threshold_uses_the_rules(model):
    events = _events()
    meta = dict(
        model.meta, decision=dict(model.meta["decision"], category_fallback="keyword", severity_fallback="keyword")
    )
    always = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=1.01)
    rules = KeywordClassifier().predict_batch(events)
    for p, r in zip(always.predict_batch(events), rules):
        assert p.category == r.category
        assert p.fallback or not p.category_inferred  # a kind that fixes the category is the rules' answer anyway
        if p.severity_basis != "stated":
            assert p.severity == r.severity and p.severity_basis == "rules"
        assert p.model_version == always.version  # the record names the model that chose to fall back
    never = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=0.0)
    assert not any(p.fallback for p in never.predict_batch(events))


def test_the_rules_text_only_answers_are_left_to_the_model(model):
    """``keyword_no_text``: below the threshold the rules answer unless their only evidence is a word of the text."""
    texts = {
        "PrometheusNotificationQueueRunningFull": "Alert notification queue of Prometheus is running full.",
        "KubeHpaMaxedOut": "HPA has been running at max replica count for longer than 15 minutes.",
        "HostDiskWillFillIn24Hours": "Filesystem is predicted to run out of space.",
        "Watchdog": "This alert is always firing, by design.",
    }
    events = [dict(alert(name), annotations={"summary": name, "description": text}) for name, text in texts.items()]
    meta = dict(model.meta, decision=dict(model.meta["decision"], category_fallback="keyword_no_text"))
    always = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=1.01)
    alone = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=0.0)
    rules = KeywordClassifier().predict_batch(events)
    got = always.predict_batch(events)
    # a word of the name (queue, disk), one of the description only (replica), none at all
    assert [r.category_p for r in rules] == [0.7, 0.5, 0.7, 0.3]
    for p, r, m in zip(got, rules, alone.predict_batch(events)):
        if r.category_p != 0.5:  # the rules' answer and confidence
            assert (p.category, p.category_p, p.fallback) == (r.category, r.category_p, True)
        else:  # the model's answer and probability
            assert (p.category, p.category_p) == (m.category, m.category_p)
    assert got[2].category == "disk" and got[3].category == "other"


def test_a_category_label_of_the_taxonomy_is_stated_and_honoured_by_both_classifiers(model):
    hpa = alert("KubeHpaReplicasMismatch", severity="warning")
    events = [
        dict(hpa, labels={**hpa["labels"], "category": " Deployment "}),
        dict(hpa, labels={**hpa["labels"], "category": "infra"}),  # a house's own word: an ordinary label
        hpa,
    ]
    for clf in (model, KeywordClassifier()):
        stated, own, plain = clf.predict_batch(events)
        assert (stated.category, stated.category_p, stated.category_inferred) == ("deployment", 1.0, False)
        assert not stated.fallback  # its severity is stated too: nothing left to the rules
        assert own.category_inferred and plain.category_inferred
        assert (stated.severity, stated.severity_basis) == (plain.severity, plain.severity_basis)


def test_unsure_severity_gets_the_default_flagged_inferred(model):
    meta = dict(model.meta, decision=dict(model.meta["decision"], severity_fallback="default"))
    unsure = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=1.01)
    events = [alert("HostOutOfMemory"), alert("KubePodCrashLooping"), alert("ApiErrors")]
    for p in unsure.predict_batch(events):
        assert (p.severity, p.severity_basis, p.severity_inferred, p.fallback) == ("warning", "default", True, True)
    # the default is configurable
    info = ModelClassifier(model.pipeline, meta, "f" * 12, threshold=1.01, default_severity="info")
    assert {p.severity for p in info.predict_batch(events)} == {"info"}
    with pytest.raises(ValueError):
        ModelClassifier(model.pipeline, meta, "f" * 12, default_severity="loud")


def test_stated_severity_is_honoured_and_not_inferred(model):
    resolved = alert("HostOutOfMemory", severity="critical")
    resolved["type"] = "alert.resolved"
    events = [
        alert("SomethingHarmless", severity="critical"),
        alert("HostOutOfMemory", severity="info"),
        alert("HostOutOfMemory", severity="P3"),
        resolved,
        alert("HostOutOfMemory"),
    ]
    preds = model.predict_batch(events)
    assert [p.severity for p in preds[:4]] == ["urgent", "info", "warning", "info"]
    assert all(not p.severity_inferred and p.severity_p == 1.0 and p.severity_basis == "stated" for p in preds[:4])
    assert preds[4].severity_inferred and preds[4].severity_basis in ("model", "rules", "default")
    assert all(p.category_inferred for p in preds)


def test_a_lone_error_word_does_not_page(model):
    events = []
    for name in ("ApiErrors", "JobFailed", "SyncFailed", "ExporterErrors"):
        e = alert(name)
        e["annotations"]["description"] = "An error occurred."
        events.append(e)
    assert all(p.severity != "urgent" for p in model.predict_batch(events))


def test_threshold_pair_differs_in_features_and_the_shorter_horizon_is_more_urgent(model):
    """A warning/critical pair that differs only in its predict_linear horizon and wording."""
    from classifier.dataset import generator_url

    def fs(hours):
        e = alert("NodeFilesystemSpaceFillingUp")
        text = f"Filesystem is predicted to run out of space within the next {hours} hours."
        e["annotations"] = {"summary": text, "description": text}
        e["payload"] = {
            "generator_url": generator_url(f"predict_linear(node_filesystem_avail_bytes[6h], {hours}*60*60) < 0")
        }
        return e

    slow, fast = fs(24), fs(4)
    ts, tf = tokens_batch([slow, fast])
    assert "hz:1d" in ts and "hz:6h" in tf and "tdur:1d" in ts and "tdur:6h" in tf
    _, sev = model.calibrated_proba_tokens([ts, tf])
    urgent = list(model.severity_classes).index("urgent")
    assert sev[1, urgent] > sev[0, urgent]


def test_thresholds_come_from_the_artifact(model):
    assert 0.0 <= model.category_threshold < 1.0 and 0.0 < model.severity_threshold < 1.0
    assert model.decision["severity_min_confidence"] == model.severity_threshold
    preds = model.predict_batch(_events())
    for p in preds:
        if p.severity_basis == "model":
            assert p.severity_p >= model.severity_threshold


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

    monkeypatch.setattr(scoring, "_MEMO_LIMIT", 1)
    fresh = ModelClassifier(model.pipeline, model.meta, "0" * 12)
    events = _events()
    reference = model.pipeline.predict_proba(events)
    for ref, got in zip(reference, fresh.predict_proba_tokens(tokens_batch(events))):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert len(fresh._scorer._memo) == 1  # full all along: started over at every new token


def test_a_full_memo_starts_over_so_what_comes_after_a_storm_is_cached():
    from classifier.features import memoize

    calls: list[int] = []

    @memoize(4)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    for i in range(10):  # a storm of one-off arguments fills the memo
        double(i)
    calls.clear()
    assert [double(100) for _ in range(3)] == [200, 200, 200]
    assert calls == [100]  # a memo that stopped storing when full computed it three times


def test_token_columns_read_off_the_csr_arrays_agree_with_column_slicing():
    """``TokenColumns.present`` replaced ``X[:, cols]``: the same answer on any matrix of positive
    values, with columns never seen (-1), a column asked twice, rows using none, and empty rows."""
    rng = np.random.default_rng(7)
    n_columns = 50
    cols = np.array([3, -1, 17, 3, 49, 0], dtype=np.int64)
    wanted = TokenColumns(cols, n_columns)
    for n_rows in (0, 1, 16, 200):
        X = sp.random(
            n_rows, n_columns, density=0.08, format="csr", random_state=rng, data_rvs=lambda k: rng.random(k) + 0.1
        )
        expected = np.zeros((n_rows, len(cols)), dtype=bool)
        known = np.flatnonzero(cols >= 0)
        expected[:, known] = X[:, cols[known]].toarray() != 0
        assert wanted.present(X).tolist() == expected.tolist()
    X = sp.csr_matrix(([1.0, 1.0, 1.0], [17, 3, 49], [0, 0, 2, 3]), shape=(3, n_columns))
    assert wanted.present(X).tolist() == [
        [False] * 6,
        [True, False, True, True, False, False],
        [False, False, False, False, True, False],
    ]


@pytest.mark.parametrize(
    ("labels", "severity"),
    [
        ({"priority": "P1"}, "urgent"),
        ({"priority": "p2"}, "action"),
        ({"urgency": "high"}, "urgent"),
        ({"level": "critical"}, "urgent"),
        ({"severity": "SEV-1"}, "urgent"),
        ({"severity": "Sev 3"}, "warning"),
        ({"severity": "ticket"}, "action"),
        ({"severity": "page"}, "urgent"),
        ({"priority": "P1 - Critical"}, "urgent"),  # a ticketing tool's level with its name
        ({"severity": "warning", "priority": "P1"}, "urgent"),  # two stated: the more pressing
    ],
)
def test_other_house_styles_of_stating_a_severity_are_honoured(model, labels, severity):
    event = alert("HostHighCpuLoad")
    event["labels"].update(labels)
    (p,) = model.predict_batch([event])
    assert (p.severity, p.severity_basis, p.severity_p) == (severity, "stated", 1.0)


def test_an_unknown_priority_value_is_not_a_stated_severity(model):
    event = alert("HostHighCpuLoad")
    event["labels"]["priority"] = "whenever"
    (p,) = model.predict_batch([event])
    assert p.severity_basis != "stated"


@pytest.mark.parametrize(
    ("name", "description", "category"),
    [
        ("KubeAPIErrorBudgetBurn", "The API server is burning too much error budget.", "latency_errors"),
        ("SLOErrorBudgetBurnFast", "checkout is burning its 30d error_budget 14x too fast", "latency_errors"),
        (
            "PodDisruptionBudgetAtLimit",
            "The pod disruption budget is at the minimum disruptions allowed.",
            "availability",
        ),
        ("CloudSpendOverBudget", "Monthly spend is above the budget.", "cost"),
        ("KubeNodeNotReady", "Node is not ready.", "availability"),
        ("etcdNoLeader", "etcd cluster has no leader.", "availability"),
        ("NodeRAIDDegraded", "RAID array is degraded.", "disk"),
    ],
)
def test_two_word_terms_of_other_houses(model, name, description, category):
    event = alert(name)
    event["annotations"]["description"] = description
    (p,) = model.predict_batch([event])
    assert p.category == category
