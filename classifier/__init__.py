"""opsloop's incident classifier: category and severity for every event, with a probability.

    from classifier import load_classifier
    clf = load_classifier()               # the committed model (keyword rules if none)
    preds = clf.predict_batch(events)      # one Prediction per event, features per batch

Training, evaluation and the labelling rules are described in classifier/REPORT.md
and classifier/LABELLING.md.
"""

from classifier.keyword import KeywordClassifier
from classifier.model import ModelArtifactError, ModelClassifier, ModelNotFoundError, ModelVersionError, load_classifier
from classifier.prediction import Prediction
from streams.model.taxonomy import CATEGORIES, SEVERITIES

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "Prediction",
    "KeywordClassifier",
    "ModelClassifier",
    "load_classifier",
    "ModelVersionError",
    "ModelArtifactError",
    "ModelNotFoundError",
]
