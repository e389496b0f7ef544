"""``cmrag eval retrieval|qa``: measure retrieval and question answering on a public dataset.

The corpus (the dataset's distinct contexts) is written into ``<store>/eval-corpora/<collection>/``
and ingested through the real ingest path into a knowledge base whose persist directory is
``<store>`` (a temporary folder unless ``--store`` is given; with ``--store`` a re-run ingests
nothing and starts answering at once). The measuring is :mod:`chinese_mixtral_rag.eval`; this
module parses flags and prints. ``fetch_k``, ``dense_weight`` and ``reranker`` default to the
``CMR_*`` settings the QA chain uses. Also ``python -m chinese_mixtral_rag.eval ...``::

    cmrag eval retrieval --dataset ../shared/data/cmrc2018/cmrc2018_dev.json --store /tmp/cmrc
    cmrag eval qa --dataset ../shared/data/longbench/multifieldqa_zh.jsonl --model-path M.gguf \\
        --limit 20
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.cli.flags import add_chunking_flags, add_model_flags, settings_from
from chinese_mixtral_rag.errors import EvalError
from chinese_mixtral_rag.eval.metrics import DEFAULT_KS

if TYPE_CHECKING:
    from chinese_mixtral_rag.documents.pipeline import IngestReport
    from chinese_mixtral_rag.eval import EvalDataset, EvalItem
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.store import KnowledgeBase


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,3,5,10, got {text!r}") from exc
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return ks


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="CMRC/SQuAD .json or .jsonl")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write metrics and outcomes")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    store = parser.add_argument_group("corpus and store")
    store.add_argument(
        "--store",
        "--persist-dir",
        dest="store",
        type=Path,
        help="store folder to keep and reuse (default: a temporary one, not CMR_PERSIST_DIR)",
    )
    store.add_argument(  # not CMR_COLLECTION: an evaluation never lands in your knowledge base
        "--collection",
        dest="eval_collection",
        metavar="NAME",
        help="knowledge base name (default: eval-<dataset file>)",
    )
    add_chunking_flags(store)


def _add_retriever_flags(group: Any, *, full: bool) -> None:
    group.add_argument("--dense-weight", type=float, help="RRF weight of dense search")
    group.add_argument("--fetch-k", type=int, help="candidates per retriever")
    group.add_argument("--reranker", help="cross-encoder directory or cached hub id")
    if not full:
        return
    group.add_argument(
        "--dense",
        choices=["auto", "always", "never"],
        default="auto",
        help="dense search: per-query gate (auto), every query, or BM25 only",
    )
    group.add_argument("--lexical-weight", type=float, help="RRF weight of BM25")
    group.add_argument("--rrf-k", type=int, help="reciprocal-rank constant")
    group.add_argument("--rerank-top", type=int, help="candidates reranked")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands and flags of ``cmrag eval`` (also ``python -m chinese_mixtral_rag.eval``)."""
    kinds = parser.add_subparsers(dest="eval_command", required=True)
    retrieval = kinds.add_parser(
        "retrieval", help="recall@k, MRR and latency of the retriever on the dataset's questions"
    )
    _add_common(retrieval)
    _add_retriever_flags(retrieval.add_argument_group("retriever"), full=True)
    retrieval.add_argument(
        "--k", type=_ks, default=DEFAULT_KS, help="recall cut-offs, comma-separated"
    )
    retrieval.add_argument("--model-path", help="chat model whose tokenizer counts chunk tokens")
    retrieval.add_argument(
        "--min-relevance",
        dest="refusal_thresholds",
        type=float,
        action="append",
        help="also report the share of questions whose hits are all below this relevance "
        "(the QA chain would answer 'not in the documents'); repeatable",
    )
    retrieval.add_argument("--misses", type=int, default=0, help="print N questions missed at k=1")
    retrieval.add_argument(
        "--compare",
        action="store_true",
        help="BM25 only, dense only and fused side by side over the same store and questions",
    )
    qa = kinds.add_parser("qa", help="exact match and F1 of the QA chain's answers")
    _add_common(qa)
    chain = qa.add_argument_group("QA chain (defaults from CMR_* environment variables)")
    _add_retriever_flags(chain, full=False)
    chain.add_argument("--retrieve-k", type=int, help="chunks offered to the packer")
    chain.add_argument("--min-relevance", type=float, help="below it: 'not found', model not asked")
    chain.add_argument(
        "--context-tokens", type=int, help="most tokens of material (unset: all the window leaves)"
    )
    qa.add_argument(
        "--restrict",
        choices=["auto", "gold", "none"],
        default="auto",
        help="ask each question about its own context file only (gold), against the whole "
        "collection (none), or gold for LongBench and none for CMRC/SQuAD (auto)",
    )
    add_model_flags(qa)


@dataclass
class _Prepared:
    dataset: EvalDataset
    kb: KnowledgeBase
    report: IngestReport
    items: list[EvalItem]
    settings: Settings


def _prepare(args: argparse.Namespace, store: Path, settings: Settings) -> _Prepared:
    """Load the dataset, then write and ingest its corpus (with a progress bar) into the
    embedded store at ``store`` (never a Chroma server or the CMR_PERSIST_DIR one)."""
    from chinese_mixtral_rag.cli.console import IngestProgress
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec
    from chinese_mixtral_rag.eval import default_collection, ingest_corpus, load_dataset
    from chinese_mixtral_rag.store import open_knowledge_base

    if args.limit is not None and args.limit < 1:
        raise EvalError("--limit must be at least 1")
    dataset = load_dataset(args.dataset)
    own = {"persist_dir": store, "chroma_host": None, "lexical_dir": None}
    kb = open_knowledge_base(
        settings.model_copy(update=own), args.eval_collection or default_collection(args.dataset)
    )
    spec = ChunkingSpec.for_store(settings, kb)
    for noisy in ("pypdf", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with IngestProgress(args.quiet) as progress:
        report = ingest_corpus(
            dataset,
            kb,
            spec,
            store / "eval-corpora" / kb.name,
            workers=settings.ingest_workers,
            progress=progress,
        )
    if report.failures:
        first = report.failures[0]
        raise EvalError(
            f"{len(report.failures)} context file(s) could not be ingested, e.g. "
            f"{first.source}: {first.reason}"
        )
    items = dataset.items[: args.limit] if args.limit else list(dataset.items)
    return _Prepared(dataset, kb, report, items, settings)


def _retriever_fields(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The settings the QA chain uses (``fetch_k``, ``dense_weight``, ``reranker``: flags or
    ``CMR_*``), plus the retriever's own flags (``--rrf-k`` ...), else its defaults."""
    fields: dict[str, Any] = {
        "fetch_k": settings.fetch_k,
        "dense_weight": settings.dense_weight,
        "reranker": settings.reranker,
    }
    names = ("lexical_weight", "rrf_k", "rerank_top")
    fields.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    return fields


def _corpus_note(prepared: _Prepared) -> str:
    kb, report = prepared.kb, prepared.report
    return (
        f"{prepared.dataset.name}: {len(prepared.dataset.contexts)} contexts, {kb.count()} chunks "
        f"in {kb.display_name!r} ({kb.embedding.name}), ingest {report.seconds:.1f} s "
        f"({report.count('unchanged')} unchanged)"
    )


def _run_retrieval(args: argparse.Namespace, store: Path) -> int:
    from chinese_mixtral_rag.cli.console import print_metrics, progress_bar
    from chinese_mixtral_rag.eval import evaluate_retrieval, make_retriever

    prepared = _prepare(args, store, settings_from(args))
    fields = _retriever_fields(args, prepared.settings)
    if args.compare:
        return _compare(args, prepared, fields)
    retriever = make_retriever(prepared.kb, dense=args.dense, **fields)
    bar, advance = progress_bar(args.quiet, "retrieve", len(prepared.items))
    with bar:
        report = evaluate_retrieval(
            retriever, prepared.dataset, ks=args.k, items=prepared.items, on_query=advance
        )
    metrics = {**report.metrics(), "questions": float(len(report.outcomes))}
    for threshold in args.refusal_thresholds or []:
        metrics[f"refused@{threshold:g}"] = report.refused(threshold)
    if retriever.dense_weight > 0:
        metrics["dense_share"] = report.dense_share
    notes = [_corpus_note(prepared)]
    misses = [o for o in report.outcomes if o.rank != 1][: args.misses]
    notes += [
        f"miss@1 rank={o.rank} top={o.top_source} gold={o.gold}: {o.question}" for o in misses
    ]
    print_metrics(f"retrieval: {prepared.dataset.name}", metrics, notes)
    if args.json:
        payload = {"metrics": metrics, "outcomes": [asdict(o) for o in report.outcomes]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def _compare(args: argparse.Namespace, prepared: _Prepared, fields: dict[str, Any]) -> int:
    """``--compare``: the three sides in one table, and what fusion gained and lost."""
    from chinese_mixtral_rag.cli.console import print_comparison, progress_bar
    from chinese_mixtral_rag.eval import SIDES, compare_retrieval, gains_and_losses, make_retriever

    bar, advance = progress_bar(args.quiet, "retrieve", len(SIDES) * len(prepared.items))
    with bar:
        reports = compare_retrieval(
            prepared.kb,
            prepared.dataset,
            ks=args.k,
            items=prepared.items,
            on_query=advance,
            **fields,
        )
    metrics = {side: dict(report.metrics()) for side, report in reports.items()}
    for side, report in reports.items():
        metrics[side]["dense_share"] = report.dense_share
    for threshold in args.refusal_thresholds or []:
        for side, report in reports.items():
            metrics[side][f"refused@{threshold:g}"] = report.refused(threshold)
    fused = make_retriever(prepared.kb, **fields)
    names = ("fetch_k", "rrf_k", "lexical_weight", "dense_weight", "reranker")
    notes = [
        _corpus_note(prepared),
        "fused: " + ", ".join(f"{n}={getattr(fused, n)}" for n in names),
    ]
    for side in ("dense", "fused"):
        gained, lost = gains_and_losses(reports["bm25"], reports[side])
        notes.append(f"{side} against BM25 at rank 1: {gained} questions gained, {lost} lost")
    print_comparison(f"retrieval: {prepared.dataset.name}", metrics, notes)
    if args.json:
        payload = {
            "metrics": metrics,
            "outcomes": {side: [asdict(o) for o in r.outcomes] for side, r in reports.items()},
        }
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def _run_qa(args: argparse.Namespace, store: Path) -> int:
    from chinese_mixtral_rag.chat_models import ChineseMixtralChat
    from chinese_mixtral_rag.cli.console import print_metrics, progress_bar
    from chinese_mixtral_rag.eval import evaluate_qa
    from chinese_mixtral_rag.qa.chain import build_qa_chain

    settings = settings_from(args)
    chat = ChineseMixtralChat.from_settings(settings)
    chat.check()  # a bad model fails now, not after minutes of ingest
    prepared = _prepare(args, store, settings)
    chain = build_qa_chain(chat, kb=prepared.kb, settings=prepared.settings)
    restrict = {"auto": None, "gold": True, "none": False}[args.restrict]
    bar, advance = progress_bar(args.quiet, "answer", len(prepared.items))
    with bar:
        report = evaluate_qa(
            chain, prepared.dataset, items=prepared.items, restrict=restrict, on_answer=advance
        )
    metrics = {**report.metrics(), "questions": float(len(report.outcomes))}
    own = prepared.dataset.format == "longbench" if restrict is None else restrict
    scope = "its own context file" if own else "all context files"
    print_metrics(
        f"qa: {prepared.dataset.name}",
        metrics,
        [_corpus_note(prepared), f"each question searched in {scope}"],
    )
    if args.json:
        payload = {"metrics": metrics, "outcomes": [asdict(o) for o in report.outcomes]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``cmrag eval retrieval|qa`` with parsed arguments; returns the exit status."""
    run = _run_retrieval if args.eval_command == "retrieval" else _run_qa
    if args.store is not None:
        return run(args, args.store.expanduser())
    with tempfile.TemporaryDirectory(prefix="cmrag-eval-") as scratch:
        return run(args, Path(scratch))
