"""``backend="openai"`` end to end against llama-cpp-python's real OpenAI-compatible server.

Parity: the server runs the same tiny GGUF as the in-process llama.cpp backend, so the prompt
ids, the greedy answer, the usage and the finish reason must be the same both ways, for the chat
model and the plain LLM, streamed, stopped on a stop string, async, and in concurrent batches
(llama-cpp-python's server cuts a running answer short when another request comes in, so the
backend sends it one generation at a time).

Random weights emit lone byte-fallback tokens (half a Chinese character) that real models do not:
llama-cpp-python's server drops them from its text (``errors="ignore"``, where the local backend
shows U+FFFD) and generates past ``max_tokens`` to complete a character. The parity tests ban the
tokens that are not valid UTF-8 on their own with a logit bias, so both sides produce the same
well-formed tokens; the bias goes to the server like any other sampling option.

Errors: every way of pointing at the wrong thing (nothing listening, the wrong path, the wrong
key, a web server, a server that never answers, a prompt over the window, a model the server does
not serve, a busy server, a dropped connection) ends quickly in a message that says what to do.
The small servers playing the wrong things run in threads here; the busy server is a proxy in
front of the real one.

Structured output: a JSON Schema in the sampling goes to the server as a grammar, and the
server's decoding keeps to it (random weights write no JSON of their own).

Last, the in-process llama.cpp path reports the prompt tokens its prefix reuse spared as
``usage_metadata["input_token_details"]["cache_read"]``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat
from chinese_mixtral_rag.backends.base import Completion, SamplingParams, TextRequest
from chinese_mixtral_rag.backends.remote import OpenAIServerBackend
from chinese_mixtral_rag.errors import ContextLengthError, ModelLoadError, ModelServerError
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, free_port, llama_cpp_server

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")

MAX_TOKENS = 24  # the server re-decodes the whole answer at every streamed token: keep it short
API_KEY = "test-key"
ALIAS = "tiny-mixtral"
#: Quick failures: nothing here may wait long.
QUICK: dict[str, Any] = {"request_timeout": 2, "connect_timeout": 2, "max_retries": 0}

CONVERSATIONS: dict[str, list[BaseMessage]] = {
    "zh-system": [SystemMessage("你是一个乐于助人的助手。"), HumanMessage("介绍一下混合专家模型")],
    "en-multi-turn": [
        SystemMessage("You are a helpful assistant."),
        HumanMessage("What is a mixture of experts?"),
        AIMessage("It routes every token to a few expert networks."),
        HumanMessage("Why is that fast?"),
    ],
    "zh-multi-turn": [
        HumanMessage("北京是中国的首都吗？"),
        AIMessage("是的。"),
        HumanMessage("上海呢？请用一句话回答。"),
    ],
}
PROMPTS = ["中国的首都是", "Once upon a time, there was", "混合专家模型（MoE）的原理是"]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ban_partial_bytes(tiny_model: TinyModel) -> dict[int, float]:
    """A logit bias banning the tokens that are not valid UTF-8 alone (see the module doc)."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(tiny_model.gguf_path), vocab_only=True, verbose=False)
    banned: dict[int, float] = {}
    for token in range(llama.n_vocab()):
        try:
            bytes(llama.detokenize([token])).decode("utf-8")
        except UnicodeDecodeError:
            banned[token] = -100.0
    llama.close()
    assert banned, "the tiny vocabulary has byte-fallback tokens"
    return banned


@pytest.fixture(scope="module")
def greedy(ban_partial_bytes: dict[int, float]) -> dict[str, Any]:
    return {
        "temperature": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": MAX_TOKENS,
        "n_ctx": SERVER_N_CTX,
        "logit_bias": ban_partial_bytes,
    }


@pytest.fixture(scope="module")
def local_chat(tiny_model: TinyModel, greedy: dict[str, Any]) -> ChineseMixtralChat:
    return ChineseMixtralChat(model_path=str(tiny_model.gguf_path), **greedy)


@pytest.fixture(scope="module")
def remote_chat(llama_server: str, greedy: dict[str, Any]) -> ChineseMixtralChat:
    return ChineseMixtralChat(base_url=llama_server, **greedy)


@pytest.fixture(scope="module")
def key_server(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server that wants an API key and serves the model under an alias."""
    logs = tmp_path_factory.mktemp("llama-server-key")
    with llama_cpp_server(tiny_model.gguf_path, log_dir=logs, api_key=API_KEY, alias=ALIAS) as url:
        yield url


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on a free loopback port, in a thread, until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def url_of(server: ThreadingHTTPServer, path: str = "/v1") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


class WebPage(BaseHTTPRequestHandler):
    """A web server that is not a model server: HTML for everything."""

    def _page(self) -> None:
        body = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class Proxy(ThreadingHTTPServer):
    """Forwards to the real server, except that chosen paths first answer 503 (``failures``:
    how many times each), close the connection without a word (``drops``) or never answer
    (``hang``); ``attempts`` counts requests per path."""

    upstream = ""
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream.removesuffix("/v1")
        self.failures: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        self.hang: set[str] = set()
        self.release = threading.Event()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.client = httpx.Client(timeout=30)


class ProxyHandler(BaseHTTPRequestHandler):
    server: Proxy

    def _forward(self) -> None:
        proxy = self.server
        path = self.path
        proxy.attempts[path] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path in proxy.hang:
            proxy.release.wait(30)
            return
        if proxy.drops[path] > 0:
            proxy.drops[path] -= 1
            self.close_connection = True
            return
        if proxy.failures[path] > 0:
            proxy.failures[path] -= 1
            busy = b'{"error": {"message": "Service Unavailable: model is loading"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")  # no need to make the test wait
            self.send_header("Content-Length", str(len(busy)))
            self.end_headers()
            self.wfile.write(busy)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in {"content-type"}}
        answer = proxy.client.request(
            self.command, proxy.upstream + path, content=body, headers=headers
        )
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "text/plain"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(llama_server: str) -> Iterator[Proxy]:
    server = Proxy(llama_server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        server.client.close()
        thread.join(timeout=5)


def invoke_fails(chat: ChineseMixtralChat, error: type[Exception], within: float) -> str:
    """The error message of one invoke, which must come within ``within`` seconds."""
    start = time.monotonic()
    with pytest.raises(error) as caught:
        chat.invoke("你好")
    assert time.monotonic() - start < within
    return str(caught.value)


# --- parity with the in-process llama.cpp backend -------------------------------------------------


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_matches_in_process_llama_cpp(
    name: str, local_chat: ChineseMixtralChat, remote_chat: ChineseMixtralChat
) -> None:
    messages = CONVERSATIONS[name]
    assert remote_chat.render(messages) == local_chat.render(messages)
    assert remote_chat.prompt_ids(messages) == local_chat.prompt_ids(messages)
    local = local_chat.invoke(messages)
    remote = remote_chat.invoke(messages)
    assert remote.content == local.content
    assert local.content
    assert "\ufffd" not in str(local.content)
    assert remote.usage_metadata is not None
    assert local.usage_metadata is not None
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert remote.usage_metadata[key] == local.usage_metadata[key], key
    assert remote.usage_metadata["input_tokens"] == len(local_chat.prompt_ids(messages))
    finish = local.response_metadata["finish_reason"]
    assert remote.response_metadata["finish_reason"] == finish
    assert remote.response_metadata["model_provider"] == "chinese_mixtral"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_plain_llm_matches_in_process_llama_cpp(
    prompt: str, tiny_model: TinyModel, llama_server: str, greedy: dict[str, Any]
) -> None:
    local_llm = ChineseMixtral(model_path=str(tiny_model.gguf_path), **greedy)
    remote_llm = ChineseMixtral(base_url=llama_server, **greedy)
    local = local_llm.generate([prompt]).generations[0][0]
    remote = remote_llm.generate([prompt]).generations[0][0]
    assert remote.text == local.text
    assert local.text
    assert local.generation_info is not None
    assert remote.generation_info is not None
    assert remote.generation_info["finish_reason"] == local.generation_info["finish_reason"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert remote.generation_info["usage"][key] == local.generation_info["usage"][key], key
    assert remote_llm.get_num_tokens(prompt) == local_llm.get_num_tokens(prompt)


def test_stream_stops_where_the_local_model_stops(
    local_chat: ChineseMixtralChat, remote_chat: ChineseMixtralChat
) -> None:
    messages = CONVERSATIONS["zh-system"]
    full = str(local_chat.invoke(messages).content)
    # a stop string from the middle of the greedy answer, at its first occurrence
    start = next(i for i in range(4, len(full) - 2) if full.find(full[i : i + 2]) == i)
    stop = full[start : start + 2]

    def streamed(chat: ChineseMixtralChat) -> tuple[list[str], str | None]:
        pieces: list[str] = []
        finish = None
        for chunk in chat.stream(messages, stop=[stop]):
            pieces.append(str(chunk.content))
            finish = chunk.response_metadata.get("finish_reason", finish)
        return pieces, finish

    remote_pieces, remote_finish = streamed(remote_chat)
    local_pieces, local_finish = streamed(local_chat)
    assert "".join(remote_pieces) == full[:start] == "".join(local_pieces)
    assert len([p for p in remote_pieces if p]) > 1  # really streamed, piece by piece
    assert not any(stop in p for p in remote_pieces)
    assert remote_finish == local_finish == "stop"


async def test_async_streams_over_the_async_client(
    local_chat: ChineseMixtralChat,
    remote_chat: ChineseMixtralChat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = CONVERSATIONS["en-multi-turn"]
    expected = local_chat.invoke(messages)
    backend = remote_chat.get_backend()
    assert isinstance(backend, OpenAIServerBackend)

    def no_sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path used the blocking client")

    monkeypatch.setattr(backend, "stream_request", no_sync)
    # the event loop keeps running while the answer streams
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    chunks = [chunk async for chunk in remote_chat.astream(messages)]
    reply = await remote_chat.ainvoke(messages)
    done.set()
    await task
    assert "".join(str(c.content) for c in chunks) == expected.content == reply.content
    assert reply.usage_metadata is not None
    assert expected.usage_metadata is not None
    for key in ("input_tokens", "output_tokens"):  # the server reports no cache reads
        assert reply.usage_metadata[key] == expected.usage_metadata[key]
    assert reply.response_metadata["finish_reason"] == expected.response_metadata["finish_reason"]
    assert ticks > len(chunks)
    assert backend._async is not None
    assert backend._async[0] is asyncio.get_running_loop()


def test_concurrent_calls_get_whole_answers(
    local_chat: ChineseMixtralChat, remote_chat: ChineseMixtralChat
) -> None:
    # llama-cpp-python's server cuts a running answer short when another request comes in: the
    # backend sends it one generation at a time, so a batch gets every answer whole
    conversations: list[LanguageModelInput] = list(CONVERSATIONS.values())
    expected = [local_chat.invoke(messages) for messages in conversations]
    replies = remote_chat.batch(conversations, config={"max_concurrency": len(conversations)})
    for reply, local in zip(replies, expected, strict=True):
        assert reply.content == local.content
        assert reply.response_metadata["finish_reason"] == local.response_metadata["finish_reason"]

    async def all_at_once() -> list[AIMessage]:
        return await asyncio.gather(*(remote_chat.ainvoke(m) for m in conversations))

    for reply, local in zip(asyncio.run(all_at_once()), expected, strict=True):
        assert reply.content == local.content


def test_token_counts_match_the_local_tokenizer(
    local_chat: ChineseMixtralChat, remote_chat: ChineseMixtralChat
) -> None:
    texts = [
        "混合专家模型",
        "Mixture of experts, 混合专家 (MoE)!",
        "  leading spaces and 全角标点：“引号”。",
        "鬱龘齉",  # rare characters: byte fallback
    ]
    for text in texts:
        assert remote_chat.get_num_tokens(text) == local_chat.get_num_tokens(text), text
    for messages in CONVERSATIONS.values():
        assert remote_chat.get_num_tokens_from_messages(
            messages
        ) == local_chat.get_num_tokens_from_messages(messages)


def test_window_unknown_without_n_ctx(llama_server: str) -> None:
    chat = ChineseMixtralChat(base_url=llama_server, max_tokens=None, **QUICK)
    with pytest.raises(ModelLoadError, match=r"n_ctx= \(CMR_N_CTX\)"):
        _ = chat.get_backend().context_length
    with pytest.raises(ContextLengthError, match="set max_tokens, or n_ctx="):
        chat.invoke("你好")


# --- errors ---------------------------------------------------------------------------------------


def test_server_down() -> None:
    chat = ChineseMixtralChat(base_url=f"http://127.0.0.1:{free_port()}/v1", **QUICK)
    message = invoke_fails(chat, ModelServerError, within=5)
    assert "Cannot reach the model server" in message
    assert "Start it" in message
    assert "CMR_OPENAI_BASE_URL" in message


@pytest.mark.parametrize("path", ["", "/v2", "/api/v1"])
def test_wrong_url(path: str, llama_server: str) -> None:
    root = llama_server.removesuffix("/v1")
    chat = ChineseMixtralChat(base_url=root + path, **QUICK)
    message = invoke_fails(chat, ModelServerError, within=5)
    assert "HTTP 404" in message
    assert "/v1/models" in message
    assert "does not end in /v1" in message
    assert "CMR_OPENAI_BASE_URL" in message
    if not path:
        assert f"try {root}/v1" in message


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_api_key(key: str | None, key_server: str) -> None:
    chat = ChineseMixtralChat(base_url=key_server, api_key=key, **QUICK)
    message = invoke_fails(chat, ModelServerError, within=5)
    assert "refused the API key" in message
    assert "HTTP 401" in message
    assert "openai_api_key=" in message
    assert "CMR_OPENAI_API_KEY" in message
    assert "wrong-key" not in message  # a key is never echoed


def test_right_api_key_and_alias(key_server: str, greedy: dict[str, Any]) -> None:
    chat = ChineseMixtralChat(base_url=key_server, api_key=API_KEY, **{**greedy, **QUICK})
    reply = chat.invoke(CONVERSATIONS["zh-system"])
    assert reply.content
    assert reply.response_metadata["model_name"] == ALIAS
    named = ChineseMixtralChat(base_url=key_server, api_key=API_KEY, model=ALIAS, **greedy)
    assert named.invoke(CONVERSATIONS["zh-system"]).content == reply.content


def test_not_a_model_server() -> None:
    with serving(WebPage) as web:
        message = invoke_fails(
            ChineseMixtralChat(base_url=url_of(web), **QUICK), ModelServerError, 5
        )
    assert "not JSON" in message
    assert "not an OpenAI-compatible model server" in message
    assert "CMR_OPENAI_BASE_URL" in message


def test_server_that_never_answers() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody reads or answers
        port = silent.getsockname()[1]
        chat = ChineseMixtralChat(base_url=f"http://127.0.0.1:{port}/v1", **QUICK)
        message = invoke_fails(chat, ModelServerError, within=6)
    assert "did not answer within 2 s" in message
    assert "request_timeout=" in message
    assert "CMR_REQUEST_TIMEOUT" in message


def test_server_that_stops_answering_mid_request(proxy: Proxy, greedy: dict[str, Any]) -> None:
    proxy.hang.add("/v1/completions")
    chat = ChineseMixtralChat(base_url=url_of(proxy), **{**greedy, **QUICK})
    message = invoke_fails(chat, ModelServerError, within=6)
    assert "did not answer within 2 s" in message
    assert "request_timeout=" in message


def test_prompt_too_long_for_the_window(remote_chat: ChineseMixtralChat, llama_server: str) -> None:
    # llama-cpp-python's server answers such a stream with HTTP 200 and then nothing
    long_question = "请总结下面的文字。" + "混合专家模型把每个词交给少数几个专家网络。" * 800
    assert remote_chat.get_num_tokens(long_question) > SERVER_N_CTX
    with pytest.raises(ContextLengthError) as caught:
        remote_chat.invoke(long_question)
    message = str(caught.value)
    assert f"context window is {SERVER_N_CTX} tokens" in message
    assert "Shorten the conversation" in message
    assert "lower max_tokens" in message
    # the window not told: the silence is still an error, and it says what would check it
    unknown = ChineseMixtralChat(base_url=llama_server, max_tokens=8, **QUICK)
    with pytest.raises(ModelServerError) as caught_unknown:
        unknown.invoke(long_question)
    assert "without a finish reason" in str(caught_unknown.value)
    assert "n_ctx= (CMR_N_CTX)" in str(caught_unknown.value)


async def test_prompt_too_long_for_the_window_async(remote_chat: ChineseMixtralChat) -> None:
    long_question = "混合专家模型把每个词交给少数几个专家网络。" * 800
    with pytest.raises(ContextLengthError, match="Shorten the conversation"):
        await remote_chat.ainvoke(long_question)


def test_model_the_server_does_not_serve(llama_server: str, tiny_model: TinyModel) -> None:
    chat = ChineseMixtralChat(base_url=llama_server, model="chinese-mixtral-instruct", **QUICK)
    message = invoke_fails(chat, ModelLoadError, within=5)
    assert "does not serve 'chinese-mixtral-instruct'" in message
    assert tiny_model.gguf_path.name in message  # what it does serve
    assert "Set model= to one of them" in message


# --- retries --------------------------------------------------------------------------------------


def test_busy_server_is_retried(proxy: Proxy, greedy: dict[str, Any]) -> None:
    proxy.failures["/v1/models"] = 2
    proxy.failures["/v1/completions"] = 2
    options = {**greedy, **QUICK, "max_retries": 2}
    chat = ChineseMixtralChat(base_url=url_of(proxy), **options)
    reply = chat.invoke(CONVERSATIONS["zh-system"])
    assert reply.content
    assert proxy.attempts["/v1/models"] == 3
    assert proxy.attempts["/v1/completions"] == 3


async def test_busy_server_is_retried_async(proxy: Proxy, greedy: dict[str, Any]) -> None:
    options = {**greedy, **QUICK, "max_retries": 2}
    chat = ChineseMixtralChat(base_url=url_of(proxy), **options)
    await asyncio.to_thread(chat.get_backend)
    proxy.failures["/v1/completions"] = 2
    reply = await chat.ainvoke(CONVERSATIONS["zh-system"])
    assert reply.content
    assert proxy.attempts["/v1/completions"] == 3


def test_dropped_connection_is_retried(proxy: Proxy, greedy: dict[str, Any]) -> None:
    chat = ChineseMixtralChat(base_url=url_of(proxy), **{**greedy, **QUICK, "max_retries": 1})
    chat.get_backend()
    proxy.drops["/v1/completions"] = 1  # as a pooled connection the server just closed
    assert chat.invoke(CONVERSATIONS["zh-system"]).content
    assert proxy.attempts["/v1/completions"] == 2


def test_busy_server_without_retries_fails_clearly(proxy: Proxy, greedy: dict[str, Any]) -> None:
    chat = ChineseMixtralChat(base_url=url_of(proxy), **{**greedy, **QUICK})
    chat.get_backend()
    proxy.failures["/v1/completions"] = 1
    message = invoke_fails(chat, ModelServerError, within=5)
    assert "busy or restarting" in message
    assert "HTTP 503" in message
    assert "model is loading" in message  # the server's own words
    assert "max_retries= (CMR_MAX_RETRIES)" in message
    assert proxy.attempts["/v1/completions"] == 1


# --- structured output: the server's grammar ------------------------------------------------------

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def a_person(text: str) -> dict[str, Any]:
    """``text`` as JSON that ``PERSON`` accepts; ValueError where it is not."""
    try:
        person = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a person, not even JSON: {text!r}") from exc
    if not isinstance(person, dict) or set(person) != {"name", "age"}:
        raise ValueError(f"not a person: {text!r}")
    name, age = person["name"], person["age"]
    if not isinstance(name, str) or len(name) > 12 or type(age) is not int:
        raise ValueError(f"not a person: {text!r}")
    return person


@pytest.mark.parametrize("chat_endpoint", [False, True], ids=["completions", "chat"])
def test_json_schema_constrains_the_servers_decoding(
    llama_server: str, chat_endpoint: bool
) -> None:
    backend = OpenAIServerBackend.load(
        llama_server, n_ctx=SERVER_N_CTX, timeout=30, max_retries=0, chat_endpoint=chat_endpoint
    )
    question = "用 JSON 介绍一个人：名字和年龄。"
    messages = [{"role": "user", "content": question}] if chat_endpoint else None

    def answer(schema: str | None, max_new_tokens: int) -> tuple[str, Completion]:
        sampling = SamplingParams(temperature=0.0, repetition_penalty=1.0, json_schema=schema)
        request = TextRequest(
            prompt=f"<s>[INST] {question} [/INST]",
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            messages=messages,
        )
        completion = Completion(prompt_tokens=0)
        return "".join(backend.stream_request(request, completion)), completion

    try:
        free, _ = answer(None, MAX_TOKENS)
        # the weights are random: without the server's grammar there is no such JSON
        with pytest.raises(ValueError, match="not a person"):
            a_person(free)
        text, completion = answer(json.dumps(PERSON), 200)
    finally:
        backend.close()
    a_person(text)
    assert completion.finish_reason == "stop"  # the object closed, then the grammar ended it
    assert 0 < completion.completion_tokens < 200


# --- cached prompt tokens on the in-process llama.cpp path ----------------------------------------


def test_local_prefix_reuse_is_reported_as_cache_read(tiny_model: TinyModel) -> None:
    pytest.importorskip("llama_cpp")
    from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

    # its own backend: no earlier prompt in its context
    backend = LlamaCppBackend.load(tiny_model.gguf_path, n_ctx=2048, prefix_cache_bytes=0)
    chat = ChineseMixtralChat(client=backend, temperature=0.0, max_tokens=8)
    material = (
        "下面是一段关于混合专家模型的资料。" + "混合专家模型把每个词交给少数几个专家网络。" * 20
    )
    first_turn: list[BaseMessage] = [SystemMessage(material), HumanMessage("它为什么快？")]
    first = chat.invoke(first_turn)
    assert first.usage_metadata is not None
    assert "input_token_details" not in first.usage_metadata
    follow_up = [*first_turn, AIMessage(str(first.content)), HumanMessage("它有什么缺点？")]
    second = chat.invoke(follow_up)
    assert second.usage_metadata is not None
    cached = second.usage_metadata["input_token_details"]["cache_read"]
    assert cached == backend.last_prompt_reused
    # the whole first prompt (material and question) was not evaluated again
    assert len(chat.prompt_ids(first_turn)) - 2 <= cached < second.usage_metadata["input_tokens"]
    backend.close()


def test_local_prefix_reuse_in_plain_llm_usage(tiny_model: TinyModel) -> None:
    pytest.importorskip("llama_cpp")
    from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend.load(Path(tiny_model.gguf_path), n_ctx=2048, prefix_cache_bytes=0)
    llm = ChineseMixtral(client=backend, temperature=0.0, max_tokens=4)
    text = "混合专家模型把每个词交给少数几个专家网络。" * 10
    first = llm.generate([text]).generations[0][0].generation_info
    second = llm.generate([text + "因此"]).generations[0][0].generation_info
    assert first is not None
    assert second is not None
    assert "prompt_tokens_details" not in first["usage"]
    assert (
        second["usage"]["prompt_tokens_details"]["cached_tokens"]
        >= first["usage"]["prompt_tokens"] - 2
    )
    backend.close()
