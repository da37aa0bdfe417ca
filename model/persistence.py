"""Saving and loading classifiers with skops.io; pickle is never loaded."""

import hashlib
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
# Only types from these libraries may be rebuilt from an artifact; anything else is refused.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


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


def dumps(classifier: TextClassifier, *, extra: Mapping[str, Any] | None = None) -> Artifact:
    """Serialize `classifier`; the metadata carries labels, featurizer, versions and hash."""
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
    return Artifact(data=data, metadata=metadata)


def loads(data: bytes, metadata: Mapping[str, Any]) -> TextClassifier:
    """Rebuild a classifier after checking the content hash and every type in the artifact."""
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"unknown artifact format {metadata.get('format')!r}")
    expected = metadata.get("sha256")
    if expected != sha256(data):
        raise ArtifactError("artifact content hash does not match its metadata; refusing to load")
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors on corrupt zips
        raise ArtifactError(f"artifact is not a readable skops file: {exc}") from exc
    refused = [t for t in types if not t.startswith(_TRUSTED_PREFIXES)]
    if refused:
        raise ArtifactError(f"artifact holds untrusted types: {refused}")
    pipeline = sio.loads(data, trusted=types)
    return TextClassifier(pipeline, metadata["labels"], featurizer=str(metadata["featurizer"]))
