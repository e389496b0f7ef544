"""The two protocols backends implement, and what they share: sampling, totals, the lock.

A local backend (:class:`Backend`: llama.cpp, transformers) knows how to tokenize and how to
produce token ids; everything above it (detokenisation, stop sequences, usage counting) is shared
code in :mod:`chinese_mixtral_rag.backends.generation`, so both behave the same by construction.
A server backend (:class:`TextBackend`: any OpenAI-compatible server) gets text in and streams
text out, because the server samples and detokenises; the prompt it is sent is still ours.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from typing_extensions import TypeIs

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    json_schema: str | None = None
    """Only output JSON that this JSON Schema accepts (constrained decoding). Kept as its JSON
    text: the params stay hashable and a backend caches the compiled grammar by it."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Completion:
    """Running totals of one generation, final once the stream is exhausted.

    ``cached_tokens``: prompt tokens the model did not evaluate again because an earlier prompt
    shared them (llama.cpp's prefix reuse, a server's prompt cache).
    """

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0


@dataclass(frozen=True)
class TextRequest:
    """One generation asked of a server backend.

    ``prompt`` is the full prompt text; a leading ``<s>`` is the BOS, which the server adds
    itself. ``messages`` (role/content dicts) replaces it when the server's own chat template is
    asked for (``chat_endpoint``).
    """

    prompt: str
    max_new_tokens: int | None
    sampling: SamplingParams
    stop: Sequence[str] = ()
    strip_leading_space: bool = False
    messages: Sequence[Mapping[str, str]] | None = None


@runtime_checkable
class TextBackend(Protocol):
    """A model behind a server: text in, text out, tokens counted by the server's tokenizer."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_length(self) -> int:
        """The server's context window (raises when neither the server nor n_ctx tells)."""
        ...

    @property
    def chat_template(self) -> str | None: ...

    @property
    def bos_token(self) -> str:
        """The BOS token's text, as a chat template writes it (``{{ bos_token }}``)."""
        ...

    @property
    def eos_token(self) -> str:
        """The EOS token's text, as a chat template writes it (``{{ eos_token }}``)."""
        ...

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]: ...

    def stream_request(self, request: TextRequest, completion: Completion) -> Iterator[str]:
        """Yield text pieces; ``completion`` holds usage and finish reason once exhausted."""
        ...

    def astream_request(self, request: TextRequest, completion: Completion) -> AsyncIterator[str]:
        """The same over an async HTTP client."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A loaded model: tokenizer plus a token generator."""

    @property
    def model_name(self) -> str:
        """Short name reported as ``model_name`` in response metadata."""
        ...

    @property
    def context_length(self) -> int:
        """Tokens the loaded model can attend to (prompt plus completion)."""
        ...

    @property
    def eos_token_id(self) -> int: ...

    @property
    def bos_token_id(self) -> int:
        """The BOS token's id (-1 when the model has none)."""
        ...

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Every token that ends generation: EOS and the end-of-turn tokens the model declares
        (GGUF ``tokenizer.ggml.eot_token_id``, a list of ``eos_token_id`` in transformers'
        generation config)."""
        ...

    @property
    def bos_token(self) -> str:
        """The BOS token's text, as a chat template writes it (``{{ bos_token }}``; "" when the
        model has none)."""
        ...

    @property
    def eos_token(self) -> str:
        """The EOS token's text, as a chat template writes it (``{{ eos_token }}``)."""
        ...

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored with the model, if any."""
        ...

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """Token ids of ``text``; ``special`` parses ``<s>``/``</s>`` written in the text."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token ("▁" as a space, byte tokens as their byte, control as b"")."""
        ...

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        """Yield sampled token ids (a stop token included, then stop) until ``max_new_tokens``.

        Callers may close the iterator early; the backend must then release the model.
        """
        ...


def is_text_backend(backend: Backend | TextBackend | Any) -> TypeIs[TextBackend]:
    """Whether ``backend`` is a server backend (checked on the class: a runtime protocol check
    would read properties such as ``context_length``, which may ask the server)."""
    return callable(getattr(type(backend), "stream_request", None))


class GenerationLock:
    """One generation at a time per loaded model, with a clear error instead of a deadlock.

    Other threads wait their turn; the thread that holds the lock (a stream it has not finished
    or closed) gets a RuntimeError if it starts a second generation on the same model.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __enter__(self) -> GenerationLock:
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(
                "This thread is already generating with this model (an unfinished stream). "
                "Consume or close() the first stream before starting another."
            )
        self._lock.acquire()
        self._owner = me
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner = None
        self._lock.release()
