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
from typing import Literal

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


class _Progress(ProgressHook):
    """Calls ``report(done, total, source)`` as each new or changed file finishes, and
    ``ocr(source, done, total)`` as the pages of a scan are read."""

    def __init__(
        self,
        report: Callable[[int, int, str], None] | None,
        ocr: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.report = report
        self.ocr = ocr
        self.done = 0
        self.total = 1

    def pages(self, source: str, done: int, total: int) -> None:
        if self.ocr is not None:
            self.ocr(source, done, total)

    def start(self, files: int, to_parse: int) -> None:
        self.total = max(to_parse, 1)

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status in {"added", "updated", "failed"}:
            self.done += 1
            if self.report is not None:
                self.report(self.done, self.total, outcome.source)


def ingest_uploads(
    accepted: Sequence[Path],
    kb: KnowledgeBase,
    settings: Settings,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    ocr: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Copy accepted uploads into the upload folder and ingest that folder; files that fail
    are not kept. ``progress(done, total, source)`` per file, ``ocr(source, done, total)`` per
    page of a scan."""
    limits = FileLimits.for_store(settings)
    folder = upload_dir(settings, kb.name)
    folder.mkdir(parents=True, exist_ok=True)
    for path in accepted:
        shutil.copyfile(path, folder / path.name)
    spec = ChunkingSpec.for_store(settings, kb)
    report = ingest(folder, kb, spec, workers=0, progress=_Progress(progress, ocr), limits=limits)
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
