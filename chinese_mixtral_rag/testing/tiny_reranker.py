"""A tiny random-weight cross-encoder for tests of reranking (no reranker can be downloaded here).

A real sentence-transformers ``CrossEncoder`` directory (BERT for sequence classification with one
label, all-MiniLM-L6-v2's tokenizer), loaded by the same code as ``BAAI/bge-reranker-base``, but 2
layers of width 32: scoring a few dozen pairs takes milliseconds. Its scores are random but
deterministic: tests can check that reranking loads the model and reorders candidates by its
scores, never that the order is better.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from chinese_mixtral_rag.embeddings import resolve_embedding_model

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def build_tiny_reranker(directory: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """Write the tiny cross-encoder to ``directory`` (reused if already there); returns it."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    minilm = Path(resolve_embedding_model(None).path)
    base = directory.parent / f".{directory.name}-bert"
    base.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        shutil.copy(minilm / name, base / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    config.num_labels = 1  # one relevance score per pair
    config.initializer_range = 0.5  # BERT's 0.02 gives every pair nearly the same score
    BertForSequenceClassification(config).save_pretrained(base)
    model = CrossEncoder(str(base), device="cpu", local_files_only=True, max_length=256)
    model.save(str(directory))
    shutil.rmtree(base)
    return directory
