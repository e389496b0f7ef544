"""Any OpenAI-compatible server (vLLM, llama.cpp's ``llama-server``, ``llama_cpp.server``).

A 46.7B model mostly runs on a GPU server, so this backend reaches it over HTTP. The
Mixtral-Instruct prompt is still rendered here and sent to ``/v1/completions`` as text, so the
server's own chat template cannot change it (``chat_endpoint=True`` sends the conversation to
``/v1/chat/completions`` instead). What the server knows is read from it, never guessed: the
model from ``/v1/models``, the context window from ``/props`` (llama.cpp) or ``max_model_len``
(vLLM), tokens from its tokenizer (``/tokenize``, ``/extras/tokenize``) or a local tokenizer file.

httpx, not the ``openai`` package: the servers' extensions this backend needs (``/tokenize``,
``/props``, ``cache_prompt``, ``timings``, ``top_k``) are outside the official client's types, and
httpx is already what LangChain depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.backends.base import Completion, GenerationLock, TextRequest
from chinese_mixtral_rag.backends.generation import StopMatcher
from chinese_mixtral_rag.errors import (
    ContextLengthError,
    MissingDependencyError,
    ModelLoadError,
    ModelServerError,
    SchemaError,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

#: The payload that ends an OpenAI stream.
DONE = "[DONE]"
#: Statuses worth another try: the server is busy, restarting or behind a flaky proxy.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
#: Entries kept by the tokenizer cache (the packer counts the same texts many times).
TOKENIZE_CACHE_SIZE = 4096
#: Seconds an idle pooled connection is reused. Below the 5 s after which uvicorn (vLLM,
#: llama-cpp-python) and llama-server close idle connections: with httpx's default of 5 s too, a
#: request could go out on the connection the server was closing that instant ("connection reset").
KEEPALIVE_EXPIRY = 2.0

Tokenizer = Literal["llama.cpp", "vllm", "llama-cpp-python", "local", "none"]
#: The request fields that carry a JSON Schema (or its grammar), in any server's dialect.
SCHEMA_FIELDS = frozenset(
    {"json_schema", "grammar", "response_format", "structured_outputs", "guided_json"}
)
#: Words a server's refusal of a schema or grammar uses (llama-server: '"json_schema": ...';
#: vLLM/xgrammar: "... JSON schema ... not supported"; llama.cpp: "failed to parse grammar").
SCHEMA_WORDS = ("schema", "grammar", "structured", "guided", "gbnf", "response_format")
#: The first vLLM release without ``guided_json`` (docs/features/structured_outputs.md: "the
#: following deprecated API fields which were removed in v0.12.0").
VLLM_STRUCTURED_OUTPUTS = (0, 12)


@dataclass(frozen=True)
class ServerOptions:
    """How to reach the server and how patient to be."""

    base_url: str
    api_key: str | None = None
    model: str | None = None
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    chat_endpoint: bool = False
    n_ctx: int | None = None
    tokenizer_path: str | None = None
    transport: httpx.BaseTransport | None = None
    """An httpx transport for the sync client (tests: ``httpx.MockTransport``); None: the
    network. It serves the async client too when it is also an async transport."""
    async_transport: httpx.AsyncBaseTransport | None = None
    """An httpx transport for the async client; None: ``transport`` where it can, else the
    network."""


def _root(base_url: str) -> str:
    """The server root (``/tokenize`` and ``/props`` live beside ``/v1``)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI's ``error.message`` or FastAPI's)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])[:300]
        if body.get("message"):
            return str(body["message"])
    return str(body)[:300]


class OpenAIServerBackend:
    """A model served by an OpenAI-compatible server, streamed text with usage and stops."""

    chat_template: str | None = None
    #: The served model's BOS and EOS as a chat template writes them: Mixtral's, the only
    #: tokenizer this backend accepts (checked on connecting when the server can tokenize).
    bos_token = "<s>"
    eos_token = "</s>"

    def __init__(self, options: ServerOptions) -> None:
        import httpx

        self.options = options
        self.base_url = options.base_url.rstrip("/")
        self.root = _root(self.base_url)
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._timeout = httpx.Timeout(options.timeout, connect=options.connect_timeout)
        self._headers = headers
        self._limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)
        self._client = httpx.Client(
            headers=headers, timeout=self._timeout, limits=self._limits, transport=options.transport
        )
        self._async_transport = options.async_transport
        if self._async_transport is None and isinstance(
            options.transport, httpx.AsyncBaseTransport
        ):
            self._async_transport = options.transport
        self._async: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, asyncio.Lock] | None = None
        self._sync_turn = GenerationLock()
        self._tokens: dict[tuple[str, bool, bool], list[int]] = {}
        self.model_name, listed = self._pick_model()
        self._context_length = self._read_context_length(listed)
        self.tokenizer: Tokenizer = "none"
        self._local_vocab: Any = None
        self.bos_token_id = 1
        self.eos_token_id = 2
        self.vllm_version: tuple[int, int] | None = None
        """vLLM's (major, minor) from its ``/version``; None: not vLLM, or it did not say."""
        self._find_tokenizer()

    @classmethod
    def load(cls, base_url: str, **options: Any) -> OpenAIServerBackend:
        """Connect, read the model, window and tokenizer, and check it is a Mixtral."""
        return cls(ServerOptions(base_url=base_url, **options))

    def close(self) -> None:
        self._client.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _describe(self, exc: Exception, url: str, *, mid_answer: bool = False) -> ModelServerError:
        import httpx

        if mid_answer and not isinstance(exc, httpx.TimeoutException):
            return ModelServerError(
                f"The model server at {self.base_url} broke off the answer "
                f"({type(exc).__name__}: {exc}): it may have crashed or restarted; see its log."
            )
        if isinstance(exc, httpx.TimeoutException):
            what = "connect" if isinstance(exc, httpx.ConnectTimeout) else "answer"
            limit = self.options.connect_timeout if what == "connect" else self.options.timeout
            return ModelServerError(
                f"The model server at {self.base_url} did not {what} within {limit:g} s "
                f"({url}). Check that it is up and not overloaded, or raise "
                f"{'connect_timeout' if what == 'connect' else 'request_timeout'}= "
                "(CMR_REQUEST_TIMEOUT)."
            )
        return ModelServerError(
            f"Cannot reach the model server at {self.base_url} ({type(exc).__name__}: {exc}). "
            "Start it (vLLM: `vllm serve MODEL`; llama.cpp: `llama-server -m MODEL.gguf`) or "
            "fix openai_base_url= (CMR_OPENAI_BASE_URL); it is the URL that ends in /v1."
        )

    def _refusal(self, response: httpx.Response, what: str, *, schema: bool = False) -> Exception:
        """A clear error for an HTTP error status; ``schema``: the request asked for output
        constrained by a JSON Schema."""
        status = response.status_code
        message = _server_message(response)
        lowered = message.lower()
        if schema and status in (400, 422, 500) and any(w in lowered for w in SCHEMA_WORDS):
            return ModelServerError(
                f"The model server at {self.base_url} refused the JSON Schema the structured "
                f"output asked for (HTTP {status}: {message}). Simplify the schema to what the "
                "server's grammar engine supports (type, properties, required, enum, "
                "maxLength, items; no $ref to other files), or use a server that supports it."
            )
        if status in (401, 403):
            return ModelServerError(
                f"The model server at {self.base_url} refused the API key (HTTP {status}: "
                f"{message}). Set openai_api_key= (CMR_OPENAI_API_KEY) to the key the server was "
                "started with."
            )
        if status == 400 and ("context" in lowered or "too long" in lowered):
            return ContextLengthError(
                f"The prompt does not fit the model server's context window ({message}). "
                "Shorten the conversation or the documents, or lower max_tokens."
            )
        if status == 404:
            hint = "" if self.base_url.endswith("/v1") else f" (try {self.base_url}/v1)"
            return ModelServerError(
                f"The server at {self.base_url} answered HTTP 404 (not found) to {what}: it is "
                "not an OpenAI-compatible model server, or openai_base_url= "
                f"(CMR_OPENAI_BASE_URL) does not end in /v1{hint}."
            )
        if status in RETRY_STATUSES:
            tries = self.options.max_retries + 1
            return ModelServerError(
                f"The model server at {self.base_url} is busy or restarting: it answered "
                f"{what} with HTTP {status} ({message}) {tries} time{'s' if tries > 1 else ''}. "
                "Try again later, or raise max_retries= (CMR_MAX_RETRIES) to wait longer."
            )
        return ModelServerError(
            f"The model server at {self.base_url} failed {what} (HTTP {status}: {message})."
        )

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        if after and after.replace(".", "", 1).isdigit():
            return min(float(after), 30.0)
        return float(min(0.5 * 2**attempt, 8.0))

    def _request(
        self, method: str, url: str, *, json_body: Any = None, what: str = ""
    ) -> httpx.Response:
        """One request with retries on refused connections and busy statuses."""
        import httpx

        for attempt in range(self.options.max_retries + 1):
            last = attempt == self.options.max_retries
            try:
                response = self._client.request(method, url, json=json_body)
            except _retried_errors() as exc:  # all requests here are idempotent
                if last:
                    raise self._describe(exc, url) from exc
                time.sleep(self._backoff(attempt, None))
                continue
            except httpx.HTTPError as exc:
                raise self._describe(exc, url) from exc
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self._backoff(attempt, response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, url: str, *, json_body: Any = None, what: str) -> Any:
        response = self._request(method, url, json_body=json_body, what=what)
        if response.status_code >= 400:
            raise self._refusal(response, what)
        try:
            return response.json()
        except ValueError as exc:
            raise ModelServerError(
                f"The server at {self.base_url} answered {what} with something that is not "
                "JSON: it is not an OpenAI-compatible model server (check openai_base_url=, "
                "CMR_OPENAI_BASE_URL)."
            ) from exc

    # -- what the server serves ---------------------------------------------------------------

    def _pick_model(self) -> tuple[str, dict[str, Any]]:
        body = self._json("GET", f"{self.base_url}/models", what="the model list (/v1/models)")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            raise ModelServerError(
                f"The server at {self.base_url} answered /v1/models without a model list: it "
                "is not an OpenAI-compatible model server (check openai_base_url=, "
                "CMR_OPENAI_BASE_URL)."
            )
        by_id = {str(m.get("id")): m for m in data}
        wanted = self.options.model
        if wanted:
            if wanted not in by_id:
                raise ModelLoadError(
                    f"The model server at {self.base_url} does not serve {wanted!r}; it serves "
                    f"{', '.join(sorted(by_id)) or 'nothing'}. Set model= to one of them."
                )
            return wanted, by_id[wanted]
        if len(by_id) != 1:
            raise ModelLoadError(
                f"The model server at {self.base_url} serves {len(by_id)} models "
                f"({', '.join(sorted(by_id)) or 'none'}): set model= (CMR_MODEL) to the one to use."
            )
        name = next(iter(by_id))
        return name, by_id[name]

    def _read_context_length(self, listed: Mapping[str, Any]) -> int | None:
        """vLLM lists ``max_model_len``; llama.cpp's server says ``n_ctx`` in ``/props``."""
        if isinstance(listed.get("max_model_len"), int):
            return int(listed["max_model_len"])
        try:
            response = self._client.get(f"{self.root}/props")
        except Exception:  # no /props: not llama-server; n_ctx (or nothing) decides
            response = None
        if response is not None and response.status_code == 200:
            try:
                props = response.json()
            except ValueError:
                props = {}
            settings = props.get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx") or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        return self.options.n_ctx

    @property
    def one_at_a_time(self) -> bool:
        """Whether generations go to the server one at a time (concurrent calls wait their turn):
        llama-cpp-python's server answers one request at a time anyway, and by default
        (``interrupt_requests``) cuts a running answer short when another request comes in."""
        return self.tokenizer == "llama-cpp-python"

    @property
    def context_length(self) -> int:
        if self._context_length is None:
            raise ModelLoadError(
                f"The model server at {self.base_url} does not report its context window "
                "(llama-cpp-python's server does not): set n_ctx= (CMR_N_CTX) to the context "
                "size the server was started with."
            )
        return self._context_length

    def _find_tokenizer(self) -> None:
        """The server's tokenizer where it has one, else a local file; then check the family."""
        kinds: tuple[Tokenizer, ...] = ("llama.cpp", "vllm", "llama-cpp-python")
        for kind in kinds:
            try:
                ids = self._server_tokens(kind, "</s>", add_special=True)
            except (ModelServerError, ValueError, KeyError, TypeError):
                continue
            self.tokenizer = kind
            if kind == "vllm":
                self.vllm_version = self._read_vllm_version()
            break
        else:
            if self.options.tokenizer_path:
                from chinese_mixtral_rag.backends.model_files import gguf_vocab

                self._local_vocab = gguf_vocab(self.options.tokenizer_path)
                self.tokenizer = "local"
                ids = self._local_tokens("</s>", add_bos=True)
            else:
                logger.info(
                    "%s has no tokenize endpoint and no local tokenizer was given: token "
                    "counts are unavailable",
                    self.base_url,
                )
                return
        if len(ids) != 2 or ids[0] == ids[1]:
            raise ModelLoadError(
                f"The model server at {self.base_url} serves {self.model_name!r}, whose "
                "tokenizer is not Mixtral's (a prompt should start with one BOS and '</s>' be one "
                f"token; got {ids}). Serve a Chinese-Mixtral model, or set chat_endpoint=True to "
                "let the server apply its own chat template."
            )
        self.bos_token_id, self.eos_token_id = int(ids[0]), int(ids[1])

    def _read_vllm_version(self) -> tuple[int, int] | None:
        """vLLM's ``GET /version`` (``{"version": "0.11.0"}``): which structured-output field
        it reads."""
        try:
            response = self._client.get(f"{self.root}/version")
            version = str(response.json().get("version", "")) if response.is_success else ""
        except Exception:  # an old or proxied vLLM without it: both fields are sent
            return None
        found = re.match(r"(\d+)\.(\d+)", version)
        return (int(found[1]), int(found[2])) if found else None

    def _server_tokens(self, kind: Tokenizer, text: str, *, add_special: bool) -> list[int]:
        if kind == "llama.cpp":
            url = f"{self.root}/tokenize"
            body: dict[str, Any] = {"content": text, "add_special": add_special}
        elif kind == "vllm":
            url = f"{self.root}/tokenize"
            body = {"model": self.model_name, "prompt": text, "add_special_tokens": add_special}
        else:  # llama-cpp-python always adds BOS and parses special tokens
            url = f"{self.root}/extras/tokenize"
            body = {"input": text, "model": self.model_name}
        response = self._request("POST", url, json_body=body, what="tokenize")
        if response.status_code >= 400:
            raise self._refusal(response, "tokenize")
        tokens = response.json()["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TypeError("not a token list")
        if kind == "llama-cpp-python" and not add_special and tokens[:1] == [self.bos_token_id]:
            tokens = tokens[1:]
        return tokens

    def _local_tokens(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self._local_vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """Token ids by the served model's own tokenizer (special tokens in text are parsed:
        servers offer no literal mode)."""
        key = (text, add_bos, special)
        cached = self._tokens.get(key)
        if cached is not None:
            return list(cached)
        if self.tokenizer == "none":
            raise ModelLoadError(
                f"The model server at {self.base_url} cannot count tokens (no /tokenize): set "
                "model_path= (CMR_MODEL_PATH) to a local GGUF of the same model for its tokenizer."
            )
        # "<s>" written at the start is the BOS the server adds: tokenize the rest with it
        body = text.removeprefix("<s>") if special else text
        explicit_bos = body != text
        if self.tokenizer == "local":
            ids = self._local_tokens(body, add_bos=add_bos or explicit_bos)
        else:
            ids = self._server_tokens(self.tokenizer, body, add_special=add_bos or explicit_bos)
        if len(self._tokens) >= TOKENIZE_CACHE_SIZE:
            self._tokens.clear()
        self._tokens[key] = ids
        return list(ids)

    # -- generation ---------------------------------------------------------------------------

    def _body(self, request: TextRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model_name,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "repetition_penalty": sampling.repetition_penalty,  # vLLM
            "repeat_penalty": sampling.repetition_penalty,  # llama.cpp
            "stream": stream,
            "cache_prompt": True,  # llama.cpp: keep the KV cache for the next prompt's prefix
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.max_new_tokens is not None:
            body["max_tokens"] = request.max_new_tokens
        elif self._context_length is not None:
            prompt_tokens = len(self.tokenize(request.prompt, add_bos=True, special=True))
            body["max_tokens"] = max(self._context_length - prompt_tokens, 1)
        else:
            raise ContextLengthError(
                "max_tokens=None fills the rest of the window, but the model server does not "
                "report its window: set max_tokens, or n_ctx= (CMR_N_CTX)."
            )
        if request.stop:
            body["stop"] = list(request.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in sampling.logit_bias.items()}
        chat = request.messages is not None and self.options.chat_endpoint
        if sampling.json_schema is not None:
            body.update(self._schema_fields(sampling.json_schema, chat=chat))
        if request.messages is not None and chat:
            body["messages"] = [dict(m) for m in request.messages]
            return f"{self.base_url}/chat/completions", body
        body["prompt"] = request.prompt.removeprefix("<s>")  # the server adds the BOS
        return f"{self.base_url}/completions", body

    def _schema_fields(self, json_schema: str, *, chat: bool) -> dict[str, Any]:
        """The request fields by which this server constrains its output to ``json_schema``,
        in its own dialect (an unknown field is ignored by every one of them, so what one server
        does not read must not be relied on; the LangChain layer validates the answer)."""
        schema = _parse_schema(json_schema)
        standard = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        if self.tokenizer == "llama.cpp":
            # llama-server (tools/server/README.md): /completion and /v1/completions read a
            # top-level `json_schema` (converted to a grammar; "json_schema" and "grammar" are
            # exclusive); /v1/chat/completions reads `response_format`.
            return {"response_format": standard} if chat else {"json_schema": schema}
        if self.tokenizer == "llama-cpp-python":
            # llama_cpp/server/types.py: CreateCompletionRequest has no response_format, only
            # `grammar` (GBNF, handed to LlamaGrammar.from_string); the chat request takes it too
            # (its response_format is "text" | "json_object" only, honoured by some chat
            # handlers). So both endpoints get the GBNF, converted here as the server would.
            return {"grammar": _gbnf(json_schema)}
        if self.tokenizer == "vllm":
            # vLLM (docs/features/structured_outputs.md): `guided_json` until 0.11 (deprecated
            # in 0.10.2 for `structured_outputs: {"json": ...}`, removed in 0.12.0, after which
            # it is an unknown field: ignored with a log line, the output unconstrained).
            # `response_format` json_schema does not work across releases either: the 0.8/0.9
            # CompletionRequest accepted it but honoured only "json_object". So the version
            # (/version) picks the field each release surely reads: `structured_outputs` from
            # 0.12, `guided_json` before. Unread: `guided_json` for an old one and
            # `response_format` (which 0.12+ maps to structured_outputs) for a new one.
            if self.vllm_version is None:
                return {"guided_json": schema, "response_format": standard}
            if self.vllm_version >= VLLM_STRUCTURED_OUTPUTS:
                return {"structured_outputs": {"json": schema}}
            return {"guided_json": schema}
        # an unknown server: OpenAI's own field, the one such a server most likely reads
        return {"response_format": standard}

    def _read_event(self, data: str, completion: Completion) -> tuple[str, int]:
        """Text of one streamed event and whether it carried a token (servers stream one token
        per event); usage and finish reason noted in ``completion``."""
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise ModelServerError(
                f"The model server at {self.base_url} streamed something that is not JSON "
                f"({data[:120]!r}): it is not an OpenAI-compatible server."
            ) from exc
        if isinstance(event.get("error"), dict | str):
            message = event["error"].get("message") if isinstance(event["error"], dict) else None
            raise ModelServerError(
                f"The model server at {self.base_url} failed mid-answer: "
                f"{message or event['error']}"
            )
        usage = event.get("usage")
        if isinstance(usage, dict):
            completion.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens"):
                completion.cached_tokens = int(details["cached_tokens"])
        timings = event.get("timings")  # llama.cpp: tokens taken from its prompt cache
        if isinstance(timings, dict) and timings.get("cache_n"):
            completion.cached_tokens = int(timings["cache_n"])
        text = ""
        tokens = 0
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            piece = choice.get("text") if "text" in choice else delta.get("content")
            text += piece or ""
            reason = choice.get("finish_reason")
            if reason:
                completion.finish_reason = "length" if reason == "length" else "stop"
            if piece or not reason:  # the last token may come with the finish reason
                tokens += 1
        return text, tokens

    def _lines(self, url: str, body: dict[str, Any]) -> Generator[str, None, None]:
        """The ``data:`` payloads of a streamed response (``[DONE]`` included), retried until
        the first one."""
        import httpx

        for attempt in range(self.options.max_retries + 1):
            last = attempt == self.options.max_retries
            started = False  # once text has come, a retry would repeat it
            try:
                with self._client.stream("POST", url, json=body) as response:
                    if response.status_code in RETRY_STATUSES and not last:
                        response.read()
                        time.sleep(self._backoff(attempt, response))
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise self._refusal(response, "the completion", schema=_constrained(body))
                    # SSE framing of OpenAI streams is one JSON per `data:` line: no library
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            payload = line[5:].strip()
                            started = True
                            yield payload
                            if payload == DONE:
                                return
                    return
            except _retried_errors() as exc:
                if last or started:
                    raise self._describe(exc, url, mid_answer=started) from exc
                time.sleep(self._backoff(attempt, None))
            except httpx.HTTPError as exc:
                raise self._describe(exc, url, mid_answer=started) from exc

    def stream_request(self, request: TextRequest, completion: Completion) -> Iterator[str]:
        url, body = self._body(request, stream=True)
        text = Output(request, completion)
        with self._sync_turn if self.one_at_a_time else contextlib.nullcontext():
            # closed at once on a local stop: the connection goes, the server stops generating
            with contextlib.closing(self._lines(url, body)) as lines:
                for payload in lines:
                    if payload == DONE:
                        text.done = True
                        break
                    piece = text.feed(*self._read_event(payload, completion))
                    if piece:
                        yield piece
                    if text.stopped:
                        break
            if completion.finish_reason is None:
                raise self._cut_short(request, body, done=text.done)
            if tail := text.finish():
                yield tail
            self._fill_usage(request, text, completion)

    async def _async_client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            client = httpx.AsyncClient(
                headers=self._headers,
                timeout=self._timeout,
                limits=self._limits,
                transport=self._async_transport,
            )
            self._async = (loop, client, asyncio.Lock())
        return self._async[1]

    async def _alines(self, url: str, body: dict[str, Any]) -> AsyncGenerator[str, None]:
        import httpx

        client = await self._async_client()
        for attempt in range(self.options.max_retries + 1):
            last = attempt == self.options.max_retries
            started = False
            try:
                async with client.stream("POST", url, json=body) as response:
                    if response.status_code in RETRY_STATUSES and not last:
                        await response.aread()
                        await asyncio.sleep(self._backoff(attempt, response))
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise self._refusal(response, "the completion", schema=_constrained(body))
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            payload = line[5:].strip()
                            started = True
                            yield payload
                            if payload == DONE:
                                return
                    return
            except _retried_errors() as exc:
                if last or started:
                    raise self._describe(exc, url, mid_answer=started) from exc
                await asyncio.sleep(self._backoff(attempt, None))
            except httpx.HTTPError as exc:
                raise self._describe(exc, url, mid_answer=started) from exc

    async def astream_request(
        self, request: TextRequest, completion: Completion
    ) -> AsyncIterator[str]:
        url, body = self._body(request, stream=True)
        text = Output(request, completion)
        await self._async_client()
        assert self._async is not None
        async with self._async[2] if self.one_at_a_time else contextlib.nullcontext():
            lines = self._alines(url, body)
            try:
                async for payload in lines:
                    if payload == DONE:
                        text.done = True
                        break
                    piece = text.feed(*self._read_event(payload, completion))
                    if piece:
                        yield piece
                    if text.stopped:
                        break
            finally:
                await lines.aclose()
            if completion.finish_reason is None:
                raise await asyncio.to_thread(self._cut_short, request, body, done=text.done)
            if tail := text.finish():
                yield tail
            if not completion.prompt_tokens:
                await asyncio.to_thread(self._fill_usage, request, text, completion)

    def _cut_short(self, request: TextRequest, body: Mapping[str, Any], *, done: bool) -> Exception:
        """The error for a stream that ended without a finish reason. llama-cpp-python's server
        answers a prompt over its window so (HTTP 200, then nothing), and a running answer when
        another request comes in (``[DONE]`` early: its ``interrupt_requests``)."""
        if done:
            return ModelServerError(
                f"The model server at {self.base_url} ended the answer early, without a finish "
                "reason: llama-cpp-python's server does so when another request comes in while "
                "it answers. Start it with --interrupt_requests false, or send it one request "
                "at a time."
            )
        window = self._context_length
        max_tokens = int(body.get("max_tokens") or 0)
        if window is not None and self.tokenizer != "none":
            try:
                prompt = len(self.tokenize(request.prompt, add_bos=True, special=True))
            except (ModelServerError, ModelLoadError):
                prompt = 0
            if prompt + max_tokens > window:
                return ContextLengthError(
                    f"The prompt has {prompt} tokens and max_tokens={max_tokens}, but the model "
                    f"server's context window is {window} tokens (it ended the answer without a "
                    "word). Shorten the conversation or the documents, or lower max_tokens."
                )
        return ModelServerError(
            f"The model server at {self.base_url} ended the answer without a finish reason: it "
            "failed mid-answer (see its log). A prompt longer than the server's context window "
            "does this on llama-cpp-python's server; set n_ctx= (CMR_N_CTX) to the server's "
            "context size to have that checked."
        )

    def _fill_usage(self, request: TextRequest, output: Output, completion: Completion) -> None:
        """Servers that send no usage in streams (llama-cpp-python): the prompt counted by its
        tokenizer, the answer by the token events streamed."""
        if completion.prompt_tokens:
            return
        completion.completion_tokens = output.tokens
        if self.tokenizer != "none":
            prompt = self.tokenize(request.prompt, add_bos=True, special=True)
            completion.prompt_tokens = len(prompt)


def _constrained(body: Mapping[str, Any]) -> bool:
    """Whether a request body asks for output constrained by a schema or grammar."""
    return any(body.get(field) is not None for field in SCHEMA_FIELDS)


def _parse_schema(json_schema: str) -> Any:
    try:
        schema = json.loads(json_schema)
    except ValueError as exc:
        raise SchemaError(
            f"The structured output's JSON Schema is not JSON ({exc}): {json_schema[:120]!r}"
        ) from exc
    if not isinstance(schema, dict | bool):
        raise SchemaError(
            "The structured output's JSON Schema is not a schema (an object): "
            f"{json_schema[:120]!r}"
        )
    return schema


@functools.lru_cache(maxsize=64)
def _gbnf(json_schema: str) -> str:
    """``json_schema`` as a GBNF grammar, by llama-cpp-python's own converter (the one its
    chat handlers use for ``response_format``), cached by the schema text."""
    _parse_schema(json_schema)
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError as exc:
        raise MissingDependencyError(
            "llama-cpp-python",
            "llama-cpp",
            "Structured output over llama-cpp-python's server (its /v1/completions takes a GBNF "
            "grammar, converted from the JSON Schema on this side)",
        ) from exc
    try:
        return str(json_schema_to_gbnf(json_schema))
    except Exception as exc:  # the converter raises bare Exception, KeyError, ValueError...
        raise SchemaError(
            "The structured output's JSON Schema cannot be turned into a grammar for "
            f"llama-cpp-python's server ({type(exc).__name__}: {exc}). Simplify the schema (type, "
            "properties, required, enum, maxLength, items; no remote $ref)."
        ) from exc


def _retried_errors() -> tuple[type[Exception], ...]:
    """Failures before a response that another try may fix: refused or reset connections, a
    pooled connection the server had closed."""
    import httpx

    return (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadError,
        httpx.WriteError,
        httpx.RemoteProtocolError,
    )


class Output:
    """The answer as it streams: local stop matching (servers differ in how exactly they stop),
    the leading SentencePiece space dropped as the local backends do, the text emitted so far."""

    def __init__(self, request: TextRequest, completion: Completion) -> None:
        self.matcher = StopMatcher(request.stop)
        self.at_start = request.strip_leading_space
        self.completion = completion
        self.emitted = ""
        self.tokens = 0
        self.stopped = False
        self.done = False
        """Whether the server ended the stream (``[DONE]``) rather than the connection."""

    def feed(self, text: str, tokens: int = 0) -> str:
        self.tokens += tokens
        if self.at_start and text:
            text = text[1:] if text.startswith(" ") else text
            self.at_start = not text
        piece, self.stopped = self.matcher.feed(text)
        if self.stopped:
            self.completion.finish_reason = "stop"
        self.emitted += piece
        return piece

    def finish(self) -> str:
        tail = "" if self.stopped else self.matcher.flush()
        self.emitted += tail
        if self.completion.finish_reason is None:
            self.completion.finish_reason = "length"
        return tail
