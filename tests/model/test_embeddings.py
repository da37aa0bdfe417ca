"""The optional sentence-embedding featurizer: model checks, embedding, cache, persistence.

Tests of checksums, messages and the registry run on the base install; those that run the
model skip without the `embeddings` extra (pip install 'hitl-bot[embeddings]').
"""

import hashlib
import random
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from model import dumps, embeddings, loads, train
from model.embeddings import (
    CHECKSUM_FILE,
    DEFAULT_MODEL,
    INSTALL_HINT,
    MAX_CHARS,
    Embedder,
    EmbeddingFeatures,
    EmbeddingModelError,
    clean_text,
    read_checksums,
    resolve_model,
)
from model.features import featurizer_available
from model.persistence import TRUSTED_TYPES, schema_types
from tests.conftest import TINY

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def default_model() -> Iterator[None]:
    """Every test starts and ends with the default model and no store configured."""
    embeddings.configure(None)
    yield
    embeddings.configure(None)


def fake_model_dir(tmp_path: Path, *, sums: str | None = None) -> Path:
    """A model directory whose files are not a model, with a correct SHA256SUMS unless given."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx file")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    if sums is None:
        sums = "".join(
            f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
            for name in ("model.onnx", "tokenizer.json")
        )
    (folder / CHECKSUM_FILE).write_text(sums, encoding="utf-8")
    return folder


@pytest.fixture
def no_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import onnxruntime` fail, as on the base install (whatever is installed here)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


# --- model files and messages (base install) --------------------------------------------------


def test_wrong_checksum_is_refused_before_onnxruntime_is_imported(
    tmp_path: Path, no_runtime: None
) -> None:
    folder = fake_model_dir(tmp_path)
    (folder / "model.onnx").write_bytes(b"replaced by someone")
    embeddings.configure(str(folder))
    with pytest.raises(EmbeddingModelError, match="does not match its expected sha256") as caught:
        embeddings.get_embedder()
    assert str(folder / "model.onnx") in str(caught.value)
    assert "sha256sum model.onnx tokenizer.json > SHA256SUMS" in str(caught.value)


def test_correct_files_without_the_extra_say_what_to_install(
    tmp_path: Path, no_runtime: None
) -> None:
    embeddings.configure(str(fake_model_dir(tmp_path)))
    with pytest.raises(EmbeddingModelError) as caught:
        embeddings.get_embedder()
    assert "'embeddings' extra" in str(caught.value)
    assert INSTALL_HINT in str(caught.value)
    assert INSTALL_HINT == "pip install 'hitl-bot[embeddings]'"


def test_featurizer_available_reports_why_not(tmp_path: Path, no_runtime: None) -> None:
    assert featurizer_available("tfidf") is None
    assert featurizer_available("bag") == "unknown featurizer 'bag'; available: embeddings, tfidf"
    embeddings.configure(str(tmp_path / "nowhere"))
    reason = featurizer_available("embeddings")
    assert reason is not None and "does not exist" in reason and DEFAULT_MODEL in reason


def test_missing_package_names_the_extra() -> None:
    with pytest.raises(EmbeddingModelError, match="'no_such_model_pkg' is not installed"):
        resolve_model("no_such_model_pkg")


def test_missing_file_and_missing_checksum_line_are_refused(tmp_path: Path) -> None:
    folder = fake_model_dir(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(EmbeddingModelError, match=r"tokenizer\.json is missing"):
        resolve_model(str(folder))
    (folder / CHECKSUM_FILE).write_text(f"{'0' * 64}  model.onnx\n", encoding="utf-8")
    with pytest.raises(EmbeddingModelError, match=r"has no line for tokenizer\.json"):
        resolve_model(str(folder))
    (folder / CHECKSUM_FILE).unlink()
    with pytest.raises(EmbeddingModelError, match="SHA256SUMS is missing"):
        resolve_model(str(folder))


def test_checksum_file_is_read_as_sha256sum_writes_it(tmp_path: Path) -> None:
    path = tmp_path / CHECKSUM_FILE
    digest = "AB" * 32
    path.write_text(f"# made by hand\n\n{digest}  model.onnx\n{'cd' * 32} *tokenizer.json\n")
    assert read_checksums(path) == {"model.onnx": "ab" * 32, "tokenizer.json": "cd" * 32}
    path.write_text("abc  model.onnx\n")
    with pytest.raises(EmbeddingModelError, match="line 1: expected 'SHA256-HEX  FILENAME'"):
        read_checksums(path)


def test_directory_model_key_depends_on_both_files(tmp_path: Path) -> None:
    folder = fake_model_dir(tmp_path)
    first = resolve_model(str(folder))
    (folder / "tokenizer.json").write_text('{"changed": 1}', encoding="utf-8")
    sums = "".join(
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
        for name in ("model.onnx", "tokenizer.json")
    )
    (folder / CHECKSUM_FILE).write_text(sums, encoding="utf-8")
    second = resolve_model(str(folder))
    assert first.model_sha256 == second.model_sha256
    assert len(first.key) == 64 and first.key != second.key


def test_shipped_tokenizer_matches_its_pinned_checksum() -> None:
    pinned = embeddings._PINNED[DEFAULT_MODEL]
    assert embeddings.file_sha256(pinned.tokenizer) == pinned.tokenizer_sha256
    assert (pinned.tokenizer.parent / "NOTICE.md").is_file()


def test_clean_text_replaces_lone_surrogates_and_caps_length() -> None:
    assert clean_text("a\ud800b") == "a?b"
    assert clean_text("x" * (MAX_CHARS + 5)) == "x" * MAX_CHARS
    assert clean_text("naïve 日本語 🙂") == "naïve 日本語 🙂"


def test_embedder_is_loaded_once_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []

    class Counting:
        def __init__(self, files: embeddings.ModelFiles, *, store: object) -> None:
            made.append(self)

    monkeypatch.setattr(embeddings, "Embedder", Counting)
    embeddings.configure(str(fake_model_dir(tmp_path)))
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(embeddings.get_embedder())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and got == made * 8


# --- the model (needs the extra) --------------------------------------------------------------


class MemoryStore:
    """A VectorStore in a dict, counting what it is asked."""

    def __init__(self) -> None:
        self.vectors: dict[tuple[str, str], NDArray[np.float32]] = {}
        self.asked = 0

    def get_many(self, model_key: str, keys: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        self.asked += len(keys)
        return {k: self.vectors[(model_key, k)] for k in keys if (model_key, k) in self.vectors}

    def put_many(self, model_key: str, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        for key, vector in vectors.items():
            self.vectors.setdefault((model_key, key), vector)


@pytest.fixture(scope="module")
def model_files() -> embeddings.ModelFiles:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    pytest.importorskip(DEFAULT_MODEL)
    return resolve_model(None)


@pytest.fixture(scope="module")
def embedder(model_files: embeddings.ModelFiles) -> Embedder:
    return Embedder(model_files)


def varied_texts(n: int, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["card", "payment", "refund", "transfer", "declined", "pending", "account", "fee"]
    return [" ".join(rng.choices(words, k=rng.randint(0, 60))) for _ in range(n)]


def test_a_directory_with_the_same_files_is_the_same_model(
    model_files: embeddings.ModelFiles, tmp_path: Path
) -> None:
    """Vectors cached and models trained with the package stay valid with a copied directory."""
    for source in (model_files.model, model_files.tokenizer):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / CHECKSUM_FILE).write_text(
        f"{model_files.model_sha256}  model.onnx\n{model_files.tokenizer_sha256}  tokenizer.json\n"
    )
    assert resolve_model(str(tmp_path)).key == model_files.key


def test_files_that_are_no_model_are_refused_clearly(
    model_files: embeddings.ModelFiles, tmp_path: Path
) -> None:
    folder = fake_model_dir(tmp_path)
    with pytest.raises(EmbeddingModelError, match="onnxruntime cannot load"):
        Embedder(resolve_model(str(folder)))
    (folder / "model.onnx").write_bytes(model_files.model.read_bytes())
    (folder / CHECKSUM_FILE).write_text(
        f"{model_files.model_sha256}  model.onnx\n"
        f"{hashlib.sha256(b'{}').hexdigest()}  tokenizer.json\n",
        encoding="utf-8",
    )
    with pytest.raises(EmbeddingModelError, match="cannot read the tokenizer"):
        Embedder(resolve_model(str(folder)))


def test_vectors_are_unit_length_float32_in_input_order(embedder: Embedder) -> None:
    texts = ["How do I top up my card?", "", "Why was my transfer declined?"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reversed_vectors = embedder.embed(texts[::-1])
    np.testing.assert_array_equal(reversed_vectors, vectors[::-1])


@pytest.mark.parametrize("batch_tokens", [1024, 40])
def test_length_sorted_batches_give_the_vectors_of_one_text_at_a_time(
    model_files: embeddings.ModelFiles, batch_tokens: int
) -> None:
    """Length-sorted batches, fewer texts when long, change no vector and keep the order."""
    embedder = Embedder(model_files, batch_size=8, batch_tokens=batch_tokens)
    texts = varied_texts(50)
    batched = embedder.embed_uncached(texts)
    alone = np.stack([embedder.embed_uncached([text])[0] for text in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert embedder.texts_embedded == 100


def test_similar_sentences_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    question, paraphrase, unrelated = embedder.embed(
        [
            "I forgot my password and cannot log in",
            "How do I reset my password?",
            "The weather in Lisbon is sunny today",
        ]
    )
    assert question @ paraphrase > 0.5
    assert question @ paraphrase > question @ unrelated + 0.3


def test_any_text_embeds_without_crashing(embedder: Embedder) -> None:
    texts = [
        "",
        "\ud800 lone surrogate",
        "x" * 1_000_000,
        "word " * 200_000,
        "مرحبا بالعالم",
        "我的卡还没到",
        "🙂🙂🙂",
        "\x00\x01\n\t",
    ]
    vectors = embedder.embed(texts)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_cache_hits_avoid_embedding_again(model_files: embeddings.ModelFiles) -> None:
    store = MemoryStore()
    first = Embedder(model_files, store=store)
    texts = ["card arrived?", "refund please", "card arrived?", "exchange rate"]
    vectors = first.embed(texts)
    assert first.texts_embedded == 3  # the repeated text once
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert len(store.vectors) == 3
    first.embed(texts)
    assert first.texts_embedded == 3  # memory cache
    asked = store.asked
    restarted = Embedder(model_files, store=store)  # a new process: memory cache empty
    np.testing.assert_array_equal(restarted.embed(texts), vectors)
    assert restarted.texts_embedded == 0 and store.asked == asked + 3
    restarted.embed([*texts, "something new"])
    assert restarted.texts_embedded == 1


def test_memory_cache_is_bounded(model_files: embeddings.ModelFiles) -> None:
    embedder = Embedder(model_files, cache_size=5)
    embedder.embed(varied_texts(20, seed=1))
    assert len(embedder._cache) == 5


def test_features_scale_by_weight_and_keep_only_plain_attributes(
    model_files: embeddings.ModelFiles,
) -> None:
    features = EmbeddingFeatures(weight=0.5).fit(["a", "b"])
    out = features.transform(["hello there", "general kenobi"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 0.5, atol=1e-5)
    assert features.model_key_ == model_files.key
    assert all(isinstance(v, str | int | float | type(None)) for v in vars(features).values())


def test_vectors_of_another_model_are_refused(model_files: embeddings.ModelFiles) -> None:
    features = EmbeddingFeatures().fit(["a"])
    features.model_key_ = "f" * 64  # as if fitted with another model
    with pytest.raises(EmbeddingModelError, match="retrain the task"):
        features.transform(["a"])
    with pytest.raises(EmbeddingModelError, match="HITL_EMBEDDING_MODEL"):
        EmbeddingFeatures(model_key="f" * 64).fit(["a"])


def test_embeddings_model_round_trips_with_identical_predictions(
    model_files: embeddings.ModelFiles,
) -> None:
    texts, labels = zip(*TINY, strict=True)
    model = train(texts, labels, labels=["positive", "negative"], featurizer="embeddings")
    artifact = dumps(model, key=KEY)
    types, _ = schema_types(artifact.data)
    assert "model.embeddings.EmbeddingFeatures" in types and types <= TRUSTED_TYPES
    loaded = loads(artifact.data, artifact.metadata, key=KEY)
    probe = ["a lovely dinner", "cold food and rude staff", "", "日本語"]
    before, after = model.predict(probe), loaded.predict(probe)
    np.testing.assert_array_equal(after.probabilities, before.probabilities)
    assert after.predicted == before.predicted
    assert loaded.featurizer == "embeddings"


def test_embeddings_beat_chance_on_banking77(
    model_files: embeddings.ModelFiles, banking77: list[tuple[str, str]]
) -> None:
    """Unseen wordings of 10 intents, 8 answers each: the model generalises from meaning."""
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {}
    for text, label in banking77:
        by_label.setdefault(label, []).append(text)
    chosen = sorted(by_label)[:10]
    train_rows: list[tuple[str, str]] = []
    test_rows: list[tuple[str, str]] = []
    for label in chosen:
        texts = rng.sample(by_label[label], 28)
        train_rows += [(t, label) for t in texts[:8]]
        test_rows += [(t, label) for t in texts[8:]]
    x, y = zip(*train_rows, strict=True)
    model = train(x, y, labels=chosen, featurizer="embeddings")
    predicted = model.predict([t for t, _ in test_rows]).predicted
    accuracy = np.mean([p == label for p, (_, label) in zip(predicted, test_rows, strict=True)])
    assert accuracy > 0.6
