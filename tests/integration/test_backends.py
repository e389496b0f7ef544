"""End to end on real llama.cpp and real transformers with the same tiny weights."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages

from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat
from chinese_mixtral_rag.backends import load_backend
from chinese_mixtral_rag.backends.base import SamplingParams
from chinese_mixtral_rag.errors import ContextLengthError, PromptError
from chinese_mixtral_rag.testing import TinyModel

GREEDY: dict[str, Any] = {"temperature": 0, "repetition_penalty": 1.0}
BACKENDS = ["llama_cpp", "transformers"]
QUESTION = [("system", "你是一个乐于助人的助手。"), ("human", "介绍一下混合专家模型")]


def source(tiny: TinyModel, backend: str) -> dict[str, Any]:
    if backend == "llama_cpp":
        return {"model_path": str(tiny.gguf_path)}
    return {"model_path": str(tiny.hf_dir), "device_map": None}


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def chat(tiny_model: TinyModel, backend_name: str) -> ChineseMixtralChat:
    return ChineseMixtralChat(**source(tiny_model, backend_name), **GREEDY, max_tokens=40)


@pytest.fixture
def both(tiny_model: TinyModel) -> tuple[ChineseMixtralChat, ChineseMixtralChat]:
    return (
        ChineseMixtralChat(**source(tiny_model, "llama_cpp"), **GREEDY, max_tokens=40),
        ChineseMixtralChat(**source(tiny_model, "transformers"), **GREEDY, max_tokens=40),
    )


CONVERSATIONS = [
    [("human", "你好")],
    QUESTION,
    [("human", "Hello, world! 123"), ("ai", "Hi there."), ("human", "再问一次：为什么？")],
    [
        ("human", "表情😀和生僻字𠀀龘、繁體中文與標點「」"),
        ("ai", "答案\n\n第二段"),
        ("human", "  两个空格  "),
    ],
    [("human", "literal <s> and </s> and [INST] inside")],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_both_backends_see_identical_prompt_ids(
    both: tuple[ChineseMixtralChat, ChineseMixtralChat], conversation: list[tuple[str, str]]
) -> None:
    messages = convert_to_messages(conversation)
    llama_ids, hf_ids = (c.prompt_ids(messages) for c in both)
    assert llama_ids == hf_ids
    bos = both[0].get_backend().bos_token_id
    assert llama_ids[0] == bos
    assert llama_ids[1:].count(bos) == conversation[0][1].count("<s>")  # never a second BOS


def test_greedy_decoding_agrees_across_backends(
    both: tuple[ChineseMixtralChat, ChineseMixtralChat],
) -> None:
    messages = convert_to_messages(QUESTION)
    prompt = both[0].prompt_ids(messages)
    first16 = []
    for chat in both:
        backend = chat.get_backend()
        ids = backend.generate_ids(
            prompt,
            max_new_tokens=16,
            sampling=SamplingParams(temperature=0, repetition_penalty=1.0),
            should_stop=lambda: False,
        )
        first16.append(list(ids))
    assert len(first16[0]) == 16
    assert first16[0] == first16[1]
    replies = [chat.invoke(messages) for chat in both]
    assert replies[0].content == replies[1].content
    assert replies[0].content


def _stop_string(reference: list[str]) -> str:
    """Two consecutive streamed pieces that appear only once: a stop string of several tokens."""
    text = "".join(reference)
    for i in range(3, len(reference) - 1):
        candidate = reference[i] + reference[i + 1]
        if len(candidate) >= 2 and text.count(candidate) == 1 and "\ufffd" not in candidate:
            return candidate
    raise AssertionError(f"no usable stop string in {reference!r}")


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
def test_multi_token_stop_string_ends_generation(chat: ChineseMixtralChat, mode: str) -> None:
    reference = [c.text for c in chat.stream(QUESTION) if c.text]
    stop = _stop_string(reference)
    expected = "".join(reference).split(stop)[0]
    assert len(chat.get_backend().tokenize(stop, add_bos=False, special=False)) >= 2

    if mode == "invoke":
        reply = chat.invoke(QUESTION, stop=[stop])
        text, finish = reply.text, reply.response_metadata["finish_reason"]
    else:
        if mode == "stream":
            chunks = list(chat.stream(QUESTION, stop=[stop]))
        else:

            async def collect() -> list[Any]:
                return [c async for c in chat.astream(QUESTION, stop=[stop])]

            chunks = asyncio.run(collect())
        text = "".join(c.text for c in chunks)
        finish = chunks[-1].response_metadata["finish_reason"]
    assert text == expected
    assert stop not in text
    assert finish == "stop"


def test_stop_from_constructor_applies(chat: ChineseMixtralChat) -> None:
    reference = [c.text for c in chat.stream(QUESTION) if c.text]
    stop = _stop_string(reference)
    stopped = chat.model_copy(update={"stop": [stop]})
    assert stopped.invoke(QUESTION).text == "".join(reference).split(stop)[0]


def test_usage_metadata_counts_real_tokens(chat: ChineseMixtralChat) -> None:
    messages = convert_to_messages(QUESTION)
    reply = chat.invoke(messages, max_tokens=17)
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == len(chat.prompt_ids(messages))
    assert usage["output_tokens"] == 17
    assert usage["total_tokens"] == usage["input_tokens"] + 17
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.response_metadata["model_name"] == chat.model_name

    # With a stop string, output_tokens counts the tokens up to the one completing the stop.
    reference = [c.text for c in chat.stream(QUESTION) if c.text]
    stop = _stop_string(reference)
    backend = chat.get_backend()
    ids = list(
        backend.generate_ids(
            chat.prompt_ids(messages),
            max_new_tokens=40,
            sampling=SamplingParams(temperature=0, repetition_penalty=1.0),
            should_stop=lambda: False,
        )
    )
    decoded, needed = b"", 0
    for needed, token in enumerate(ids, start=1):  # noqa: B007
        decoded += backend.token_bytes(token)
        if stop in decoded.decode("utf-8", errors="replace"):
            break
    stopped = chat.invoke(messages, stop=[stop])
    assert stopped.usage_metadata is not None
    assert stopped.usage_metadata["output_tokens"] == needed


def test_stream_usage_and_model_name_come_once_on_the_last_chunk(chat: ChineseMixtralChat) -> None:
    chunks = list(chat.stream(QUESTION, max_tokens=8))
    with_usage = [c for c in chunks if c.usage_metadata]
    assert with_usage == [chunks[-1]]
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["model_name"] == chat.model_name


def test_eos_ends_generation_with_finish_reason_stop(chat: ChineseMixtralChat) -> None:
    eos = chat.get_backend().eos_token_id
    reply = chat.invoke(QUESTION, logit_bias={eos: 100.0})
    assert reply.text == ""
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 0


def test_seeded_sampling_repeats(chat: ChineseMixtralChat) -> None:
    sampled = chat.model_copy(update={"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7})
    first, second = sampled.invoke(QUESTION).text, sampled.invoke(QUESTION).text
    assert first == second
    other = sampled.invoke(QUESTION, seed=8).text
    assert other != first


@pytest.mark.parametrize(
    "narrowing",
    [{"top_k": 1, "top_p": 1.0}, {"top_k": 0, "top_p": 1e-6}],
    ids=["top_k=1", "top_p~0"],
)
def test_top_k_and_top_p_are_applied_when_sampling(
    chat: ChineseMixtralChat, narrowing: dict[str, Any]
) -> None:
    # At temperature 5 random weights sample all over the vocabulary, unless top-k/top-p really
    # cut the candidates down to the single most likely token: then sampling equals greedy.
    greedy = chat.invoke(QUESTION).text
    hot = chat.model_copy(update={"temperature": 5.0, "top_k": 0, "top_p": 1.0})
    assert hot.invoke(QUESTION, seed=1).text != greedy
    narrowed = hot.model_copy(update=narrowing)
    assert [narrowed.invoke(QUESTION, seed=s).text for s in (1, 2)] == [greedy, greedy]


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_callbacks_fire_per_token_in_invoke_and_stream(chat: ChineseMixtralChat) -> None:
    handler = _Tokens()
    reply = chat.invoke(QUESTION, max_tokens=20, config={"callbacks": [handler]})
    assert "".join(handler.tokens) == reply.text
    assert len([t for t in handler.tokens if t]) >= 10  # one call per token (UTF-8 pieces merge)
    handler = _Tokens()
    chunks = list(chat.stream(QUESTION, max_tokens=20, config={"callbacks": [handler]}))
    assert handler.tokens == [c.text for c in chunks]


def test_batch_and_abatch(chat: ChineseMixtralChat) -> None:
    single = chat.invoke("你好").text
    assert [r.text for r in chat.batch(["你好", "你好"])] == [single, single]
    assert [r.text for r in asyncio.run(chat.abatch(["你好"]))] == [single]


def test_astream_does_not_block_the_event_loop(chat: ChineseMixtralChat) -> None:
    async def scenario() -> tuple[int, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        chunks = 0
        async for _ in chat.astream(QUESTION, max_tokens=60):
            chunks += 1
        done = True
        await task
        return ticks, chunks

    ticks, chunks = asyncio.run(scenario())
    assert chunks > 1
    assert ticks > chunks  # the loop kept running other tasks while tokens were generated


def test_abandoned_astream_releases_the_model(chat: ChineseMixtralChat) -> None:
    async def take_two() -> None:
        stream = chat.astream(QUESTION, max_tokens=200)
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(take_two())
    assert chat.invoke(QUESTION, max_tokens=4).usage_metadata is not None  # lock was released


def test_models_load_once_per_process(tiny_model: TinyModel, backend_name: str) -> None:
    first = ChineseMixtralChat(**source(tiny_model, backend_name))
    second = ChineseMixtralChat(**source(tiny_model, backend_name), temperature=0.7)
    assert first.get_backend() is second.get_backend()


def test_an_already_loaded_model_can_be_passed_in(tiny_model: TinyModel) -> None:
    from llama_cpp import Llama

    llama = Llama(model_path=str(tiny_model.gguf_path), n_ctx=512, verbose=False)
    chat = ChineseMixtralChat(client=llama, **GREEDY, max_tokens=8)
    reference = ChineseMixtralChat(**source(tiny_model, "llama_cpp"), **GREEDY, max_tokens=8)
    assert chat.invoke(QUESTION).text == reference.invoke(QUESTION).text
    assert chat.get_backend().context_length == 512
    wrapped = ChineseMixtralChat(client=reference.get_backend())
    assert wrapped.get_backend() is reference.get_backend()
    llama.close()


def test_llama_cpp_context_defaults_to_the_trained_length(tiny_model: TinyModel) -> None:
    chat = ChineseMixtralChat(**source(tiny_model, "llama_cpp"))
    assert chat.get_backend().context_length == tiny_model.spec.context_length == 32768
    small = ChineseMixtralChat(**source(tiny_model, "llama_cpp"), n_ctx=256)
    assert small.get_backend().context_length == 256


def test_max_tokens_beyond_the_window_is_a_clear_error(tiny_model: TinyModel) -> None:
    chat = ChineseMixtralChat(**source(tiny_model, "llama_cpp"), n_ctx=256, max_tokens=300)
    with pytest.raises(ContextLengthError, match=r"max_tokens=300 does not fit.*Lower max_tokens"):
        chat.invoke("你好")


def test_stored_chat_template_gives_the_same_prompt(chat: ChineseMixtralChat) -> None:
    stored = chat.model_copy(update={"chat_template": "model"})
    messages = convert_to_messages(CONVERSATIONS[2])
    assert stored.render(messages) == chat.render(messages)


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "No messages"),
        ([HumanMessage("问题"), AIMessage("回答")], "ends with an assistant message"),
    ],
)
def test_bad_conversations_raise_prompt_errors(
    chat: ChineseMixtralChat, messages: list[BaseMessage], fragment: str
) -> None:
    with pytest.raises(PromptError, match=fragment):
        chat.invoke(messages)


def test_per_call_model_override_is_refused(chat: ChineseMixtralChat) -> None:
    with pytest.raises(ValueError, match="Create another instance"):
        chat.invoke("你好", model="some-other-model")


def test_base_model_completion_matches_across_backends(tiny_model: TinyModel) -> None:
    llms = [
        ChineseMixtral(**source(tiny_model, name), **GREEDY, max_tokens=24) for name in BACKENDS
    ]
    texts = [llm.invoke("中国的首都是") for llm in llms]
    assert texts[0] == texts[1]
    assert texts[0]
    stop = texts[0][6:9]
    for llm in llms:
        assert llm.invoke("中国的首都是", stop=[stop]) == texts[0].split(stop)[0]

        async def collect(model: ChineseMixtral = llm) -> str:
            return "".join([piece async for piece in model.astream("中国的首都是")])

        assert asyncio.run(collect()) == texts[0]
    result = llms[0].generate(["中国的首都是"])
    info = result.generations[0][0].generation_info
    assert info is not None
    assert info["finish_reason"] == "length"
    assert info["usage"]["completion_tokens"] == 24
    assert info["usage"]["prompt_tokens"] == llms[0].get_num_tokens("中国的首都是") + 1  # BOS


def test_get_num_tokens_uses_the_model_tokenizer(
    both: tuple[ChineseMixtralChat, ChineseMixtralChat],
) -> None:
    text = "混合专家模型（Mixture of Experts）😀"
    counts = [c.get_num_tokens(text) for c in both]
    assert (
        counts[0]
        == counts[1]
        == len(both[0].get_backend().tokenize(text, add_bos=False, special=False))
    )
    history = [HumanMessage("你好"), AIMessage("您好！")]
    assert both[0].get_num_tokens_from_messages(history) == both[1].get_num_tokens_from_messages(
        history
    )


def test_loader_is_shared_by_direct_calls(tiny_model: TinyModel) -> None:
    a = load_backend("llama_cpp", str(tiny_model.gguf_path), n_ctx=128)
    b = load_backend("llama_cpp", str(tiny_model.gguf_path), n_ctx=128)
    assert a is b


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = (
        "import sys, chinese_mixtral_rag;"
        "heavy = {'torch', 'transformers', 'llama_cpp', 'langchain_core', 'chromadb', 'gradio'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_second_generation_inside_an_unfinished_stream_is_an_error(
    chat: ChineseMixtralChat,
) -> None:
    stream = chat.stream(QUESTION, max_tokens=30)
    next(stream)
    with pytest.raises(RuntimeError, match="already generating"):
        chat.invoke("你好", max_tokens=2)
    stream.close()
    assert chat.invoke("你好", max_tokens=2).usage_metadata is not None
