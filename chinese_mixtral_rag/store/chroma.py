"""Chroma clients, one per persist directory or server per process, as Chroma requires.

Embedded ``PersistentClient`` by default, a Chroma server (``HttpClient``) when a host is set.
Chroma's own default embedding function (which downloads an ONNX model) is never used: vectors
always come from the store's embedder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


#: The file an embedded store keeps its database in: a folder without it holds no store yet.
DATABASE_FILE = "chroma.sqlite3"


def store_exists(persist_dir: Path, host: str | None) -> bool:
    """Whether there is a store to read: a server, or a folder holding Chroma's database.
    Opening a client on a folder creates the database, so readers ask this first (reading
    never creates a store)."""
    return host is not None or (persist_dir.expanduser() / DATABASE_FILE).is_file()


def is_missing_collection(exc: Exception) -> bool:
    """Whether Chroma raised ``exc`` because the collection does not exist."""
    try:
        from chromadb.errors import NotFoundError
    except ImportError:  # pragma: no cover - chromadb is installed when a client exists
        return False
    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


#: What Chroma's and SQLite's messages say, and what it means for the user.
_CAUSES = (
    (
        (
            "disk is full",
            "no space left",
            "enospc",
            "file too large",
            "disk i/o error",
            "compaction",
            "compactor",  # a write that could not be finished, retried by the next read
            "failed to apply logs",
            "efbig",
        ),
        "the disk is full or failing",
        "free some space (or move the store with CMR_PERSIST_DIR) and run the same command again",
    ),
    (
        ("readonly", "read-only", "permission denied", "operation not permitted"),
        "it cannot be written (read-only or not permitted)",
        "make the folder writable by this user and run the same command again",
    ),
    (
        ("database is locked", "locked"),
        "another process holds it locked",
        "wait for the other ingest or app to finish, then run the same command again",
    ),
    (
        ("malformed", "not a database", "corrupt", "database disk image"),
        "its database is damaged",
        "restore it from a backup, or ingest into a new CMR_PERSIST_DIR (the documents are "
        "still on disk)",
    ),
)


def describe_failure(exc: BaseException, where: str, action: str, free_dir: Path | None) -> str:
    """One sentence for a failure of the store: what failed, why, and what to do."""
    text = f"{type(exc).__name__}: {exc}".lower()
    known = ((cause, fix) for needles, cause, fix in _CAUSES if any(n in text for n in needles))
    cause, fix = next(
        known, (f"it failed ({type(exc).__name__}: {exc})", "run the same command again")
    )
    free = ""
    if free_dir is not None:
        import shutil

        try:
            free = f"; {shutil.disk_usage(free_dir).free / (1 << 20):.0f} MB free there now"
        except OSError:
            free = ""
    return (
        f"The knowledge base store at {where} could not be used while {action}: {cause}{free}. "
        f"Nothing already stored is lost; {fix}."
    )


def is_store_failure(exc: BaseException) -> bool:
    """An error of Chroma, of SQLite or of the file system underneath the store."""
    import sqlite3

    try:
        from chromadb.errors import ChromaError
    except ImportError:  # pragma: no cover - no chromadb, no store
        return isinstance(exc, sqlite3.Error | OSError)
    return isinstance(exc, ChromaError | sqlite3.Error | OSError)


@contextmanager
def store_failures(
    where: str,
    action: str,
    free_dir: Path | None,
    on_failure: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Chroma, SQLite and file-system errors inside the block as one :class:`StoreError` saying
    what failed while doing ``action`` at ``where``, and what to do; ``on_failure`` hears the
    message first (an ingest remembers it so that its other thread touches nothing more)."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        message = describe_failure(exc, where, action, free_dir)
        if on_failure is not None:
            on_failure(message)
        raise StoreError(message) from exc
