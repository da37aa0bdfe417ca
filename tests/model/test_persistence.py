"""Saving models with skops: round trip, tamper detection, untrusted types refused."""

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from model import ArtifactError, dumps, loads, train
from model.persistence import sha256
from tests.conftest import TINY


def _model():  # type: ignore[no-untyped-def]
    texts, labels = zip(*TINY, strict=True)
    return train(texts, labels, labels=["positive", "negative"])


def test_round_trip_predicts_the_same() -> None:
    model = _model()
    artifact = dumps(model, extra={"train_size": 10})
    restored = loads(artifact.data, artifact.metadata)
    texts = ["lovely food", "rude staff"]
    assert np.allclose(model.predict(texts).probabilities, restored.predict(texts).probabilities)
    assert restored.labels == ("positive", "negative")
    meta = artifact.metadata
    assert meta["train_size"] == 10 and meta["featurizer"] == "tfidf"
    assert {"python", "scikit-learn", "numpy", "skops"} <= set(meta["versions"])


def test_tampered_artifact_is_refused() -> None:
    artifact = dumps(_model())
    data = bytearray(artifact.data)
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match="hash"):
        loads(bytes(data), artifact.metadata)


def _shout(x):  # type: ignore[no-untyped-def]
    return x


def test_artifact_with_foreign_types_is_refused() -> None:
    """Even with a matching hash, code outside sklearn/numpy/scipy is never rebuilt."""
    pipeline = Pipeline([("f", FunctionTransformer(_shout))])
    data = sio.dumps(pipeline)
    meta = {"format": "hitl-skops-1", "sha256": sha256(data), "labels": ["a"], "featurizer": "x"}
    with pytest.raises(ArtifactError, match="untrusted"):
        loads(data, meta)
