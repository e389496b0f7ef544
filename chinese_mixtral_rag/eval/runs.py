"""Evaluation runs: every question through the retriever or the QA chain, scored per question.

``evaluate_retrieval``: the gold rank is the position of the first retrieved chunk that comes
from the question's own context file; the report gives recall@k (share of questions with the gold
file among the first k chunks), MRR over the chunks fetched (the largest k), p50/p95 query latency
(one untimed warm-up query first loads the indexes) and, for a threshold, the share of questions
the QA chain would refuse.

``evaluate_qa``: every question through the QA chain; the answer is scored with exact match and
character F1 (SQuAD-style, for CMRC) and with LongBench's own Chinese token F1 (jieba words), each
the maximum over the gold answers; also the shares of questions answered from the documents
(``found``), with the gold file among the sources given to the model (``gold_in_sources``) and
cited by the answer (``cited_gold``: read from the chain's ``cited``, which holds only markers
whose passage supports the sentence they end, so a gold passage cited for a sentence it does not
say, or through a header the model copied, does not count). LongBench items are
single-document questions: by default each is restricted to its own file, CMRC questions are
asked against the whole collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.errors import EvalError
from chinese_mixtral_rag.eval.datasets import EvalDataset, EvalItem
from chinese_mixtral_rag.eval.metrics import (
    DEFAULT_KS,
    char_f1,
    exact_match,
    longbench_zh_f1,
    mean_reciprocal_rank,
    percentile,
    recall_at_k,
)

if TYPE_CHECKING:
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever
    from chinese_mixtral_rag.store import KnowledgeBase

DenseMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class QueryOutcome:
    """What retrieval did for one question."""

    id: str
    question: str
    gold: str
    rank: int | None
    """1-based position of the first chunk from the gold file (None: not among those fetched)."""
    seconds: float
    top_source: str = ""
    top_relevance: float = 0.0
    """``relevance`` of the first hit (0 when nothing was retrieved)."""
    best_relevance: float = 0.0
    """Highest ``relevance`` among the hits (what the QA chain compares with its
    ``min_relevance`` to answer "not found")."""
    used_dense: bool = False
    """A returned chunk carries a ``dense_rank``: the dense side took part in this query."""


@dataclass
class RetrievalReport:
    """Per-question outcomes and the metrics computed from them."""

    outcomes: list[QueryOutcome]
    ks: tuple[int, ...] = DEFAULT_KS

    @property
    def ranks(self) -> list[int | None]:
        return [o.rank for o in self.outcomes]

    def recall(self, k: int) -> float:
        return recall_at_k(self.ranks, k)

    @property
    def mrr(self) -> float:
        return mean_reciprocal_rank(self.ranks, max(self.ks))

    @property
    def dense_share(self) -> float:
        """Share of questions where the dense side took part."""
        return sum(1 for o in self.outcomes if o.used_dense) / max(1, len(self.outcomes))

    def latency_ms(self, q: float) -> float:
        return 1000 * percentile([o.seconds for o in self.outcomes], q)

    def refused(self, min_relevance: float) -> float:
        """Share of questions whose hits all have ``relevance`` below ``min_relevance`` (the QA
        chain would answer "not found in the documents" without asking the model)."""
        if not self.outcomes:
            return 0.0
        refused = sum(1 for o in self.outcomes if o.best_relevance < min_relevance)
        return refused / len(self.outcomes)

    def metrics(self) -> dict[str, float]:
        """Name -> value, in the order printed: recall@k..., mrr@K, latency p50/p95 (ms)."""
        values = {f"recall@{k}": self.recall(k) for k in self.ks}
        values[f"mrr@{max(self.ks)}"] = self.mrr
        values["latency_p50_ms"] = self.latency_ms(50)
        values["latency_p95_ms"] = self.latency_ms(95)
        return values


def make_retriever(kb: KnowledgeBase, *, dense: DenseMode = "auto", **fields: Any) -> Any:
    """A :class:`HybridRetriever` over ``kb``; ``dense``: ``"auto"`` (the per-query gate),
    ``"always"`` (dense in every query, the gate switched off) or ``"never"`` (BM25 only).
    ``fields`` are the retriever's own (``fetch_k``, ``rrf_k``, ``dense_weight``, ...)."""
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever

    if dense == "never":
        fields["dense_weight"] = 0.0
    if dense == "always":
        return always_dense_class()(kb=kb, **fields)
    return HybridRetriever(kb=kb, **fields)


@lru_cache(maxsize=1)
def always_dense_class() -> type[HybridRetriever]:
    """``HybridRetriever`` with the unknown-token gate switched off (for measuring the gate)."""
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever

    class AlwaysDenseRetriever(HybridRetriever):
        """Dense search in every query, whatever share of it the embedder can read."""

        def uses_dense(self, query: str) -> bool:
            return self.dense_weight > 0

    return AlwaysDenseRetriever


def evaluate_retrieval(
    retriever: HybridRetriever,
    dataset: EvalDataset,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    items: Sequence[EvalItem] | None = None,
    on_query: Callable[[QueryOutcome], None] | None = None,
) -> RetrievalReport:
    """Ask every question (or ``items``) and find where its gold context's chunks rank.

    The retriever returns ``max(ks)`` chunks per question; one untimed warm-up query loads the
    indexes (and the embedder) before the timed ones.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise EvalError(f"recall cut-offs must be positive integers, got {ks}")
    depth = ks[-1]
    asked = list(dataset.items if items is None else items)
    if asked:
        retriever.invoke(asked[0].question, k=depth)
    outcomes = []
    for item in asked:
        gold = dataset.source(item)
        started = time.perf_counter()
        documents = retriever.invoke(item.question, k=depth)
        seconds = time.perf_counter() - started
        sources = [str(d.metadata.get("source", "")) for d in documents]
        rank = sources.index(gold) + 1 if gold in sources else None
        top = documents[0].metadata if documents else {}
        relevances = [float(d.metadata.get("relevance", 0.0)) for d in documents]
        outcome = QueryOutcome(
            item.id,
            item.question,
            gold,
            rank,
            seconds,
            str(top.get("source", "")),
            float(top.get("relevance", 0.0)),
            max(relevances, default=0.0),
            any("dense_rank" in d.metadata for d in documents),
        )
        outcomes.append(outcome)
        if on_query is not None:
            on_query(outcome)
    return RetrievalReport(outcomes, ks)


#: The sides ``compare_retrieval`` runs, in the order printed.
SIDES = ("bm25", "dense", "fused")


def compare_retrieval(
    kb: KnowledgeBase,
    dataset: EvalDataset,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    items: Sequence[EvalItem] | None = None,
    on_query: Callable[[QueryOutcome], None] | None = None,
    **fields: Any,
) -> dict[str, RetrievalReport]:
    """BM25 alone, dense alone and the fusion (``fields``, as :func:`make_retriever`) over the
    same questions and store: what each side contributes on this data. Dense alone ignores the
    per-query gate (it shows what the embedder can do); the fusion keeps it."""
    sides = {
        "bm25": make_retriever(kb, dense="never", **fields),
        "dense": make_retriever(
            kb, dense="always", **{**fields, "lexical_weight": 0.0, "dense_weight": 1.0}
        ),
        "fused": make_retriever(kb, **fields),
    }
    return {
        name: evaluate_retrieval(retriever, dataset, ks=ks, items=items, on_query=on_query)
        for name, retriever in sides.items()
    }


def gains_and_losses(base: RetrievalReport, other: RetrievalReport, k: int = 1) -> tuple[int, int]:
    """Questions ``other`` finds within ``k`` that ``base`` does not, and the reverse."""
    hit = [
        (a.rank is not None and a.rank <= k, b.rank is not None and b.rank <= k)
        for a, b in zip(base.outcomes, other.outcomes, strict=True)
    ]
    return sum(1 for a, b in hit if b and not a), sum(1 for a, b in hit if a and not b)


@dataclass(frozen=True)
class AnswerOutcome:
    """What the QA chain did for one question, and its scores."""

    id: str
    question: str
    answers: tuple[str, ...]
    prediction: str
    seconds: float
    exact_match: float
    char_f1: float
    longbench_f1: float
    found: bool
    """The chain answered from the documents (False: it said "not found" without the model)."""
    gold_in_sources: bool
    """The gold context's file is among the sources put before the model."""
    cited_gold: bool
    """The answer cites (``[n]``) a passage of the gold context's file for a sentence that
    passage supports (the chain's ``cited``, see :mod:`~chinese_mixtral_rag.qa.citations`)."""


@dataclass
class QAReport:
    """Per-question outcomes and their means."""

    outcomes: list[AnswerOutcome]

    def mean(self, name: str) -> float:
        if not self.outcomes:
            return 0.0
        return sum(float(getattr(o, name)) for o in self.outcomes) / len(self.outcomes)

    def metrics(self) -> dict[str, float]:
        """Name -> value, in the order printed."""
        return {
            "exact_match": self.mean("exact_match"),
            "char_f1": self.mean("char_f1"),
            "longbench_f1": self.mean("longbench_f1"),
            "found": self.mean("found"),
            "gold_in_sources": self.mean("gold_in_sources"),
            "cited_gold": self.mean("cited_gold"),
            "latency_p50_s": percentile([o.seconds for o in self.outcomes], 50),
            "latency_p95_s": percentile([o.seconds for o in self.outcomes], 95),
        }


def source_names(sources: Any) -> list[str]:
    """File names from the ``sources`` a QA chain returns: :class:`~chinese_mixtral_rag.qa.Source`
    objects (``.source``), strings, mappings with a ``source`` key, or documents."""
    names = []
    for entry in sources or []:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, Mapping):
            names.append(str(entry.get("source", "")))
        elif isinstance(getattr(entry, "source", None), str):
            names.append(entry.source)
        else:
            names.append(str(getattr(entry, "metadata", {}).get("source", "")))
    return names


def evaluate_qa(
    chain: Any,
    dataset: EvalDataset,
    *,
    items: Sequence[EvalItem] | None = None,
    restrict: bool | None = None,
    on_answer: Callable[[AnswerOutcome], None] | None = None,
) -> QAReport:
    """Run ``chain.invoke({"question": q, "sources": ...})`` for every question and score the
    returned ``"answer"`` (``"found"``, ``"sources"`` and ``"cited"`` are read when present).

    ``restrict``: pass ``sources=[the item's own file]``; default: for LongBench items, whose
    questions are about their own document, while CMRC questions are asked against the whole
    collection (``sources=None``)."""
    restrict = dataset.format == "longbench" if restrict is None else restrict
    outcomes = []
    for item in dataset.items if items is None else items:
        gold = dataset.source(item)
        started = time.perf_counter()
        result = chain.invoke({"question": item.question, "sources": [gold] if restrict else None})
        seconds = time.perf_counter() - started
        prediction = str(result.get("answer", ""))
        listed = source_names(result.get("sources"))
        cited = [listed[n - 1] for n in result.get("cited") or [] if 0 < n <= len(listed)]
        outcome = AnswerOutcome(
            item.id,
            item.question,
            item.answers,
            prediction,
            seconds,
            exact_match(prediction, item.answers),
            char_f1(prediction, item.answers),
            longbench_zh_f1(prediction, item.answers),
            bool(result.get("found", True)),
            gold in listed,
            gold in cited,
        )
        outcomes.append(outcome)
        if on_answer is not None:
            on_answer(outcome)
    return QAReport(outcomes)
