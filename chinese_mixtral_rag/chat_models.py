"""ChineseMixtralChat: a LangChain chat model over local Chinese-Mixtral-Instruct weights."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    MessageLikeRepresentation,
    convert_to_messages,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from chinese_mixtral_rag.backends.base import TextRequest
from chinese_mixtral_rag.backends.generation import Completion
from chinese_mixtral_rag.chat_template import (
    BOS,
    EOS,
    format_turns,
    normalize_turns,
    render_prompt,
    render_template,
)
from chinese_mixtral_rag.errors import PromptError
from chinese_mixtral_rag.model_base import PROVIDER, ChineseMixtralBase, usage_of
from chinese_mixtral_rag.structured.output import Method, response_format_of, structured_model
from chinese_mixtral_rag.structured.tools import (
    AnswerShaper,
    OutputPlan,
    as_template_messages,
    plan_output,
    starts_call,
)

#: The call keywords that shape the answer (``bind_tools``, ``with_structured_output``).
SHAPING_KEYS = ("tools", "tool_choice", "response_format")


class ChineseMixtralChat(ChineseMixtralBase, BaseChatModel):
    """Chinese-Mixtral-Instruct as a LangChain chat model: llama.cpp, transformers, or a server.

    The prompt is the exact Mixtral-Instruct format (``<s>[INST] user [/INST]answer</s>...``) with
    exactly one BOS; system messages are folded into the first user turn instead of being
    dropped. Weights load on first use, once per process.

    Setup:
        .. code-block:: bash

            pip install 'chinese-mixtral-rag[llama-cpp]'      # GGUF files
            pip install 'chinese-mixtral-rag[transformers]'   # Hugging Face checkpoints
            export CMR_MODEL_PATH=~/models/chinese-mixtral-instruct-q4_k.gguf   # optional

    Instantiate:
        .. code-block:: python

            from chinese_mixtral_rag import ChineseMixtralChat

            chat = ChineseMixtralChat(model_path="chinese-mixtral-instruct-q4_k.gguf")
            chat = ChineseMixtralChat(
                backend="transformers", model="hfl/chinese-mixtral-instruct", load_in_4bit=True
            )
            # any OpenAI-compatible server (vLLM, llama.cpp's llama-server): our exact prompt
            # goes to its /v1/completions
            chat = ChineseMixtralChat(base_url="http://gpu-box:8000/v1", api_key="...")

    Invoke:
        .. code-block:: python

            messages = [("system", "你是一个乐于助人的助手。"), ("human", "介绍一下混合专家模型")]
            reply = chat.invoke(messages)
            reply.content, reply.usage_metadata, reply.response_metadata["finish_reason"]

    Stream:
        .. code-block:: python

            for chunk in chat.stream(messages, stop=["\\n\\n"]):
                print(chunk.content, end="", flush=True)

    Async:
        .. code-block:: python

            reply = await chat.ainvoke(messages)
            async for chunk in chat.astream(messages):
                ...
    """

    chat_template: str | None = None
    """None: the official Mixtral-Instruct format. "model": the Jinja template stored in the GGUF
    or tokenizer_config.json. Any other string: a Jinja chat template."""

    streaming: bool = False
    """Whether ``invoke`` streams internally (same result; kept for LangChain compatibility)."""

    @property
    def _llm_type(self) -> str:
        return "chinese-mixtral-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "backend": self.resolved_backend(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params_for("chat", stop, kwargs)

    def render(self, messages: Sequence[MessageLikeRepresentation], **kwargs: Any) -> str:
        """The prompt text the model sees for ``messages`` (useful for debugging).

        Pass what a bound model binds (``chat.render(messages, **bound.kwargs)``, or ``tools=``,
        ``tool_choice=``, ``response_format=``) to see the tools' or schema's instructions too.
        The Mixtral-Instruct format writes Mixtral's ``<s>``/``</s>``; a Jinja template
        (``chat_template``) gets the model's own BOS and EOS texts.
        """
        tools = [convert_to_openai_tool(tool) for tool in kwargs.get("tools") or ()]
        plan = plan_output(tools, kwargs.get("tool_choice"), kwargs.get("response_format"))
        return self._render(as_template_messages(convert_to_messages(messages), plan))

    def _render(self, messages: Sequence[BaseMessage]) -> str:
        template = self._template()
        if template is None:
            return render_prompt(messages)
        backend = self.get_backend()
        return render_prompt(
            messages, template=template, bos=backend.bos_token, eos=backend.eos_token
        )

    def _allows_other_architectures(self) -> bool:
        """A model of another architecture loads (with a warning) once its template is given."""
        return self.chat_template is not None

    def _template(self) -> str | None:
        """The Jinja template in use (None: the Mixtral-Instruct format)."""
        if self.chat_template != "model":
            return self.chat_template
        backend = self.get_backend()
        if backend.chat_template is not None:
            return backend.chat_template
        if (backend.bos_token, backend.eos_token) == (BOS, EOS):
            raise PromptError(
                "chat_template='model' but the model stores no chat template; leave "
                "chat_template unset to use the official Mixtral-Instruct format."
            )
        raise PromptError(
            f"chat_template='model' but {backend.model_name} stores no chat template, and its "
            f"special tokens ({backend.bos_token!r}, {backend.eos_token!r}) are not Mixtral's, "
            "so the Mixtral-Instruct format does not fit it either. Pass the model's own chat "
            "template as a Jinja string: chat_template= (CMR_CHAT_TEMPLATE), as its model card "
            "or tokenizer_config.json gives it."
        )

    def prompt_ids(self, messages: Sequence[MessageLikeRepresentation], **kwargs: Any) -> list[int]:
        """Token ids of the rendered prompt (``kwargs`` as for :meth:`render`); ``<s>`` in the
        text is the one BOS."""
        prompt = self.render(messages, **kwargs)
        return self.get_backend().tokenize(prompt, add_bos=False, special=True)

    def get_num_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens of the conversation as rendered with the template in use, with the tools'
        instructions when ``tools`` are given (it may end on either role; ending on the user,
        the template's generation prompt is counted too)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools or ()]
        messages = as_template_messages(messages, plan_output(formatted, "auto"))
        turns = normalize_turns(messages, require_user_last=False)
        template = self._template()
        backend = self.get_backend()
        if template is None:
            text = format_turns(turns)
        else:
            text = render_template(
                template,
                turns,
                bos=backend.bos_token,
                eos=backend.eos_token,
                add_generation_prompt=turns[-1].role == "user",
            )
        return len(backend.tokenize(text, add_bos=False, special=True))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """The model with ``tools`` it may call (``tool_choice``: "auto", the default, lets it
        answer in text; "any"/"required" makes it call one; a name makes it call that one).

        Calls come back as ``AIMessage.tool_calls``; decoding is constrained by a grammar from
        the tools' JSON schemas, so the arguments always match them. Send the results back as
        ``ToolMessage``s (they are written into the prompt as "工具 X 的结果 / Result of tool X").
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        plan_output(formatted, tool_choice)  # a bad schema or choice fails here, not at a call
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Method = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, Any]:
        """The model answering with ``schema`` (a pydantic model, TypedDict or JSON Schema),
        parsed into an instance or a dict; decoding is constrained to the schema's JSON."""
        if kwargs:
            raise ValueError(f"Unsupported arguments {sorted(kwargs)}")
        if method != "function_calling":  # a bad schema fails here, not at the first call
            plan_output(response_format=response_format_of(schema, method))
        return structured_model(self, schema, method=method, include_raw=include_raw, strict=strict)

    def _request_for(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[OutputPlan, TextRequest]:
        """The answer's plan and request; under "auto" the request is the free one and
        :meth:`_constrained` gives the one that follows once the answer is a call."""
        plan = plan_output(*(kwargs.pop(key, None) for key in SHAPING_KEYS))
        shown = as_template_messages(messages, plan)
        turns = None
        if self.chat_endpoint:  # the server's own template gets the (normalized) turns
            turns = [turn.as_dict() for turn in normalize_turns(shown)]
        request = self._request(self._render(shown), stop, kwargs, chat=True, messages=turns)
        if plan.constrained:
            request = self._constrained(request, plan)
        return plan, request

    @staticmethod
    def _constrained(request: TextRequest, plan: OutputPlan) -> TextRequest:
        sampling = dataclasses.replace(request.sampling, json_schema=plan.schema_text)
        return dataclasses.replace(request, sampling=sampling)

    def _calls_or_text(
        self, request: TextRequest, plan: OutputPlan, shaper: AnswerShaper, completion: Completion
    ) -> Iterator[str]:
        """The answer's pieces. Under "auto" the first words decide: an answer that starts
        like a call is generated again under the grammar (the prompt's KV state is reused)."""
        pieces = self._pieces(request, completion)
        if not plan.lazy:
            return pieces
        head = ""
        for piece in pieces:
            head += piece
            if starts_call(head) is not None:
                break
        if not starts_call(head):
            return itertools.chain([head] if head else [], pieces)
        pieces.close()  # type: ignore[attr-defined]  # a generator: ends the free generation
        shaper.calling()
        return self._pieces(self._constrained(request, plan), completion)

    async def _acalls_or_text(
        self, request: TextRequest, plan: OutputPlan, shaper: AnswerShaper, completion: Completion
    ) -> AsyncIterator[str]:
        """:meth:`_calls_or_text` without blocking the event loop."""
        pieces = self._apieces(request, completion)
        head = ""
        if plan.lazy:
            async for piece in pieces:
                head += piece
                if starts_call(head) is not None:
                    break
            if starts_call(head):
                await pieces.aclose()  # type: ignore[attr-defined]
                shaper.calling()
                pieces = self._apieces(self._constrained(request, plan), completion)
                head = ""
        if head:
            yield head
        async for piece in pieces:
            yield piece

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        completion = Completion(prompt_tokens=0)
        plan, request = self._request_for(messages, stop, kwargs)
        shaper = AnswerShaper(plan)
        for piece in self._calls_or_text(request, plan, shaper, completion):
            chunk = ChatGenerationChunk(message=shaper.chunk(piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        if (rest := shaper.finish(completion.finish_reason)) is not None:
            yield ChatGenerationChunk(message=rest)
        final = self._final_chunk(completion)
        if run_manager:
            run_manager.on_llm_new_token("", chunk=final)
        yield final

    def _final_chunk(self, completion: Completion) -> ChatGenerationChunk:
        """The last chunk: usage, model name and finish reason, exactly once per response."""
        metadata = {
            "model_name": self.model_name,
            "model_provider": PROVIDER,
            "finish_reason": completion.finish_reason,
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage_of(completion),
                response_metadata=metadata,
                chunk_position="last",
            ),
            generation_info={"finish_reason": completion.finish_reason},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        completion = Completion(prompt_tokens=0)
        plan, request = await asyncio.to_thread(self._request_for, messages, stop, kwargs)
        shaper = AnswerShaper(plan)
        async for piece in self._acalls_or_text(request, plan, shaper, completion):
            chunk = ChatGenerationChunk(message=shaper.chunk(piece))
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        if (rest := shaper.finish(completion.finish_reason)) is not None:
            yield ChatGenerationChunk(message=rest)
        final = self._final_chunk(completion)
        if run_manager:
            await run_manager.on_llm_new_token("", chunk=final)
        yield final

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        final: ChatGenerationChunk | None = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            final = chunk if final is None else final + chunk
        assert final is not None  # _stream always yields the final chunk
        return generate_from_stream(iter([final]))
