"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` server (TEI, vLLM, llama.cpp ...).

Embedding is most of what a large ingest costs on a CPU; a GPU embedding server does it many times
faster, and several machines can share one. This is LangChain's ``Embeddings`` over plain httpx
(the ``openai`` package is only a test dependency, and TEI, vLLM and llama.cpp each bend the
protocol a little): texts go in batches of ``batch_size``, refused connections, 429 and 5xx are
retried with exponential backoff (other 4xx are the caller's mistake and fail at once), every
request has a timeout, vectors are put back in ``data[].index`` order, and every way a server can
be wrong (down, wrong URL, wrong key, not an embeddings server, a text too long) is one
:class:`~chinese_mixtral_rag.errors.EmbeddingServerError` that says what to do.

Vectors are stored as the server returns them (not normalised here): collections use cosine
distance, and the stored vector then equals what the server says for that text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from langchain_core.embeddings import Embeddings

from chinese_mixtral_rag.errors import EmbeddingServerError, StoreError

if TYPE_CHECKING:
    from pydantic import SecretStr

logger = logging.getLogger(__name__)

#: Seconds a request may take once sent (a batch of long texts on a busy server is slow).
DEFAULT_TIMEOUT = 120.0
#: Seconds to open a connection: a server that is there accepts at once.
CONNECT_TIMEOUT = 5.0
#: Further tries after a refused connection, 429 or 5xx (0.5 + 1 + 2 s of backoff by default).
MAX_RETRIES = 3
#: First backoff in seconds, doubled on each retry, at most ``MAX_BACKOFF``.
BACKOFF = 0.5
MAX_BACKOFF = 8.0
#: Longest ``Retry-After`` honoured, in seconds.
MAX_RETRY_AFTER = 30.0
#: Where the settings live, named in every error.
SETTING = "CMR_EMBEDDING_BASE_URL (embedding_base_url=)"

_SHAPE = '{"data": [{"embedding": [numbers], "index": i}, ...]}'


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash, or a clear error for one httpx cannot use."""
    url = base_url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise StoreError(
            f"CMR_EMBEDDING_BASE_URL (embedding_base_url=) must be an http:// or https:// URL "
            f"of an OpenAI-compatible server, ending in /v1 (e.g. http://127.0.0.1:8080/v1); "
            f"got {display_url(base_url)!r}."
        )
    return url


def display_url(base_url: str) -> str:
    """The URL without user name and password (those may be credentials)."""
    try:
        return str(httpx.URL(base_url.strip()).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError):
        return "<unparsable URL>"


def canonical_url(base_url: str) -> str:
    """What identifies an endpoint: scheme, host, port and path, case and slashes folded, no
    credentials (a collection remembers its endpoint by this)."""
    url = httpx.URL(check_base_url(base_url))
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.scheme}://{url.host.lower()}:{port}{url.path.rstrip('/')}"


def server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI's ``error.message``, FastAPI's
    ``detail``, TEI's ``error``), shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        for key in ("error", "detail", "message"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300] if body else response.reason_phrase


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


class _Retry:
    """The retry policy shared by the sync and async paths: which failures are worth another
    try, how long to wait, and the error once the tries are spent."""

    def __init__(self, base_url: str, *, max_retries: int, backoff: float, timeout: float) -> None:
        self.base_url = display_url(base_url)
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.timeout = timeout

    def delay(self, attempt: int, outcome: httpx.Response | Exception) -> float | None:
        """Seconds to wait before the next try, or None when ``outcome`` is final."""
        if attempt >= self.max_retries:
            return None
        if isinstance(outcome, httpx.Response):
            status = outcome.status_code
            if status != 429 and status < 500:
                return None
            after = outcome.headers.get("retry-after", "")
            if after.replace(".", "", 1).isdigit():
                return min(float(after), MAX_RETRY_AFTER)
        elif not _retryable(outcome):
            return None
        return float(min(self.backoff * 2**attempt, MAX_BACKOFF))

    def log(
        self, what: str, outcome: httpx.Response | Exception, wait: float, attempt: int
    ) -> None:
        reason = (
            f"HTTP {outcome.status_code}"
            if isinstance(outcome, httpx.Response)
            else type(outcome).__name__
        )
        logger.warning(
            "embedding server %s: %s failed (%s); retrying in %.1f s (%d/%d)",
            self.base_url,
            what,
            reason,
            wait,
            attempt + 1,
            self.max_retries,
        )

    def unreachable(self, exc: Exception, what: str, tries: int) -> EmbeddingServerError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return EmbeddingServerError(
                f"The embedding server at {self.base_url} did not answer {what} within "
                f"{self.timeout:g} s. Check that it is up and not overloaded; a smaller "
                "CMR_EMBEDDING_BATCH_SIZE (embedding_batch_size=) asks less of it per request, "
                f"and {SETTING} says which server is used."
            )
        return EmbeddingServerError(
            f"Cannot reach the embedding server at {self.base_url} ({type(exc).__name__}: "
            f"{exc or 'no answer'}; {_tries(tries)}). Start it, or set {SETTING} to the address it "
            "listens on: an OpenAI-compatible server's base URL, ending in /v1."
        )


def _retryable(exc: Exception) -> bool:
    """Failures to connect are worth another try; a server that took the request and did not
    answer in time is not (another try would wait as long again)."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    if isinstance(exc, httpx.TimeoutException):
        return False
    return isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


async def _apause(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _send(retry: _Retry, what: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    """``call`` until it gives a final response; connection failures end in a clear error."""
    attempt = 0
    while True:
        outcome: httpx.Response | Exception
        try:
            outcome = call()
        except httpx.TransportError as exc:
            outcome = exc
        wait = retry.delay(attempt, outcome)
        if wait is None:
            if isinstance(outcome, Exception):
                raise retry.unreachable(outcome, what, attempt + 1) from outcome
            return outcome
        retry.log(what, outcome, wait, attempt)
        _pause(wait)
        attempt += 1


async def _asend(
    retry: _Retry, what: str, call: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """:func:`_send` without blocking the event loop."""
    attempt = 0
    while True:
        outcome: httpx.Response | Exception
        try:
            outcome = await call()
        except httpx.TransportError as exc:
            outcome = exc
        wait = retry.delay(attempt, outcome)
        if wait is None:
            if isinstance(outcome, Exception):
                raise retry.unreachable(outcome, what, attempt + 1) from outcome
            return outcome
        retry.log(what, outcome, wait, attempt)
        await _apause(wait)
        attempt += 1


def _refusal(
    response: httpx.Response, base_url: str, what: str, *, keyed: bool, tries: int
) -> EmbeddingServerError:
    """The clear error for an HTTP error status."""
    status = response.status_code
    message = server_message(response)
    where = f"The embedding server at {display_url(base_url)}"
    if status in (401, 403):
        if keyed:
            return EmbeddingServerError(
                f"{where} refused the API key (HTTP {status}: {message}). Set "
                "CMR_EMBEDDING_API_KEY (embedding_api_key=) to the key the server was started "
                f"with, and check that {SETTING} is the server you mean."
            )
        return EmbeddingServerError(
            f"{where} wants an API key (HTTP {status}: {message}). Set CMR_EMBEDDING_API_KEY "
            f"(embedding_api_key=) to the key it was started with, and check that {SETTING} is "
            "the server you mean."
        )
    if status in (404, 405):
        return EmbeddingServerError(
            f"{where} has no {what} (HTTP {status}: {message}): it is not an OpenAI-compatible "
            f"embeddings server, or {SETTING} lacks the /v1 at its end. Point it at a server "
            "that embeds (TEI, vLLM with an embedding model, llama.cpp with embeddings on)."
        )
    if status == 429:
        return EmbeddingServerError(
            f"{where} kept refusing {what} as too many requests (HTTP 429: {message}; "
            f"{_tries(tries)}). Lower CMR_EMBEDDING_BATCH_SIZE (embedding_batch_size=), raise "
            f"the server's limits, or point {SETTING} at another server."
        )
    if status >= 500:
        return EmbeddingServerError(
            f"{where} failed {what} (HTTP {status}: {message}; {_tries(tries)}). See the server's "
            f"log; {SETTING} says which server is used."
        )
    return EmbeddingServerError(
        f"{where} refused {what} (HTTP {status}: {message}). Check that {SETTING} and "
        "CMR_EMBEDDING_MODEL (embedding_model=) name a server and a model that embed."
    )


def _too_long(
    response: httpx.Response, base_url: str, texts: Sequence[str]
) -> EmbeddingServerError:
    """HTTP 400/413/422 for a batch: almost always a text longer than the model's input."""
    longest = max((len(t) for t in texts), default=0)
    return EmbeddingServerError(
        f"The embedding server at {display_url(base_url)} refused {len(texts)} text(s) "
        f"(HTTP {response.status_code}: {server_message(response)}); the longest has {longest} "
        "characters. The usual cause is a text longer than the embedding model's input: lower "
        "CMR_CHUNK_SIZE (chunk_size=) and ingest again, or serve the model with a longer input "
        "limit; or more texts per request than the server takes: lower CMR_EMBEDDING_BATCH_SIZE "
        f"(embedding_batch_size=). {SETTING} says which server is used."
    )


def _not_openai(base_url: str, what: str, found: str) -> EmbeddingServerError:
    return EmbeddingServerError(
        f"The server at {display_url(base_url)} answered {what} with {found}, not an OpenAI "
        f"embeddings response ({_SHAPE}): {SETTING} does not point at an OpenAI-compatible "
        "embeddings server."
    )


def _vector(value: Any) -> list[float] | None:
    """One embedding as floats: a list of numbers, or base64 float32 (OpenAI's other format)."""
    if isinstance(value, str):
        try:
            return [float(x) for x in np.frombuffer(base64.b64decode(value), dtype="<f4")]
        except ValueError:
            return None
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        return None
    return [float(x) for x in value]


def parse_embeddings(body: Any, base_url: str, count: int) -> list[list[float]]:
    """The vectors of an OpenAI ``/v1/embeddings`` answer for ``count`` texts, in input order
    (``data[].index``; position where a server leaves it out)."""
    what = "/v1/embeddings"
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        found = "a JSON object without a data list" if isinstance(body, dict) else "other JSON"
        raise _not_openai(base_url, what, found)
    rows: dict[int, list[float]] = {}
    for position, item in enumerate(data):
        index = item.get("index", position)
        raw = item.get("embedding")
        if isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            raise EmbeddingServerError(
                f"The embedding server at {display_url(base_url)} returned one vector per token "
                "instead of one per text: the model it serves has no pooling (a chat model, or a "
                "GGUF without a pooling type). Serve an embedding model, or start llama.cpp with "
                f"mean pooling; {SETTING} says which server is used."
            )
        vector = _vector(raw)
        if vector is None or not isinstance(index, int) or isinstance(index, bool):
            raise _not_openai(
                base_url, what, f"an entry without a usable embedding ({_peek(item)})"
            )
        rows[index] = vector
    if sorted(rows) != list(range(count)):
        raise EmbeddingServerError(
            f"The embedding server at {display_url(base_url)} returned {len(data)} vector(s) "
            f"(indexes {sorted(rows)[:8]}) for {count} text(s): it is not a working "
            f"OpenAI-compatible embeddings server ({SETTING})."
        )
    vectors = [rows[i] for i in range(count)]
    sizes = {len(v) for v in vectors}
    if len(sizes) > 1:
        raise EmbeddingServerError(
            f"The embedding server at {display_url(base_url)} returned vectors of different "
            f"sizes {sorted(sizes)} in one answer: it is not a working embeddings server "
            f"({SETTING})."
        )
    return vectors


def _peek(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json(response: httpx.Response, base_url: str, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0] or "an unknown type"
        raise _not_openai(base_url, what, f"something that is not JSON ({kind})") from None


@dataclass(frozen=True)
class ServedModel:
    """The model a server embeds with, as its ``/v1/models`` tells."""

    name: str
    """The id to send as ``model`` (what the server calls it)."""
    max_tokens: int | None
    """Longest input, where the server tells (vLLM's ``max_model_len``); None: unknown."""


def served_model(
    base_url: str,
    model: str | None,
    *,
    api_key: SecretStr | None = None,
    timeout: float = 30.0,
    max_retries: int = MAX_RETRIES,
    backoff: float = BACKOFF,
    transport: httpx.BaseTransport | None = None,
) -> ServedModel:
    """Which model ``base_url`` embeds with: ``model`` checked against ``/v1/models``, or the
    server's only model when ``model`` is None. A server without ``/v1/models`` is trusted with
    an explicit ``model``."""
    url = check_base_url(base_url)
    what = "the model list (/v1/models)"
    retry = _Retry(url, max_retries=max_retries, backoff=backoff, timeout=timeout)
    with httpx.Client(
        headers=_headers(api_key),
        timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        transport=transport,
    ) as client:
        response = _send(retry, what, lambda: client.get(f"{url}/models"))
    keyed = api_key is not None
    if response.status_code in (404, 405) and model:
        logger.info("%s lists no models (HTTP %s): using %r", url, response.status_code, model)
        return ServedModel(model, None)
    if response.status_code in (404, 405):
        raise EmbeddingServerError(
            f"The server at {display_url(url)} does not list its models (GET {display_url(url)}"
            f"/models: HTTP {response.status_code}). Check that {SETTING} is an OpenAI-compatible "
            "server's base URL ending in /v1; if it is, set CMR_EMBEDDING_MODEL "
            "(embedding_model=) to the name of the model it serves."
        )
    if response.status_code >= 400:
        raise _refusal(response, url, what, keyed=keyed, tries=retry.max_retries + 1)
    body = _json(response, url, what)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and "id" in m for m in data):
        raise EmbeddingServerError(
            f"The server at {display_url(url)} answered {what} without an OpenAI model list "
            f'({{"data": [{{"id": ...}}]}}): {SETTING} does not point at an OpenAI-compatible '
            "server."
        )
    listed = {str(m["id"]): m for m in data}
    if model is None:
        if len(listed) != 1:
            names = ", ".join(sorted(listed)) or "none"
            raise EmbeddingServerError(
                f"The embedding server at {display_url(url)} serves {len(listed)} models "
                f"({names}): set CMR_EMBEDDING_MODEL (embedding_model=) to the one that embeds."
            )
        model = next(iter(listed))
    elif listed and model not in listed:
        raise EmbeddingServerError(
            f"The embedding server at {display_url(url)} does not serve {model!r}; it serves "
            f"{', '.join(sorted(listed))}. Set CMR_EMBEDDING_MODEL (embedding_model=) to one of "
            f"them, or {SETTING} to the server that serves {model!r}."
        )
    limit = listed.get(model, {}).get("max_model_len")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        limit = None
    return ServedModel(model, limit)


def _headers(api_key: SecretStr | None) -> dict[str, str]:
    if api_key is None or not api_key.get_secret_value():
        return {}
    return {"Authorization": f"Bearer {api_key.get_secret_value()}"}


class RemoteEmbeddings(Embeddings):
    """LangChain embeddings from an OpenAI-compatible ``/v1/embeddings`` server.

    Instantiate:
        .. code-block:: python

            from chinese_mixtral_rag.store.remote_embeddings import RemoteEmbeddings

            embeddings = RemoteEmbeddings("http://127.0.0.1:8080/v1", "BAAI/bge-m3")
            vectors = embeddings.embed_documents(["居住权如何设立？", "合同期限为三年。"])
            query = await embeddings.aembed_query("居住权")

    Usually built by the store from ``CMR_EMBEDDING_BASE_URL``; ``transport`` is for tests.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        batch_size: int = 32,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        backoff: float = BACKOFF,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.model = model
        self.batch_size = max(1, batch_size)
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, connect_timeout))
        self._retry = _Retry(
            self.base_url, max_retries=max_retries, backoff=backoff, timeout=timeout
        )
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"RemoteEmbeddings({display_url(self.base_url)!r}, {self.model!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    headers=_headers(self._api_key),
                    timeout=self._timeout,
                    transport=self._transport,
                )
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        return [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]

    def _body(self, batch: list[str]) -> dict[str, Any]:
        return {"model": self.model, "input": batch, "encoding_format": "float"}

    def _vectors(self, response: httpx.Response, batch: list[str]) -> list[list[float]]:
        if response.status_code in (400, 413, 422):
            raise _too_long(response, self.base_url, batch)
        if response.status_code >= 400:
            raise _refusal(
                response,
                self.base_url,
                "/v1/embeddings",
                keyed=self._api_key is not None,
                tries=self._retry.max_retries + 1,
            )
        body = _json(response, self.base_url, "/v1/embeddings")
        return parse_embeddings(body, self.base_url, len(batch))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, ``batch_size`` texts per request."""
        client = self._sync_client()
        vectors: list[list[float]] = []
        for batch in self._batches(texts):
            post = partial(client.post, self.url, json=self._body(batch))
            response = _send(self._retry, "/v1/embeddings", post)
            vectors.extend(self._vectors(response, batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` on the event loop (one client per call: an httpx async
        client belongs to the loop it was made on)."""
        vectors: list[list[float]] = []
        async with httpx.AsyncClient(
            headers=_headers(self._api_key),
            timeout=self._timeout,
            transport=self._async_transport,
        ) as client:
            for batch in self._batches(texts):
                apost = partial(client.post, self.url, json=self._body(batch))
                response = await _asend(self._retry, "/v1/embeddings", apost)
                vectors.extend(self._vectors(response, batch))
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]
