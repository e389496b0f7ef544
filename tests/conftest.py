"""Tiny real models shared by all tests, built once per session on first use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chinese_mixtral_rag.testing import CHATML, SMALL, TINY, TinyModel, build_tiny_mixtral


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The default tiny Mixtral (hidden 64, 2 layers, 4 experts, top-2), HF dir + GGUF."""
    pytest.importorskip("transformers", reason="needs the transformers extra")
    pytest.importorskip("sentencepiece", reason="needs sentencepiece")
    return build_tiny_mixtral(tmp_path_factory.mktemp("tiny-mixtral"), TINY)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A larger tiny Mixtral (hidden 256, 4 layers, 8 experts); only built when a test asks."""
    pytest.importorskip("transformers", reason="needs the transformers extra")
    pytest.importorskip("sentencepiece", reason="needs sentencepiece")
    return build_tiny_mixtral(tmp_path_factory.mktemp("small-mixtral"), SMALL)


@pytest.fixture(scope="session")
def chatml_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A tiny Mixtral with another model's tokens: ``<|begin_of_text|>``/``<|end_of_text|>``,
    a ChatML template and ``<|im_end|>`` ending turns beside EOS."""
    pytest.importorskip("transformers", reason="needs the transformers extra")
    pytest.importorskip("sentencepiece", reason="needs sentencepiece")
    return build_tiny_mixtral(tmp_path_factory.mktemp("chatml-mixtral"), CHATML)


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight sentence-transformers model with MiniLM's tokenizer and input limit."""
    pytest.importorskip("sentence_transformers", reason="needs the rag extra")
    from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

    return build_tiny_embedder(tmp_path_factory.mktemp("embedder") / "tiny-embedder")


@pytest.fixture(scope="session")
def llama_server(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` over the tiny GGUF on 127.0.0.1; yields its /v1 URL."""
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    from chinese_mixtral_rag.testing.servers import llama_cpp_server

    logs = tmp_path_factory.mktemp("llama-server")
    with llama_cpp_server(tiny_model.gguf_path, log_dir=logs) as url:
        yield url
