"""Calibration and the severity decision: chosen out of source, on training data only."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.training import (
    THRESHOLD_GRID,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    severity_cost,
    severity_decision,
    softmax_t,
    threshold_curve,
    urgent_fpr,
)


def test_macro_f1_averages_classes_present_in_the_truth():
    truth = ["a", "a", "a", "b"]
    pred = ["a", "a", "c", "b"]  # "c" is never true: it costs recall of "a" but adds no class of its own
    assert macro_f1(truth, pred) == pytest.approx((0.8 + 1.0) / 2)


def test_threshold_curve_switches_between_model_and_rules():
    truth, model, rules = ["x", "y", "y"], ["x", "x", "x"], ["y", "y", "y"]
    curve = threshold_curve(truth, model, np.array([0.95, 0.3, 0.3]), rules)
    assert curve[0] == macro_f1(truth, model) and curve[THRESHOLD_GRID.index(0.5)] == 1.0


def test_urgent_false_positive_rate_counts_warnings_and_infos_paged():
    truth = ["warning", "warning", "info", "urgent", "action"]
    pred = ["urgent", "warning", "urgent", "urgent", "urgent"]
    assert urgent_fpr(truth, pred) == pytest.approx(2 / 3)


def test_below_the_minimum_confidence_the_default_answers():
    order = ["info", "warning", "action", "urgent"]
    cost = np.asarray(severity_cost(6.0))
    proba = np.array([[0.05, 0.05, 0.05, 0.85], [0.1, 0.3, 0.2, 0.4], [0.7, 0.2, 0.05, 0.05]])
    idx, unsure = severity_decision(proba, cost, 0.5, order.index("warning"))
    assert [order[i] for i in idx] == ["urgent", "warning", "info"]
    assert unsure.tolist() == [False, True, False]


def test_a_false_page_costs_more_than_a_missed_one():
    """At 55 % urgent / 45 % warning the expected cost does not page (it hedges: action or warning)."""
    cost = np.asarray(severity_cost(6.0))
    idx, _ = severity_decision(np.array([[0.0, 0.45, 0.0, 0.55]]), cost, 0.0, 1)
    assert idx.tolist() != [3]
    idx, _ = severity_decision(np.array([[0.0, 0.1, 0.0, 0.9]]), cost, 0.0, 1)
    assert idx.tolist() == [3]


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3))
    truth = np.array([rng.choice(3, p=p) for p in softmax_t(true_logits, 1.0)])
    fitted = fit_temperature(true_logits * 2.0, truth)  # twice as confident as it should be
    assert 1.8 <= fitted <= 2.2


def test_expected_calibration_error():
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert expected_calibration_error([0.99] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.49)


def test_committed_artifact_records_its_policy(model):
    decision, selection = model.meta["decision"], model.meta["policy_selection"]
    assert decision["default_severity"] == "warning" and decision["severity_fallback"] in ("default", "keyword")
    assert selection["severity"]["chosen"]["min_confidence"] == decision["severity_min_confidence"]
    chosen = selection["severity"]["curves"][
        f"{decision['severity_fallback']}, false page {decision['false_page_cost']:g}"
    ]
    i = selection["grid"].index(decision["severity_min_confidence"])
    assert chosen["urgent_fpr"][i] <= selection["max_urgent_fpr"]
    assert "Databases" in selection["sources"] and len(selection["sources"]) == 13  # the catalogue groups


def test_selection_is_reproducible_and_matches_the_committed_policy(split, model):
    """Re-running the cross-source selection on the training data gives the committed policy and numbers."""
    from classifier.training import select_policy

    train, _test, _sources = split
    calibration, decision, thresholds, record = select_policy(train)
    assert calibration == model.meta["calibration"]
    assert decision == model.meta["decision"]
    assert thresholds == model.meta["thresholds"]
    assert record == model.meta["policy_selection"]
