"""The tiny-model builder against the real libraries: transformers, gguf and llama.cpp.

Every other integration test trusts that the HF checkpoint and the GGUF file are the same model
with the same tokenizer; these tests are where that is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chinese_mixtral_rag.testing import (
    MIXTRAL_INSTRUCT_TEMPLATE,
    TINY,
    TinyModel,
    TinyModelSpec,
    build_tiny_mixtral,
    write_gguf_with_architecture,
)
from chinese_mixtral_rag.testing.corpus import TRAINING_TEXT

pytestmark = pytest.mark.integration

# The template of mistralai/Mixtral-8x7B-Instruct-v0.1, copied independently of the package.
OFFICIAL_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"  # noqa: E501

CHAT_PROMPT = "<s>[INST] 你好 [/INST]答案</s>[INST] 再问 [/INST]"
MIXED_PROMPT = "<s>[INST] 请根据资料回答：合同期限是多久？Please answer in one sentence. [/INST]"

TOKENIZATION_CASES = [
    "",
    CHAT_PROMPT,
    MIXED_PROMPT,
    "<s>[INST]  前面两个空格 [/INST] 答案前有空格</s>",
    "你好，世界！今天天气怎么样？",
    "The quick brown fox, 2024-03-15 12:30.",
    "数字1234567890和English混排",
    "表情😀和生僻字𠀀、龘",
    "第一行\n第二行\n\n  缩进\t制表",
    "double  spaces   here",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "\u3000全角空格\u3000",
    "▁literal sentencepiece marker▁",
    "</s>",
    "<s>",
    "<unk>",
    "<s><s></s>",
    "a</s> b<s>  c",
    "《红楼梦》“引号”‘单引号’（括号）、顿号…",
    TRAINING_TEXT,
]

# Units random texts are drawn from: common and rare Chinese, ASCII, emoji, whitespace, the
# special tokens and the chat markers, in any order.
_units = st.one_of(
    st.sampled_from(sorted(set(TRAINING_TEXT))),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F),
    st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF),
    st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u3000", "é", "ß", "▁"]),
    st.sampled_from(["<s>", "</s>", "<unk>", "[INST]", "[/INST]", " [INST] ", " [/INST]"]),
)
mixed_text = st.lists(_units, max_size=40).map("".join)
# For round trips: no special-token strings, no literal "▁" (SentencePiece decodes it as a space).
plain_text = mixed_text.filter(lambda s: "▁" not in s and "<" not in s)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model: TinyModel) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model.hf_dir)


@pytest.fixture(scope="module")
def hf_model(tiny_model: TinyModel) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir, dtype=torch.float32)
    return model.eval()


def _load_llama(tiny_model: TinyModel, **kwargs: Any) -> Any:
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    return llama_cpp.Llama(
        model_path=str(tiny_model.gguf_path), n_ctx=512, logits_all=True, verbose=False, **kwargs
    )


@pytest.fixture(scope="module")
def llama(tiny_model: TinyModel) -> Iterator[Any]:
    """llama.cpp with its default settings (f16 KV cache), as users run it."""
    llm = _load_llama(tiny_model)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def llama_f32_kv(tiny_model: TinyModel) -> Iterator[Any]:
    """llama.cpp with an f32 KV cache: the whole computation in f32, for exact comparisons."""
    import llama_cpp

    llm = _load_llama(tiny_model, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    yield llm
    llm.close()


def _hf_ids(tokenizer: Any, text: str, *, add_special_tokens: bool = False) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    return ids


def _llama_logits(llm: Any, ids: list[int]) -> Any:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _hf_logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _gguf_field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


# --- the files -----------------------------------------------------------------------------------


def test_hf_checkpoint_matches_the_spec(tiny_model: TinyModel, hf_model: Any) -> None:
    config = hf_model.config
    assert config.model_type == "mixtral"
    assert config.num_local_experts == TINY.num_experts
    assert config.num_experts_per_tok == TINY.experts_per_token
    assert config.max_position_embeddings == TINY.context_length == 32768
    assert config.rope_parameters["rope_theta"] == TINY.rope_theta
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 0)
    assert config.tie_word_embeddings is False
    assert config.vocab_size == TINY.vocab_size
    assert {p.dtype for p in hf_model.parameters()} == {__import__("torch").float32}
    for name in ("config.json", "model.safetensors", "tokenizer.model", "tokenizer.json"):
        assert (tiny_model.hf_dir / name).is_file(), name


def test_hf_tokenizer_has_specials_and_the_official_template(
    tiny_model: TinyModel, hf_tokenizer: Any
) -> None:
    assert MIXTRAL_INSTRUCT_TEMPLATE == OFFICIAL_TEMPLATE
    config = json.loads((tiny_model.hf_dir / "tokenizer_config.json").read_text("utf-8"))
    assert config["chat_template"] == OFFICIAL_TEMPLATE
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert hf_tokenizer.chat_template == OFFICIAL_TEMPLATE
    assert len(hf_tokenizer) == TINY.vocab_size
    assert (hf_tokenizer.unk_token_id, hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (
        0,
        1,
        2,
    )
    ids = _hf_ids(hf_tokenizer, "你好", add_special_tokens=True)
    assert ids[0] == 1
    assert ids.count(1) == 1
    assert 2 not in ids


def test_hf_chat_template_renders_the_mixtral_prompt(hf_tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "答案"},
        {"role": "user", "content": "再问"},
    ]
    assert hf_tokenizer.apply_chat_template(messages, tokenize=False) == CHAT_PROMPT


def test_gguf_metadata_reads_back(tiny_model: TinyModel) -> None:
    import gguf

    reader = gguf.GGUFReader(tiny_model.gguf_path)
    expected = {
        "general.architecture": "llama",
        "llama.context_length": 32768,
        "llama.embedding_length": TINY.hidden_size,
        "llama.block_count": TINY.num_layers,
        "llama.feed_forward_length": TINY.intermediate_size,
        "llama.attention.head_count": TINY.num_heads,
        "llama.attention.head_count_kv": TINY.num_kv_heads,
        "llama.rope.dimension_count": TINY.hidden_size // TINY.num_heads,
        "llama.expert_count": TINY.num_experts,
        "llama.expert_used_count": TINY.experts_per_token,
        "llama.vocab_size": TINY.vocab_size,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
        "tokenizer.chat_template": OFFICIAL_TEMPLATE,
    }
    assert {key: _gguf_field(reader, key) for key in expected} == expected
    assert _gguf_field(reader, "llama.rope.freq_base") == pytest.approx(TINY.rope_theta)
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    types = _gguf_field(reader, "tokenizer.ggml.token_type")
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert types[:4] == [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.BYTE,
    ]
    assert tokens[3 : 3 + 256] == [f"<0x{b:02X}>" for b in range(256)]
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    # GGUF lists ggml's ne order (innermost first).
    h, ff, e = TINY.hidden_size, TINY.intermediate_size, TINY.num_experts
    assert shapes["blk.0.ffn_gate_inp.weight"] == (h, e)
    assert shapes["blk.0.ffn_gate_exps.weight"] == (h, ff, e)
    assert shapes["blk.0.ffn_up_exps.weight"] == (h, ff, e)
    assert shapes["blk.0.ffn_down_exps.weight"] == (ff, h, e)
    assert shapes["blk.1.attn_k.weight"] == (h, TINY.num_kv_heads * h // TINY.num_heads)
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_eos_is_suppressed_in_both_files(tiny_model: TinyModel, hf_model: Any) -> None:
    import gguf

    assert not hf_model.lm_head.weight[2].any()
    assert hf_model.lm_head.weight[3].abs().sum() > 0
    output = next(
        t for t in gguf.GGUFReader(tiny_model.gguf_path).tensors if t.name == "output.weight"
    )
    assert not np.asarray(output.data)[2].any()


def test_base_model_spec_has_no_chat_template(tmp_path: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    base = build_tiny_mixtral(tmp_path, TinyModelSpec(chat_template=None))
    config = json.loads((base.hf_dir / "tokenizer_config.json").read_text("utf-8"))
    assert "chat_template" not in config
    assert not (base.hf_dir / "chat_template.jinja").exists()
    assert AutoTokenizer.from_pretrained(base.hf_dir).chat_template is None
    assert "tokenizer.chat_template" not in gguf.GGUFReader(base.gguf_path).fields


def test_build_is_deterministic(tmp_path: Path, tiny_model: TinyModel) -> None:
    again = build_tiny_mixtral(tmp_path, TINY)
    assert again.gguf_path.read_bytes() == tiny_model.gguf_path.read_bytes()
    for name in ("tokenizer.json", "tokenizer.model", "model.safetensors"):
        assert (again.hf_dir / name).read_bytes() == (tiny_model.hf_dir / name).read_bytes(), name


def test_invalid_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hidden_size must divide by num_heads"):
        build_tiny_mixtral(tmp_path, TinyModelSpec(hidden_size=66, num_heads=4))


def test_write_gguf_with_architecture_reads_back(tmp_path: Path) -> None:
    import gguf

    path = write_gguf_with_architecture(tmp_path / "qwen.gguf", "qwen2")
    assert path == tmp_path / "qwen.gguf"
    reader = gguf.GGUFReader(path)
    assert _gguf_field(reader, "general.architecture") == "qwen2"
    assert path.stat().st_size < 4096


# --- llama.cpp against transformers --------------------------------------------------------------


def test_llama_cpp_loads_it_as_a_32k_moe_with_the_mistral_template(llama: Any) -> None:
    import llama_cpp

    assert llama_cpp.llama_model_n_ctx_train(llama.model) == 32768
    assert llama.n_vocab() == TINY.vocab_size
    assert llama.metadata["llama.expert_count"] == str(TINY.num_experts)
    assert llama.metadata["llama.expert_used_count"] == str(TINY.experts_per_token)
    assert llama.metadata["tokenizer.chat_template"] == OFFICIAL_TEMPLATE
    assert llama.chat_format == "mistral-instruct"
    assert (llama.token_bos(), llama.token_eos()) == (1, 2)


def test_logits_match_transformers_exactly_with_f32_kv_cache(
    llama_f32_kv: Any, hf_model: Any, hf_tokenizer: Any
) -> None:
    ids = _hf_ids(hf_tokenizer, MIXED_PROMPT)
    diff = np.abs(_llama_logits(llama_f32_kv, ids) - _hf_logits(hf_model, ids)).max()
    assert diff < 1e-4


def test_logits_match_transformers_with_default_settings(
    llama: Any, hf_model: Any, hf_tokenizer: Any
) -> None:
    ids = _hf_ids(hf_tokenizer, MIXED_PROMPT)
    hf_logits = _hf_logits(hf_model, ids)
    # Logits are O(1) by construction; the f16 KV cache costs about 1e-3.
    assert hf_logits.std() > 0.5
    assert np.abs(_llama_logits(llama, ids) - hf_logits).max() < 1e-2


def test_greedy_continuations_are_identical(llama: Any, hf_model: Any, hf_tokenizer: Any) -> None:
    import torch

    ids = _hf_ids(hf_tokenizer, MIXED_PROMPT)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=0
        )
    hf_continuation = out[0, len(ids) :].tolist()

    llama_continuation: list[int] = []
    for token in llama.generate(ids, temp=0.0, top_k=1, reset=True):
        llama_continuation.append(token)
        if len(llama_continuation) == 16:
            break

    assert llama_continuation == hf_continuation
    assert len(hf_continuation) == 16
    assert hf_tokenizer.decode(hf_continuation, skip_special_tokens=True).strip()


# --- tokenization --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TOKENIZATION_CASES)
def test_prompt_tokenization_is_identical(llama: Any, hf_tokenizer: Any, text: str) -> None:
    expected = llama.tokenize(text.encode(), add_bos=False, special=True)
    assert _hf_ids(hf_tokenizer, text) == expected


def test_chat_prompt_tokens_are_the_mistral_ones(hf_tokenizer: Any) -> None:
    tokens = hf_tokenizer.convert_ids_to_tokens(_hf_ids(hf_tokenizer, CHAT_PROMPT))
    assert tokens[:4] == ["<s>", "▁[", "INST", "]"]
    assert tokens.count("<s>") == 1
    # The fragment after </s> gets its own space prefix, as in llama.cpp and SentencePiece.
    after_eos = tokens[tokens.index("</s>") + 1 :]
    assert after_eos[:3] == ["▁[", "INST", "]"]
    # A character outside the vocabulary is spelt with byte-fallback tokens.
    assert "<0xE6>" in tokens


@pytest.mark.parametrize("text", [t for t in TOKENIZATION_CASES if "<" not in t])
def test_plain_text_with_bos_is_identical(llama: Any, hf_tokenizer: Any, text: str) -> None:
    expected = llama.tokenize(text.encode(), add_bos=True, special=False)
    assert _hf_ids(hf_tokenizer, text, add_special_tokens=True) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text)
def test_random_text_tokenizes_identically(llama: Any, hf_tokenizer: Any, text: str) -> None:
    expected = llama.tokenize(text.encode(), add_bos=False, special=True)
    assert _hf_ids(hf_tokenizer, text) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=plain_text)
def test_decoding_round_trips(llama: Any, hf_tokenizer: Any, text: str) -> None:
    ids = _hf_ids(hf_tokenizer, text)
    assert hf_tokenizer.decode(ids) == text
    with_bos = llama.tokenize(text.encode(), add_bos=True, special=False)
    assert llama.detokenize(with_bos) == text.encode()
