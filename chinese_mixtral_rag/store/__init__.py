"""The store: knowledge bases as one facade over Chroma, the BM25 index and the embedder.

Only :class:`KnowledgeBase` writes the store, under its lock, and the rule that makes ingest
idempotent and safe to kill lives in it. Imports ``errors``, ``chinese`` and ``settings`` (for
types) and the model-file readers of ``backends``; never the write path, the read path or the
faces.
"""

from chinese_mixtral_rag.store.knowledge_base import (
    FileChunks,
    FileState,
    IndexState,
    KnowledgeBase,
    VectorSummary,
    WriteSummary,
    collection_names,
    describe_stale,
    open_knowledge_base,
)

__all__ = [
    "FileChunks",
    "FileState",
    "IndexState",
    "KnowledgeBase",
    "VectorSummary",
    "WriteSummary",
    "collection_names",
    "describe_stale",
    "open_knowledge_base",
]
