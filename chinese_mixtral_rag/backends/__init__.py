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


def load_backend(name: BackendName, source: str, **options: Any) -> Backend | TextBackend:
    """Load (once per process) the model at ``source`` with ``options`` on backend ``name``."""
    key = _key(name, source, options)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        backend: Backend | TextBackend
        if name == "llama_cpp":
            from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

            backend = LlamaCppBackend.load(source, **options)
        elif name == "transformers":
            from chinese_mixtral_rag.backends.transformers import TransformersBackend

            backend = TransformersBackend.load(source, **options)
        elif name == "openai":
            from chinese_mixtral_rag.backends.remote import OpenAIServerBackend

            backend = OpenAIServerBackend.load(source, **options)
        else:
            raise ValueError(
                f"Unknown backend {name!r}: use 'llama_cpp', 'transformers' or 'openai'."
            )
        with _cache_lock:
            _cache[key] = backend
        return backend


def check_model(name: BackendName, source: str, **options: Any) -> None:
    """Raise the error loading ``source`` on backend ``name`` would raise, without loading its
    weights (seconds, not minutes): a missing, damaged or foreign model file, a tokenizer that
    cannot be read. A model server is reached (that loads nothing here). For work that would
    run long before the model is first used (``cmrag eval qa`` ingests a corpus first)."""
    if name == "llama_cpp":
        from chinese_mixtral_rag.backends.llama_cpp import LlamaCppBackend

        LlamaCppBackend.check(source)
    elif name == "transformers":
        from chinese_mixtral_rag.backends.transformers import TransformersBackend

        TransformersBackend.check(source)
    else:
        load_backend(name, source, **options)


def clear_cache() -> None:
    """Forget every loaded model (they are freed once nothing else refers to them)."""
    with _cache_lock:
        _cache.clear()
        _load_locks.clear()
