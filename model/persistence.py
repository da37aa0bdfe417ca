"""Saving and loading classifiers with skops.io; pickle is never loaded.

An artifact is trusted only when (1) its HMAC signature, made with a key the database never
holds, matches its bytes and metadata, and (2) every node of its skops schema is one of the
exact types and loaders this product saves. The content hash alone proves integrity, not
origin: whoever can write the row can recompute it.
"""

import hashlib
import hmac
import io
import json
import platform
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
import sklearn
import skops
import skops.io as sio

from model.classifier import TextClassifier

FORMAT = "hitl-skops-1"
SIGNATURE_SCHEME = "hmac-sha256"

# The exact types the product's pipelines are made of (see model/classifier.py and
# model/features.py). A new featurizer or classifier adds its types here, with a test.
TRUSTED_TYPES = frozenset(
    {
        "builtins.bool",
        "builtins.dict",
        "builtins.float",
        "builtins.int",
        "builtins.list",
        "builtins.NoneType",
        "builtins.str",
        "builtins.tuple",
        # Holds only the embedding model's key and a weight; the model itself is never saved.
        "model.embeddings.EmbeddingFeatures",
        "numpy.dtype",
        "numpy.float32",
        "numpy.float64",
        "numpy.int32",
        "numpy.int64",
        "numpy.ndarray",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.frozen._frozen.FrozenEstimator",
        "sklearn.linear_model._sgd_fast.Hinge",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.svm._classes.LinearSVC",
    }
)
# skops node kinds that only rebuild data and plain objects; function, method, operator,
# partial and reduce nodes (which can call anything) never appear in our artifacts.
_TRUSTED_LOADERS = frozenset(
    {
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "SparseMatrixNode",
        "TupleNode",
        "TypeNode",
    }
)


class ArtifactError(ValueError):
    """Raised when an artifact is corrupt, tampered with or holds untrusted types."""


@dataclass(frozen=True)
class Artifact:
    """Serialized model bytes and the metadata record that travels beside them."""

    data: bytes
    metadata: dict[str, Any]


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes a serialized model."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
    }


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def _plain_vocabularies(root: Any) -> None:
    """Turn NumPy integer values of fitted vocabularies into Python ints, in place.

    Vectorizers that prune their vocabulary keep NumPy scalars as indices; skops writes each
    one as a separate array file, which makes saving and loading quadratic in vocabulary size.
    """
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        vocabulary = getattr(node, "vocabulary_", None)
        if isinstance(vocabulary, dict):
            node.vocabulary_ = {term: int(index) for term, index in vocabulary.items()}
        for name in ("steps", "transformer_list"):
            stack.extend(part for _, part in getattr(node, name, []) or [])
        for name in ("estimator", "calibrated_classifiers_"):
            child = getattr(node, name, None)
            if isinstance(child, list):
                stack.extend(child)
            elif child is not None:
                stack.append(child)


def signature(key: bytes, data: bytes, metadata: Mapping[str, Any]) -> str:
    """HMAC-SHA256 over the artifact bytes and the metadata fields that decide how it is used."""
    signed = {
        "format": metadata.get("format"),
        "sha256": sha256(data),
        "labels": metadata.get("labels"),
        "featurizer": metadata.get("featurizer"),
    }
    message = json.dumps(signed, sort_keys=True, ensure_ascii=True).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def schema_types(data: bytes) -> tuple[set[str], set[str]]:
    """Every type (`module.Class`) and every skops loader named anywhere in the schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"artifact is not a readable skops file: {exc}") from None
    types: set[str] = set()
    loaders: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node or "__class__" in node:
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
            if "__loader__" in node:
                loaders.add(str(node["__loader__"]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return types, loaders


def dumps(
    classifier: TextClassifier, *, key: bytes, extra: Mapping[str, Any] | None = None
) -> Artifact:
    """Serialize and sign `classifier`; metadata carries labels, featurizer, versions, hash."""
    _plain_vocabularies(classifier.pipeline)
    data = sio.dumps(classifier.pipeline, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "labels": list(classifier.labels),
        "featurizer": classifier.featurizer,
        "versions": library_versions(),
        "sha256": sha256(data),
        "bytes": len(data),
    }
    if extra:
        metadata.update(extra)
    metadata["signature"] = {"scheme": SIGNATURE_SCHEME, "value": signature(key, data, metadata)}
    return Artifact(data=data, metadata=metadata)


def loads(data: bytes, metadata: Mapping[str, Any], *, key: bytes) -> TextClassifier:
    """Rebuild a classifier after checking its signature, its hash and every node's type."""
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"unknown artifact format {metadata.get('format')!r}")
    signed = metadata.get("signature")
    given = signed.get("value") if isinstance(signed, Mapping) else None
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode(), signature(key, data, metadata).encode()
    ):
        raise ArtifactError(
            "artifact signature does not match the model signing key; it was written by "
            "someone without the key (or with another key): retrain to replace it"
        )
    if metadata.get("sha256") != sha256(data):
        raise ArtifactError("artifact content hash does not match its metadata; refusing to load")
    types, loaders = schema_types(data)
    refused = sorted((types - TRUSTED_TYPES) | (loaders - _TRUSTED_LOADERS))
    if refused:
        raise ArtifactError(f"artifact holds untrusted types: {refused[:10]}")
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors on corrupt zips
        raise ArtifactError(f"artifact is not a readable skops file: {exc}") from exc
    beyond = sorted(set(untrusted) - TRUSTED_TYPES)
    if beyond:  # skops saw a type our schema walk did not: refuse rather than guess
        raise ArtifactError(f"artifact holds untrusted types: {beyond[:10]}")
    pipeline = sio.loads(data, trusted=list(untrusted))
    return TextClassifier(pipeline, metadata["labels"], featurizer=str(metadata["featurizer"]))
