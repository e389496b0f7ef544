"""A knowledge base: one Chroma collection (chunks + dense vectors), its BM25 index, its embedder.

This facade is the only code that writes the store, and it holds the rule that makes ingest
idempotent and safe to kill at any moment. Chroma is the single source of truth: every chunk
carries its file's content hash, the file's chunk count and the chunking fingerprint, so the state
of each file can be read back from the collection alone, and a file is stored completely exactly
when all its chunks carry one hash and one fingerprint and their number equals the recorded count
(:class:`FileState`). :meth:`KnowledgeBase.write_files` writes a file's new chunks first and only
then deletes its stale ones, so a half-written file simply reads as "changed" and is redone.
Chunk ids are derived from source and content: unchanged passages keep their vectors.

Writing needs :meth:`KnowledgeBase.writing` (a lock per collection: two ingests would
interleave). Reading never writes: a collection that does not exist reads as empty and is not
created, and a BM25 index out of step with Chroma is reported by :meth:`~KnowledgeBase.index_state`
and refreshed only by :meth:`~KnowledgeBase.refresh_index`, on the write side.

Vectors come second. :meth:`~KnowledgeBase.write_files` stores a file's chunks at once with a
placeholder vector and ``embedded: False`` (so BM25 finds them as soon as the index is refreshed),
and :meth:`~KnowledgeBase.embed_pending` then computes the real vectors, a batch at a time, each
chunk's vector and flag changing in one update. Pending chunks are read back from the collection
itself, so a kill during the vector stage loses nothing: the next run embeds what is left. While
any are pending a marker file says so and dense search skips them.

The collection records its embedding model; opening it with another model is an error (vectors of
two models in one index are silent garbage).

A knowledge base has an id, the Chroma collection's name (``name``: what the BM25 folder, the
lock, the ``vectors-pending`` marker and the uploads folder are keyed by), and a display name
(``display_name``: any text, recorded in the collection at birth, shown in messages);
:mod:`.registry` maps one to the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from chinese_mixtral_rag.chinese import to_simplified
from chinese_mixtral_rag.errors import StoreError
from chinese_mixtral_rag.store.chroma import (
    chroma_client,
    is_missing_collection,
    store_exists,
    store_failures,
)
from chinese_mixtral_rag.store.embeddings import EmbeddingModelInfo, load_embedder
from chinese_mixtral_rag.store.lexical import LexicalIndex, lexical_terms

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
SearchState = Literal["ready", "words", "partial"]

#: Version of the chunk metadata layout, recorded in the collection.
SCHEMA = 1

#: Chunk metadata: False while the chunk holds a placeholder instead of its vector, True once
#: embedded (chunks written before vectors came second lack it and count as embedded).
EMBEDDED = "embedded"
#: What dense search adds to its filter while vectors are pending: placeholders are zeros, at
#: cosine distance 1 from every query, which would rank above real but dissimilar chunks.
_HAS_VECTOR: dict[str, Any] = {EMBEDDED: {"$ne": False}}
#: File beside the BM25 index while some chunk may lack its vector (removed when none does).
PENDING_MARKER = "vectors-pending"
#: What the embedder reads, recorded by each new collection: chunks and queries folded to
#: Simplified (OpenCC t2s), as BM25 reads them. CMRC dev questions over OpenCC Traditional copies
#: of the contexts (benchmarks/cross_script.py), dense alone: R@1 0.923 unfolded, 0.965 folded
#: (0.960 over the originals); fused 0.956 -> 0.977 (0.978). The shown text is unchanged.
FOLDED = "t2s"
#: Collection metadata: the display name, and when the knowledge base was made (ISO 8601, UTC).
#: Collections made before names lack both: their display name is their id.
NAME_KEY = "cmrag_name"
CREATED_KEY = "cmrag_created"

#: Chroma's rule for collection names (chromadb 1.x): 3-512 characters of a-z A-Z 0-9 . _ -,
#: starting and ending with a letter or digit, no "..", not an IPv4 address.
_CHROMA_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


def is_collection_id(text: str) -> bool:
    """Whether Chroma takes ``text`` as a collection name as it is (then a knowledge base of
    that name gets it as its id, as every knowledge base made before display names did)."""
    return bool(_CHROMA_NAME.fullmatch(text)) and ".." not in text and not _IPV4.fullmatch(text)


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
    pending: int = 0
    """Chunks stored without their vector yet: found by words only until the vector stage
    reaches them."""

    @property
    def search_state(self) -> SearchState:
        """``partial``: a write was cut short (the next ingest redoes the file); ``words``: found
        by BM25, vectors still being computed; ``ready``: found by both."""
        if self.chunks != self.expected or len(self.hashes) != 1:
            return "partial"
        return "words" if self.pending else "ready"

    def is_complete(self, file_hash: str, chunker: str) -> bool:
        """All chunks of exactly this content and chunking are stored, and nothing else."""
        return (
            self.hashes == {file_hash}
            and self.chunkers == {chunker}
            and self.chunks == self.expected
        )


@dataclass
class FileChunks:
    """One file's chunks as the write path hands them over: texts in document order."""

    source: str
    """Name of the file relative to the ingested folder (what citations show)."""
    root: str
    """The folder it was ingested from."""
    file_hash: str
    """Digest of the file's bytes."""
    chunker: str
    """Fingerprint of the chunking (splitter, tokenizer, sizes)."""
    texts: list[str]
    metadatas: list[dict[str, Any]]
    """Per chunk: title, page, heading, offsets ...; values that Chroma cannot store are dropped."""
    terms: list[str] | None = None
    """BM25 tokens per chunk as :func:`~chinese_mixtral_rag.store.lexical.lexical_terms`, when the
    caller computed them already (in parallel)."""
    replaces: bool = True
    """Chunks of this source may be stored already (False only for a source known to be new:
    saves looking up what to delete)."""


@dataclass
class WriteSummary:
    """What one :meth:`KnowledgeBase.write_files` call did."""

    written: int = 0
    """Chunks written (added or rewritten)."""
    reused: int = 0
    """Chunks whose content (and vector) was already stored."""
    deleted: int = 0
    """Stale chunks of the written files removed."""
    pending: int = 0
    """Chunks written with a placeholder: :meth:`KnowledgeBase.embed_pending` computes them."""


@dataclass
class VectorSummary:
    """What one :meth:`KnowledgeBase.embed_pending` call did."""

    chunks: int = 0
    """Chunks that got their vector (0: none was pending)."""
    embedded: int = 0
    """Distinct texts embedded for them."""


@dataclass(frozen=True)
class IndexState:
    """How the BM25 index compares with the collection."""

    stored: int
    """Chunks in Chroma."""
    indexed: int
    """Chunks in the BM25 index."""
    missing: int = 0
    """BM25 hits of a search that Chroma no longer holds (found while searching)."""
    vectors_pending: bool = False
    """Some chunks are still without their vector (an ingest is computing them, or was killed):
    those are found by BM25 only."""

    @property
    def stale(self) -> bool:
        return self.stored != self.indexed or self.missing > 0


def chunk_id(source: str, text: str, occurrence: int) -> str:
    """Stable id from the file's path and the chunk's content (and which repeat of it it is)."""
    digest = hashlib.sha256(f"{source}\0{occurrence}\0{text}".encode())
    return digest.hexdigest()[:32]


def chunk_ids(source: str, texts: Iterable[str]) -> list[str]:
    """Ids of a file's chunks in order; a text repeated in the file gets one id per repeat."""
    seen: dict[str, int] = {}
    ids = []
    for text in texts:
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        ids.append(chunk_id(source, text, occurrence))
    return ids


def _modifiable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Collection metadata Chroma lets ``modify`` write back: it refuses ``hnsw:*`` keys (the
    distance cannot change), which collections made by older Chroma versions may carry."""
    return {k: v for k, v in metadata.items() if not k.startswith("hnsw:")}


def _chroma_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Chroma takes str/int/float/bool values only; drop the rest (None included)."""
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


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
        display_name: str | None = None,
    ) -> None:
        if not is_collection_id(collection):
            raise StoreError(
                f"{collection!r} is not a collection id (3-512 characters of a-z, A-Z, 0-9, "
                "'.', '_' and '-', starting and ending with a letter or digit: Chroma's rule). "
                "Open a knowledge base by any name, Chinese included, with "
                "open_knowledge_base(settings, name), which maps the name to an id."
            )
        self.name = collection
        """The id: the Chroma collection's name, never changed (a rename changes the display
        name only, so everything keyed by the id stays valid)."""
        self.display_name = display_name or collection
        """What people call it (recorded in the collection when it is made)."""
        self.embedding = embedding
        self.persist_dir = persist_dir.expanduser()
        self.host = host
        self.port = port
        self.device = device
        """Device of the embedding model and of a reranker used with this knowledge base."""
        where = f"{host}-{port}" if host else "local"
        base = lexical_dir.expanduser() if lexical_dir else self.persist_dir / "lexical"
        self.lexical = LexicalIndex(base / where / collection if host else base / collection)
        """The BM25 index (read it freely; only this class writes it)."""
        self._batch_size = batch_size
        self._collection: Any = None
        self._metadata: dict[str, Any] = {}
        self._writing = False
        self._turns = threading.RLock()
        self._failed = ""
        """Why a write of this ingest failed: then the other thread must not touch the store."""

    # -- opening ----------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._failures("opening the store"):
            return chroma_client(self.persist_dir, self.host, self.port)

    @contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        """Chroma, SQLite and file-system errors as one :class:`StoreError` that says what
        failed, why and what to do (disk full, read-only, locked, damaged).

        While this object writes (an ingest, whose vector stage is a second thread), its store
        calls take turns, as in a single-threaded ingest, and after a failed write (a full disk)
        neither thread touches the store again. Readers outside an ingest never wait."""
        with self._turns if self._writing else contextlib.nullcontext():
            if self._writing and self._failed:
                raise StoreError(self._failed)  # after a failed write, touch nothing more
            where = f"{self.host}:{self.port}" if self.host else str(self.persist_dir)
            free = self.persist_dir if self.persist_dir.is_dir() else None
            with store_failures(where, action, free, self._remember_failure):
                yield

    def _remember_failure(self, message: str) -> None:
        if self._writing:
            self._failed = message  # before the other thread gets its turn

    def _store_exists(self) -> bool:
        """False for an embedded store without its database yet (nothing to open: opening
        would create it)."""
        return store_exists(self.persist_dir, self.host)

    def _open(self, *, create: bool) -> Any:
        """The Chroma collection checked against our embedding model; None when it does not
        exist and ``create`` is False (reads never create it)."""
        if self._collection is not None:
            return self._collection
        if not create and not self._store_exists():
            return None
        with self._failures(f"opening knowledge base {self.display_name!r}"):
            return self._open_collection(create)

    def _open_collection(self, create: bool) -> Any:
        client = self._client()
        metadata: dict[str, Any] = {
            "embedding_model": self.embedding.name,
            "cmrag_schema": SCHEMA,
            "embedding_input": FOLDED,  # recorded at creation: older collections are not folded
            NAME_KEY: self.display_name,
            CREATED_KEY: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if self.embedding.fingerprint:
            metadata["embedding_fingerprint"] = self.embedding.fingerprint
        if create:
            collection = client.get_or_create_collection(
                self.name,
                metadata=metadata,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
            )
        else:
            try:
                collection = client.get_collection(self.name, embedding_function=None)
            except Exception as exc:
                if is_missing_collection(exc):
                    return None
                raise
        self._metadata = dict(collection.metadata or {})
        self._check_embedding(self._metadata)
        if create and "embedding_fingerprint" not in self._metadata and self.embedding.fingerprint:
            # Made before fingerprints were recorded: the name matched, remember the content.
            self._record(collection, embedding_fingerprint=self.embedding.fingerprint)
        self._collection = collection
        return collection

    def _record(self, collection: Any, **values: Any) -> None:
        self._metadata.update(values)
        with self._failures(f"recording the embedding model of {self.display_name!r}"):
            collection.modify(metadata=_modifiable(self._metadata))

    def create(self) -> None:
        """Make the (empty) collection now, recording the display name and the embedding model,
        as the first write would."""
        self._writable()

    def set_display_name(self, name: str) -> None:
        """Change the display name only: the id, and all that is keyed by it, stays. Reads the
        collection's metadata afresh (another process may have recorded something since)."""
        self._require_lock()
        with self._failures(f"renaming knowledge base {self.display_name!r}"):
            collection = self._client().get_collection(self.name, embedding_function=None)
            metadata = {**(collection.metadata or {}), NAME_KEY: name}
            collection.modify(metadata=_modifiable(metadata))
        self._metadata[NAME_KEY] = name
        self.display_name = name

    def _check_embedding(self, stored: dict[str, Any]) -> None:
        if "cmrag_schema" not in stored:
            raise StoreError(
                f"Collection {self.display_name!r} was not created by chinese-mixtral-rag (no "
                "embedding model recorded); ingest into another collection name."
            )
        recorded = stored.get("embedding_fingerprint")
        same_name = stored.get("embedding_model") == self.embedding.name
        if same_name and (not recorded or recorded == self.embedding.fingerprint):
            return
        built_with = repr(stored.get("embedding_model"))
        if same_name:
            built_with += f" (fingerprint {recorded})"
        configured = f"{self.embedding.name!r} at {self.embedding.location}"
        if same_name:
            configured += (
                f", fingerprint {self.embedding.fingerprint}: another model under the same name"
            )
        raise StoreError(
            f"Collection {self.display_name!r} was built with the embedding model "
            f"{built_with}, but {configured} is configured; vectors of two models cannot share "
            "one collection. "
            "Set CMR_EMBEDDING_MODEL (embedding_model=) to the model it was built with (and "
            "CMR_EMBEDDING_BASE_URL to the server that embedded it, if one did) to use this "
            "collection, or ingest into another collection (or reset this one and ingest "
            "again to re-embed everything with the new model)."
        )

    def _check_dimension(self, collection: Any, vector: Vector) -> None:
        """Vectors of the size the collection holds (recorded by the first write)."""
        size = int(vector.shape[-1])
        recorded = self._metadata.get("embedding_dimension")
        if recorded is None:
            self._record(collection, embedding_dimension=size)
        elif int(recorded) != size:
            raise StoreError(
                f"The embedding model {self.embedding.name!r} gives {size}-dimensional vectors "
                f"but collection {self.display_name!r} holds {recorded}-dimensional ones; "
                "ingest into another collection, or reset this one to re-embed everything."
            )

    @property
    def collection(self) -> Any:
        """The Chroma collection (created by the first write; reading a missing one raises)."""
        collection = self._open(create=self._writing)
        if collection is None:
            raise StoreError(
                f"Knowledge base {self.display_name!r} does not exist yet: ingest documents "
                "into it first."
            )
        return collection

    def exists(self) -> bool:
        if not self._store_exists():
            return False
        with self._failures("listing its knowledge bases"):
            return self.name in {c.name for c in self._client().list_collections()}

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model, loaded on first use (re-runs that change nothing never load it)."""
        return load_embedder(self.embedding, self.device, self._batch_size)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the collection's ingest lock: two ingests into one collection would interleave.
        Every method that writes needs it."""
        with self._failures(f"locking knowledge base {self.display_name!r} for writing"):
            self.lexical.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.lexical.directory / "ingest.lock", "w")  # noqa: SIM115
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreError(
                    f"Another ingest into collection {self.display_name!r} is running; wait "
                    "for it to finish (running both would interleave their writes)."
                ) from exc
            with self._failures(f"locking knowledge base {self.display_name!r} for writing"):
                lock.write(str(os.getpid()))
                lock.flush()
            self._writing, self._failed = True, ""
            try:
                yield
            finally:
                self._writing = False

    def _require_lock(self) -> None:
        if not self._writing:
            raise RuntimeError(
                f"writing to knowledge base {self.display_name!r} needs its lock: "
                "call this inside `with kb.writing():`"
            )

    def _writable(self) -> Any:
        self._require_lock()
        return self._open(create=True)

    # -- reading ----------------------------------------------------------------------------

    def _batch_limit(self) -> int:
        with self._failures("asking for its batch size"):
            return int(self._client().get_max_batch_size())

    def _pages(self, include: list[str], where: Mapping[str, Any] | None = None) -> Iterator[Any]:
        collection = self._open(create=False)
        if collection is None:
            return
        limit = self._batch_limit()
        offset = 0
        while True:
            with self._failures(f"reading knowledge base {self.display_name!r}"):
                page = collection.get(
                    where=dict(where) if where else None,
                    include=include,
                    limit=limit,
                    offset=offset,
                )
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def _get(self, ids: Sequence[str], include: list[str]) -> Iterator[Any]:
        """Pages of ``collection.get(ids=...)`` within Chroma's batch size."""
        collection = self._open(create=False)
        if collection is None or not ids:
            return
        limit = self._batch_limit()
        for start in range(0, len(ids), limit):
            with self._failures(f"reading knowledge base {self.display_name!r}"):
                page = collection.get(ids=list(ids[start : start + limit]), include=include)
            yield page

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
                if meta.get(EMBEDDED) is False:
                    state.pending += 1
        return states

    def all_ids(self) -> list[str]:
        return [i for page in self._pages([]) for i in page["ids"]]

    def ids_of(self, source: str) -> list[str]:
        return [i for page in self._pages([], {"source": source}) for i in page["ids"]]

    def ids_where(self, where: Mapping[str, Any]) -> list[str]:
        """Ids of the chunks matching a Chroma metadata filter."""
        return [i for page in self._pages([], where) for i in page["ids"]]

    def count(self) -> int:
        collection = self._open(create=False)
        if collection is None:
            return 0
        with self._failures(f"counting the chunks of {self.display_name!r}"):
            return int(collection.count())

    def texts(self, ids: Sequence[str]) -> list[str]:
        """Chunk texts in the order of ``ids``."""
        found: dict[str, str] = {}
        for page in self._get(ids, ["documents"]):
            found.update(zip(page["ids"], page["documents"], strict=True))
        return [found[i] for i in ids]

    def documents(self, ids: Sequence[str]) -> list[Document]:
        """Chunks as LangChain documents in the order of ``ids`` (ids Chroma does not hold are
        skipped); ``metadata["id"]`` is the chunk id."""
        from langchain_core.documents import Document

        found: dict[str, Document] = {}
        for page in self._get(ids, ["documents", "metadatas"]):
            for chunk_id, text, meta in zip(
                page["ids"], page["documents"], page["metadatas"], strict=True
            ):
                found[chunk_id] = Document(page_content=text, metadata={**meta, "id": chunk_id})
        return [found[i] for i in ids if i in found]

    def chunks_of(self, source: str) -> list[Document]:
        """Every chunk of one file, in document order (for putting a whole file in the prompt)."""
        chunks = self.documents(self.ids_of(source))
        return sorted(chunks, key=lambda d: int(d.metadata.get("chunk_index", 0)))

    def index_state(self) -> IndexState:
        """Chunks stored and chunks in the BM25 index (cheap: two counts, no listing)."""
        with self._failures(f"reading the BM25 index of {self.display_name!r}"):
            indexed = len(self.lexical.ids()) if self.lexical.current() else 0
        return IndexState(
            stored=self.count(), indexed=indexed, vectors_pending=self.vectors_pending()
        )

    def vectors_pending(self) -> bool:
        """Whether some chunks may still lack their vector (cheap: one file's existence)."""
        return (self.lexical.directory / PENDING_MARKER).exists()

    def lexical_search(
        self, query: str, k: int, allowed: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """BM25 hits (chunk id, score) for ``query``; none while there is no index."""
        with self._failures(f"searching the BM25 index of {self.display_name!r}"):
            if not self.lexical.current():
                return []
            return self.lexical.search(query, k, allowed=allowed)

    def token_weights(self, tokens: Iterable[str]) -> dict[str, float]:
        """BM25 inverse document frequency of each token ({} while there is no index)."""
        with self._failures(f"reading the BM25 index of {self.display_name!r}"):
            return self.lexical.idf(tokens) if self.lexical.current() else {}

    def known_tokens(self, tokens: Iterable[str]) -> set[str]:
        """The tokens that occur in at least one indexed chunk (none while there is no index)."""
        with self._failures(f"reading the BM25 index of {self.display_name!r}"):
            if not self.lexical.current():
                return set()
            return {t for t, df in self.lexical.frequencies(tokens).items() if df}

    def dense_search(self, query: str, k: int, where: Mapping[str, Any] | None = None) -> list[str]:
        """Chunk ids nearest to ``query``'s vector, best first. Ids only: the retriever fuses
        ranks and fetches just the chunks it keeps (asking Chroma for the texts of every
        candidate, as a LangChain ``similarity_search`` does, costs more than the search)."""
        collection = self.collection  # opened first: it says whether to fold
        vector = self.embeddings.embed_query(self._embedder_input(query))
        if self.vectors_pending():  # filtering costs time: only while there is something to skip
            where = {"$and": [dict(where), _HAS_VECTOR]} if where else _HAS_VECTOR
        with self._failures(f"searching the vectors of {self.display_name!r}"):
            found = collection.query(
                query_embeddings=[vector],
                n_results=k,
                where=dict(where) if where else None,
                include=["distances"],
            )
        return [str(i) for i in (found.get("ids") or [[]])[0]]

    def vectorstore(self) -> Any:
        """The collection as a LangChain ``Chroma`` vector store with our embeddings (while
        :meth:`vectors_pending`, pass ``filter={"embedded": {"$ne": False}}`` to its searches)."""
        from langchain_chroma import Chroma

        self.collection  # noqa: B018 - opens and checks the collection first
        return Chroma(
            client=self._client(),
            collection_name=self.name,
            embedding_function=self.embeddings,
            create_collection_if_not_exists=False,
        )

    # -- writing (inside `with kb.writing():`) ------------------------------------------------

    def write_files(self, files: Sequence[FileChunks]) -> WriteSummary:
        """Store whole files: their chunks written (texts already stored keep their vectors, new
        ones get a placeholder for :meth:`embed_pending`), then each file's stale chunks deleted.

        Killed at any point, the collection holds each file either complete or in a state that
        :meth:`FileState.is_complete` reports as incomplete, never a mix that reads as complete.
        """
        collection = self._writable()
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        terms: list[str] = []
        for file in files:
            stamp = {
                "source": file.source,
                "root": file.root,
                "file_hash": file.file_hash,
                "chunker": file.chunker,
                "file_chunks": len(file.texts),
            }
            ids.extend(chunk_ids(file.source, file.texts))
            texts.extend(file.texts)
            metadatas.extend({**_chroma_metadata(m), **stamp} for m in file.metadatas)
            terms.extend(file.terms or [lexical_terms(t) for t in file.texts])
        summary = WriteSummary(written=len(ids))
        vectors = self._stored_embeddings(ids)
        summary.reused = len(vectors)
        summary.pending = len(ids) - len(vectors)
        blank = np.zeros(0, dtype=np.float32)
        if summary.pending:
            self._mark_vectors_pending()  # before the first placeholder can be read
            blank = np.zeros(self._dimension(collection), dtype=np.float32)
        for chunk_id, metadata in zip(ids, metadatas, strict=True):
            metadata[EMBEDDED] = chunk_id in vectors
        limit = self._batch_limit()
        with self._failures(f"writing {len(ids)} chunks of {len(files)} file(s)"):
            self.lexical.put_tokens(zip(ids, terms, strict=True))
            for start in range(0, len(ids), limit):
                end = start + limit
                collection.upsert(
                    ids=ids[start:end],
                    documents=texts[start:end],
                    metadatas=metadatas[start:end],
                    embeddings=np.stack([vectors.get(i, blank) for i in ids[start:end]]),
                )
        written = set(ids)
        for file in files:
            if file.replaces:
                stale = [i for i in self.ids_of(file.source) if i not in written]
                self._delete(stale)
                summary.deleted += len(stale)
        return summary

    def _stored_embeddings(self, ids: Sequence[str]) -> dict[str, Vector]:
        """Embeddings already stored for any of ``ids`` (content-derived ids: no re-embedding);
        placeholders are not embeddings."""
        found: dict[str, Vector] = {}
        for page in self._get(ids, ["embeddings", "metadatas"]):
            rows = zip(page["ids"], page["embeddings"], page["metadatas"], strict=True)
            for chunk_id, vector, meta in rows:
                if (meta or {}).get(EMBEDDED) is not False:
                    found[chunk_id] = np.asarray(vector, dtype=np.float32)
        return found

    def _dimension(self, collection: Any) -> int:
        """Size of this collection's vectors: recorded by the first write, else measured."""
        recorded = self._metadata.get("embedding_dimension")
        if recorded is None:
            probe = np.asarray(self.embeddings.embed_query("维度 dimension"), dtype=np.float32)
            self._check_dimension(collection, probe)
            return int(probe.shape[-1])
        return int(recorded)

    def _mark_vectors_pending(self) -> None:
        marker = self.lexical.directory / PENDING_MARKER
        if not marker.exists():
            with self._failures("marking vectors as pending"):
                self.lexical.directory.mkdir(parents=True, exist_ok=True)
                marker.touch()

    def pending_count(self) -> int:
        """Chunks stored without their vector."""
        return len(self.ids_where({EMBEDDED: False})) if self.vectors_pending() else 0

    def embed_pending(self, limit: int = 512) -> VectorSummary:
        """Compute the vectors of up to ``limit`` chunks stored without one (repeated texts
        embedded once). Each chunk's vector and flag change in one update, so a kill at any
        point leaves every chunk either embedded or pending, never wrong."""
        if not self.vectors_pending():
            return VectorSummary()
        collection = self._writable()
        with self._failures(f"reading the chunks of {self.display_name!r} that need vectors"):
            page = collection.get(where={EMBEDDED: False}, include=["documents"], limit=limit)
        ids, texts = list(page["ids"]), list(page["documents"] or [])
        if not ids:
            return VectorSummary()
        unique = list(dict.fromkeys(texts))
        by_text = dict(zip(unique, self._embed(unique), strict=True))
        self._check_dimension(collection, by_text[unique[0]])
        step = self._batch_limit()
        with self._failures(f"storing the vectors of {len(ids)} chunks"):
            for start in range(0, len(ids), step):
                part = range(start, min(start + step, len(ids)))
                collection.update(
                    ids=[ids[n] for n in part],
                    embeddings=np.stack([by_text[texts[n]] for n in part]),
                    metadatas=[{EMBEDDED: True} for _ in part],
                )
        return VectorSummary(chunks=len(ids), embedded=len(unique))

    def finish_vectors(self) -> bool:
        """Drop the pending marker once no chunk lacks its vector; True when none does."""
        self._require_lock()
        if not self.vectors_pending():
            return True
        if self.ids_where({EMBEDDED: False}):
            return False
        with self._failures("clearing the pending-vectors marker"):
            (self.lexical.directory / PENDING_MARKER).unlink(missing_ok=True)
        return True

    def _embed(self, texts: Sequence[str]) -> list[Vector]:
        """Vectors of ``texts`` as float32 rows, embedded a slice at a time: a list of Python
        floats costs 6x the memory, and a big file has tens of thousands of chunks."""
        rows: list[Vector] = []
        step = max(self._batch_size, 1) * 32
        for start in range(0, len(texts), step):
            part = self.embeddings.embed_documents(
                [self._embedder_input(t) for t in texts[start : start + step]]
            )
            rows.extend(np.asarray(part, dtype=np.float32))
        return rows

    def _embedder_input(self, text: str) -> str:
        """What the embedder reads for ``text``: folded to Simplified where the collection
        says so (see ``FOLDED``)."""
        if self._metadata.get("embedding_input") == FOLDED:
            return to_simplified(text)
        return text

    def _delete(self, ids: Sequence[str]) -> None:
        collection = self._writable()
        limit = self._batch_limit()
        with self._failures(f"deleting {len(ids)} chunks"):
            for start in range(0, len(ids), limit):
                collection.delete(ids=list(ids[start : start + limit]))

    def delete_source(self, source: str) -> int:
        """Remove every chunk of one file; returns how many there were."""
        self._writable()
        ids = self.ids_of(source)
        self._delete(ids)
        return len(ids)

    def reset(self) -> None:
        """Delete the collection and its lexical index."""
        self._require_lock()
        with self._failures(f"deleting knowledge base {self.display_name!r}"):
            if self.exists():
                self._client().delete_collection(self.name)
            self._collection = None
            self.lexical.remove()

    def refresh_index(self) -> bool:
        """Rebuild the BM25 index unless it covers exactly the stored chunks; True if rebuilt."""
        self._require_lock()
        with self._failures(f"rebuilding the BM25 index of {self.display_name!r}"):
            self.lexical.remove_leftovers()  # of a build killed half-way
            ids = self.all_ids()
            if self.lexical.is_current(ids):
                return False
            self.lexical.rebuild(ids, self.texts)
            return True


def describe_stale(kb: KnowledgeBase, state: IndexState) -> str:
    """One line for logs and faces: what is out of step and what refreshes it."""
    return (
        f"the BM25 index of knowledge base {kb.display_name!r} is out of step with the store "
        f"({state.indexed} chunks indexed, {state.stored} stored): answers use only what both "
        "hold; the next ingest into this knowledge base refreshes it"
    )
