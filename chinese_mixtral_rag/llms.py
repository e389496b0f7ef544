"""ChineseMixtral: plain text completion with the Chinese-Mixtral base model (no chat template)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from chinese_mixtral_rag.backends.generation import Completion
from chinese_mixtral_rag.model_base import ChineseMixtralBase


class ChineseMixtral(ChineseMixtralBase, BaseLLM):
    """The Chinese-Mixtral base model as a LangChain LLM: text in, continuation out.

    The prompt is tokenized literally (``<s>`` written in it is text, not BOS) after one BOS, and
    the continuation keeps its leading space so that ``prompt + output`` reads correctly.

    Setup:
        .. code-block:: bash

            pip install 'chinese-mixtral-rag[llama-cpp]'

    Instantiate:
        .. code-block:: python

            from chinese_mixtral_rag import ChineseMixtral

            llm = ChineseMixtral(model_path="chinese-mixtral-q4_k.gguf", max_tokens=128)

    Invoke:
        .. code-block:: python

            llm.invoke("中国的首都是")

    Stream:
        .. code-block:: python

            for piece in llm.stream("从前有座山，", stop=["。"]):
                print(piece, end="", flush=True)
    """

    @property
    def _llm_type(self) -> str:
        return "chinese-mixtral"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "backend": self.resolved_backend(),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params_for("llm", stop, kwargs)

    def get_num_tokens(self, text: str) -> int:
        return self.count_tokens(text)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        completion = Completion(prompt_tokens=0)
        for piece in self._pieces(self._request(prompt, stop, kwargs, chat=False), completion):
            chunk = GenerationChunk(text=piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield self._final_chunk(completion)

    def _final_chunk(self, completion: Completion) -> GenerationChunk:
        usage: dict[str, Any] = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        }
        if completion.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": completion.cached_tokens}
        return GenerationChunk(
            text="",
            generation_info={
                "finish_reason": completion.finish_reason,
                "model_name": self.model_name,
                "usage": usage,
            },
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[list[Generation]] = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            assert final is not None
            generations.append([Generation(text=final.text, generation_info=final.generation_info)])
        return LLMResult(generations=generations, llm_output={"model_name": self.model_name})

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        completion = Completion(prompt_tokens=0)
        async for piece in self._apieces(
            self._request(prompt, stop, kwargs, chat=False), completion
        ):
            chunk = GenerationChunk(text=piece)
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield self._final_chunk(completion)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations: list[list[Generation]] = []
        for prompt in prompts:
            final: GenerationChunk | None = None
            async for chunk in self._astream(prompt, stop, run_manager, **kwargs):
                final = chunk if final is None else final + chunk
            assert final is not None
            generations.append([Generation(text=final.text, generation_info=final.generation_info)])
        return LLMResult(generations=generations, llm_output={"model_name": self.model_name})
