"""Prefix KV-state cache on real llama.cpp: what is reused, identical text, budgets, disk."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType

import pytest

pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")

import llama_cpp

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.backends.base import SamplingParams
from chinese_mixtral_rag.backends.generation import stream_text
from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend
from chinese_mixtral_rag.backends.prefix_cache import common_prefix_len
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.corpus import training_lines

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0)
SAMPLED = SamplingParams(temperature=0.8, seed=1234)
N_CTX = 4096
NEW_TOKENS = 12


def document(seed: int, chars: int = 2000) -> str:
    """Retrieved "documents": corpus lines in a seeded order (unrelated across seeds)."""
    rng = random.Random(seed)
    lines = training_lines()
    picked: list[str] = []
    while sum(map(len, picked)) < chars:
        picked.append(rng.choice(lines))
    return "\n".join(picked)


def rag_prompt(backend: LlamaCppBackend, doc: str, question: str) -> list[int]:
    text = f"[INST] 请根据下面的资料回答问题。\n资料：\n{doc}\n问题：{question} [/INST]"
    return backend.tokenize(text, add_bos=True, special=False)


def answer(backend: LlamaCppBackend, ids: list[int], sampling: SamplingParams = GREEDY) -> str:
    return "".join(stream_text(backend, ids, max_new_tokens=NEW_TOKENS, sampling=sampling))


def load(tiny: TinyModel, **options: object) -> LlamaCppBackend:
    return LlamaCppBackend.load(tiny.gguf_path, n_ctx=N_CTX, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Prompts:
    a: list[int]  # documents A + question 1
    b: list[int]  # unrelated documents B
    c: list[int]  # unrelated documents C
    a2: list[int]  # documents A + another question: the follow-up

    @property
    def tail(self) -> int:
        """Tokens of a2 after its common prefix with a."""
        return len(self.a2) - common_prefix_len(self.a, self.a2)


@pytest.fixture(scope="module")
def cold(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    """No prefix cache: only llama-cpp-python's reuse of the previous prompt."""
    backend = load(tiny_model, prefix_cache_bytes=0)
    assert backend.prefix_cache is None
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompts(cold: LlamaCppBackend) -> Prompts:
    doc_a = document(1)
    made = Prompts(
        a=rag_prompt(cold, doc_a, "今天的天气怎么样？"),
        b=rag_prompt(cold, document(2), "一家人周末去了哪里？"),
        c=rag_prompt(cold, document(3), "量化有什么好处？"),
        a2=rag_prompt(cold, doc_a, "西红柿炒鸡蛋应该怎么做？"),
    )
    lengths = [len(made.a), len(made.b), len(made.c), len(made.a2)]
    assert min(lengths) > 1200
    assert max(lengths) < 1.1 * min(lengths)  # similar state sizes for the budget test
    assert 0 < made.tail < 30
    return made


def cold_answer(cold: LlamaCppBackend, ids: list[int], sampling: SamplingParams = GREEDY) -> str:
    """The answer from an empty context: every prompt token evaluated."""
    cold.llama.reset()  # type: ignore[no-untyped-call]
    text = answer(cold, ids, sampling)
    assert cold.last_prompt_evaluated == len(ids)
    return text


@pytest.fixture
def warm(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    backend = load(tiny_model)  # the default 4 GiB RAM cache
    assert backend.prefix_cache is not None
    yield backend
    backend.close()


def source(backend: LlamaCppBackend) -> str:
    """Where the last prompt's reused tokens came from (a call, so mypy does not narrow it)."""
    return backend.last_prefix_source


def perf_evaluated(backend: LlamaCppBackend) -> int:
    data = llama_cpp.llama_perf_context(backend.llama.ctx)
    return int(data.n_p_eval) + int(data.n_eval)


def test_follow_up_after_another_prompt_evaluates_only_the_new_tail(
    warm: LlamaCppBackend, cold: LlamaCppBackend, prompts: Prompts
) -> None:
    answer(warm, prompts.a)
    assert source(warm) == "none"
    assert warm.last_prompt_evaluated == len(prompts.a)
    answer(warm, prompts.b)
    assert source(warm) == "live"  # only the template's first tokens are shared
    before = warm.evaluated_tokens
    answer(warm, prompts.a2)
    assert source(warm) == "cache"
    assert warm.last_prompt_evaluated == prompts.tail
    assert warm.last_prompt_reused == len(prompts.a2) - prompts.tail
    assert warm.last_prompt_evaluated * 20 < len(prompts.a2)
    # The prompt's tail, then every new token but the last (sampled, never evaluated).
    assert warm.evaluated_tokens - before == prompts.tail + NEW_TOKENS - 1

    cold.llama.reset()  # type: ignore[no-untyped-call]
    for ids in (prompts.a, prompts.b, prompts.a2):
        answer(cold, ids)
    assert source(cold) == "live"
    assert cold.last_prompt_evaluated == len(prompts.a2) - common_prefix_len(prompts.b, prompts.a2)
    assert cold.last_prompt_evaluated > 0.95 * len(prompts.a2)


def test_restored_states_give_the_text_of_a_cold_run(
    warm: LlamaCppBackend, cold: LlamaCppBackend, prompts: Prompts
) -> None:
    answer(warm, prompts.a)
    answer(warm, prompts.b)
    assert answer(warm, prompts.a2) == cold_answer(cold, prompts.a2)
    assert source(warm) == "cache"

    # The prompt lies entirely inside a saved state (prompt + its answer): all but one reused.
    answer(warm, prompts.c)
    assert answer(warm, prompts.b) == cold_answer(cold, prompts.b)
    assert source(warm) == "cache"
    assert warm.last_prompt_evaluated == 1

    # Sampling: the seed of the call, not the one saved with the state.
    answer(warm, prompts.c)
    sampled = answer(warm, prompts.a2, SAMPLED)
    assert source(warm) == "cache"
    assert sampled == cold_answer(cold, prompts.a2, SAMPLED)


def test_evaluated_tokens_agree_with_llama_cpp_counters(
    warm: LlamaCppBackend, prompts: Prompts
) -> None:
    answer(warm, prompts.a)  # llama.cpp reports 1 for 0: start from real counts
    ours, theirs = warm.evaluated_tokens, perf_evaluated(warm)
    for ids in (prompts.b, prompts.a2, prompts.c, prompts.a):
        answer(warm, ids)
        assert warm.evaluated_tokens - ours == perf_evaluated(warm) - theirs
    assert source(warm) == "cache"


def test_stream_closed_early_still_saves_its_state(
    warm: LlamaCppBackend, cold: LlamaCppBackend, prompts: Prompts
) -> None:
    assert warm.prefix_cache is not None
    stream = stream_text(warm, prompts.a, max_new_tokens=200, sampling=GREEDY)
    assert isinstance(stream, GeneratorType)
    next(stream)
    stream.close()
    assert warm.prefix_cache.stats.saves == 1
    answer(warm, prompts.b)
    assert answer(warm, prompts.a2) == cold_answer(cold, prompts.a2)
    assert source(warm) == "cache"
    assert warm.last_prompt_evaluated == prompts.tail


def test_byte_budget_evicts_the_least_recently_used(
    tiny_model: TinyModel, prompts: Prompts
) -> None:
    probe = load(tiny_model)
    answer(probe, prompts.a)
    assert probe.prefix_cache is not None
    one_state = probe.prefix_cache.stats.bytes
    probe.close()

    backend = load(tiny_model, prefix_cache_bytes=int(2.5 * one_state))
    assert backend.prefix_cache is not None
    answer(backend, prompts.a)
    answer(backend, prompts.b)
    answer(backend, prompts.a)  # restores A: now B is the least recently used
    assert source(backend) == "cache"
    answer(backend, prompts.c)
    stats = backend.prefix_cache.stats
    assert (stats.entries, stats.evictions) == (2, 1)
    assert stats.bytes <= 2.5 * one_state
    answer(backend, prompts.a)
    assert source(backend) == "cache"
    answer(backend, prompts.b)
    assert source(backend) != "cache"
    assert backend.last_prompt_evaluated > 0.95 * len(prompts.b)
    backend.close()


def test_disk_cache_serves_a_new_backend(
    tiny_model: TinyModel, cold: LlamaCppBackend, prompts: Prompts, tmp_path: Path
) -> None:
    first = load(tiny_model, prefix_cache_dir=tmp_path)
    answer(first, prompts.a)
    first.close()
    assert len(list(tmp_path.glob("*.kvstate"))) == 1

    second = load(tiny_model, prefix_cache_bytes=0, prefix_cache_dir=tmp_path)
    assert second.prefix_cache is not None
    assert second.prefix_cache.stats.disk_entries == 1
    assert answer(second, prompts.a2) == cold_answer(cold, prompts.a2)
    assert source(second) == "cache"
    assert second.last_prompt_evaluated == prompts.tail
    second.close()

    # Another context size is another KV layout: its states are never offered.
    other = LlamaCppBackend.load(tiny_model.gguf_path, n_ctx=2048, prefix_cache_dir=tmp_path)
    assert other.prefix_cache is not None
    assert other.prefix_cache.stats.entries == 0
    other.close()


def test_a_state_llama_cpp_refuses_is_dropped_and_the_prompt_evaluated(
    warm: LlamaCppBackend, cold: LlamaCppBackend, prompts: Prompts
) -> None:
    cache = warm.prefix_cache
    assert cache is not None
    answer(warm, prompts.a)
    match = cache.best_match(prompts.a)
    assert match is not None
    good = match.state
    half = good.llama_state_size // 2
    broken = llama_cpp.LlamaState(
        good.input_ids, good.scores, good.n_tokens, bytes(good.llama_state)[:half], half, 0
    )
    cache.clear()
    cache.save(match.tokens, broken)
    answer(warm, prompts.b)
    assert answer(warm, prompts.a2) == cold_answer(cold, prompts.a2)
    assert source(warm) == "none"
    assert warm.last_prompt_evaluated == len(prompts.a2)
    assert cache.best_match(match.tokens, min_prefix=len(match.tokens)) is None


def test_chat_model_options_reach_the_backend(tiny_model: TinyModel, tmp_path: Path) -> None:
    chat = ChineseMixtralChat(
        model_path=str(tiny_model.gguf_path),
        n_ctx=N_CTX,
        prefix_cache_bytes=12345678,
        prefix_cache_dir=str(tmp_path),
    )
    backend = chat.get_backend()
    assert isinstance(backend, LlamaCppBackend)
    assert backend.prefix_cache is not None
    assert backend.prefix_cache.max_bytes == 12345678
    assert backend.prefix_cache.directory == tmp_path
