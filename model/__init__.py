"""Text classification for hitl-bot: features, training, prediction, metrics, persistence.

This package knows scikit-learn and numbers only; it never imports Slack or SQL.
"""

from model.classifier import Prediction, TextClassifier, TrainingError, train
from model.features import FEATURIZERS, UnknownFeaturizerError, build_featurizer
from model.persistence import ArtifactError, dumps, loads

__all__ = [
    "FEATURIZERS",
    "ArtifactError",
    "Prediction",
    "TextClassifier",
    "TrainingError",
    "UnknownFeaturizerError",
    "build_featurizer",
    "dumps",
    "loads",
    "train",
]
