"""Load and sampling options shared by the chat model, the plain LLM and the settings.

Defined once here: :class:`~chinese_mixtral_rag.settings.Settings` inherits these fields (so every
knob has a ``CMR_*`` environment variable) and the LangChain models inherit them too. Pydantic
only: importing the options loads no backend library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chinese_mixtral_rag.backends.base import SamplingParams

BackendName = Literal["llama_cpp", "transformers"]

#: RAM for saved prefix states: about one full 32K-token window of real Chinese-Mixtral KV cache
#: (f16). Defined here rather than in ``prefix_cache`` so that importing the options stays
#: numpy-free.
DEFAULT_PREFIX_CACHE_BYTES = 4 * 1024**3
#: Disk budget of the prefix cache when a directory is configured.
DEFAULT_PREFIX_CACHE_DISK_BYTES = 32 * 1024**3


def infer_backend(model_path: str | None, model: str | None) -> BackendName:
    """``*.gguf`` files run on llama.cpp; checkpoint directories and hub ids on transformers."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.suffix.lower() == ".gguf" or path.is_file():
            return "llama_cpp"
        return "transformers"
    return "transformers" if model is not None else "llama_cpp"


class ModelOptions(BaseModel):
    """Which model to load, how to load it, and how to sample from it."""

    model_config = ConfigDict(protected_namespaces=())

    backend: BackendName | None = None
    """``"llama_cpp"`` (GGUF files) or ``"transformers"`` (HF checkpoints); None infers it from
    ``model_path``/``model``."""

    model_path: str | None = None
    """A GGUF file (llama.cpp) or a Hugging Face checkpoint directory (transformers)."""

    model: str | None = None
    """A Hugging Face hub id (e.g. ``hfl/chinese-mixtral-instruct``, from the local cache) or
    checkpoint directory for the transformers backend."""

    # llama.cpp
    n_ctx: int | None = Field(default=None, ge=1)
    """Context window in tokens; None uses the model's trained length (32768 for
    Chinese-Mixtral). Lower it to save memory (the KV cache grows with it)."""

    n_gpu_layers: int = -1
    """Layers offloaded to the GPU by llama.cpp (-1: all, when built with GPU support)."""

    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads for llama.cpp; None lets llama.cpp choose."""

    n_batch: int = Field(default=512, ge=1)
    """Prompt tokens evaluated per llama.cpp batch."""

    prefix_cache_bytes: int = Field(default=DEFAULT_PREFIX_CACHE_BYTES, ge=0)
    """RAM for saved KV states of earlier prompts (0: none), so a prompt sharing a long prefix
    with one of them (a follow-up over the same documents) evaluates only its new tail, even when
    other prompts came in between. A real Chinese-Mixtral's f16 KV cache takes ~4 GB per 32K
    tokens, so the 4 GiB default holds about one full window: lower it, or use
    ``prefix_cache_dir``."""

    prefix_cache_dir: str | None = None
    """Directory that also keeps the saved KV states on disk, shared by later processes using
    the same model file and context settings; None keeps them in RAM only."""

    prefix_cache_disk_bytes: int = Field(default=DEFAULT_PREFIX_CACHE_DISK_BYTES, ge=0)
    """Disk budget of ``prefix_cache_dir``; the least recently used states go first."""

    # transformers
    torch_dtype: str = "auto"
    """Weights dtype for transformers ("auto", "bfloat16", "float16", "float32")."""

    device_map: str | None = "auto"
    """transformers/accelerate device map ("auto", "cpu", "cuda:0"); None keeps the CPU."""

    load_in_4bit: bool = False
    """Quantize to 4 bits on load with bitsandbytes (GPU)."""

    load_in_8bit: bool = False
    """Quantize to 8 bits on load with bitsandbytes (GPU)."""

    attn_implementation: str | None = None
    """transformers attention kernel ("sdpa", "flash_attention_2", "eager")."""

    # sampling (defaults from hfl's Chinese-Mixtral inference scripts)
    temperature: float = Field(default=0.2, ge=0.0)
    """Sampling temperature; 0 decodes greedily."""

    max_tokens: int | None = Field(default=512, ge=1)
    """New tokens to generate at most; None fills the rest of the context window."""

    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    """Nucleus sampling mass."""

    top_k: int = Field(default=40, ge=0)
    """Sample among the k most likely tokens (0: no limit)."""

    repetition_penalty: float = Field(default=1.1, gt=0.0)
    """Penalty for repeating tokens (1.0: none)."""

    seed: int | None = None
    """Random seed for reproducible sampling; None draws a new one each call."""

    stop: list[str] | None = None
    """Strings that end the generation; they are not part of the output."""

    logit_bias: dict[int, float] | None = None
    """Added to the logits of these token ids before sampling (e.g. ``{2: -100}`` bans EOS)."""

    def resolved_backend(self) -> BackendName:
        return self.backend or infer_backend(self.model_path, self.model)

    def model_source(self) -> str:
        """The path or hub id to load, or a clear error when none is configured."""
        from chinese_mixtral_rag.errors import ModelLoadError

        source = self.model_path or self.model
        if not source:
            raise ModelLoadError(
                "No model configured. Pass model_path= (a Chinese-Mixtral GGUF file or checkpoint "
                "directory) or model= (a Hugging Face id), or set CMR_MODEL_PATH."
            )
        return source

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for the chosen backend's ``load``."""
        if self.resolved_backend() == "llama_cpp":
            return {
                "n_ctx": self.n_ctx,
                "n_gpu_layers": self.n_gpu_layers,
                "n_threads": self.n_threads,
                "n_batch": self.n_batch,
                "prefix_cache_bytes": self.prefix_cache_bytes,
                "prefix_cache_dir": self.prefix_cache_dir,
                "prefix_cache_disk_bytes": self.prefix_cache_disk_bytes,
            }
        return {
            "torch_dtype": self.torch_dtype,
            "device_map": self.device_map,
            "load_in_4bit": self.load_in_4bit,
            "load_in_8bit": self.load_in_8bit,
            "attn_implementation": self.attn_implementation,
        }

    def sampling(self, overrides: dict[str, Any]) -> SamplingParams:
        """Sampling parameters of one call: the object's values, overridden per call."""

        def pick(name: str) -> Any:
            value = overrides.get(name)
            return getattr(self, name) if value is None else value

        return SamplingParams(
            temperature=float(pick("temperature")),
            top_p=float(pick("top_p")),
            top_k=int(pick("top_k")),
            repetition_penalty=float(pick("repetition_penalty")),
            seed=pick("seed"),
            logit_bias=dict(pick("logit_bias") or {}),
        )


SAMPLING_KEYS = frozenset(
    {"temperature", "top_p", "top_k", "repetition_penalty", "seed", "logit_bias", "max_tokens"}
)
