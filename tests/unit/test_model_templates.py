"""What the chat model does with the model's own template and tokens, over a fake backend; the
architecture check on GGUF metadata alone. (Real models: tests/integration/test_other_models.py.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.backends.base import SamplingParams
from chinese_mixtral_rag.backends.llama_cpp import check_architecture
from chinese_mixtral_rag.errors import ModelLoadError, PromptError


class FakeBackend:
    """Tokenizes one id per character; generates nothing."""

    model_name = "fake-model"
    context_length = 4096
    bos_token_id = 1
    eos_token_id = 2
    stop_token_ids = frozenset({2})

    def __init__(self, bos: str, eos: str, template: str | None) -> None:
        self.bos_token, self.eos_token, self.chat_template = bos, eos, template

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return [1] * add_bos + [3] * len(text)

    def token_bytes(self, token_id: int) -> bytes:
        return b""

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        yield 2


def chat(bos: str, eos: str, template: str | None, chat_template: str | None) -> ChineseMixtralChat:
    return ChineseMixtralChat(client=FakeBackend(bos, eos, template), chat_template=chat_template)


def test_a_stored_template_gets_the_models_tokens_and_the_default_format_keeps_mixtrals() -> None:
    stored = "{{ bos_token }}{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    model = chat("<|begin_of_text|>", "<|eot_id|>", stored, "model")
    assert model.render([HumanMessage("q")]) == "<|begin_of_text|>q<|eot_id|>"
    default = chat("<|begin_of_text|>", "<|eot_id|>", stored, None)
    assert default.render([HumanMessage("q")]) == "<s>[INST] q [/INST]"


def test_token_counts_use_the_template_in_use() -> None:
    stored = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}|{% endfor %}"
    history = [HumanMessage("你好"), AIMessage("您好！")]
    model = chat("<B>", "<E>", stored, "model")
    assert model.get_num_tokens_from_messages(history) == len("<B>你好|您好！|")
    default = chat("<B>", "<E>", stored, None)
    assert default.get_num_tokens_from_messages(history) == len("<s>[INST] 你好 [/INST]您好！</s>")


def test_no_stored_template_on_a_mixtral_advises_the_mixtral_format() -> None:
    with pytest.raises(PromptError, match="leave chat_template unset"):
        chat("<s>", "</s>", None, "model").render([HumanMessage("q")])


def test_no_stored_template_on_another_model_asks_for_its_template() -> None:
    with pytest.raises(PromptError) as caught:
        chat("<|begin_of_text|>", "<|eot_id|>", None, "model").render([HumanMessage("q")])
    message = str(caught.value)
    assert "fake-model stores no chat template" in message
    assert "'<|begin_of_text|>'" in message
    assert "Pass the model's own chat template" in message
    assert "unset" not in message  # the Mixtral format would be garbage for it


def test_the_architecture_check_refuses_or_warns(caplog: pytest.LogCaptureFixture) -> None:
    path = Path("qwen.gguf")
    metadata = {"general.architecture": "qwen2"}
    assert check_architecture(path, {"general.architecture": "llama"}) == "llama"
    with pytest.raises(ModelLoadError, match=r"'qwen2' model.*chat_template='model'"):
        check_architecture(path, metadata)
    with caplog.at_level(logging.WARNING, logger="chinese_mixtral_rag"):
        assert check_architecture(path, metadata, allow_other_architectures=True) == "qwen2"
    assert "tuned for Chinese-Mixtral" in caplog.text
