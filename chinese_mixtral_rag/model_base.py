"""The shared base of the two LangChain classes: options, lazy loading, streaming, tracing.

:class:`~chinese_mixtral_rag.chat_models.ChineseMixtralChat` and
:class:`~chinese_mixtral_rag.llms.ChineseMixtral` differ only in how a prompt becomes token ids;
everything else (defaults from ``CMR_*`` variables, the process-wide backend cache, the one
generation loop, LangSmith parameters) lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from pydantic import Field, PrivateAttr, model_validator

from chinese_mixtral_rag.backends import Backend, TextBackend, check_model, load_backend
from chinese_mixtral_rag.backends.base import TextRequest, is_text_backend
from chinese_mixtral_rag.backends.generation import Completion, stream_text
from chinese_mixtral_rag.backends.options import ModelOptions
from chinese_mixtral_rag.threads import iterate_in_thread

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import Settings

M = TypeVar("M", bound="ChineseMixtralBase")

PROVIDER = "chinese_mixtral"


#: The LangChain names of the server options (as ``ChatOpenAI`` spells them).
ALIASES = {"base_url": "openai_base_url", "api_key": "openai_api_key"}


def as_backend(client: Any) -> Backend | TextBackend:
    """Accept one of our backends or a ready ``llama_cpp.Llama``."""
    if is_text_backend(client) or isinstance(client, Backend):
        return client
    if type(client).__module__.startswith("llama_cpp"):
        from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(client)
    raise TypeError(
        f"client must be a loaded backend (LlamaCppBackend, TransformersBackend) or a "
        f"llama_cpp.Llama, not {type(client).__name__}."
    )


class ChineseMixtralBase(ModelOptions):
    """Options plus a lazily loaded backend, shared process-wide through the backend cache."""

    client: Any = Field(default=None, exclude=True)
    """An already loaded backend (``LlamaCppBackend``/``TransformersBackend``) or
    ``llama_cpp.Llama`` to use instead of loading ``model_path``/``model``."""

    _backend: Backend | TextBackend | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_environment(cls, values: Any) -> Any:
        """Options not passed explicitly come from ``CMR_*`` environment variables;
        ``base_url``/``api_key`` are the server options' LangChain names."""
        if not isinstance(values, dict):
            return values
        from chinese_mixtral_rag.settings import Settings

        values = {ALIASES.get(k, k): v for k, v in values.items()}
        from_env = Settings().model_dump(exclude_unset=True)
        return {**{k: v for k, v in from_env.items() if k in cls.model_fields}, **values}

    @classmethod
    def from_settings(cls: type[M], settings: Settings, **overrides: Any) -> M:
        """The model the settings describe (``CMR_*`` variables, CLI flags, the web app's
        settings): the one way every face builds its model. ``overrides`` win."""
        fields = settings.model_dump(
            include=set(cls.model_fields) & set(type(settings).model_fields)
        )
        return cls(**{**fields, **overrides})

    def get_backend(self) -> Backend | TextBackend:
        """The loaded model, loading it on first use (once per process for the same options)."""
        if self._backend is None:
            if self.client is not None:
                self._backend = as_backend(self.client)
            else:
                self._backend = load_backend(
                    self.resolved_backend(),
                    self.model_source(),
                    allow_other_architectures=self._allows_other_architectures(),
                    **self.load_options(),
                )
        return self._backend

    def _allows_other_architectures(self) -> bool:
        """Whether a model that is no Mixtral/Llama may load (with a warning): only where the
        caller gives the prompt format, the chat model's ``chat_template``."""
        return False

    def check(self) -> None:
        """Raise now the error the first answer would raise on loading the model, without
        loading its weights (see :func:`~chinese_mixtral_rag.backends.check_model`)."""
        if self._backend is None and self.client is None:
            check_model(
                self.resolved_backend(),
                self.model_source(),
                allow_other_architectures=self._allows_other_architectures(),
                **self.load_options(),
            )

    @property
    def model_name(self) -> str:
        """Name reported in metadata: the loaded model's, else the file or hub id's last part."""
        if self._backend is not None:
            return self._backend.model_name
        if self.client is not None:
            return as_backend(self.client).model_name
        if self.resolved_backend() == "openai":
            return self.model or "chinese-mixtral"
        source = self.model_path or self.model
        return Path(source).name if source else "chinese-mixtral"

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's own tokenizer (no BOS)."""
        return len(self.get_backend().tokenize(text, add_bos=False, special=False))

    def _ls_params_for(
        self, model_type: Literal["chat", "llm"], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> LangSmithParams:
        """LangSmith tracing parameters, honouring per-call ``model``/``max_tokens``/``stop``."""
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type=model_type,
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = list(stops)
        return params

    def _check_model_override(self, kwargs: dict[str, Any]) -> None:
        requested = kwargs.get("model")
        if requested and requested not in {self.model, self.model_path, self.model_name}:
            raise ValueError(
                f"Per-call model={requested!r} is not supported: the loaded model is "
                f"{self.model_name!r}. Create another instance for another model."
            )

    def _request(
        self,
        prompt: str,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        *,
        chat: bool,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> TextRequest:
        """One generation: the prompt (its leading ``<s>`` is the BOS), per-call overrides."""
        self._check_model_override(kwargs)
        return TextRequest(
            prompt=prompt,
            max_new_tokens=kwargs.get("max_tokens", self.max_tokens),
            sampling=self.sampling(kwargs),
            stop=stop if stop is not None else (self.stop or []),
            strip_leading_space=chat,
            messages=messages,
        )  # fmt: skip

    def _pieces(self, request: TextRequest, completion: Completion) -> Iterator[str]:
        """The answer's text pieces: the server's stream, or the local generation loop over
        the prompt's token ids (chat prompts parse ``<s>``; plain prompts get one BOS)."""
        backend = self.get_backend()
        if is_text_backend(backend):
            return backend.stream_request(request, completion)
        chat = request.strip_leading_space
        ids = backend.tokenize(request.prompt, add_bos=not chat, special=chat)
        return stream_text(
            backend,
            ids,
            max_new_tokens=request.max_new_tokens,
            sampling=request.sampling,
            stop=request.stop,
            strip_leading_space=chat,
            completion=completion,
        )

    async def _apieces(self, request: TextRequest, completion: Completion) -> AsyncIterator[str]:
        """The same without blocking the event loop: a server is streamed with an async client,
        a local model generates in a thread."""
        backend = self._backend or await asyncio.to_thread(self.get_backend)
        if is_text_backend(backend):
            pieces = backend.astream_request(request, completion)
        else:
            pieces = iterate_in_thread(lambda: self._pieces(request, completion))
        async for piece in pieces:
            yield piece


def usage_of(completion: Completion) -> UsageMetadata:
    """LangChain usage of a finished generation, with the prompt tokens a cache spared."""
    usage = UsageMetadata(
        input_tokens=completion.prompt_tokens,
        output_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
    if completion.cached_tokens:
        usage["input_token_details"] = InputTokenDetails(cache_read=completion.cached_tokens)
    return usage
