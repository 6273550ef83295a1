"""One question, answered: the service and the parts it orders.

cache -> embeddings -> retrieval -> answerers (Gemini through the one retry policy, or the
offline extractive answerer). See docs/architecture.md.
"""

from chatbot.answering.answerers import Answer, ExtractiveAnswerer, GeminiAnswerer, Generator
from chatbot.answering.cache import AnswerCache, cache_key
from chatbot.answering.embeddings import Embedder, OnnxEmbedder, make_embedder
from chatbot.answering.retrieval import KnowledgeIndex, Passage
from chatbot.answering.service import ChatResult, ChatService

__all__ = [
    "Answer",
    "AnswerCache",
    "ChatResult",
    "ChatService",
    "Embedder",
    "ExtractiveAnswerer",
    "GeminiAnswerer",
    "Generator",
    "KnowledgeIndex",
    "OnnxEmbedder",
    "Passage",
    "cache_key",
    "make_embedder",
]
