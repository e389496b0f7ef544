"""``cmrag ingest`` / ``python -m ingest``: ingest a folder, list, delete, reset.

Exit status: 0 when every file was ingested (or unchanged), 1 when any file failed, 2 when the
ingest could not run at all (bad settings, unreachable server, a second ingest running).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chinese_mixtral_rag.cli.flags import (
    add_chunking_flags,
    add_store_flags,
    settings_from,
    translate,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, help="folder (or file) to ingest")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the stored documents")
    action.add_argument("--delete", metavar="SOURCE", help="remove one stored document")
    action.add_argument(
        "--reset", action="store_true", help="delete the whole collection (also: cmrag kb delete)"
    )
    parser.add_argument("--prune", action="store_true", help="remove files no longer on disk")
    parser.add_argument("--strict", action="store_true", help="stop at the first failed file")
    parser.add_argument(
        "--follow-symlinks",
        action="store_true",
        default=None,
        help="also read what symbolic links point to outside the folder (each is reported)",
    )
    store = parser.add_argument_group("store (defaults from CMR_* environment variables)")
    add_store_flags(store)
    store.add_argument("--model-path", help="chat model whose tokenizer counts chunk tokens")
    add_chunking_flags(store)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.cli.console import (
        IngestProgress,
        print_documents,
        print_ingest_report,
    )
    from chinese_mixtral_rag.documents.limits import FileLimits
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
    from chinese_mixtral_rag.store import open_knowledge_base

    # Libraries' own warnings about damaged files would tear the progress bar; the report says it.
    for noisy in ("pypdf", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settings = settings_from(args)
    # Listing, deleting and resetting need the knowledge base to exist (and create nothing).
    kb = open_knowledge_base(settings, must_exist=args.list or args.reset or bool(args.delete))
    if args.list:
        print_documents(kb)
        return 0
    if args.reset:
        with kb.writing():
            kb.reset()
        print(f"deleted collection {kb.display_name!r} and its BM25 index")
        return 0
    if args.delete:
        with kb.writing():
            removed = kb.delete_source(args.delete)
            if removed:
                kb.refresh_index()
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
    with IngestProgress(args.quiet) as progress:
        report = ingest(
            args.path,
            kb,
            spec,
            prune=args.prune,
            strict=args.strict,
            workers=settings.ingest_workers,
            batch=settings.ingest_batch,
            progress=progress,
            limits=FileLimits.for_store(settings),
            follow_symlinks=settings.follow_symlinks,
        )
    print_ingest_report(report, kb, lambda reason: translate(reason, args.settings_flags))
    return 1 if report.failures else 0
