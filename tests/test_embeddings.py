"""The local ONNX embedder: unit vectors, dynamic padding that changes nothing, real semantics."""

import numpy as np
import pytest

from chatbot.answering.embeddings import (
    DIMENSION,
    MAX_TOKENS,
    MODEL_ID,
    OnnxEmbedder,
    find_model_files,
)
from chatbot.bucket.layout import Manifest, sha256_file
from chatbot.bucket.restore import check_embedder
from chatbot.errors import SnapshotError


def test_vectors_are_unit_length_float32(embedder):
    vectors = embedder.embed(["Cloud migration services", "Our office in Lisbon"])
    assert vectors.shape == (2, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_a_vector(embedder):
    short = "What does a senior consultant cost?"
    alone = embedder.embed([short])[0]
    long = "A much longer sentence " * 20
    batched = embedder.embed([long, short, "hi"])[1]
    assert np.allclose(alone, batched, atol=1e-4)


def test_similar_meanings_are_closer(embedder):
    a, b, c = embedder.embed(
        ["How much do you charge per day?", "What are your daily rates?", "Where is the office?"]
    )
    assert a @ b > a @ c + 0.2


def test_fingerprint_names_the_model_and_its_hash(embedder):
    fp = embedder.fingerprint()
    assert fp["model"] == MODEL_ID and fp["dimension"] == DIMENSION and len(fp["sha256"]) == 64


def test_fingerprint_covers_the_tokenizer_and_settings_and_a_change_is_refused(embedder):
    fp = embedder.fingerprint()
    files = find_model_files()
    assert fp["tokenizer_sha256"] == sha256_file(files.tokenizer)
    assert fp["max_tokens"] == MAX_TOKENS and fp["pooling"]
    assert OnnxEmbedder(files).fingerprint() == fp  # the same in any process, before a session
    manifest = Manifest({"version": "v1", "embedding": {**fp, "tokenizer_sha256": "0" * 64}})
    with pytest.raises(SnapshotError, match="tokenizer_sha256"):
        check_embedder(manifest, fp)
    check_embedder(Manifest({"version": "v1", "embedding": dict(fp)}), fp)
