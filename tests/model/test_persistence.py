"""Saving models with skops: round trip, signatures, tamper detection, untrusted types refused."""

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from model import ArtifactError, TextClassifier, dumps, loads, train
from model.persistence import sha256, signature
from tests.conftest import TINY

KEY = b"k" * 32


def _model() -> TextClassifier:
    texts, labels = zip(*TINY, strict=True)
    return train(texts, labels, labels=["positive", "negative"])


def _rewrite_schema(data: bytes, change: Any) -> bytes:
    """The same zip with schema.json passed through `change` (an attacker's edit)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "schema.json":
                content = json.dumps(change(json.loads(content))).encode()
            target.writestr(name, content)
    return out.getvalue()


def _plant_exec(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace the first string parameter of the pipeline with a reference to builtins.exec."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, dict) and value.get("__loader__") == "JsonNode":
                    node[key] = {
                        "__class__": "exec",
                        "__module__": "builtins",
                        "__loader__": "TypeNode",
                        "__id__": 1,
                    }
                    return schema
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError("no string node to replace")


def test_round_trip_predicts_the_same() -> None:
    model = _model()
    artifact = dumps(model, key=KEY, extra={"train_size": 10})
    restored = loads(artifact.data, artifact.metadata, key=KEY)
    texts = ["lovely food", "rude staff"]
    assert np.allclose(model.predict(texts).probabilities, restored.predict(texts).probabilities)
    assert restored.labels == ("positive", "negative")
    meta = artifact.metadata
    assert meta["train_size"] == 10 and meta["featurizer"] == "tfidf"
    assert {"python", "scikit-learn", "numpy", "skops"} <= set(meta["versions"])
    assert meta["signature"]["scheme"] == "hmac-sha256"


def test_tampered_artifact_is_refused() -> None:
    artifact = dumps(_model(), key=KEY)
    data = bytearray(artifact.data)
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match="signature"):
        loads(bytes(data), artifact.metadata, key=KEY)


def test_a_row_rewritten_without_the_key_is_refused_even_with_a_fresh_hash() -> None:
    artifact = dumps(_model(), key=KEY)
    forged = _rewrite_schema(artifact.data, _plant_exec)
    meta = {**artifact.metadata, "sha256": sha256(forged)}
    with pytest.raises(ArtifactError, match="signature does not match"):
        loads(forged, meta, key=KEY)


def test_another_deployments_key_is_refused() -> None:
    artifact = dumps(_model(), key=KEY)
    with pytest.raises(ArtifactError, match="signature"):
        loads(artifact.data, artifact.metadata, key=b"x" * 32)


def test_relabelled_metadata_is_refused() -> None:
    """The signature covers the labels: swapping them would silently flip every answer."""
    artifact = dumps(_model(), key=KEY)
    meta = {**artifact.metadata, "labels": ["negative", "positive"]}
    with pytest.raises(ArtifactError, match="signature"):
        loads(artifact.data, meta, key=KEY)


def test_builtins_exec_is_refused_even_when_signed_with_the_key() -> None:
    """The type check does not lean on the signature: exec is never rebuilt."""
    artifact = dumps(_model(), key=KEY)
    forged = _rewrite_schema(artifact.data, _plant_exec)
    meta = {**artifact.metadata, "sha256": sha256(forged)}
    meta["signature"] = {"scheme": "hmac-sha256", "value": signature(KEY, forged, meta)}
    with pytest.raises(ArtifactError, match=r"builtins\.exec"):
        loads(forged, meta, key=KEY)


def _shout(x):  # type: ignore[no-untyped-def]
    return x


def test_artifact_with_foreign_types_is_refused() -> None:
    """Even signed, code outside the exact types we save is never rebuilt."""
    pipeline = Pipeline([("f", FunctionTransformer(_shout))])
    data = sio.dumps(pipeline)
    meta: dict[str, Any] = {
        "format": "hitl-skops-1",
        "sha256": sha256(data),
        "labels": ["a"],
        "featurizer": "x",
    }
    meta["signature"] = {"scheme": "hmac-sha256", "value": signature(KEY, data, meta)}
    with pytest.raises(ArtifactError, match="untrusted"):
        loads(data, meta, key=KEY)
