"""The public surface: what `from chinese_mixtral_rag import *` gives, and env-driven defaults."""

from __future__ import annotations

import pytest

import chinese_mixtral_rag
from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat, Settings


def test_all_is_pinned_and_sorted() -> None:
    assert chinese_mixtral_rag.__all__ == [
        "ChineseMixtral",
        "ChineseMixtralChat",
        "Settings",
        "__version__",
        "build_qa_chain",
    ]
    for name in chinese_mixtral_rag.__all__:
        assert getattr(chinese_mixtral_rag, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        chinese_mixtral_rag.Nope  # noqa: B018


def test_environment_supplies_defaults_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMR_MODEL_PATH", "/models/chinese-mixtral-instruct-q4_k.gguf")
    monkeypatch.setenv("CMR_N_CTX", "8192")
    monkeypatch.setenv("CMR_TEMPERATURE", "0.7")
    chat = ChineseMixtralChat(temperature=0.1)
    assert chat.model_path == "/models/chinese-mixtral-instruct-q4_k.gguf"
    assert chat.n_ctx == 8192
    assert chat.temperature == 0.1
    assert chat.resolved_backend() == "llama_cpp"
    assert chat.model_name == "chinese-mixtral-instruct-q4_k.gguf"
    assert Settings().n_ctx == 8192
    assert ChineseMixtral().load_options()["n_ctx"] == 8192


def test_backend_is_inferred_from_what_is_given() -> None:
    assert ChineseMixtralChat(model_path="x.gguf").resolved_backend() == "llama_cpp"
    assert ChineseMixtralChat(model="hfl/chinese-mixtral-instruct").resolved_backend() == (
        "transformers"
    )


def test_construction_loads_nothing() -> None:
    chat = ChineseMixtralChat(model_path="/does/not/exist.gguf")
    assert chat.model_name == "exist.gguf"  # no error until the model is used


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        ChineseMixtralChat(model_path="x.gguf", temperature=-1)
