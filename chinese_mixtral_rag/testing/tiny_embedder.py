"""A tiny random-weight sentence-transformers model for fast end-to-end tests of ingest.

It is a real sentence-transformers checkpoint (BERT, mean pooling, normalisation) loaded by the
same code as any embedder, with all-MiniLM-L6-v2's tokenizer and input limit, but 2 layers of
width 32: embedding a few thousand chunks takes seconds instead of minutes. Its vectors mean
nothing; tests that need meaningful vectors use the bundled MiniLM.
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
    "sentence_bert_config.json",
)


def build_tiny_embedder(directory: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """Write the tiny model to ``directory`` (reused if already there) and return the path."""
    if (directory / "modules.json").is_file():
        return directory
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    minilm = Path(resolve_embedding_model(None).path)
    base = directory / "_bert"
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
    BertModel(config).save_pretrained(base)
    transformer = Transformer(str(base), max_seq_length=256)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), Normalize()])
    model.save(str(directory))
    shutil.rmtree(base)
    return directory
