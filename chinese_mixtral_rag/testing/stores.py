"""A knowledge base filled the way the app fills one, with the tiny test models."""

from __future__ import annotations

from pathlib import Path

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ingest
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model


def ingest_with_tiny_models(
    folder: Path,
    store: Path,
    collection: str,
    gguf_path: Path | None,
    embedder: Path,
    *,
    chunk_size: int = 384,
    chunk_overlap: int = 48,
) -> tuple[KnowledgeBase, IngestReport]:
    """Ingest ``folder`` into ``collection`` under ``store``, chunked with the tiny GGUF's
    tokenizer (384 tokens, 48 overlap, the defaults; no GGUF: the approximate counter, as
    ingest without a model) and embedded with the tiny embedder."""
    kb = KnowledgeBase(collection, resolve_embedding_model(str(embedder)), persist_dir=store)
    spec = ChunkingSpec(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        model_path=str(gguf_path) if gguf_path is not None else None,
        embedding_path=str(embedder),
    )
    return kb, ingest(folder, kb, spec, workers=0)
