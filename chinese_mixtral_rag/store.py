"""A knowledge base: one Chroma collection (chunks + dense vectors) and its BM25 index.

Chroma is the single source of truth. Every chunk carries its file's content hash, the file's
chunk count and the chunking settings, so the state of each file can be read back from the
collection alone: a file is stored completely exactly when all its chunks carry one hash and
their number equals the recorded count. That is what makes ingest idempotent and safe to kill at
any moment: a half-written file simply reads as "changed" and is redone.

The collection records its embedding model; opening it with another model is an error (vectors of
two models in one index are silent garbage). Embedded ``PersistentClient`` by default, a Chroma
server (``HttpClient``) when a host is set.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.embeddings import (
    EmbeddingModelInfo,
    load_embeddings,
    resolve_embedding_model,
)
from chinese_mixtral_rag.errors import ChineseMixtralError, MissingDependencyError
from chinese_mixtral_rag.lexical import LexicalIndex

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from chinese_mixtral_rag.settings import StoreOptions

logger = logging.getLogger(__name__)

#: Version of the chunk metadata layout, recorded in the collection.
SCHEMA = 1
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


class StoreError(ChineseMixtralError):
    """The knowledge base cannot be opened or used as asked (the message says how to fix it)."""


@dataclass
class FileState:
    """What the collection holds for one source file."""

    source: str
    root: str = ""
    hashes: set[str] = field(default_factory=set)
    chunkers: set[str] = field(default_factory=set)
    expected: int = 0
    chunks: int = 0
    title: str = ""
    ingested_at: str = ""

    def is_complete(self, file_hash: str, chunker: str) -> bool:
        """All chunks of exactly this content and chunking are stored, and nothing else."""
        return (
            self.hashes == {file_hash}
            and self.chunkers == {chunker}
            and self.chunks == self.expected
        )


def _client(persist_dir: Path | None, host: str | None, port: int) -> Any:
    """One Chroma client per persist directory (or server) per process, as Chroma requires."""
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
                assert persist_dir is not None
                persist_dir.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(persist_dir), settings=settings)
            _CLIENTS[key] = client
        return _CLIENTS[key]


class KnowledgeBase:
    """A named collection of document chunks, its BM25 index and its embedding model."""

    def __init__(
        self,
        collection: str,
        embedding: EmbeddingModelInfo,
        *,
        persist_dir: Path,
        host: str | None = None,
        port: int = 8000,
        lexical_dir: Path | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        if not 3 <= len(collection) <= 512 or not all(
            c.isalnum() or c in "._-" for c in collection
        ):
            raise StoreError(
                f"Invalid collection name {collection!r}: use 3-512 characters from a-z, A-Z, "
                "0-9, '.', '_' and '-' (Chroma's rule), e.g. 'laws' or 'my-docs'."
            )
        self.name = collection
        self.embedding = embedding
        self.persist_dir = persist_dir.expanduser()
        self.host = host
        self.port = port
        where = f"{host}-{port}" if host else "local"
        base = lexical_dir.expanduser() if lexical_dir else self.persist_dir / "lexical"
        self.lexical = LexicalIndex(base / where / collection if host else base / collection)
        self._device = device
        self._batch_size = batch_size
        self._client = _client(self.persist_dir, host, port)
        self._collection: Any = None

    # -- opening ----------------------------------------------------------------------------

    @property
    def collection(self) -> Any:
        """The Chroma collection, created on first use, checked against our embedding model."""
        if self._collection is None:
            metadata = {"embedding_model": self.embedding.name, "cmrag_schema": SCHEMA}
            collection = self._client.get_or_create_collection(
                self.name,
                metadata=metadata,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
            )
            stored = dict(collection.metadata or {})
            if "cmrag_schema" not in stored:
                raise StoreError(
                    f"Collection {self.name!r} was not created by chinese-mixtral-rag (no "
                    "embedding model recorded); ingest into another collection name."
                )
            if stored.get("embedding_model") != self.embedding.name:
                raise StoreError(
                    f"Collection {self.name!r} was built with the embedding model "
                    f"{stored.get('embedding_model')!r}, but {self.embedding.name!r} is "
                    f"configured. Set CMR_EMBEDDING_MODEL (or --embedding-model) to "
                    f"{stored.get('embedding_model')!r} to use this collection, or ingest into "
                    "another collection (or --reset this one) to switch models."
                )
            self._collection = collection
        return self._collection

    def exists(self) -> bool:
        return self.name in {c.name for c in self._client.list_collections()}

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model, loaded on first use (re-runs that change nothing never load it)."""
        return load_embeddings(self.embedding.path, self._device, self._batch_size)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the collection's ingest lock: two ingests into one collection would interleave."""
        self.lexical.directory.mkdir(parents=True, exist_ok=True)
        with open(self.lexical.directory / "ingest.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreError(
                    f"Another ingest into collection {self.name!r} is running; wait for it to "
                    "finish (running both would interleave their writes)."
                ) from exc
            lock.write(str(os.getpid()))
            lock.flush()
            yield

    # -- reading ----------------------------------------------------------------------------

    def _pages(self, include: list[str], where: Mapping[str, Any] | None = None) -> Iterator[Any]:
        limit = self._client.get_max_batch_size()
        offset = 0
        while True:
            page = self.collection.get(
                where=dict(where) if where else None, include=include, limit=limit, offset=offset
            )
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def file_states(self) -> dict[str, FileState]:
        """Per source file: hashes, chunking, expected and stored chunk counts."""
        states: dict[str, FileState] = {}
        for page in self._pages(["metadatas"]):
            for meta in page["metadatas"]:
                source = str(meta.get("source", ""))
                state = states.get(source)
                if state is None:
                    state = states[source] = FileState(source)
                state.root = str(meta.get("root", ""))
                state.hashes.add(str(meta.get("file_hash", "")))
                state.chunkers.add(str(meta.get("chunker", "")))
                state.expected = int(meta.get("file_chunks", 0))
                state.chunks += 1
                state.title = str(meta.get("title", "")) or state.title
                state.ingested_at = max(state.ingested_at, str(meta.get("ingested_at", "")))
        return states

    def all_ids(self) -> list[str]:
        return [i for page in self._pages([]) for i in page["ids"]]

    def ids_of(self, source: str) -> list[str]:
        return [i for page in self._pages([], {"source": source}) for i in page["ids"]]

    def count(self) -> int:
        return int(self.collection.count())

    def stored_embeddings(self, ids: Sequence[str]) -> dict[str, list[float]]:
        """Embeddings already stored for any of ``ids`` (content-derived ids: no re-embedding)."""
        found: dict[str, list[float]] = {}
        limit = self._client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            page = self.collection.get(ids=list(ids[start : start + limit]), include=["embeddings"])
            for chunk_id, vector in zip(page["ids"], page["embeddings"], strict=True):
                found[chunk_id] = list(vector)
        return found

    def texts(self, ids: Sequence[str]) -> list[str]:
        """Chunk texts in the order of ``ids``."""
        found: dict[str, str] = {}
        limit = self._client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            page = self.collection.get(ids=list(ids[start : start + limit]), include=["documents"])
            found.update(zip(page["ids"], page["documents"], strict=True))
        return [found[i] for i in ids]

    def ids_where(self, where: Mapping[str, Any]) -> list[str]:
        """Ids of the chunks matching a Chroma metadata filter."""
        return [i for page in self._pages([], where) for i in page["ids"]]

    def documents(self, ids: Sequence[str]) -> list[Document]:
        """Chunks as LangChain documents in the order of ``ids`` (unknown ids are skipped);
        ``metadata["id"]`` is the chunk id."""
        from langchain_core.documents import Document

        found: dict[str, Document] = {}
        limit = self._client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            page = self.collection.get(
                ids=list(ids[start : start + limit]), include=["documents", "metadatas"]
            )
            for chunk_id, text, meta in zip(
                page["ids"], page["documents"], page["metadatas"], strict=True
            ):
                found[chunk_id] = Document(page_content=text, metadata={**meta, "id": chunk_id})
        return [found[i] for i in ids if i in found]

    def chunks_of(self, source: str) -> list[Document]:
        """Every chunk of one file, in document order (for putting a whole file in the prompt)."""
        chunks = self.documents(self.ids_of(source))
        return sorted(chunks, key=lambda d: int(d.metadata.get("chunk_index", 0)))

    # -- writing ----------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
        embeddings: Sequence[Sequence[float]],
    ) -> None:
        """Write chunks in batches within Chroma's ``max_batch_size``."""
        limit = self._client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            end = start + limit
            self.collection.upsert(
                ids=list(ids[start:end]),
                documents=list(texts[start:end]),
                metadatas=[dict(m) for m in metadatas[start:end]],
                embeddings=[list(e) for e in embeddings[start:end]],
            )

    def delete(self, ids: Sequence[str]) -> None:
        limit = self._client.get_max_batch_size()
        for start in range(0, len(ids), limit):
            self.collection.delete(ids=list(ids[start : start + limit]))

    def delete_source(self, source: str) -> int:
        """Remove every chunk of one file; returns how many there were."""
        ids = self.ids_of(source)
        self.delete(ids)
        return len(ids)

    def reset(self) -> None:
        """Delete the collection and its lexical index."""
        if self.exists():
            self._client.delete_collection(self.name)
        self._collection = None
        self.lexical.remove()

    def sync_lexical(self) -> bool:
        """Rebuild the BM25 index unless it covers exactly the stored chunks; True if rebuilt."""
        ids = self.all_ids()
        if self.lexical.is_current(ids):
            return False
        self.lexical.rebuild(ids, self.texts)
        return True

    # -- for retrieval ----------------------------------------------------------------------

    def vectorstore(self) -> Any:
        """The collection as a LangChain ``Chroma`` vector store with our embeddings."""
        from langchain_chroma import Chroma

        self.collection  # noqa: B018 - opens and checks the collection first
        return Chroma(
            client=self._client,
            collection_name=self.name,
            embedding_function=self.embeddings,
            create_collection_if_not_exists=False,
        )


def collection_names(settings: StoreOptions) -> list[str]:
    """Names of the knowledge bases (Chroma collections) in the store the settings point at."""
    client = _client(settings.persist_dir, settings.chroma_host, settings.chroma_port)
    return sorted(c.name for c in client.list_collections())


def open_knowledge_base(settings: StoreOptions, collection: str | None = None) -> KnowledgeBase:
    """The knowledge base the settings point at (``collection`` overrides the setting)."""
    return KnowledgeBase(
        collection or settings.collection,
        resolve_embedding_model(settings.embedding_model),
        persist_dir=settings.persist_dir,
        host=settings.chroma_host,
        port=settings.chroma_port,
        lexical_dir=settings.lexical_dir,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
    )
