"""The store: knowledge bases as one facade over Chroma, the BM25 index and the embedder.

Only :class:`KnowledgeBase` writes the store, under its lock, and the rule that makes ingest
idempotent and safe to kill lives in it. :mod:`.registry` names the knowledge bases (any display
name, Chinese included, to a Chroma id and back) and lists, creates, renames and deletes them.
Imports ``errors``, ``chinese`` and ``settings`` (for types) and the model-file readers of
``backends``; never the write path, the read path or the faces.
"""

from chinese_mixtral_rag.store.knowledge_base import (
    FileChunks,
    FileState,
    IndexState,
    KnowledgeBase,
    VectorSummary,
    WriteSummary,
    describe_stale,
)
from chinese_mixtral_rag.store.registry import (
    KBInfo,
    collection_names,
    create_knowledge_base,
    delete_knowledge_base,
    list_knowledge_bases,
    open_knowledge_base,
    rename_knowledge_base,
)

__all__ = [
    "FileChunks",
    "FileState",
    "IndexState",
    "KBInfo",
    "KnowledgeBase",
    "VectorSummary",
    "WriteSummary",
    "collection_names",
    "create_knowledge_base",
    "delete_knowledge_base",
    "describe_stale",
    "list_knowledge_bases",
    "open_knowledge_base",
    "rename_knowledge_base",
]
