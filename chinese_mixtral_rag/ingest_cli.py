"""``cmrag ingest`` / ``python -m ingest``: progress bar, summary table, listing and deleting.

Exit status: 0 when every file was ingested (or unchanged), 1 when any file failed, 2 when the
ingest could not run at all (bad settings, unreachable server, a second ingest running).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.ingest import ProgressHook

if TYPE_CHECKING:
    from chinese_mixtral_rag.ingest import FileOutcome, IngestReport
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.store import KnowledgeBase

_FLAGS = {
    "collection": "collection",
    "persist_dir": "persist_dir",
    "chroma_host": "chroma_host",
    "chroma_port": "chroma_port",
    "embedding_model": "embedding_model",
    "chunk_size": "chunk_size",
    "chunk_overlap": "chunk_overlap",
    "workers": "ingest_workers",
    "model_path": "model_path",
}


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``cmrag ingest`` (also used by ``python -m ingest``)."""
    parser.add_argument("path", nargs="?", type=Path, help="folder (or file) to ingest")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the stored documents")
    action.add_argument("--delete", metavar="SOURCE", help="remove one stored document")
    action.add_argument("--reset", action="store_true", help="delete the whole collection")
    parser.add_argument("--prune", action="store_true", help="remove files no longer on disk")
    parser.add_argument("--strict", action="store_true", help="stop at the first failed file")
    store = parser.add_argument_group("store (defaults from CMR_* environment variables)")
    store.add_argument("--collection", help="knowledge base name [CMR_COLLECTION=documents]")
    store.add_argument("--persist-dir", type=Path, help="embedded store folder [CMR_PERSIST_DIR]")
    store.add_argument("--chroma-host", help="use a Chroma server [CMR_CHROMA_HOST]")
    store.add_argument("--chroma-port", type=int, help="Chroma server port [8000]")
    store.add_argument("--embedding-model", help="sentence-transformers model [offline MiniLM]")
    store.add_argument("--model-path", help="chat model whose tokenizer counts chunk tokens")
    store.add_argument("--chunk-size", type=int, help="chunk size in tokens [384]")
    store.add_argument("--chunk-overlap", type=int, help="overlap in tokens [48]")
    store.add_argument("--workers", type=int, help="parsing processes [up to 4]")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> Settings:
    from chinese_mixtral_rag.settings import Settings

    overrides = {
        field: getattr(args, flag)
        for flag, field in _FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    return Settings(**overrides)


class _RichProgress(ProgressHook):
    """A rich progress bar: files done of files found, files/s and chunks/s."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files  {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=quiet,
            transient=False,
        )
        self.task: Any = None
        self.chunks = 0
        self.files = 0

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, files: int, to_parse: int) -> None:
        self.task = self.progress.add_task("ingest", total=files, rate="")

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status in {"added", "updated"}:
            self.chunks += outcome.chunks
        if self.task is None or outcome.status == "removed":
            return
        self.progress.advance(self.task)
        elapsed = self.progress.tasks[0].elapsed or 1e-9
        done = self.progress.tasks[0].completed
        self.progress.update(
            self.task, rate=f"{done / elapsed:.1f} files/s  {self.chunks / elapsed:.0f} chunks/s"
        )


def print_report(report: IngestReport, kb: KnowledgeBase) -> None:
    """The summary (one line per figure, readable in any terminal), then each failure's reason."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{kb.name}: {report.root}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("files", justify="right")
    for status in ("added", "updated", "unchanged", "removed", "failed", "skipped"):
        table.add_row(f"files {status}", str(report.count(status)))
    table.add_row("chunks written", str(report.chunks_written))
    table.add_row("chunks embedded", str(report.chunks_embedded))
    table.add_row("chunks deleted", str(report.chunks_deleted))
    table.add_row("chunks in collection", str(kb.count()))
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
    for outcome in report.outcomes:
        if outcome.status in {"failed", "skipped"}:
            console.print(f"  {outcome.status}: {outcome.source}: {outcome.reason}", markup=False)
    if report.missing:
        console.print(
            f"  {len(report.missing)} stored file(s) no longer exist under {report.root} "
            "(run with --prune to remove them): " + ", ".join(report.missing[:5]),
            markup=False,
        )
    if report.stopped_early:
        console.print("  stopped at the first failure (--strict)")


def _list(kb: KnowledgeBase) -> None:
    from rich.console import Console
    from rich.table import Table

    states = kb.file_states()
    table = Table(title=f"{kb.name}: {len(states)} documents, {kb.count()} chunks")
    for column in ("source", "chunks", "title", "ingested"):
        table.add_column(column, justify="right" if column == "chunks" else "left")
    for source, state in sorted(states.items()):
        complete = "" if state.chunks == state.expected else f" (of {state.expected})"
        table.add_row(source, f"{state.chunks}{complete}", state.title, state.ingested_at)
    Console().print(table)


def run_ingest(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.ingest import ChunkingSpec, ingest
    from chinese_mixtral_rag.store import open_knowledge_base

    # Libraries' own warnings about damaged files would tear the progress bar; the report says it.
    for noisy in ("pypdf", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settings = _settings(args)
    kb = open_knowledge_base(settings)
    if args.list:
        _list(kb)
        return 0
    if args.reset:
        with kb.writing():
            kb.reset()
        print(f"deleted collection {kb.name!r} and its BM25 index")
        return 0
    if args.delete:
        with kb.writing():
            removed = kb.delete_source(args.delete)
            if removed:
                kb.sync_lexical()
        if not removed:
            print(f"error: no stored document {args.delete!r} (see --list)", file=sys.stderr)
            return 2
        print(f"removed {args.delete}: {removed} chunks")
        return 0
    if args.path is None:
        print(
            "error: give a folder or file to ingest (or --list/--delete/--reset)", file=sys.stderr
        )
        return 2
    spec = ChunkingSpec.for_store(settings, kb)
    with _RichProgress(args.quiet) as progress:
        report = ingest(
            args.path,
            kb,
            spec,
            prune=args.prune,
            strict=args.strict,
            workers=settings.ingest_workers,
            batch=settings.ingest_batch,
            progress=progress,
        )
    print_report(report, kb)
    return 1 if report.failures else 0


def ingest_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ingest``: exactly ``cmrag ingest``."""
    from chinese_mixtral_rag.cli import main

    return main(["ingest", *(sys.argv[1:] if argv is None else argv)])
