"""Retrieval study on CMRC 2018 dev: which fusion, which constants, which "not found" threshold.

Corpus: the 848 CMRC 2018 dev contexts, one file each, ingested by ``chinese_mixtral_rag.eval``
(the real ingest path: 384-token chunks with overlap 48 counted by the tiny GGUF's tokenizer, as in
the CI test) and embedded with the REAL bundled all-MiniLM-L6-v2. A second collection holds
``../shared/data/docs`` (statutes + the novel), whose material answers none of the CMRC questions.
Both live in a persistent store (``--store``, default ``/tmp/cmrc-eval-store``): the first run
embeds for several minutes on 2 cores, later runs start at once.

Tables printed:

1. variants: dense only, BM25 only, the default hybrid with its per-query gate, and hybrid with
   the gate off (dense in every query, ``uses_dense`` overridden) at dense weights 0.25 / 0.5 /
   1.0. Recall@1/3/5/10 and MRR@10 over all 3,219 questions are computed by replaying the
   retriever's weighted reciprocal-rank fusion over each question's BM25 and dense top-100
   (queries embedded in batches: a single MiniLM query costs 40-500 ms on this shared 2-core
   machine, which would make the six variants take hours); the first ``--timed`` questions then
   run through the real ``HybridRetriever`` for each variant, giving p50/p95 latency, the share
   of queries where dense took part, and ``agree``: the share where replay and real retriever
   put the gold file at the same rank;
2. ``fetch_k`` and ``rrf_k`` sensitivity of the forced fusion, replayed over all questions (the
   gated default answers Chinese questions by BM25 alone, where neither constant changes the
   order);
3. the top hit's ``relevance`` for answerable questions (CMRC vs the CMRC store; hand-written
   law/novel questions vs the docs store) and for unanswerable ones (CMRC vs the docs store; the
   law/novel questions vs the CMRC store), then per threshold the share of answerable questions
   wrongly refused and of unanswerable ones let through;
4. with ``--rerank``, the default hybrid plus a cross-encoder: the tiny reranker has RANDOM weights
   (no real one can be downloaded here), so only its latency is printed.

Run: ``.venv/bin/python benchmarks/retrieval_eval.py [--store DIR] [--limit N] [--rerank]``.
Passes or fails nothing; takes minutes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest  # noqa: E402
from chinese_mixtral_rag.eval import (  # noqa: E402
    EvalDataset,
    EvalItem,
    QueryOutcome,
    RetrievalReport,
    evaluate_retrieval,
    ingest_corpus,
    load_dataset,
    make_retriever,
    percentile,
)
from chinese_mixtral_rag.store import KnowledgeBase  # noqa: E402
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model  # noqa: E402

#: Questions about the statutes and the novel in ../shared/data/docs (answerable there, not in
#: CMRC), with a part of the file name the answer is in.
DOCS_QUESTIONS: list[tuple[str, str]] = [
    ("民法典规定的居住权如何设立？", "民法典"),
    ("居住权可以继承吗？", "民法典"),
    ("民法典中成年人是指多少周岁以上的自然人？", "民法典"),
    ("向人民法院请求保护民事权利的诉讼时效期间是几年？", "民法典"),
    ("宪法规定中华人民共和国的国家机构实行什么原则？", "宪法"),
    ("全国人民代表大会每届任期几年？", "宪法"),
    ("已满多少周岁的人犯罪应当负刑事责任？", "刑法"),
    ("正当防卫明显超过必要限度造成重大损害的应当如何处理？", "刑法"),
    ("吸毒成瘾人员的戒毒措施有哪些？", "禁毒法"),
    ("精神障碍患者的住院治疗实行什么原则？", "精神卫生法"),
    ("麻醉药品药用原植物的种植由哪个部门确定年度计划？", "麻醉药品"),
    ("刘备三顾茅庐请的是谁？", "三国演义"),
    ("桃园结义的是哪三个人？", "三国演义"),
    ("赤壁之战前向曹操献连环计的是谁？", "三国演义"),
    ("关羽温酒斩的是谁？", "三国演义"),
    ("诸葛亮七擒七纵的是谁？", "三国演义"),
    ("草船借箭一共借到多少支箭？", "三国演义"),
    ("吕布的坐骑叫什么名字？", "三国演义"),
]

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)


def tiny_gguf(store: Path) -> Path:
    from chinese_mixtral_rag.testing import TINY, build_tiny_mixtral

    path = store / "tiny-mixtral" / "tiny-mixtral-f32.gguf"
    if not path.is_file():
        build_tiny_mixtral(store / "tiny-mixtral", TINY)
    return path


def open_stores(
    store: Path, embedder: str | None = None
) -> tuple[EvalDataset, KnowledgeBase, KnowledgeBase]:
    """The CMRC and the docs collections with a real embedder (the offline default unless
    named), ingested on first use."""
    embedding = resolve_embedding_model(embedder)
    spec = ChunkingSpec(384, 48, str(tiny_gguf(store)), embedding.path)
    dataset = load_dataset(SHARED / "cmrc2018" / "cmrc2018_dev.json")
    cmrc = KnowledgeBase(f"cmrc-{embedding.name}", embedding, persist_dir=store)
    started = time.perf_counter()
    report = ingest_corpus(dataset, cmrc, spec, store / "eval-corpora" / cmrc.name, workers=2)
    print(
        f"CMRC store: {cmrc.count()} chunks, ingest {time.perf_counter() - started:.0f} s "
        f"({report.chunks_embedded} embedded)",
        flush=True,
    )
    docs = KnowledgeBase(f"docs-{embedding.name}", embedding, persist_dir=store)
    started = time.perf_counter()
    report = ingest(SHARED / "docs", docs, spec, workers=2)
    print(
        f"docs store: {docs.count()} chunks, ingest {time.perf_counter() - started:.0f} s "
        f"({report.chunks_embedded} embedded)",
        flush=True,
    )
    return dataset, cmrc, docs


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain Markdown table (pastes into notes and PRs)."""
    cells = [[str(c) for c in header]] + [
        [f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(flush=True)


# -- the variants: fusion replayed over cached ranked lists, checked against the real retriever --

#: Depth of the cached BM25 and dense lists (the largest ``fetch_k`` studied).
DEPTH = 100
K = 10


@dataclass
class RankedLists:
    """Per question: BM25's and dense search's chunk ids, best first, and the gate's verdict."""

    lexical: list[list[str]]
    dense: list[list[str]]
    readable: list[bool]
    """The embedder can read the question (the gate lets dense take part)."""
    source_of: dict[str, str]


def ranked_lists(kb: KnowledgeBase, questions: Sequence[str]) -> RankedLists:
    """BM25 and dense top-``DEPTH`` for every question: queries embedded in batches and sent to
    Chroma together (what the retriever does one query at a time)."""
    from chinese_mixtral_rag.qa.retrieval import MAX_UNKNOWN

    started = time.perf_counter()
    lexical = [[i for i, _ in kb.lexical.search(q, DEPTH)] for q in questions]
    # embed_query, not embed_documents: e5 marks queries and passages apart ("query: ")
    vectors = [kb.embeddings.embed_query(q) for q in questions]
    dense: list[list[str]] = []
    for start in range(0, len(vectors), 256):
        found = kb.collection.query(
            query_embeddings=vectors[start : start + 256], n_results=DEPTH, include=["distances"]
        )
        dense.extend(found["ids"])
    readable = [kb.embedding.unknown_share(q) <= MAX_UNKNOWN for q in questions]
    page = kb.collection.get(include=["metadatas"])
    source_of = {i: str(m["source"]) for i, m in zip(page["ids"], page["metadatas"], strict=True)}
    print(f"ranked lists for {len(questions)} questions: {time.perf_counter() - started:.0f} s")
    return RankedLists(lexical, dense, readable, source_of)


def fuse(
    lexical: list[str], dense: list[str] | None, config: dict[str, Any], k: int = K
) -> list[str]:
    """The first ``k`` chunk ids, fused exactly as ``HybridRetriever`` fuses them."""
    fetch_k, rrf_k = config.get("fetch_k", 50), config.get("rrf_k", 60)
    fused: dict[str, float] = {}
    for rank, chunk_id in enumerate(lexical[:fetch_k], start=1):
        fused[chunk_id] = fused.get(chunk_id, 0.0) + config.get("lexical_weight", 1.0) / (
            rrf_k + rank
        )
    if dense is not None:
        for rank, chunk_id in enumerate(dense[:fetch_k], start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + config.get("dense_weight", 1.0) / (
                rrf_k + rank
            )
    return sorted(fused, key=lambda i: -fused[i])[:k]


def replay(lists: RankedLists, golds: Sequence[str], config: dict[str, Any]) -> list[int | None]:
    """Gold ranks of every question under one retriever configuration."""
    mode = config.get("dense", "auto")
    ranks: list[int | None] = []
    for n, gold in enumerate(golds):
        use_dense = config.get("dense_weight", 1.0) > 0 and (
            mode == "always" or (mode == "auto" and lists.readable[n])
        )
        order = fuse(lists.lexical[n], lists.dense[n] if use_dense else None, config)
        sources = [lists.source_of[i] for i in order]
        ranks.append(sources.index(gold) + 1 if gold in sources else None)
    return ranks


def variant_row(
    name: str,
    config: dict[str, Any],
    kb: KnowledgeBase,
    lists: RankedLists,
    dataset: EvalDataset,
    items: Sequence[EvalItem],
    timed: int,
) -> list[Any]:
    """Quality over all ``items`` (replayed), latency over the first ``timed`` with the real
    retriever, and the share of those where replay and real retriever put the gold at the same
    rank."""
    golds = [dataset.source(i) for i in items]
    report = RetrievalReport(
        [
            QueryOutcome(i.id, i.question, g, r, 0.0)
            for i, g, r in zip(items, golds, replay(lists, golds, config), strict=True)
        ],
        (1, 3, 5, K),
    )
    real = evaluate_retrieval(make_retriever(kb, **config), dataset, items=items[:timed])
    same = sum(1 for a, b in zip(real.ranks, report.ranks[:timed], strict=True) if a == b) / max(
        1, timed
    )
    dense = real.dense_share
    m = report.metrics()
    print(f"  {name}: done", file=sys.stderr, flush=True)
    return [
        name,
        m["recall@1"],
        m["recall@3"],
        m["recall@5"],
        m["recall@10"],
        m["mrr@10"],
        f"{real.latency_ms(50):.1f}",
        f"{real.latency_ms(95):.1f}",
        f"{dense:.2f}",
        f"{same:.3f}",
    ]


HEADER = ["variant", "R@1", "R@3", "R@5", "R@10", "MRR@10", "p50 ms", "p95 ms", "dense", "agree"]


def sensitivity_row(
    name: str,
    config: dict[str, Any],
    lists: RankedLists,
    dataset: EvalDataset,
    items: Sequence[EvalItem],
) -> list[Any]:
    golds = [dataset.source(i) for i in items]
    ranks = replay(lists, golds, config)
    m = RetrievalReport(
        [QueryOutcome(i.id, "", g, r, 0.0) for i, g, r in zip(items, golds, ranks, strict=True)],
        (1, 3, 5, K),
    ).metrics()
    return [name, m["recall@1"], m["recall@3"], m["recall@5"], m["recall@10"], m["mrr@10"]]


#: Hits the QA chain retrieves (``QAOptions.retrieve_k``); it refuses when the best relevance
#: among them is below ``min_relevance``.
RETRIEVE_K = 20


def relevances(
    kb: KnowledgeBase, questions: Sequence[str]
) -> tuple[list[float], list[float], list[str]]:
    """Per question: the first hit's relevance, the best relevance among the first
    ``RETRIEVE_K`` hits (what the QA chain compares with ``min_relevance``), and the first hit's
    source. BM25 alone: what the default retriever does for every Chinese question with MiniLM
    (its gate lets dense read none of them), without the gate's per-query cost."""
    retriever = make_retriever(kb, dense="never", k=RETRIEVE_K)
    retriever.invoke(questions[0])
    top, best, sources = [], [], []
    for question in questions:
        hits = retriever.invoke(question)
        values = [float(h.metadata["relevance"]) for h in hits] or [0.0]
        top.append(values[0])
        best.append(max(values))
        sources.append(str(hits[0].metadata["source"]) if hits else "")
    return top, best, sources


def quantiles(name: str, values: Sequence[float]) -> list[Any]:
    return [name, len(values), *(percentile(values, q) for q in (5, 25, 50, 75, 95))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/cmrc-eval-store"))
    parser.add_argument("--limit", type=int, help="questions in the variants table [all 3,219]")
    parser.add_argument("--timed", type=int, default=300, help="questions run for real [300]")
    parser.add_argument("--no-sensitivity", action="store_true")
    parser.add_argument("--rerank", action="store_true", help="add the (random) reranker row")
    parser.add_argument(
        "--embedder", help="embedding model [the offline default, multilingual-e5-small]"
    )
    args = parser.parse_args()
    if not (SHARED / "cmrc2018").is_dir():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 2
    for noisy in ("chromadb", "pypdf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    dataset, cmrc, docs = open_stores(args.store, args.embedder)
    items = dataset.items[: args.limit] if args.limit else dataset.items

    lists = ranked_lists(cmrc, [i.question for i in items])
    timed = min(args.timed, len(items))
    print(
        f"\n## Variants: CMRC 2018 dev, {len(items)} questions, {cmrc.count()} chunks "
        f"(latency, dense share and agreement with the replay: first {timed} questions)\n"
    )
    variants: list[tuple[str, dict[str, Any]]] = [
        ("dense only", {"dense": "always", "lexical_weight": 0.0}),
        ("BM25 only", {"dense": "never"}),
        ("hybrid, gated (default)", {"dense": "auto"}),
        ("hybrid forced, w=0.25", {"dense": "always", "dense_weight": 0.25}),
        ("hybrid forced, w=0.5", {"dense": "always", "dense_weight": 0.5}),
        ("hybrid forced, w=1.0", {"dense": "always", "dense_weight": 1.0}),
    ]
    rows = [
        variant_row(name, config, cmrc, lists, dataset, items, timed) for name, config in variants
    ]
    table(HEADER, rows)
    if args.rerank:
        from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_reranker

        reranker = build_tiny_reranker(args.store / "tiny-reranker")
        report = evaluate_retrieval(
            make_retriever(cmrc, reranker=str(reranker)), dataset, items=items[:timed]
        )
        print(
            f"hybrid, gated + rerank of 30 candidates by the RANDOM tiny cross-encoder ({timed} "
            f"questions; its order means nothing, latency only): p50 {report.latency_ms(50):.1f} "
            f"ms, p95 {report.latency_ms(95):.1f} ms\n"
        )

    if not args.no_sensitivity:
        print(f"## Sensitivity (replayed over all {len(items)} questions)\n")
        rows = []
        for base_name, base in (
            ("forced w=0.5", {"dense": "always", "dense_weight": 0.5}),
            ("forced w=1.0", {"dense": "always", "dense_weight": 1.0}),
        ):
            for fetch_k in (10, 20, 50, 100):
                config = {**base, "fetch_k": fetch_k}
                rows.append(
                    sensitivity_row(
                        f"{base_name}, fetch_k={fetch_k}", config, lists, dataset, items
                    )
                )
            for rrf_k in (0, 10, 30, 100):
                config = {**base, "rrf_k": rrf_k}
                rows.append(
                    sensitivity_row(f"{base_name}, rrf_k={rrf_k}", config, lists, dataset, items)
                )
        table(HEADER[:6], rows)

    print("## Relevance of the hits (default retriever)\n")
    questions = [i.question for i in items]
    started = time.perf_counter()
    cmrc_top, cmrc_best, _ = relevances(cmrc, questions)
    cmrc_docs_top, cmrc_docs_best, _ = relevances(docs, questions)
    docs_questions = [q for q, _ in DOCS_QUESTIONS]
    docs_top, docs_best, docs_sources = relevances(docs, docs_questions)
    docs_cmrc_top, docs_cmrc_best, _ = relevances(cmrc, docs_questions)
    print(f"(measured in {time.perf_counter() - started:.0f} s)")
    right_file = sum(
        1 for (_, part), src in zip(DOCS_QUESTIONS, docs_sources, strict=True) if part in src
    )
    print(
        f"law/novel questions: first hit from the right file for {right_file}/{len(docs_sources)}"
    )
    for (question, part), source, top, best, other in zip(
        DOCS_QUESTIONS, docs_sources, docs_top, docs_best, docs_cmrc_best, strict=True
    ):
        verdict = "ok " if part in source else "BAD"
        print(f"  {top:.2f}/{best:.2f} vs CMRC {other:.2f} {verdict} {question} -> {source}")
    print()
    groups = [
        ("CMRC -> CMRC (answerable)", cmrc_top, cmrc_best),
        ("law/novel -> docs (answerable)", docs_top, docs_best),
        ("CMRC -> docs (unanswerable)", cmrc_docs_top, cmrc_docs_best),
        ("law/novel -> CMRC (unanswerable)", docs_cmrc_top, docs_cmrc_best),
    ]
    header = ["questions -> store", "n", "p5", "p25", "p50", "p75", "p95"]
    print("first hit's relevance:\n")
    table(header, [quantiles(name, top) for name, top, _ in groups])
    print(f"best relevance among the first {RETRIEVE_K} hits (what the QA chain tests):\n")
    table(header, [quantiles(name, best) for name, _, best in groups])

    def below(values: Sequence[float], t: float) -> float:
        return sum(1 for v in values if v < t) / len(values)

    print(f"## min_relevance trade-off (refused: best relevance of {RETRIEVE_K} hits < it)\n")
    table(
        [
            "min_relevance",
            "CMRC answerable refused",
            "law/novel answerable refused",
            "CMRC unanswerable let through",
            "law/novel unanswerable let through",
        ],
        [
            [
                t,
                below(cmrc_best, t),
                below(docs_best, t),
                1 - below(cmrc_docs_best, t),
                1 - below(docs_cmrc_best, t),
            ]
            for t in THRESHOLDS
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
