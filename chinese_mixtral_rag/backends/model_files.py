"""Model files read without their weights, and the one exit hook that frees llama.cpp objects.

Token counting (the splitter), the embedder's input limit and the backends all read the same
kinds of files: GGUF metadata and vocabularies, ``tokenizer.json``, ``sentence_bert_config.json``.
They read them here, so a missing or damaged file gives the same clear error everywhere and each
vocabulary is loaded once per process.

llama.cpp objects must be closed before interpreter teardown (their finalizers fail once the
ctypes bindings are gone): everything that holds one registers it with :func:`close_at_exit`.
"""

from __future__ import annotations

import atexit
import json
import threading
import weakref
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = [
    "auto_tokenizer",
    "check_gguf_file",
    "close_at_exit",
    "declared_max_input",
    "fast_tokenizer",
    "gguf_vocab",
    "read_gguf_metadata",
]


class _Closable(Protocol):
    def close(self) -> None: ...


_TO_CLOSE: weakref.WeakSet[Any] = weakref.WeakSet()
_TO_CLOSE_LOCK = threading.Lock()


def close_at_exit(thing: _Closable) -> None:
    """Call ``thing.close()`` at interpreter exit unless it has been freed before."""
    with _TO_CLOSE_LOCK:
        _TO_CLOSE.add(thing)


@atexit.register
def _close_all() -> None:
    with _TO_CLOSE_LOCK:
        things = list(_TO_CLOSE)
        _TO_CLOSE.clear()
    for thing in things:
        thing.close()


# --- GGUF ---------------------------------------------------------------------------------------


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


_GGUF_VOCABS: dict[str, Llama] = {}
_GGUF_LOCK = threading.Lock()


def gguf_vocab(path: str | Path) -> Llama:
    """The vocabulary of a GGUF file, loaded by llama.cpp without weights, once per process.

    ``vocab_only=True`` reads the metadata and vocabulary only: on a 219 MB GGUF it takes ~20 ms
    and leaves the process's peak memory unchanged, where a full load maps in all 219 MB.
    """
    key = str(Path(path).expanduser().resolve())
    with _GGUF_LOCK:
        cached = _GGUF_VOCABS.get(key)
        if cached is not None:
            return cached
        check_gguf_file(Path(key))
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise MissingDependencyError(
                "llama-cpp-python", "llama-cpp", "Counting tokens with a GGUF model's vocabulary"
            ) from exc
        try:
            llama = Llama(model_path=key, vocab_only=True, verbose=False)
        except ValueError as exc:
            raise ModelLoadError(
                f"llama.cpp could not read the vocabulary of {key}: {exc}. The file may be"
                " truncated or made by a newer llama.cpp; download or convert it again."
            ) from exc
        _GGUF_VOCABS[key] = llama
        close_at_exit(llama)
        return llama


# --- Hugging Face tokenizers ---------------------------------------------------------------------


@lru_cache(maxsize=8)
def fast_tokenizer(model_dir: str) -> Any:
    """``model_dir/tokenizer.json`` through the tokenizers library alone, once per process, with
    the truncation and padding stored in the file switched off (all-MiniLM-L6-v2 ships both at
    128, which would cap every count at 128); None when the directory has no tokenizer.json.

    Milliseconds to load, where importing transformers costs seconds in every worker process.
    Callers only encode with it: the object is shared.
    """
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def auto_tokenizer(source: str, *, local_only: bool = True) -> Any:
    """A fresh ``AutoTokenizer`` for a checkpoint directory or hub id (no model weights).

    Fresh on every call: callers that change it (a counter switching off truncation) change
    only their own copy. ``local_only`` never touches the network.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            "transformers", "transformers", "Reading a Hugging Face tokenizer"
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load a tokenizer from {source}: {exc}. Give a Hugging Face checkpoint"
            " directory (tokenizer.json or tokenizer.model with tokenizer_config.json) or the id"
            " of a model already in the local Hugging Face cache."
        ) from exc


def declared_max_input(model_dir: str | Path) -> int | None:
    """The longest input a model declares, in its own tokens: sentence-transformers'
    ``max_seq_length`` (``sentence_bert_config.json``, where an embedder truncates), else the
    tokenizer's ``model_max_length``; None when neither is set. ``model_dir`` may also be the id
    of a model in the local Hugging Face cache."""
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        config = _model_file(str(model_dir), name)
        if config is None:
            continue
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Cannot read {config}: {exc}") from exc
        if isinstance(value, int) and 0 < value < 1_000_000:  # transformers' "unset" is 1e30
            return value
    return None


def _model_file(source: str, name: str) -> Path | None:
    """``source/name`` for a directory, else the file from the local hub cache (no network)."""
    local = Path(source).expanduser()
    if local.exists():
        found = local / name
        return found if found.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(source, name)
    return Path(cached) if isinstance(cached, str) else None
