"""GGUF models through llama-cpp-python, driven token by token with ``Llama.generate``.

Deliberate differences from LangChain's llama.cpp wrappers: the context defaults to the model's
trained length (32768 for Chinese-Mixtral) instead of 512, ``rope_freq_base`` is left to the
model's metadata (1e6) instead of forced to 1e4, and the batch size is 512 instead of 8.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.backends.base import GenerationLock, SamplingParams
from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

#: GGUF architectures that can run Chinese-Mixtral: llama.cpp stores Mixtral as "llama" with
#: expert metadata.
SUPPORTED_ARCHITECTURES = frozenset({"llama"})

#: llama.cpp's "pick a random seed" value.
_RANDOM_SEED = 0xFFFFFFFF


def check_gguf_file(path: Path) -> None:
    """Raise :class:`ModelLoadError` naming the problem unless ``path`` is a file starting GGUF."""
    if not path.exists():
        raise ModelLoadError(
            f"Model file not found: {path}. Set CMR_MODEL_PATH or pass model_path= with the path "
            "of a Chinese-Mixtral GGUF file (e.g. chinese-mixtral-instruct-q4_k.gguf)."
        )
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is a directory, not a GGUF file. For a Hugging Face checkpoint directory use "
            "backend='transformers'."
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). The download may "
            "be incomplete or corrupt: download it again, or convert the model with llama.cpp's "
            "convert_hf_to_gguf.py."
        )


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Read scalar and string metadata of a GGUF file without loading weights.

    Raises :class:`ModelLoadError` naming the problem when the file is missing or not a GGUF.
    """
    check_gguf_file(path)
    import gguf

    try:
        reader = gguf.GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise ModelLoadError(
            f"{path} is a damaged GGUF file ({exc}). Download or convert it again."
        ) from exc
    metadata: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if not fld.types or fld.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        metadata[name] = fld.contents()
    return metadata


def check_architecture(path: Path, metadata: dict[str, Any]) -> str:
    """Return the architecture name, or raise if it is not one Chinese-Mixtral uses."""
    arch = str(metadata.get("general.architecture", ""))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{path} holds a '{arch or 'unknown'}' model; chinese-mixtral-rag runs Mixtral/Llama "
            "architecture GGUFs (llama.cpp names them 'llama'). Use a Chinese-Mixtral GGUF such "
            "as hfl/chinese-mixtral-instruct-gguf."
        )
    return arch


class LlamaCppBackend:
    """A GGUF model loaded by llama.cpp. One generation at a time (llama.cpp is not reentrant)."""

    def __init__(self, llama: Llama, *, model_name: str | None = None) -> None:
        self.llama = llama
        self.model_name = model_name or Path(llama.model_path).name
        self.context_length = int(llama.n_ctx())
        self.eos_token_id = int(llama.token_eos())
        self.bos_token_id = int(llama.token_bos())
        self.chat_template: str | None = llama.metadata.get("tokenizer.chat_template")
        self._lock = GenerationLock()
        self._pieces = [llama.detokenize([i]) for i in range(llama.n_vocab())]

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        *,
        n_ctx: int | None = None,
        n_gpu_layers: int = -1,
        n_threads: int | None = None,
        n_batch: int = 512,
        verbose: bool = False,
    ) -> LlamaCppBackend:
        """Load a GGUF file, checking it first so that errors name the file and the fix."""
        path = Path(model_path).expanduser()
        metadata = read_gguf_metadata(path)
        arch = check_architecture(path, metadata)
        trained = int(metadata.get(f"{arch}.context_length", 0) or 0)
        if n_ctx is not None and trained and n_ctx > trained:
            logger.warning(
                "n_ctx=%d exceeds the model's trained context of %d tokens; quality may drop",
                n_ctx,
                trained,
            )
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise MissingDependencyError(
                "llama-cpp-python", "llama-cpp", "The GGUF backend"
            ) from exc
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx or 0,  # 0: the trained context length stored in the GGUF
                n_gpu_layers=n_gpu_layers,
                n_threads=n_threads,
                n_batch=n_batch,
                verbose=verbose,
            )
        except ValueError as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {path}: {exc}. The file may be truncated or made by a "
                "newer llama.cpp; run with verbose=True to see llama.cpp's log."
            ) from exc
        logger.info("loaded %s with n_ctx=%d", path.name, llama.n_ctx())
        return cls(llama)

    def close(self) -> None:
        """Free the llama.cpp model and context now rather than at interpreter exit."""
        self.llama.close()

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces[token_id] if token_id != self.bos_token_id else b""

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        with self._lock:
            llama = self.llama
            llama.set_seed(sampling.seed if sampling.seed is not None else _RANDOM_SEED)
            processors = None
            if sampling.logit_bias:
                from llama_cpp import LogitsProcessorList

                ids = list(sampling.logit_bias)
                bias = [sampling.logit_bias[i] for i in ids]

                def apply_bias(_: Any, logits: Any) -> Any:
                    logits[ids] += bias
                    return logits

                processors = LogitsProcessorList([apply_bias])
            tokens = llama.generate(
                list(prompt_ids),
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=0.0,
                temp=max(sampling.temperature, 0.0),
                repeat_penalty=sampling.repetition_penalty,
                logits_processor=processors,
            )
            try:
                for count, token in enumerate(tokens, start=1):
                    yield token
                    if count >= max_new_tokens or should_stop():
                        return
            finally:
                tokens.close()
