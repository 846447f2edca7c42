"""Fallback thresholds: chosen by macro-F1 on grouped cross-validation over training services only."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.training import (
    SELECTION_CONDITIONS,
    THRESHOLD_GRID,
    choose_threshold,
    macro_f1,
    threshold_curve,
)


def test_macro_f1_averages_classes_present_in_the_truth():
    truth = ["a", "a", "a", "b"]
    # "c" is never true: predicting it costs recall of "a" but adds no class of its own.
    pred = ["a", "a", "c", "b"]
    assert macro_f1(truth, pred) == pytest.approx((0.8 + 1.0) / 2)


def test_macro_f1_is_not_accuracy():
    truth = ["big"] * 9 + ["rare"]
    always_big = ["big"] * 10
    assert macro_f1(truth, always_big) < 0.5 < float(np.mean(np.array(truth) == np.array(always_big)))


def test_threshold_curve_switches_between_model_and_rules():
    truth = ["x", "y", "y"]
    model = ["x", "x", "x"]
    rules = ["y", "y", "y"]
    p = np.array([0.95, 0.3, 0.3])
    curve = threshold_curve(truth, model, p, rules)
    assert len(curve) == len(THRESHOLD_GRID)
    assert curve[0] == macro_f1(truth, model)  # t = 0: the model everywhere
    assert curve[THRESHOLD_GRID.index(0.5)] == 1.0  # unsure rows go to the rules, which are right there


def test_choose_threshold_maximises_the_mean_curve_and_prefers_the_lowest():
    n = len(THRESHOLD_GRID)
    a = [0.5] * n
    b = [0.5] * n
    a[3], b[3] = 0.9, 0.1  # mean 0.5: no better than elsewhere
    a[5] = b[5] = a[9] = b[9] = 0.7  # a tie between two thresholds: the lower one wins
    assert choose_threshold([a, b]) == THRESHOLD_GRID[5]


def test_committed_artifact_records_how_its_thresholds_were_chosen(model):
    selection = model.meta["threshold_selection"]
    assert selection["grouped_by"] == "service" and selection["conditions"] == list(SELECTION_CONDITIONS)
    for head, threshold in (("category", model.category_threshold), ("severity", model.severity_threshold)):
        record = selection[head]
        assert record["threshold"] == threshold
        curves = [record["curve"][c] for c in SELECTION_CONDITIONS]
        assert choose_threshold(curves) == threshold
        # The numbers come from the training services: none of them is a test service.
        assert selection["n_train_events"] == model.meta["n_train"]


def test_selection_is_reproducible_and_matches_the_committed_thresholds(split, model):
    """Re-running the cross-validation on the training services gives the committed thresholds and numbers."""
    from classifier.training import choose_thresholds

    train, _test, _sources = split
    thresholds, record = choose_thresholds(train)
    assert thresholds == model.meta["thresholds"]
    assert record == model.meta["threshold_selection"]
