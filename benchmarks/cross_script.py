"""Cross-script retrieval: CMRC 2018 dev questions (Simplified) over Traditional copies of the
contexts, against the same questions over the original contexts.

The Traditional corpus is the 848 contexts converted by OpenCC ``s2t`` (what a Taiwan or Hong Kong
user's documents look like), ingested through the real ingest path next to the Simplified one, in
a persistent store (``--store``; the first run embeds each corpus for minutes on 2 cores, later runs
start at once). Both are measured through the real ``HybridRetriever`` with the defaults, plus BM25
only and dense only (``chinese_mixtral_rag.eval.compare_retrieval``): BM25 folds both scripts to
Simplified (OpenCC ``t2s``) in chunks and queries alike, and multilingual-e5 reads both.

The acceptance line of issue 13: the default's recall@1 over the Traditional copies within one
point of the same-script run.

Run: ``.venv/bin/python benchmarks/cross_script.py [--store DIR] [--limit N]``. Prints a table;
passes or fails nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec  # noqa: E402
from chinese_mixtral_rag.eval import (  # noqa: E402
    SIDES,
    EvalDataset,
    compare_retrieval,
    ingest_corpus,
    load_dataset,
)
from chinese_mixtral_rag.store import KnowledgeBase  # noqa: E402
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model  # noqa: E402
from chinese_mixtral_rag.testing.tables import format_table  # noqa: E402


def traditional_copy(dataset: EvalDataset) -> EvalDataset:
    """The same questions over the contexts converted to Traditional characters."""
    import opencc

    convert = opencc.OpenCC("s2t").convert
    return EvalDataset(
        f"{dataset.name}-traditional",
        dataset.format,
        [convert(context) for context in dataset.contexts],
        list(dataset.items),
    )


def store_for(dataset: EvalDataset, store: Path, name: str) -> KnowledgeBase:
    """``dataset``'s corpus ingested (incrementally) into collection ``name``."""
    from benchmarks.retrieval_eval import tiny_gguf

    embedding = resolve_embedding_model(None)
    kb = KnowledgeBase(f"{name}-{embedding.name}", embedding, persist_dir=store)
    spec = ChunkingSpec(384, 48, str(tiny_gguf(store)), embedding.path)
    started = time.perf_counter()
    report = ingest_corpus(dataset, kb, spec, store / "eval-corpora" / kb.name, workers=2)
    print(
        f"{kb.name}: {kb.count()} chunks, ingest {time.perf_counter() - started:.0f} s "
        f"({report.chunks_embedded} embedded)",
        flush=True,
    )
    return kb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/cmrc-eval-store"))
    parser.add_argument("--limit", type=int, help="questions [all 3,219]")
    args = parser.parse_args()
    if not (SHARED / "cmrc2018").is_dir():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 2
    for noisy in ("chromadb", "pypdf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    simplified = load_dataset(SHARED / "cmrc2018" / "cmrc2018_dev.json")
    traditional = traditional_copy(simplified)
    items = simplified.items[: args.limit] if args.limit else simplified.items
    rows = []
    results = {}
    for label, dataset, name in (
        ("same script (Simplified)", simplified, "cmrc"),
        ("Traditional contexts", traditional, "cmrc-traditional"),
    ):
        kb = store_for(dataset, args.store, name)
        reports = compare_retrieval(kb, dataset, items=items)
        results[label] = reports
        for side in SIDES:
            report = reports[side]
            rows.append(
                [
                    label,
                    "default (fused)" if side == "fused" else side,
                    f"{report.recall(1):.3f}",
                    f"{report.recall(5):.3f}",
                    f"{report.mrr:.3f}",
                    f"{report.dense_share:.2f}",
                    f"{report.latency_ms(50):.1f}",
                    f"{report.latency_ms(95):.1f}",
                ]
            )
    print(f"\n## CMRC 2018 dev, {len(items)} questions (Simplified) over each corpus\n")
    header = ["corpus", "retriever", "R@1", "R@5", "MRR@10", "dense share", "p50 ms", "p95 ms"]
    print(format_table(header, rows, right=set(range(2, len(header)))))
    same = results["same script (Simplified)"]["fused"].recall(1)
    cross = results["Traditional contexts"]["fused"].recall(1)
    print(f"\ndefault R@1, Traditional minus same script: {100 * (cross - same):+.1f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
