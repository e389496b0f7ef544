"""Tiny random-weight sentence-transformers models for fast end-to-end tests.

Real sentence-transformers checkpoints (BERT, all-MiniLM-L6-v2's tokenizer and input limit),
loaded by the same code as any downloaded model, but 2 layers of width 32: embedding a few
thousand chunks takes seconds instead of minutes. Their outputs mean nothing; tests that need
meaningful vectors use the bundled MiniLM.

* :func:`build_tiny_embedder`: an embedder (mean pooling, normalisation), for ingest and search;
* :func:`build_tiny_reranker`: a cross-encoder (sequence classification, one label), for tests
  that reranking loads the model and reorders candidates by its scores, never that the order is
  better (no reranker can be downloaded here).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.store.embeddings import MINILM_MODEL, resolve_embedding_model

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _bert_base(folder: Path, hidden: int, layers: int, extra_files: tuple[str, ...] = ()) -> Any:
    """Copy MiniLM's tokenizer files into ``folder`` and return a seeded tiny ``BertConfig``."""
    import torch
    from transformers import BertConfig

    minilm = Path(resolve_embedding_model(MINILM_MODEL).path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*_TOKENIZER_FILES, *extra_files):
        shutil.copy(minilm / name, folder / name)
    torch.manual_seed(0)
    return BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )


def build_tiny_embedder(directory: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """Write the tiny embedder to ``directory`` (reused if already there) and return the path."""
    if (directory / "modules.json").is_file():
        return directory
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertModel

    base = directory / "_bert"
    config = _bert_base(base, hidden, layers, ("sentence_bert_config.json",))
    BertModel(config).save_pretrained(base)
    transformer = Transformer(str(base), max_seq_length=256)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), Normalize()])
    model.save(str(directory))
    shutil.rmtree(base)
    return directory


def build_tiny_reranker(directory: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """Write the tiny cross-encoder to ``directory`` (reused if already there); returns it."""
    if (directory / "config.json").is_file():
        return directory
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    base = directory.parent / f".{directory.name}-bert"
    config = _bert_base(base, hidden, layers)
    config.num_labels = 1  # one relevance score per pair
    config.initializer_range = 0.5  # BERT's 0.02 gives every pair nearly the same score
    BertForSequenceClassification(config).save_pretrained(base)
    model = CrossEncoder(str(base), device="cpu", local_files_only=True, max_length=256)
    model.save(str(directory))
    shutil.rmtree(base)
    return directory
