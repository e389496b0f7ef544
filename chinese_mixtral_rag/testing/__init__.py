"""Builders of tiny real models (transformers checkpoint + GGUF) for tests, examples and benchmarks.

Importing this package is cheap; torch, transformers and sentencepiece load only when a model is
built (they come with the ``transformers`` extra). It may use every wing but the faces.
"""

from chinese_mixtral_rag.testing.tiny_model import (
    CHATML,
    CHATML_TEMPLATE,
    MIXTRAL_INSTRUCT_TEMPLATE,
    SMALL,
    TINY,
    TinyModel,
    TinyModelSpec,
    build_tiny_mixtral,
    write_gguf_with_architecture,
)

__all__ = [
    "CHATML",
    "CHATML_TEMPLATE",
    "MIXTRAL_INSTRUCT_TEMPLATE",
    "SMALL",
    "TINY",
    "TinyModel",
    "TinyModelSpec",
    "build_tiny_mixtral",
    "write_gguf_with_architecture",
]
