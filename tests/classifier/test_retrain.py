"""Training is reproducible: twice from the same data gives the same model."""

from __future__ import annotations

import numpy as np

from classifier.features import tokens_batch
from classifier.model import ModelClassifier
from classifier.training import fit_pipeline, train_model


def test_retraining_twice_gives_an_identical_model(split):
    # Without the cross-validated thresholds to stay fast; the fit itself is the full one.
    first = train_model(with_thresholds=False)
    second = train_model(with_thresholds=False)
    assert first.artifact == second.artifact
    assert first.classifier.version == second.classifier.version
    events = [s.event for s in first.test]
    assert first.classifier.predict_batch(events) == second.classifier.predict_batch(events)


def test_committed_model_matches_the_code_and_data(split, model):
    """The committed artifact is what training on the current corpus produces.

    Same labels exactly; probabilities equal up to floating-point rounding, because
    OpenBLAS picks its kernels by CPU (DYNAMIC_ARCH): the fit on an AVX-512 machine
    differs from one on an AVX2 machine by about 1e-11. A stale artifact (other data,
    other features) differs by orders of magnitude more. On one machine the bytes
    are identical (the test above).
    """
    from classifier.corpus import samples_sha256

    train, test, sources = split
    assert model.meta["training_data_sha256"] == samples_sha256(train), "stale artifact: run `opsloop classifier train`"
    assert model.meta["rules_sha256"] == sources["rules_sha256"]
    refit = ModelClassifier(fit_pipeline(train), {}, "0" * 12)
    tokens = tokens_batch([s.event for s in test])
    for committed, fresh in zip(model.predict_proba_tokens(tokens), refit.predict_proba_tokens(tokens)):
        np.testing.assert_array_equal(committed.argmax(axis=1), fresh.argmax(axis=1))
        np.testing.assert_allclose(committed, fresh, rtol=1e-8, atol=1e-12)
