"""The knowledge bases of a store by the names people give them: list, open, create, rename,
delete. The one place the faces (command line, web app, API) turn a name into a knowledge base.

A display name is any text ("2024年 合同"); a Chroma collection name (the knowledge base's id)
is 3-512 characters of ``a-z A-Z 0-9 . _ -``. A name Chroma takes as it is becomes the id itself
(``laws`` -> ``laws``), any other gets ``kb-`` and 12 hex digits of its SHA-256 (a second
knowledge base later given a freed name gets ``-2``, ``-3`` ...), so two processes creating the
same new name at once land in the same collection.

The mapping lives in each collection's own metadata (``cmrag_name``), not in a registry file
beside the store, because

* Chroma stays the single source of truth: a name can neither outlive its collection nor go
  missing from it (a file and the database could disagree after a kill between two writes);
* processes sharing one Chroma server, each with its own persist directory, see the same names;
* a rename is one metadata update, atomic in Chroma.

A collection without ``cmrag_name`` (made before display names, or by hand) is named by its id,
so existing ASCII collections keep working unchanged. A rename changes the display name only:
the id, and everything keyed by it (the BM25 folder ``lexical/<id>`` with its lock and
``vectors-pending`` marker, the uploads folder ``uploads/<id>``), stays valid. A name may be
given wherever an id may (``open_knowledge_base(settings, "2024年 合同")``), and the other way
round; no name may equal another knowledge base's name or id, so either finds one at most.

Listing and looking up only read: a persist directory without a store stays untouched.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.errors import KnowledgeBaseNotFound, StoreError
from chinese_mixtral_rag.store.chroma import chroma_client, store_exists, store_failures
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
from chinese_mixtral_rag.store.knowledge_base import (
    CREATED_KEY,
    NAME_KEY,
    KnowledgeBase,
    is_collection_id,
)

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import StoreOptions

#: Longest display name (a label in a menu, not a description).
MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class KBInfo:
    """One knowledge base as a list shows it."""

    id: str
    """The Chroma collection's name: fixed for life, what folders and ``--collection`` may use."""
    name: str
    """The display name (the id for collections made before display names)."""
    files: int = 0
    """Documents stored (distinct source files)."""
    chunks: int = 0
    created: str = ""
    """When it was made (ISO 8601, UTC); "" for collections made before this was recorded."""


@dataclass(frozen=True)
class _Entry:
    """A collection of the store, as its metadata names it (no counting)."""

    id: str
    name: str
    created: str
    collection: Any


def _where(settings: StoreOptions) -> str:
    if settings.chroma_host:
        return f"the Chroma server {settings.chroma_host}:{settings.chroma_port}"
    return str(settings.persist_dir.expanduser())


@contextmanager
def _failures(settings: StoreOptions, action: str) -> Iterator[None]:
    folder = settings.persist_dir.expanduser()
    with store_failures(_where(settings), action, folder if folder.is_dir() else None):
        yield


def _client(settings: StoreOptions) -> Any:
    return chroma_client(
        settings.persist_dir.expanduser(), settings.chroma_host, settings.chroma_port
    )


def _entries(settings: StoreOptions) -> list[_Entry]:
    """Every collection of the store with its display name; none where no store exists."""
    if not store_exists(settings.persist_dir, settings.chroma_host):
        return []  # reading never creates a store
    with _failures(settings, "listing its knowledge bases"):
        collections = list(_client(settings).list_collections())
    entries = []
    for collection in collections:
        meta = collection.metadata or {}
        name = str(meta.get(NAME_KEY) or collection.name)
        entries.append(_Entry(collection.name, name, str(meta.get(CREATED_KEY, "")), collection))
    return sorted(entries, key=lambda e: (e.name.casefold(), e.name))


def clean_name(name: str) -> str:
    """A display name as stored and compared: NFC-normalised (one form of each character),
    spaces at the ends dropped; refused when empty, too long or holding control characters."""
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise StoreError("A knowledge base name cannot be empty.")
    if len(cleaned) > MAX_NAME_CHARS:
        raise StoreError(
            f"A knowledge base name has at most {MAX_NAME_CHARS} characters ({len(cleaned)} given)."
        )
    if not cleaned.isprintable():
        raise StoreError(
            f"A knowledge base name cannot hold control characters or line breaks: {cleaned!r}."
        )
    return cleaned


def _find(entries: Sequence[_Entry], wanted: str) -> _Entry | None:
    """The entry named ``wanted``, else the one whose id it is."""
    name = unicodedata.normalize("NFC", wanted).strip()
    by_name = [e for e in entries if e.name == name]
    if by_name:
        return by_name[0]
    return next((e for e in entries if e.id == name), None)


def _new_id(name: str, entries: Sequence[_Entry]) -> str:
    """The id of a new knowledge base called ``name`` (see the module docstring)."""
    taken = {e.id for e in entries} | {e.name for e in entries}
    if is_collection_id(name) and name not in taken:
        return name
    base = "kb-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    candidates = (base if n == 1 else f"{base}-{n}" for n in itertools.count(1))
    return next(c for c in candidates if c not in taken)


def _missing(
    wanted: str, entries: Sequence[_Entry], settings: StoreOptions
) -> KnowledgeBaseNotFound:
    """No such knowledge base, with the ones there are (the way to the right name)."""
    known = [e.name for e in entries]
    if not entries:
        return KnowledgeBaseNotFound(
            f"No knowledge base {wanted!r}: the store at {_where(settings)} holds none yet. "
            "Ingest documents to create one.",
            wanted,
            known,
        )
    names = ", ".join(repr(name) for name in known)
    return KnowledgeBaseNotFound(
        f"No knowledge base {wanted!r} in the store at {_where(settings)}. "
        f"The knowledge bases there: {names}.",
        wanted,
        known,
    )


def _knowledge_base(settings: StoreOptions, kb_id: str, name: str) -> KnowledgeBase:
    return KnowledgeBase(
        kb_id,
        resolve_embedding_model(
            settings.embedding_model,
            base_url=settings.embedding_base_url,
            api_key=settings.embedding_api_key,
        ),
        persist_dir=settings.persist_dir,
        host=settings.chroma_host,
        port=settings.chroma_port,
        lexical_dir=settings.lexical_dir,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        display_name=name,
    )


def open_knowledge_base(
    settings: StoreOptions, collection: str | None = None, *, must_exist: bool = False
) -> KnowledgeBase:
    """The knowledge base the settings point at; ``collection`` (a display name or an id)
    overrides the setting. One that does not exist yet reads as empty and is made by its first
    write, unless ``must_exist``: then :class:`KnowledgeBaseNotFound` (a :class:`StoreError`)
    names the knowledge bases there are (for the read path, which never creates anything)."""
    wanted = collection or settings.collection
    entries = _entries(settings)
    entry = _find(entries, wanted)
    if entry is not None:
        return _knowledge_base(settings, entry.id, entry.name)
    if must_exist:
        raise _missing(wanted, entries, settings)
    name = clean_name(wanted)
    return _knowledge_base(settings, _new_id(name, entries), name)


def collection_names(settings: StoreOptions) -> list[str]:
    """Display names of the knowledge bases in the store the settings point at (cheap: no
    counting), each one a valid ``collection`` for :func:`open_knowledge_base`."""
    return [e.name for e in _entries(settings)]


def _counted(settings: StoreOptions, entry: _Entry) -> KBInfo:
    """``entry`` with its chunks and files counted from the collection itself (the embedding
    model is not checked: counting reads no vectors)."""
    collection = entry.collection
    sources: set[str] = set()
    with _failures(settings, f"counting the documents of {entry.name!r}"):
        chunks = int(collection.count())
        limit = int(_client(settings).get_max_batch_size())
        for offset in range(0, chunks, limit):
            page = collection.get(include=["metadatas"], limit=limit, offset=offset)
            sources.update(str((m or {}).get("source", "")) for m in page["metadatas"] or [])
    return KBInfo(entry.id, entry.name, len(sources), chunks, entry.created)


def list_knowledge_bases(settings: StoreOptions) -> list[KBInfo]:
    """Every knowledge base of the store, by display name, with its files and chunks."""
    return [_counted(settings, entry) for entry in _entries(settings)]


def _require(settings: StoreOptions, name: str) -> _Entry:
    entries = _entries(settings)
    entry = _find(entries, name)
    if entry is None:
        raise _missing(name, entries, settings)
    return entry


def _check_free(name: str, entries: Sequence[_Entry], renamed: str | None = None) -> None:
    """Refuse a name another knowledge base has as its name or its id (either must find one)."""
    for entry in entries:
        if entry.id != renamed and name in (entry.name, entry.id):
            raise StoreError(
                f"There is a knowledge base {name!r} already"
                + (f" (the id of {entry.name!r})" if name != entry.name else "")
                + "; choose another name."
            )


def create_knowledge_base(settings: StoreOptions, name: str) -> KBInfo:
    """Make an empty knowledge base called ``name`` (it records the configured embedding model,
    as a first ingest would); refused when the name is taken."""
    cleaned = clean_name(name)
    entries = _entries(settings)
    _check_free(cleaned, entries)
    kb = _knowledge_base(settings, _new_id(cleaned, entries), cleaned)
    with kb.writing():
        kb.create()
    return _counted(settings, _require(settings, kb.name))


def rename_knowledge_base(settings: StoreOptions, name: str, new_name: str) -> KBInfo:
    """Give the knowledge base ``name`` (or of that id) the display name ``new_name``; its id
    and everything keyed by it stay. Waits for no one: refused while an ingest writes it."""
    entries = _entries(settings)
    entry = _find(entries, name)
    if entry is None:
        raise _missing(name, entries, settings)
    cleaned = clean_name(new_name)
    _check_free(cleaned, entries, renamed=entry.id)
    if cleaned != entry.name:
        kb = _knowledge_base(settings, entry.id, entry.name)
        with kb.writing():
            kb.set_display_name(cleaned)
    return _counted(settings, _require(settings, entry.id))


def delete_knowledge_base(settings: StoreOptions, name: str) -> KBInfo:
    """Delete the knowledge base ``name`` (or of that id): its collection and its BM25 index;
    returns what it held. The uploads folder belongs to the write path
    (:func:`chinese_mixtral_rag.documents.uploads.remove_uploads`)."""
    entry = _require(settings, name)
    info = _counted(settings, entry)
    kb = _knowledge_base(settings, entry.id, entry.name)
    with kb.writing():
        kb.reset()
    return info
