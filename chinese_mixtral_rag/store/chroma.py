"""Chroma clients, one per persist directory or server per process, as Chroma requires.

Embedded ``PersistentClient`` by default, a Chroma server (``HttpClient``) when a host is set.
Chroma's own default embedding function (which downloads an ONNX model) is never used: vectors
always come from the store's embedder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.errors import MissingDependencyError, StoreError

_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def chroma_client(persist_dir: Path, host: str | None, port: int) -> Any:
    """The process's client for a persist directory or a server (created on first use)."""
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError as exc:
        raise MissingDependencyError("chromadb", "rag", "The document store") from exc
    key = f"http://{host}:{port}" if host else str(persist_dir)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            if host:
                try:
                    client = chromadb.HttpClient(host=host, port=port, settings=settings)
                    client.heartbeat()
                except Exception as exc:
                    raise StoreError(
                        f"Cannot reach the Chroma server at {host}:{port} ({exc}). Start it with "
                        f"`chroma run --path DIR --host {host} --port {port}`, or unset "
                        "CMR_CHROMA_HOST to use the embedded store."
                    ) from exc
            else:
                persist_dir.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(persist_dir), settings=settings)
            _CLIENTS[key] = client
        return _CLIENTS[key]


def is_missing_collection(exc: Exception) -> bool:
    """Whether Chroma raised ``exc`` because the collection does not exist."""
    try:
        from chromadb.errors import NotFoundError
    except ImportError:  # pragma: no cover - chromadb is installed when a client exists
        return False
    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)
