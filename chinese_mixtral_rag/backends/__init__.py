"""Backends and the one process-wide cache of loaded models.

Everything below LangChain lives in this wing: the backend protocol, the llama.cpp and transformers
backends, the prefix cache, the model options, the one generation loop and the reading of model
files. It imports no LangChain and nothing from the other wings (only ``errors``), so a backend
can be used, tested and replaced without the rest of the package.

Building many chat objects over the same weights is cheap: the first use loads the model, later
ones (same backend, path and load options) get the same loaded object. Loaded llama.cpp models
are closed at interpreter exit (:func:`~.model_files.close_at_exit`).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.backends.base import Backend, SamplingParams, TextBackend

if TYPE_CHECKING:  # the options need pydantic: not worth importing for a type name
    from chinese_mixtral_rag.backends.options import BackendName

__all__ = [
    "Backend",
    "SamplingParams",
    "TextBackend",
    "check_model",
    "clear_cache",
    "load_backend",
]

_cache: dict[Hashable, Backend | TextBackend] = {}
_cache_lock = threading.Lock()
_load_locks: dict[Hashable, threading.Lock] = {}
#: Cache keys loaded with other architectures allowed: a later load without the allowance
#: checks the model again (without its weights) instead of getting what it would have refused.
_allowed_other: set[Hashable] = set()


def _key(name: BackendName, source: str, options: dict[str, Any]) -> Hashable:
    def freeze(value: Any) -> Hashable:
        if isinstance(value, dict):
            return tuple(sorted((k, freeze(v)) for k, v in value.items()))
        if isinstance(value, list):
            return tuple(freeze(v) for v in value)
        return value  # type: ignore[no-any-return]

    resolved = (
        str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source
    )
    return (name, resolved, freeze(options))


def load_backend(
    name: BackendName, source: str, *, allow_other_architectures: bool = False, **options: Any
) -> Backend | TextBackend:
    """Load (once per process) the model at ``source`` with ``options`` on backend ``name``.

    ``allow_other_architectures`` (a chat template is given) lets the local backends load a
    model that is no Mixtral/Llama, with a warning; without it they refuse one. It does not
    identify the loaded model: callers with and without it share one copy of the weights.
    """
    key = _key(name, source, options)
    with _cache_lock:
        backend = _cache.get(key)
        lock = _load_locks.setdefault(key, threading.Lock())
    if backend is None:
        with lock:
            with _cache_lock:
                backend = _cache.get(key)
            if backend is None:
                backend = _load(name, source, allow_other_architectures, options)
                with _cache_lock:
                    _cache[key] = backend
                    if allow_other_architectures and name != "openai":
                        _allowed_other.add(key)
                return backend
    with _cache_lock:
        recheck = key in _allowed_other and not allow_other_architectures
    if recheck:  # loaded for a caller that allowed what this one may not
        check_model(name, source)
    return backend


def _load(
    name: BackendName, source: str, allow_other_architectures: bool, options: dict[str, Any]
) -> Backend | TextBackend:
    if name == "llama_cpp":
        from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend.load(
            source, allow_other_architectures=allow_other_architectures, **options
        )
    if name == "transformers":
        from chinese_mixtral_rag.backends.transformers import TransformersBackend

        return TransformersBackend.load(
            source, allow_other_architectures=allow_other_architectures, **options
        )
    if name == "openai":
        from chinese_mixtral_rag.backends.remote import OpenAIServerBackend

        return OpenAIServerBackend.load(source, **options)
    raise ValueError(f"Unknown backend {name!r}: use 'llama_cpp', 'transformers' or 'openai'.")


def check_model(
    name: BackendName, source: str, *, allow_other_architectures: bool = False, **options: Any
) -> None:
    """Raise the error loading ``source`` on backend ``name`` would raise, without loading its
    weights (seconds, not minutes): a missing, damaged or foreign model file, a tokenizer that
    cannot be read. A model server is reached (that loads nothing here). For work that would
    run long before the model is first used (``cmrag eval qa`` ingests a corpus first)."""
    if name == "llama_cpp":
        from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

        LlamaCppBackend.check(source, allow_other_architectures=allow_other_architectures)
    elif name == "transformers":
        from chinese_mixtral_rag.backends.transformers import TransformersBackend

        TransformersBackend.check(source, allow_other_architectures=allow_other_architectures)
    else:
        load_backend(name, source, **options)


def clear_cache() -> None:
    """Forget every loaded model (they are freed once nothing else refers to them)."""
    with _cache_lock:
        _cache.clear()
        _load_locks.clear()
        _allowed_other.clear()
