"""Models that are not Mixtral-Instruct in their tokens or architecture, on real backends.

``chatml_model`` is a tiny Mixtral whose tokenizer spells BOS/EOS otherwise and ends turns with
``<|im_end|>`` (declared as GGUF ``eot_token_id`` and in the HF generation config's
``eos_token_id`` list), with a ChatML template that writes ``{{ bos_token }}``. The other
architecture is a real tiny Qwen2 checkpoint for transformers; for llama.cpp only the check on
the GGUF's metadata runs (a real non-llama GGUF would need its own tensor layout written).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.chat_template import normalize_turns, render_template
from chinese_mixtral_rag.errors import ModelLoadError
from chinese_mixtral_rag.testing import CHATML_TEMPLATE, TinyModel, write_gguf_with_architecture

GREEDY: dict[str, Any] = {"temperature": 0, "repetition_penalty": 1.0}
MESSAGES = [SystemMessage("你是一个乐于助人的助手。"), HumanMessage("介绍一下混合专家模型")]
BOS = "<|begin_of_text|>"
TUNED = "tuned for Chinese-Mixtral"


def source(tiny: TinyModel, backend: str) -> dict[str, Any]:
    if backend == "llama_cpp":
        return {"model_path": str(tiny.gguf_path)}
    return {"model_path": str(tiny.hf_dir), "device_map": None}


@pytest.fixture(params=["llama_cpp", "transformers"])
def chatml_chat(chatml_model: TinyModel, request: pytest.FixtureRequest) -> ChineseMixtralChat:
    return ChineseMixtralChat(
        **source(chatml_model, str(request.param)), chat_template="model", **GREEDY, max_tokens=20
    )


def test_the_stored_template_renders_with_the_models_own_bos(
    chatml_chat: ChineseMixtralChat, chatml_model: TinyModel
) -> None:
    prompt = chatml_chat.render(MESSAGES)
    assert prompt == (
        f"{BOS}<|im_start|>user\n你是一个乐于助人的助手。\n\n介绍一下混合专家模型<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = chatml_chat.prompt_ids(MESSAGES)
    assert ids[0] == chatml_model.token_id(BOS)  # one BOS token, not the text "<s>" or a second
    assert ids.count(chatml_model.token_id(BOS)) == 1
    assert ids.count(chatml_model.token_id("<|im_end|>")) == 1


def test_both_backends_agree_on_the_special_tokens(chatml_model: TinyModel) -> None:
    backends = [
        ChineseMixtralChat(**source(chatml_model, name)).get_backend()
        for name in ("llama_cpp", "transformers")
    ]
    im_end = chatml_model.token_id("<|im_end|>")
    for backend in backends:
        assert (backend.bos_token, backend.eos_token) == (BOS, "<|end_of_text|>")
        assert backend.stop_token_ids == {chatml_model.token_id("<|end_of_text|>"), im_end}


def test_the_end_of_turn_token_ends_generation(
    chatml_chat: ChineseMixtralChat, chatml_model: TinyModel
) -> None:
    """Not only EOS: before the stop set, both backends went on past ``<|im_end|>`` (it
    decodes to nothing) up to max_tokens."""
    im_end = chatml_model.token_id("<|im_end|>")
    assert chatml_chat.invoke(MESSAGES).response_metadata["finish_reason"] == "length"
    reply = chatml_chat.invoke(MESSAGES, logit_bias={im_end: 100.0})
    assert reply.text == ""
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 0


def test_token_counts_follow_the_template_in_use(chatml_chat: ChineseMixtralChat) -> None:
    assert chatml_chat.get_num_tokens_from_messages(list(MESSAGES)) == len(
        chatml_chat.prompt_ids(MESSAGES)
    )
    history = [HumanMessage("你好"), AIMessage("您好！")]
    backend = chatml_chat.get_backend()
    rendered = render_template(
        CHATML_TEMPLATE,
        normalize_turns(history, require_user_last=False),
        bos=BOS,
        eos=backend.eos_token,
        add_generation_prompt=False,
    )
    assert rendered.endswith("您好！<|im_end|>\n")
    expected = len(backend.tokenize(rendered, add_bos=False, special=True))
    assert chatml_chat.get_num_tokens_from_messages(history) == expected


# --- another architecture ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen2_dir(chatml_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real random-weight Qwen2 checkpoint (one layer) with the ChatML tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = tmp_path_factory.mktemp("qwen2") / "tiny-qwen2"
    config = Qwen2Config(
        vocab_size=chatml_model.spec.vocab_size + len(chatml_model.spec.extra_special_tokens),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(str(directory))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(chatml_model.hf_dir / name, directory / name)
    return directory


def test_another_architecture_runs_with_its_template_and_a_warning(
    qwen2_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options: dict[str, Any] = {"model_path": str(qwen2_dir), "device_map": None, **GREEDY}
    with pytest.raises(ModelLoadError, match=r"'qwen2' model.*chat_template='model'"):
        ChineseMixtralChat(**options).invoke("你好")
    with caplog.at_level(logging.WARNING, logger="chinese_mixtral_rag"):
        chat = ChineseMixtralChat(**options, chat_template="model", max_tokens=4)
        chat.check()
        reply = chat.invoke("你好")
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] >= 1
    assert chat.render([HumanMessage("你好")]).startswith(BOS + "<|im_start|>user\n你好")
    assert sum(TUNED in r.getMessage() and "qwen2" in r.getMessage() for r in caplog.records) >= 1
    # the loaded weights are shared, yet a chat without a template is still refused
    with pytest.raises(ModelLoadError, match=r"'qwen2' model"):
        ChineseMixtralChat(**options).invoke("你好")


def test_another_gguf_architecture_passes_the_check_with_a_template(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Metadata only: the placeholder file is no model llama.cpp could load."""
    path = str(write_gguf_with_architecture(tmp_path / "qwen2.gguf", "qwen2"))
    with pytest.raises(ModelLoadError, match=r"'qwen2' model.*chat_template='model'"):
        ChineseMixtralChat(model_path=path).check()
    with caplog.at_level(logging.WARNING, logger="chinese_mixtral_rag"):
        ChineseMixtralChat(model_path=path, chat_template="{{ messages }}").check()
    assert any(TUNED in r.getMessage() and "qwen2" in r.getMessage() for r in caplog.records)


def test_checkpoint_of_another_architecture_passes_the_check_with_a_template(
    tmp_path: Path, chatml_model: TinyModel
) -> None:
    directory = tmp_path / "gpt2-like"
    shutil.copytree(chatml_model.hf_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "gpt2"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"'gpt2' model.*chat_template="):
        ChineseMixtralChat(model_path=str(directory)).check()
    ChineseMixtralChat(model_path=str(directory), chat_template="model").check()
