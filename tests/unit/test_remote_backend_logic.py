"""``backend="openai"`` against what llama-cpp-python's server (the real one in the integration
tests) cannot show: vLLM's and llama-server's own endpoints, usage in streams, cached prompt
tokens, and a model with another tokenizer. Each fake answers as that server does, on
``httpx.MockTransport``, and records the requests it got."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat
from chinese_mixtral_rag.backends import remote
from chinese_mixtral_rag.backends.base import Completion, SamplingParams, TextRequest
from chinese_mixtral_rag.backends.remote import SCHEMA_FIELDS, OpenAIServerBackend, ServerOptions
from chinese_mixtral_rag.errors import (
    ContextLengthError,
    MissingDependencyError,
    ModelLoadError,
    ModelServerError,
    SchemaError,
)

BASE = "http://gpu-box:8000/v1"
MESSAGES = [SystemMessage("你是一个乐于助人的助手。"), HumanMessage("介绍一下混合专家模型")]
ANSWER = [" 混合", "专家", "模型", "把", "词", "交给", "专家", "。"]

Kind = Literal["vllm", "llama-server", "llama-cpp-python", "other"]


def mixtral_tokens(text: str, *, add_bos: bool) -> list[int]:
    """A stand-in tokenizer of the Mixtral family: ``<s>`` 1, ``</s>`` 2, one id per character."""
    ids = [1] if add_bos else []
    rest = text
    while rest:
        if rest.startswith("</s>"):
            ids.append(2)
            rest = rest[4:]
        elif rest.startswith("<s>"):
            ids.append(1)
            rest = rest[3:]
        else:
            ids.append(3 + ord(rest[0]) % 30000)
            rest = rest[1:]
    return ids


def sse(events: Sequence[dict[str, Any]]) -> bytes:
    lines = [f"data: {json.dumps(event, ensure_ascii=False)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


class FakeServer:
    """vLLM, llama.cpp's llama-server, llama-cpp-python's server or another OpenAI-compatible
    server (no tokenize endpoint), as far as this backend talks to them."""

    def __init__(
        self,
        kind: Kind,
        *,
        tokenize: Callable[[str, bool], list[int]] = lambda t, b: mixtral_tokens(t, add_bos=b),
        usage: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        last_token_with_reason: bool = False,
        answer: Sequence[str] = ANSWER,
        finish_reason: str = "length",
        version: str | None = None,
        refusal: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        self.kind = kind
        self.version = version
        self.refusal = refusal
        self.tokenize = tokenize
        self.usage = usage
        self.timings = timings
        self.last_token_with_reason = last_token_with_reason
        self.answer = list(answer)
        self.finish_reason = finish_reason
        self.requests: list[tuple[str, str, Any]] = []

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.requests.append((request.method, path, body))
        if path == "/v1/models":
            model: dict[str, Any] = {"id": "hfl/chinese-mixtral-instruct", "object": "model"}
            if self.kind == "vllm":
                model["max_model_len"] = 32768
            else:
                model["id"] = "chinese-mixtral-instruct-q4_k_m.gguf"
            return httpx.Response(200, json={"object": "list", "data": [model]})
        if path == "/props" and self.kind == "llama-server":
            settings = {"n_ctx": 8192, "temperature": 0.8}
            return httpx.Response(200, json={"default_generation_settings": settings})
        if path == "/version" and self.kind == "vllm" and self.version is not None:
            return httpx.Response(200, json={"version": self.version})
        if path == "/tokenize" and self.kind in ("vllm", "llama-server"):
            return self._tokenize(body)
        if path == "/extras/tokenize" and self.kind == "llama-cpp-python":
            return httpx.Response(200, json={"tokens": mixtral_tokens(body["input"], add_bos=True)})
        if path in ("/v1/completions", "/v1/chat/completions"):
            if self.refusal is not None:
                return httpx.Response(self.refusal[0], json=self.refusal[1])
            events = self._events(body)
            if path == "/v1/chat/completions":  # the same pieces as chat deltas
                for event in events:
                    for choice in event["choices"]:
                        choice["delta"] = {"content": choice.pop("text")}
            return httpx.Response(
                200, content=sse(events), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    def _tokenize(self, body: dict[str, Any]) -> httpx.Response:
        if self.kind == "vllm":
            if "prompt" not in body:  # FastAPI's validation of vLLM's TokenizeRequest
                return httpx.Response(
                    400, json={"object": "error", "message": "prompt: Field required"}
                )
            tokens = self.tokenize(body["prompt"], body.get("add_special_tokens", True))
            return httpx.Response(200, json={"count": len(tokens), "tokens": tokens})
        if "content" not in body:
            return httpx.Response(400, json={"error": {"message": "content is required"}})
        return httpx.Response(
            200, json={"tokens": self.tokenize(body["content"], body.get("add_special", False))}
        )

    def _events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        pieces = self.answer[: body.get("max_tokens")]
        events: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "text": piece, "finish_reason": None}]} for piece in pieces
        ]
        if self.last_token_with_reason:
            events[-1]["choices"][0]["finish_reason"] = self.finish_reason
        else:
            events.append(
                {"choices": [{"index": 0, "text": "", "finish_reason": self.finish_reason}]}
            )
        if self.timings is not None:
            events[-1]["timings"] = self.timings
        if self.usage is not None and body.get("stream_options", {}).get("include_usage"):
            events.append({"choices": [], "usage": self.usage})
        return events


def backend_for(server: FakeServer, **options: Any) -> OpenAIServerBackend:
    return OpenAIServerBackend(
        ServerOptions(base_url=BASE, transport=httpx.MockTransport(server), **options)
    )


def chat_over(backend: OpenAIServerBackend, **options: Any) -> ChineseMixtralChat:
    return ChineseMixtralChat(client=backend, temperature=0.0, max_tokens=8, **options)


# --- what the server is -------------------------------------------------------------------------


def test_vllm_window_from_models_and_its_tokenize() -> None:
    server = FakeServer("vllm")
    backend = backend_for(server)
    assert backend.model_name == "hfl/chinese-mixtral-instruct"
    assert backend.context_length == 32768  # max_model_len in /v1/models
    assert backend.tokenizer == "vllm"
    assert "/props" not in server.paths()  # not asked: vLLM said it already
    chat = chat_over(backend)
    assert chat.get_num_tokens("混合专家") == 4
    assert chat.prompt_ids(MESSAGES) == mixtral_tokens(chat.render(MESSAGES), add_bos=False)
    bodies = server.bodies("/tokenize")
    assert {"model": "hfl/chinese-mixtral-instruct", "prompt": "混合专家"}.items() <= bodies[
        -2
    ].items()
    assert bodies[-2]["add_special_tokens"] is False
    # the rendered "<s>" is the BOS the server adds: the rest goes with add_special_tokens
    assert bodies[-1]["add_special_tokens"] is True
    assert not bodies[-1]["prompt"].startswith("<s>")


def test_llama_server_window_from_props_and_its_tokenize() -> None:
    server = FakeServer("llama-server")
    backend = backend_for(server, n_ctx=4096)
    assert backend.context_length == 8192  # /props wins over the n_ctx fallback
    assert backend.tokenizer == "llama.cpp"
    assert backend.model_name == "chinese-mixtral-instruct-q4_k_m.gguf"
    assert chat_over(backend).get_num_tokens("混合专家模型") == 6
    assert server.bodies("/tokenize")[-1] == {"content": "混合专家模型", "add_special": False}


@pytest.mark.parametrize(
    "tokens",
    [
        [128000, 524, 82, 29],  # Llama 3: "</s>" is text
        [522, 82, 29],  # Qwen: no BOS, "</s>" is text
        [1, 1],  # no distinct EOS
    ],
)
def test_another_tokenizer_family_is_refused(tokens: list[int]) -> None:
    server = FakeServer("vllm", tokenize=lambda text, bos: tokens)
    with pytest.raises(ModelLoadError) as caught:
        backend_for(server)
    message = str(caught.value)
    assert "tokenizer is not Mixtral's" in message
    assert str(tokens) in message
    assert "Serve a Chinese-Mixtral model" in message
    assert "chat_endpoint=True" in message


# --- usage and cached prompt tokens -------------------------------------------------------------


def test_stream_usage_chunk_and_cached_tokens_vllm() -> None:
    usage = {
        "prompt_tokens": 123,
        "completion_tokens": 8,
        "total_tokens": 131,
        "prompt_tokens_details": {"cached_tokens": 96},
    }
    server = FakeServer("vllm", usage=usage, last_token_with_reason=True)
    chat = chat_over(backend_for(server))
    tokenized = len(server.bodies("/tokenize"))
    reply = chat.invoke(MESSAGES)
    assert reply.content == "".join(ANSWER).lstrip()  # the answer's SentencePiece space dropped
    assert reply.usage_metadata == {
        "input_tokens": 123,  # the server's count, not a tokenize call of ours
        "output_tokens": 8,
        "total_tokens": 131,
        "input_token_details": {"cache_read": 96},
    }
    assert reply.response_metadata["finish_reason"] == "length"
    assert len(server.bodies("/tokenize")) == tokenized  # usage came with the stream
    (body,) = server.bodies("/v1/completions")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["prompt"] == chat.render(MESSAGES).removeprefix("<s>")  # the server adds BOS
    assert body["max_tokens"] == 8
    assert body["temperature"] == 0.0
    assert body["repetition_penalty"] == body["repeat_penalty"]


def test_plain_llm_reports_cached_tokens() -> None:
    usage = {
        "prompt_tokens": 40,
        "completion_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 32},
    }
    llm = ChineseMixtral(client=backend_for(FakeServer("vllm", usage=usage)), max_tokens=8)
    info = llm.generate(["中国的首都是"]).generations[0][0].generation_info
    assert info is not None
    assert info["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 8,
        "total_tokens": 48,
        "prompt_tokens_details": {"cached_tokens": 32},
    }


@pytest.mark.parametrize("last_token_with_reason", [False, True])
def test_llama_server_timings_cache_n_and_counted_usage(last_token_with_reason: bool) -> None:
    server = FakeServer(
        "llama-server",
        timings={"cache_n": 17, "prompt_n": 3, "predicted_n": 8},
        last_token_with_reason=last_token_with_reason,
    )
    chat = chat_over(server_backend := backend_for(server))
    reply = chat.invoke(MESSAGES)
    assert reply.usage_metadata is not None
    # no usage in the stream: the prompt counted by the server's tokenizer, the answer by events
    assert reply.usage_metadata["input_tokens"] == len(chat.prompt_ids(MESSAGES))
    assert reply.usage_metadata["output_tokens"] == len(ANSWER)
    assert reply.usage_metadata["input_token_details"] == {"cache_read": 17}
    assert server_backend.tokenizer == "llama.cpp"
    assert server.bodies("/v1/completions")[0]["cache_prompt"] is True


async def test_async_stream_over_the_same_transport() -> None:
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    server = FakeServer("vllm", usage=usage)
    chat = chat_over(backend_for(server))
    chunks = [chunk async for chunk in chat.astream(MESSAGES)]
    assert "".join(str(c.content) for c in chunks) == "".join(ANSWER).lstrip()
    reply = await chat.ainvoke(MESSAGES)
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_token_details"] == {"cache_read": 4}
    assert len(server.bodies("/v1/completions")) == 2


# --- what a stream can do wrong -----------------------------------------------------------------


def request(prompt: str = "<s>[INST] 你好 [/INST]") -> TextRequest:
    return TextRequest(prompt=prompt, max_new_tokens=8, sampling=SamplingParams(temperature=0.0))


def test_error_event_mid_answer() -> None:
    server = FakeServer("vllm")

    def failing(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/completions":
            events: list[dict[str, Any]] = [
                {"choices": [{"text": "混合", "finish_reason": None}]},
                {"error": {"message": "CUDA out of memory"}},
            ]
            return httpx.Response(200, content=sse(events))
        return server(req)

    backend = OpenAIServerBackend(
        ServerOptions(base_url=BASE, transport=httpx.MockTransport(failing))
    )
    with pytest.raises(ModelServerError, match="failed mid-answer: CUDA out of memory"):
        list(backend.stream_request(request(), Completion(prompt_tokens=0)))


def test_stream_without_finish_reason_is_an_error() -> None:
    server = FakeServer("vllm")

    def cut(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/completions":
            body = b'data: {"choices": [{"text": "\\u6df7", "finish_reason": null}]}\n\n'
            return httpx.Response(200, content=body)  # no finish reason, no [DONE]
        return server(req)

    backend = OpenAIServerBackend(ServerOptions(base_url=BASE, transport=httpx.MockTransport(cut)))
    with pytest.raises(ModelServerError, match="without a finish reason"):
        list(backend.stream_request(request(), Completion(prompt_tokens=0)))


def test_stream_ended_early_by_the_server() -> None:
    server = FakeServer("vllm")

    def interrupted(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/completions":  # llama-cpp-python's interrupt_requests
            body = b'data: {"choices": [{"text": "\\u6df7", "finish_reason": null}]}\n\n'
            return httpx.Response(200, content=body + b"data: [DONE]\n\n")
        return server(req)

    backend = OpenAIServerBackend(
        ServerOptions(base_url=BASE, transport=httpx.MockTransport(interrupted))
    )
    with pytest.raises(ModelServerError, match="--interrupt_requests false"):
        list(backend.stream_request(request(), Completion(prompt_tokens=0)))


# --- structured output: the JSON Schema in each server's dialect --------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
STANDARD = {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}


def constrained(*, chat: bool = False, schema: str | None = json.dumps(SCHEMA)) -> TextRequest:
    messages = [{"role": "user", "content": "你好"}] if chat else None
    return TextRequest(
        prompt="<s>[INST] 你好 [/INST]",
        max_new_tokens=8,
        sampling=SamplingParams(temperature=0.0, json_schema=schema),
        messages=messages,
    )


def llama_cpp_python_gbnf() -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(json.dumps(SCHEMA)))


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize(
    ("kind", "version", "expected"),
    [
        ("llama-server", None, None),  # json_schema on completions, response_format on chat
        ("vllm", "0.13.1", {"structured_outputs": {"json": SCHEMA}}),
        ("vllm", "0.12.0", {"structured_outputs": {"json": SCHEMA}}),
        ("vllm", "0.11.2", {"guided_json": SCHEMA}),
        ("vllm", "0.10.1.1", {"guided_json": SCHEMA}),
        ("vllm", None, {"guided_json": SCHEMA, "response_format": STANDARD}),  # no /version
        ("llama-cpp-python", None, "gbnf"),
        ("other", None, {"response_format": STANDARD}),
    ],
)
def test_json_schema_in_the_servers_dialect(
    kind: Kind, version: str | None, expected: Any, chat: bool
) -> None:
    if expected == "gbnf":
        pytest.importorskip("llama_cpp", reason="the GBNF converter is llama-cpp-python's")
        expected = {"grammar": llama_cpp_python_gbnf()}
    elif expected is None:
        expected = {"response_format": STANDARD} if chat else {"json_schema": SCHEMA}
    server = FakeServer(kind, version=version)
    backend = backend_for(server, chat_endpoint=chat, n_ctx=4096)
    completion = Completion(prompt_tokens=0)
    text = "".join(backend.stream_request(constrained(chat=chat), completion))
    assert text == "".join(ANSWER)  # streaming, stops and finish reason as without a schema
    assert completion.finish_reason == "length"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    (body,) = server.bodies(path)
    assert {k: body[k] for k in body if k in SCHEMA_FIELDS} == expected
    # without a schema, none of these fields goes out
    list(backend.stream_request(constrained(chat=chat, schema=None), Completion(prompt_tokens=0)))
    assert not SCHEMA_FIELDS & server.bodies(path)[-1].keys()


def test_vllm_version_is_read_once_at_load() -> None:
    server = FakeServer("vllm", version="0.11.0")
    backend = backend_for(server)
    assert backend.vllm_version == (0, 11)
    for _ in range(2):
        list(backend.stream_request(constrained(), Completion(prompt_tokens=0)))
    assert server.paths().count("/version") == 1
    assert backend_for(FakeServer("llama-server")).vllm_version is None


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        (  # llama-server's params_from_json_cmpl on a schema its converter refuses
            "llama-server",
            400,
            {
                "error": {
                    "code": 400,
                    "message": '"json_schema": Unrecognized schema: {"type":"foo"}',
                    "type": "invalid_request_error",
                }
            },
        ),
        (  # vLLM's validation of a schema xgrammar does not support
            "vllm",
            400,
            {
                "object": "error",
                "message": "The provided JSON schema contains features not supported by xgrammar.",
                "type": "BadRequestError",
                "code": 400,
            },
        ),
        (  # llama-cpp-python wraps every exception in HTTP 500
            "llama-cpp-python",
            500,
            {"error": {"message": "failed to parse grammar", "type": "internal_server_error"}},
        ),
    ],
)
async def test_a_refused_schema_says_so(kind: Kind, status: int, error: dict[str, Any]) -> None:
    if kind == "llama-cpp-python":
        pytest.importorskip("llama_cpp", reason="the GBNF converter is llama-cpp-python's")
    server = FakeServer(kind, version="0.12.0", refusal=(status, error))
    backend = backend_for(server, n_ctx=4096)
    with pytest.raises(ModelServerError) as caught:
        list(backend.stream_request(constrained(), Completion(prompt_tokens=0)))
    message = str(caught.value)
    assert "refused the JSON Schema" in message
    assert f"HTTP {status}" in message
    assert (error["error"]["message"] if "error" in error else error["message"]) in message
    assert "Simplify the schema" in message
    with pytest.raises(ModelServerError, match="refused the JSON Schema"):
        async for _ in backend.astream_request(constrained(), Completion(prompt_tokens=0)):
            pass


def test_other_errors_with_a_schema_keep_their_own_message() -> None:
    too_long = {"object": "error", "message": "This model's maximum context length is 32768"}
    server = FakeServer("vllm", version="0.12.0", refusal=(400, too_long))
    with pytest.raises(ContextLengthError):
        list(backend_for(server).stream_request(constrained(), Completion(prompt_tokens=0)))
    # a schema word in an error to a request without a schema is no schema refusal
    grammar = {"error": {"message": "grammar sampler crashed"}}
    server = FakeServer("vllm", version="0.12.0", refusal=(500, grammar))
    with pytest.raises(ModelServerError) as caught:
        list(
            backend_for(server).stream_request(
                constrained(schema=None), Completion(prompt_tokens=0)
            )
        )
    assert "refused the JSON Schema" not in str(caught.value)
    assert "failed the completion (HTTP 500: grammar sampler crashed)" in str(caught.value)


@pytest.mark.parametrize("schema", ["{not json", "[1, 2]"])
def test_a_schema_that_is_not_one(schema: str) -> None:
    backend = backend_for(FakeServer("llama-server"))
    with pytest.raises(SchemaError, match="JSON Schema is not"):
        list(backend.stream_request(constrained(schema=schema), Completion(prompt_tokens=0)))


def test_llama_cpp_python_without_the_llama_cpp_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_for(FakeServer("llama-cpp-python"), n_ctx=4096)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_grammar", None)  # import fails
    remote._gbnf.cache_clear()
    request = constrained(schema=json.dumps({**SCHEMA, "title": "uncached"}))
    with pytest.raises(MissingDependencyError) as caught:
        list(backend.stream_request(request, Completion(prompt_tokens=0)))
    assert "llama-cpp-python" in str(caught.value)
    assert "pip install 'chinese-mixtral-rag[llama-cpp]'" in str(caught.value)


def test_a_schema_llama_cpp_python_cannot_convert() -> None:
    pytest.importorskip("llama_cpp", reason="the GBNF converter is llama-cpp-python's")
    backend = backend_for(FakeServer("llama-cpp-python"), n_ctx=4096)
    unconvertible = json.dumps({"$ref": "https://example.com/schema.json"})
    with pytest.raises(SchemaError, match="cannot be turned into a grammar"):
        list(backend.stream_request(constrained(schema=unconvertible), Completion(prompt_tokens=0)))
