"""Named, swappable text featurizers: the first stage of every task's pipeline."""

from collections.abc import Callable

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion


class UnknownFeaturizerError(ValueError):
    """Raised for a featurizer name that is not registered."""


# Vocabulary caps (most frequent terms kept) bound the model's size: the linear layer holds
# one weight per feature and label.
def _tfidf() -> TransformerMixin:
    """Word 1-2 grams plus character 2-5 grams inside word boundaries.

    Character n-grams carry languages written without spaces (Japanese, Chinese, Thai) and
    survive typos; word n-grams carry the short phrases that decide intents.
    """
    words = TfidfVectorizer(
        analyzer="word",
        token_pattern=r"(?u)\b\w+\b",
        ngram_range=(1, 2),
        sublinear_tf=True,
        max_features=30_000,
        dtype=np.float32,
    )
    chars = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 5),
        sublinear_tf=True,
        max_features=30_000,
        dtype=np.float32,
    )
    return FeatureUnion([("words", words), ("chars", chars)])


FEATURIZERS: dict[str, Callable[[], TransformerMixin]] = {"tfidf": _tfidf}
DEFAULT_FEATURIZER = "tfidf"


def build_featurizer(name: str) -> TransformerMixin:
    """Return a fresh, unfitted featurizer registered under `name`."""
    try:
        factory = FEATURIZERS[name]
    except KeyError:
        known = ", ".join(sorted(FEATURIZERS))
        raise UnknownFeaturizerError(f"unknown featurizer {name!r}; available: {known}") from None
    return factory()
