"""A knowledge base filled the way the app fills one, with the tiny test models."""

from __future__ import annotations

from pathlib import Path

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ingest
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model


def ingest_with_tiny_models(
    folder: Path, store: Path, collection: str, gguf_path: Path, embedder: Path
) -> tuple[KnowledgeBase, IngestReport]:
    """Ingest ``folder`` into ``collection`` under ``store``, chunked with the tiny GGUF's
    tokenizer (384 tokens, 48 overlap, the defaults) and embedded with the tiny embedder."""
    kb = KnowledgeBase(collection, resolve_embedding_model(str(embedder)), persist_dir=store)
    spec = ChunkingSpec(
        chunk_size=384, chunk_overlap=48, model_path=str(gguf_path), embedding_path=str(embedder)
    )
    return kb, ingest(folder, kb, spec, workers=0)
