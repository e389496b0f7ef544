"""GGUF models through llama-cpp-python, driven token by token with ``Llama.generate``.

Deliberate differences from LangChain's llama.cpp wrappers: the context defaults to the model's
trained length (32768 for Chinese-Mixtral) instead of 512, ``rope_freq_base`` is left to the
model's metadata (1e6) instead of forced to 1e4, and the batch size is 512 instead of 8.

Prompts that share a long prefix with an earlier one (a follow-up question over the same retrieved
documents) restore that earlier KV state from a :class:`~.prefix_cache.PrefixCache` instead of
evaluating the prefix again, even when other prompts came in between.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from chinese_mixtral_rag.backends.base import GenerationLock, SamplingParams
from chinese_mixtral_rag.backends.grammar import GrammarMask, import_llguidance
from chinese_mixtral_rag.backends.model_files import close_at_exit, read_gguf_metadata
from chinese_mixtral_rag.backends.prefix_cache import (
    DEFAULT_DISK_BYTES,
    DEFAULT_MAX_BYTES,
    PrefixCache,
    common_prefix_len,
)
from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaState

logger = logging.getLogger(__name__)

#: GGUF architectures that can run Chinese-Mixtral: llama.cpp stores Mixtral as "llama" with
#: expert metadata.
SUPPORTED_ARCHITECTURES = frozenset({"llama"})

#: llama.cpp's "pick a random seed" value.
_RANDOM_SEED = 0xFFFFFFFF


def check_architecture(
    path: Path, metadata: dict[str, Any], *, allow_other_architectures: bool = False
) -> str:
    """Return the architecture name, or raise if it is not one Chinese-Mixtral uses.

    ``allow_other_architectures`` (the caller brings the model's own chat template) accepts
    any architecture llama.cpp runs, with a warning instead of the error.
    """
    arch = str(metadata.get("general.architecture", ""))
    if arch in SUPPORTED_ARCHITECTURES:
        return arch
    if allow_other_architectures:
        logger.warning(
            "%s holds a '%s' model: chinese-mixtral-rag is tuned for Chinese-Mixtral (token "
            "counts, prompts and defaults); running it with the chat template given",
            path.name,
            arch or "unknown",
        )
        return arch
    raise ModelLoadError(
        f"{path} holds a '{arch or 'unknown'}' model; chinese-mixtral-rag runs Mixtral/Llama "
        "architecture GGUFs (llama.cpp names them 'llama'). Use a Chinese-Mixtral GGUF such "
        "as hfl/chinese-mixtral-instruct-gguf, or run this model anyway with its own chat "
        "template: ChineseMixtralChat(chat_template='model') for the template stored in the "
        "file (CMR_CHAT_TEMPLATE=model), or chat_template= a Jinja template."
    )


def special_tokens(llama: Llama) -> tuple[str, str, frozenset[int]]:
    """BOS and EOS as text (their ``tokenizer.ggml.tokens`` entries, "" for none) and every
    token llama.cpp ends generation on: EOS, ``tokenizer.ggml.eot_token_id`` and ``eom``, and
    the end-of-turn tokens it knows by name (``<|im_end|>``, ``<|eot_id|>``, ...)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)

    def text(token_id: int) -> str:
        raw = llama_cpp.llama_vocab_get_text(vocab, token_id) if token_id >= 0 else None
        return raw.decode("utf-8", "replace") if raw else ""

    eos = int(llama.token_eos())
    stops = {i for i in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    if eos >= 0:
        stops.add(eos)
    return text(int(llama.token_bos())), text(eos), frozenset(stops)


#: Where the reused part of the last prompt came from: nothing, the live context, a saved state.
PrefixSource = Literal["none", "live", "cache"]

#: Context parameters that do not change what a saved state means (speed, logging, threads).
_STATE_NEUTRAL_PARAMS = frozenset(
    {"n_batch", "n_ubatch", "n_threads", "n_threads_batch", "no_perf", "offload_kqv", "op_offload"}
)


def snapshot_state(llama: Llama) -> LlamaState:
    """``Llama.save_state`` with one copy of the KV cache instead of three, and no logit rows.

    ``save_state`` allocates the state, copies it into a compacted array and then into ``bytes``
    (12 GB transient for a 4 GB 32K-token Mixtral cache), and keeps ``n_batch`` rows of logits
    (113 MB at Chinese-Mixtral's 55296-token vocabulary) that nothing reads unless the model
    was loaded with ``logits_all``. ``Llama.load_state`` accepts the result unchanged (one
    logit row broadcasts over the rows it fills).
    """
    from llama_cpp import LlamaState, llama_state_get_data, llama_state_get_size

    size = int(llama_state_get_size(llama.ctx))
    blob = bytearray(size)
    view = (ctypes.c_uint8 * size).from_buffer(blob)
    written = int(llama_state_get_data(llama.ctx, view, size))
    del view  # release the buffer export so that the bytearray can shrink
    if written > size:
        raise RuntimeError(f"llama.cpp wrote {written} state bytes into a {size}-byte buffer")
    del blob[written:]
    n_tokens = int(llama.n_tokens)
    if getattr(llama, "_logits_all", True):
        scores = llama.scores[:n_tokens].copy()
    else:
        scores = np.zeros((1, llama.scores.shape[1]), dtype=np.single)
    return LlamaState(
        input_ids=llama.input_ids.copy(),
        scores=scores,
        n_tokens=n_tokens,
        llama_state=blob,  # type: ignore[arg-type]  # a bytearray works and saves a copy
        llama_state_size=written,
        seed=int(getattr(llama, "_seed", 0)),
    )


def state_namespace(llama: Llama, model_path: Path) -> str:
    """A name for "states of this model file under these context settings", for disk reuse.

    States hold KV values for exactly this model and layout (context size, KV types, RoPE
    settings, flash attention), so another model or setting must never restore them.
    """
    import llama_cpp

    params = llama.context_params
    settings = {
        name: getattr(params, name)
        for name, _ in params._fields_
        if name not in _STATE_NEUTRAL_PARAMS
        and isinstance(getattr(params, name), (bool, int, float))
    }
    info = model_path.stat()
    identity = [
        str(model_path.resolve()),
        info.st_size,
        info.st_mtime_ns,
        llama_cpp.__version__,
        sorted(settings.items()),
    ]
    digest = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9_.]", "_", model_path.stem[:40])
    return f"{readable}.{digest[:16]}"


def reusable_prefix(cached: Sequence[int] | np.ndarray[Any, Any], prompt: Sequence[int]) -> int:
    """Prompt tokens ``Llama.generate`` takes from a context holding ``cached`` tokens.

    The longest common prefix, less one when it covers the whole prompt: llama.cpp must evaluate
    at least the last prompt token to get the logits of the first new token.
    """
    if not prompt:
        return 0
    return min(common_prefix_len(cached, prompt), len(prompt) - 1)


class LlamaCppBackend:
    """A GGUF model loaded by llama.cpp. One generation at a time (llama.cpp is not reentrant).

    ``evaluated_tokens`` counts every token llama.cpp evaluated through ``Llama.eval`` for this
    model; ``last_prompt_evaluated``/``last_prompt_reused`` split the last prompt into tokens
    evaluated and tokens reused (from the live context or a state restored from
    ``prefix_cache``); ``last_prefix_source`` says which.
    """

    def __init__(
        self,
        llama: Llama,
        *,
        model_name: str | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.llama = llama
        self.model_name = model_name or Path(llama.model_path).name
        self.context_length = int(llama.n_ctx())
        self.eos_token_id = int(llama.token_eos())
        self.bos_token_id = int(llama.token_bos())
        self.bos_token, self.eos_token, self.stop_token_ids = special_tokens(llama)
        self.chat_template: str | None = llama.metadata.get("tokenizer.chat_template")
        self.prefix_cache = (
            prefix_cache if prefix_cache is not None and prefix_cache.enabled else None
        )
        self.evaluated_tokens = 0
        self.last_prompt_evaluated = 0
        self.last_prompt_reused = 0
        self.last_prefix_source: PrefixSource = "none"
        self._lock = GenerationLock()
        self._grammar_tokenizer: Any = None
        self._pieces = [llama.detokenize([i]) for i in range(llama.n_vocab())]
        self._count_evaluations()
        close_at_exit(self)

    def _count_evaluations(self) -> None:
        """Wrap this ``Llama``'s ``eval`` to count the tokens it really decodes.

        ``Llama.generate`` decodes everything through ``self.eval``, which advances ``n_tokens``
        by each decoded batch. (llama.cpp's own ``llama_perf_context`` counters report 1 for 0,
        so their differences are off by one on a fresh context.)
        """
        llama = self.llama
        evaluate = llama.eval

        def counting_eval(tokens: Sequence[int]) -> None:
            before = llama.n_tokens
            try:
                evaluate(tokens)
            finally:
                self.evaluated_tokens += max(0, llama.n_tokens - before)

        setattr(llama, "eval", counting_eval)  # noqa: B010 (mypy refuses assigning a method)

    @classmethod
    def check(
        cls, model_path: str | Path, *, allow_other_architectures: bool = False
    ) -> dict[str, Any]:
        """The GGUF's metadata, read without its weights, once it is known to be a whole GGUF
        file of an architecture we run (what :meth:`load` would refuse, in milliseconds)."""
        path = Path(model_path).expanduser()
        metadata = read_gguf_metadata(path)  # a truncated file fails here: its tensors overrun
        check_architecture(path, metadata, allow_other_architectures=allow_other_architectures)
        return metadata

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
        prefix_cache_bytes: int = DEFAULT_MAX_BYTES,
        prefix_cache_dir: str | Path | None = None,
        prefix_cache_disk_bytes: int = DEFAULT_DISK_BYTES,
        allow_other_architectures: bool = False,
    ) -> LlamaCppBackend:
        """Load a GGUF file, checking it first so that errors name the file and the fix.

        ``prefix_cache_bytes`` of RAM (0: none) and, with ``prefix_cache_dir``,
        ``prefix_cache_disk_bytes`` of disk keep KV states of earlier prompts for reuse; a real
        Chinese-Mixtral needs about 4 GB per full 32K-token window (f16 KV cache).
        ``allow_other_architectures`` loads a GGUF that is no Mixtral/Llama, with a warning.
        """
        path = Path(model_path).expanduser()
        metadata = cls.check(path, allow_other_architectures=allow_other_architectures)
        arch = str(metadata["general.architecture"])
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
        cache = None
        if prefix_cache_bytes > 0 or prefix_cache_dir is not None:
            cache = PrefixCache(
                prefix_cache_bytes,
                directory=prefix_cache_dir,
                max_disk_bytes=prefix_cache_disk_bytes,
                namespace=state_namespace(llama, path),
            )
        return cls(llama, prefix_cache=cache)

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
            prompt = list(prompt_ids)
            self._reuse_prefix(prompt)
            # After any load_state, which restores the seed saved with the state.
            llama.set_seed(sampling.seed if sampling.seed is not None else _RANDOM_SEED)
            from llama_cpp import LogitsProcessorList

            processors = None
            if sampling.logit_bias:
                ids = list(sampling.logit_bias)
                bias = [sampling.logit_bias[i] for i in ids]

                def apply_bias(_: Any, logits: Any) -> Any:
                    logits[ids] += bias
                    return logits

                processors = LogitsProcessorList([apply_bias])
            grammar = self._grammar_mask(sampling.json_schema) if sampling.json_schema else None
            if grammar is not None:
                processors = processors or LogitsProcessorList()
                processors.append(grammar)
            start = self.evaluated_tokens
            tokens = llama.generate(
                prompt,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=0.0,
                temp=max(sampling.temperature, 0.0),
                repeat_penalty=sampling.repetition_penalty,
                logits_processor=processors,
            )
            clean_exit = True
            try:
                for count, token in enumerate(tokens, start=1):
                    if count == 1:  # the prompt has been evaluated by now
                        self.last_prompt_evaluated = self.evaluated_tokens - start
                        self.last_prompt_reused = len(prompt) - self.last_prompt_evaluated
                    if grammar is not None:
                        grammar.accept(token)
                    yield token
                    if count >= max_new_tokens or should_stop():
                        return
            except GeneratorExit:  # the consumer closed the stream: the context is consistent
                raise
            except BaseException:
                clean_exit = False
                raise
            finally:
                tokens.close()
                if clean_exit:
                    self._save_prefix()

    def _grammar_mask(self, schema: str) -> GrammarMask:
        """A fresh matcher of the schema's grammar (the vocabulary's tables are built once per
        model, about a second)."""
        if self._grammar_tokenizer is None:
            import_llguidance("llama-cpp")
            import llguidance.llamacpp

            with warnings.catch_warnings():  # it calls a deprecated llama.cpp name per token
                warnings.simplefilter("ignore", DeprecationWarning)
                self._grammar_tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
                    self.llama._model.vocab, eos_token=sorted(self.stop_token_ids)
                )
        return GrammarMask(
            self._grammar_tokenizer, schema, int(self.llama.n_vocab()), extra="llama-cpp"
        )

    def _reuse_prefix(self, prompt: list[int]) -> None:
        """Restore the saved state sharing the most with ``prompt`` when it beats the live one."""
        llama = self.llama
        live = reusable_prefix(llama.input_ids[: llama.n_tokens], prompt)
        self.last_prompt_reused = live
        self.last_prompt_evaluated = len(prompt) - live
        self.last_prefix_source = "live" if live else "none"
        cache = self.prefix_cache
        if cache is None or live >= len(prompt) - 1:
            return
        try:
            match = cache.best_match(
                prompt, min_prefix=max(live + 1, cache.min_tokens), max_prefix=len(prompt) - 1
            )
        except (MemoryError, OSError, ValueError) as exc:  # a cache problem must not fail a call
            logger.warning("prefix cache lookup failed: %s", exc)
            return
        if match is None:
            return
        try:
            llama.load_state(match.state)  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as exc:
            logger.warning("discarding a saved prefix state llama.cpp refused: %s", exc)
            cache.discard(match.tokens)
            # The context may be half-written: evaluate the whole prompt again.
            llama.reset()  # type: ignore[no-untyped-call]
            self.last_prompt_reused, self.last_prompt_evaluated = 0, len(prompt)
            self.last_prefix_source = "none"
            return
        self.last_prompt_reused = match.prefix_len
        self.last_prompt_evaluated = len(prompt) - match.prefix_len
        self.last_prefix_source = "cache"

    def _save_prefix(self) -> None:
        """Save the context's state (prompt plus answer so far) after generation ended.

        Runs once the answer is out, so it never delays a first token; failures only log.
        """
        cache = self.prefix_cache
        llama = self.llama
        if cache is None or llama.n_tokens < cache.min_tokens:
            return
        tokens = llama.input_ids[: llama.n_tokens].copy()
        try:
            if not cache.covers(tokens):
                cache.save(tokens, snapshot_state(llama))
        except (MemoryError, OSError, RuntimeError) as exc:
            logger.warning("could not save the prefix state: %s", exc)
