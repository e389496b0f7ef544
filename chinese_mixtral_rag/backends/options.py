"""Load and sampling options shared by the chat model, the plain LLM and the settings.

Defined once here: :class:`~chinese_mixtral_rag.settings.Settings` inherits these fields (so every
knob has a ``CMR_*`` environment variable) and the LangChain models inherit them too. Pydantic
only: importing the options loads no backend library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chinese_mixtral_rag.backends.base import SamplingParams

BackendName = Literal["llama_cpp", "transformers", "openai"]

#: RAM for saved prefix states: about one full 32K-token window of real Chinese-Mixtral KV cache
#: (f16). Defined here rather than in ``prefix_cache`` so that importing the options stays
#: numpy-free.
DEFAULT_PREFIX_CACHE_BYTES = 4 * 1024**3
#: Disk budget of the prefix cache when a directory is configured.
DEFAULT_PREFIX_CACHE_DISK_BYTES = 32 * 1024**3


def infer_backend(
    model_path: str | None, model: str | None, base_url: str | None = None
) -> BackendName:
    """A server URL means the server; ``*.gguf`` files run on llama.cpp; checkpoint directories
    and hub ids on transformers."""
    if base_url:
        return "openai"
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
    """``"llama_cpp"`` (GGUF files), ``"transformers"`` (HF checkpoints) or ``"openai"`` (an
    OpenAI-compatible server); None infers it from ``openai_base_url``/``model_path``/``model``."""

    model_path: str | None = None
    """A GGUF file (llama.cpp) or a Hugging Face checkpoint directory (transformers). With
    ``backend="openai"``: a local GGUF of the served model, whose tokenizer counts tokens when
    the server has no tokenize endpoint."""

    model: str | None = None
    """A Hugging Face hub id (e.g. ``hfl/chinese-mixtral-instruct``, from the local cache) or
    checkpoint directory for the transformers backend. With ``backend="openai"``: the served
    model's name (None: the server's only model, from ``/v1/models``)."""

    # an OpenAI-compatible server (vLLM, llama.cpp's llama-server)
    openai_base_url: str | None = None
    """The server's URL ending in ``/v1`` (e.g. ``http://gpu-box:8000/v1``); setting it selects
    ``backend="openai"``. The LangChain classes also take it as ``base_url=``."""

    openai_api_key: SecretStr | None = None
    """The server's API key, sent as a bearer token (``api_key=`` in the LangChain classes)."""

    request_timeout: float = Field(default=600.0, gt=0)
    """Seconds to wait for the server's next bytes (a long prompt on a busy GPU takes a while)."""

    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for the server to accept a connection."""

    max_retries: int = Field(default=2, ge=0)
    """Retries, with exponential backoff, when the server refuses a connection or answers
    429/502/503/504 (never once an answer has started streaming)."""

    chat_endpoint: bool = False
    """Send the conversation to the server's ``/v1/chat/completions`` (its own chat template)
    instead of our exact Mixtral-Instruct prompt to ``/v1/completions``."""

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

    def model_configured(self) -> bool:
        """Whether a model is named at all (a path, a hub id or a server): without one only
        search works (no loading is tried, so nothing is slow or fails here)."""
        return bool(self.model_path or self.model or self.openai_base_url)

    def resolved_backend(self) -> BackendName:
        return self.backend or infer_backend(self.model_path, self.model, self.openai_base_url)

    def model_source(self) -> str:
        """The path, hub id or server URL to load, or a clear error when none is configured."""
        from chinese_mixtral_rag.errors import ModelLoadError

        if self.resolved_backend() == "openai":
            if not self.openai_base_url:
                raise ModelLoadError(
                    'backend="openai" needs the server\'s URL: pass openai_base_url= (e.g. '
                    "http://127.0.0.1:8000/v1) or set CMR_OPENAI_BASE_URL."
                )
            return self.openai_base_url
        source = self.model_path or self.model
        if not source:
            raise ModelLoadError(
                "No model configured. Pass model_path= (a Chinese-Mixtral GGUF file or checkpoint "
                "directory) or model= (a Hugging Face id), or set CMR_MODEL_PATH; for a model on "
                "a server (vLLM, llama.cpp), openai_base_url= (CMR_OPENAI_BASE_URL)."
            )
        return source

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for the chosen backend's ``load``."""
        backend = self.resolved_backend()
        if backend == "openai":
            key = self.openai_api_key
            return {
                "api_key": key.get_secret_value() if key is not None else None,
                "model": self.model,
                "timeout": self.request_timeout,
                "connect_timeout": self.connect_timeout,
                "max_retries": self.max_retries,
                "chat_endpoint": self.chat_endpoint,
                "n_ctx": self.n_ctx,
                "tokenizer_path": self.model_path,
            }
        if backend == "llama_cpp":
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
