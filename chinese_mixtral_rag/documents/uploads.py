"""Files uploaded through a face (the web app, ``cmrag serve``) into a knowledge base.

One rule for both faces: a file of an unsupported type or over the size limit for its type is
refused before anything is copied; the accepted ones are copied into the knowledge base's upload
folder (``<persist_dir>/uploads/<collection>``, which is what ingest reads) and ingested; a file
that fails to ingest is not kept there. Deleting a document removes its chunks and its copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.pipeline import (
    ChunkingSpec,
    FileOutcome,
    IngestReport,
    ProgressHook,
    ingest,
)
from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.store import KnowledgeBase


@dataclass(frozen=True)
class Refused:
    """An upload refused before ingest: its type is not read, or it is too large."""

    name: str
    reason: Literal["type", "size"]
    size: int = 0
    limit: int = 0


def upload_dir(settings: Settings, collection: str) -> Path:
    """Where the uploads of a knowledge base are kept (ingest reads them from here); keyed by
    its id (``kb.name``), which a rename leaves alone."""
    return Path(settings.persist_dir) / "uploads" / collection


def check_uploads(paths: Sequence[Path], limits: FileLimits) -> tuple[list[Path], list[Refused]]:
    """Split uploads into the accepted and the refused (type, then size per type)."""
    from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS

    accepted: list[Path] = []
    refused: list[Refused] = []
    for path in paths:
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            refused.append(Refused(path.name, "type"))
            continue
        size = path.stat().st_size
        limit, _ = limits.limit_for(path.suffix)
        if size > limit:
            refused.append(Refused(path.name, "size", size, int(limit)))
            continue
        accepted.append(path)
    return accepted, refused


@dataclass
class FileProgress:
    """Where one uploaded file is in its ingest."""

    state: Literal["waiting", "reading", "done"] = "waiting"
    pages_done: int = 0
    pages: int = 0
    """Pages of a scan to OCR (0: none, or not known yet)."""
    outcome: FileOutcome | None = None


class UploadProgress(ProgressHook):
    """An upload's ingest file by file, for a face to show while it runs (the web app redraws
    ``files``; the API streams each change as an event dict to ``on_event``)."""

    def __init__(
        self, names: Sequence[str], on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.files = {name: FileProgress() for name in names}
        self.on_event = on_event
        self.done = 0
        self.total = max(len(names), 1)
        """Files to read (new or changed), known once the ingest has hashed them."""
        self.chunks = 0
        self.vectors_done = 0
        self.vectors_pending = 0

    def _file(self, source: str) -> FileProgress:
        return self.files.setdefault(source, FileProgress())

    def _send(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def start(self, files: int, to_parse: int) -> None:
        self.total = max(to_parse, 1)

    def reading(self, source: str) -> None:
        self._file(source).state = "reading"
        self._send({"event": "reading", "file": source})

    def pages(self, source: str, done: int, total: int) -> None:
        file = self._file(source)
        file.pages_done, file.pages = done, total
        self._send({"event": "ocr", "file": source, "pages_done": done, "pages": total})

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status == "removed":
            return
        file = self._file(outcome.source)
        file.state, file.outcome = "done", outcome
        if outcome.status in {"added", "updated", "failed"}:
            self.done += 1
            self.chunks += outcome.chunks
            self._send(
                {
                    "event": "progress",
                    "done": self.done,
                    "total": self.total,
                    "file": outcome.source,
                }
            )

    def vectors(self, done: int, pending: int) -> None:
        self.vectors_done, self.vectors_pending = done, pending


def ingest_uploads(
    accepted: Sequence[Path],
    kb: KnowledgeBase,
    settings: Settings,
    *,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Copy accepted uploads into the upload folder and ingest that folder; files that fail
    are not kept. ``progress`` (an :class:`UploadProgress`, say) hears how it goes."""
    limits = FileLimits.for_store(settings)
    folder = upload_dir(settings, kb.name)
    folder.mkdir(parents=True, exist_ok=True)
    for path in accepted:
        shutil.copyfile(path, folder / path.name)
    spec = ChunkingSpec.for_store(settings, kb)
    report = ingest(folder, kb, spec, workers=0, progress=progress, limits=limits)
    for outcome in report.failures:
        (folder / outcome.source).unlink(missing_ok=True)  # keep only what is stored
    return report


def remove_uploads(settings: Settings, collection: str) -> None:
    """Delete the uploaded copies of a knowledge base (by its id: what the folder is named by),
    after :func:`~chinese_mixtral_rag.store.delete_knowledge_base` removed what it stored."""
    shutil.rmtree(upload_dir(settings, collection), ignore_errors=True)


def remove_document(kb: KnowledgeBase, settings: Settings, source: str) -> int:
    """Delete a document's chunks (and its uploaded copy); returns the chunks removed."""
    with kb.writing():
        removed = kb.delete_source(source)
        kb.refresh_index()
    (upload_dir(settings, kb.name) / Path(source).name).unlink(missing_ok=True)
    return removed
