"""Hugging Face checkpoints through transformers, streamed from ``model.generate``.

``generate`` runs in a worker thread and hands each new token id to a queue; detokenisation is
done once per token by the shared loop (not by re-decoding the whole text as
``TextIteratorStreamer`` does), and the prompt is never part of the output.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.backends.base import GenerationLock, SamplingParams
from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = frozenset({"mixtral", "mistral", "llama"})

_DONE = object()


def _import_transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "transformers and torch", "transformers", "The transformers backend"
        ) from exc
    return transformers


def _piece_table(tokenizer: Any) -> list[bytes]:
    """Bytes of every token of a SentencePiece (byte-fallback) vocabulary, as ``decode`` gives."""
    size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_ids)
    table: list[bytes] = []
    for token_id, piece in enumerate(pieces):
        if piece is None or token_id in special:
            table.append(b"")
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            table.append(bytes([int(piece[3:5], 16)]))
        else:
            table.append(piece.replace("▁", " ").encode("utf-8"))
    return table


class TransformersBackend:
    """A causal LM and its tokenizer. One generation at a time per loaded model."""

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        config = model.config
        self.model_name = model_name or Path(str(config.name_or_path or "model")).name
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 4096)
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.bos_token_id = int(tokenizer.bos_token_id)
        template = getattr(tokenizer, "chat_template", None)
        self.chat_template: str | None = template if isinstance(template, str) else None
        self._pieces = _piece_table(tokenizer)
        self._lock = GenerationLock()

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        torch_dtype: str = "auto",
        device_map: str | dict[str, Any] | None = "auto",
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        attn_implementation: str | None = None,
    ) -> TransformersBackend:
        """Load a checkpoint directory or hub id, checking the architecture first."""
        transformers = _import_transformers()
        path = Path(model).expanduser()
        source = str(path) if path.exists() else str(model)
        if not path.exists() and (source.startswith(("/", ".", "~")) or source.count("/") != 1):
            raise ModelLoadError(
                f"Model directory not found: {model!s}. Pass the path of a Hugging Face "
                "checkpoint directory (with config.json) or a hub id such as "
                "hfl/chinese-mixtral-instruct, or set CMR_MODEL_PATH."
            )
        try:
            config = transformers.AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Could not read a Hugging Face model config from {model!s} ({exc}). Pass the path "
                "of a checkpoint directory (with config.json), or a hub id such as "
                "hfl/chinese-mixtral-instruct that is already in the local cache."
            ) from exc
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"{model!s} is a '{config.model_type}' model; chinese-mixtral-rag runs Mixtral "
                "(or Mistral/Llama) checkpoints such as hfl/chinese-mixtral-instruct."
            )
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if device_map is not None:
            kwargs["device_map"] = device_map
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if load_in_4bit or load_in_8bit:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as exc:
                raise MissingDependencyError(
                    "bitsandbytes", "transformers", "4-bit/8-bit loading"
                ) from exc
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit
            )
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            lm = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"transformers could not load {model!s}: {exc}. Check that the directory holds "
                "complete weights (*.safetensors) and tokenizer files."
            ) from exc
        lm.eval()
        logger.info("loaded %s on %s", source, lm.device)
        return cls(lm, tokenizer, model_name=Path(source).name)

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=not special
        ).input_ids
        return [self.bos_token_id, *ids] if add_bos else list(ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces[token_id] if token_id < len(self._pieces) else b""

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )
        from transformers.generation.streamers import BaseStreamer

        ids: queue.Queue[Any] = queue.Queue()
        abandoned = threading.Event()

        class _Queue(BaseStreamer):
            """Receives the prompt once (skipped), then each new token id."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    ids.put(token)

            def end(self) -> None:
                ids.put(_DONE)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> Any:
                stop = abandoned.is_set() or should_stop()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)

        processors = LogitsProcessorList()
        if sampling.logit_bias:
            bias_ids = torch.tensor(list(sampling.logit_bias), dtype=torch.long)
            bias_values = torch.tensor(list(sampling.logit_bias.values()), dtype=torch.float32)

            class _Bias(LogitsProcessor):
                def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                    scores[:, bias_ids] += bias_values.to(scores.dtype)
                    return scores

            processors.append(_Bias())

        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new_tokens,
            do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None,
            top_k=sampling.top_k if not sampling.greedy else None,
            repetition_penalty=sampling.repetition_penalty,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.eos_token_id,
        )
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.model.device)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList([_Stop()]),
                        streamer=_Queue(),
                    )
            except BaseException as exc:  # re-raised in the consumer thread
                errors.append(exc)
                ids.put(_DONE)

        with self._lock:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            worker = threading.Thread(target=run, name="cmrag-generate", daemon=True)
            worker.start()
            try:
                while (token := ids.get()) is not _DONE:
                    yield token
                if errors:
                    raise errors[0]
            finally:
                abandoned.set()
                worker.join()
