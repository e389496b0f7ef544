"""Hybrid retrieval: BM25 over characters fused with dense vectors, only where dense can help.

Measured on CMRC 2018 dev (see ``cmrag eval retrieval``): BM25 over CJK character unigrams and
bigrams finds the gold passage first for ~96 % of questions, while the offline default embedder
(all-MiniLM-L6-v2, which maps two thirds of a Chinese question to ``[UNK]``) for ~8 %,
and any fixed-weight fusion with it drags BM25 down. So the dense side is weighted per query: a
query the embedder cannot read (more than ``MAX_UNKNOWN`` of its tokens unknown) is answered by
BM25 alone, and one it can read gets reciprocal-rank fusion with ``dense_weight``. A Chinese
embedder (``BAAI/bge-small-zh-v1.5``, ``BAAI/bge-m3``) therefore joins in automatically.

Every hit carries ``relevance``: the share of the query's information (IDF-weighted distinct
search tokens, question words left out) that the chunk, its file's title and name contain.
Unlike BM25 scores it is comparable across queries and collections, which is what the "not in
the documents" threshold needs. It can only judge a query written in the documents' words: an
English question over Chinese text shares no token with any chunk, so its relevance is 0 even
where dense search found the answer. :meth:`HybridRetriever.judges` says whether it can; where it
cannot, the model reads the passages and says itself whether they answer. (The dense similarity
is no substitute: with multilingual-e5-small, English questions reach 0.72-0.82 cosine on their
Chinese answers and 0.73-0.82 on unrelated Chinese text; ``benchmarks/retrieval_eval.py``.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from chinese_mixtral_rag.chinese import strip_question_words
from chinese_mixtral_rag.store import IndexState, KnowledgeBase, describe_stale
from chinese_mixtral_rag.store.lexical import is_cjk_pair, lexical_tokens

logger = logging.getLogger(__name__)

#: Above this share of unknown tokens the embedder cannot read the query: dense is skipped.
MAX_UNKNOWN = 0.05

#: Below this share of a query's characters and words found anywhere in the collection, lexical
#: relevance cannot judge it. Measured: English questions over Chinese documents 0-0.11 (our test
#: set); Chinese questions over unrelated Chinese text at least 0.17 in a 161-chunk collection,
#: 0.71 over the statutes (CMRC 2018 dev questions).
MIN_COVERAGE = 0.15


def filter_for(
    sources: Sequence[str] | None, where: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """One Chroma ``where`` filter from a list of source files and a metadata filter."""
    parts: list[dict[str, Any]] = []
    if sources:
        parts.append({"source": {"$in": list(sources)}})
    if where:
        parts.append(dict(where))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def relevance_tokens(query: str) -> set[str]:
    """The distinct search tokens of a query that say what the passage must contain."""
    return set(lexical_tokens(strip_question_words(query))) or set(lexical_tokens(query))


def relevance(query_tokens: set[str], text: str, idf: Mapping[str, float]) -> float:
    """IDF-weighted share of ``query_tokens`` found in ``text`` (0 to 1)."""
    total = sum(idf.get(t, 0.0) for t in query_tokens)
    if total <= 0:
        return 0.0
    present = query_tokens & set(lexical_tokens(text))
    return sum(idf.get(t, 0.0) for t in present) / total


class HybridRetriever(BaseRetriever):
    """Chunks of a knowledge base for a question: BM25 plus (where it can read the query)
    dense search, fused by weighted reciprocal rank, optionally reranked by a cross-encoder.

    Instantiate:
        .. code-block:: python

            from chinese_mixtral_rag.qa.retrieval import HybridRetriever
            from chinese_mixtral_rag.settings import Settings
            from chinese_mixtral_rag.store import open_knowledge_base

            retriever = HybridRetriever(kb=open_knowledge_base(Settings(), "laws"), k=8)
            docs = retriever.invoke("居住权如何设立？")
            docs[0].metadata["source"], docs[0].metadata["relevance"]

    Restrict to some files (``sources``) or any Chroma metadata filter (``where``), per instance
    or per call: ``retriever.invoke(q, sources=["民法典.pdf"])``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: Any
    """The :class:`~chinese_mixtral_rag.store.KnowledgeBase` to search."""

    k: int = Field(default=8, ge=1)
    """Chunks returned, best first."""

    fetch_k: int = Field(default=50, ge=1)
    """Candidates taken from each retriever before fusion."""

    rrf_k: int = Field(default=20, ge=0)
    """Reciprocal-rank constant: ``score = sum(weight / (rrf_k + rank))``; 20 rather than the
    usual 60 lets a side's first hits count more (chosen with ``dense_weight``, see there)."""

    lexical_weight: float = Field(default=1.0, ge=0.0)
    """Weight of the BM25 ranking in the fusion."""

    dense_weight: float = Field(default=1.0, ge=0.0)
    """Weight of the dense ranking for queries the embedder can read (0: BM25 only); the
    default is ``QAOptions.dense_weight``'s, chosen by evaluation (see there)."""

    sources: list[str] | None = None
    """Only chunks of these files (``source`` as ingested, relative to the ingested folder)."""

    where: dict[str, Any] | None = None
    """A Chroma metadata filter, e.g. ``{"file_type": "pdf"}``."""

    reranker: str | None = None
    """A sentence-transformers cross-encoder (directory or cached hub id) to reorder the fused
    candidates; None: no reranking."""

    rerank_top: int = Field(default=30, ge=1)
    """Fused candidates the cross-encoder rescores."""

    def uses_dense(self, query: str) -> bool:
        """Whether the dense side takes part for this query (the embedder can read it)."""
        if self.dense_weight <= 0:
            return False
        return float(self.kb.embedding.unknown_share(query)) <= MAX_UNKNOWN

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        k = int(kwargs.get("k", self.k))
        sources = kwargs.get("sources", self.sources)
        where = filter_for(sources, kwargs.get("where", self.where))
        kb = self.kb
        # The caller may have read the state already (the QA chain reports it).
        state = kwargs.get("index_state") or kb.index_state()
        allowed = set(kb.ids_where(where)) if where else None
        if allowed is not None and not allowed:
            return []
        fused: dict[str, float] = {}
        ranks: dict[str, dict[str, int]] = {}
        lexical = kb.lexical_search(query, self.fetch_k, allowed=allowed)
        for rank, (chunk_id, _) in enumerate(lexical, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + self.lexical_weight / (self.rrf_k + rank)
            ranks.setdefault(chunk_id, {})["lexical_rank"] = rank
        if self.uses_dense(query) and state.stored:
            dense = kb.dense_search(query, self.fetch_k, where)
            for rank, chunk_id in enumerate(dense, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + self.dense_weight / (self.rrf_k + rank)
                ranks.setdefault(chunk_id, {})["dense_rank"] = rank
        order = sorted(fused, key=lambda i: -fused[i])
        if self.reranker:
            order = self._rerank(query, order[: max(self.rerank_top, k)])
        documents: list[Document] = kb.documents(order[:k])
        if len(documents) < len(order[:k]):
            # The BM25 index names chunks Chroma no longer holds (documents() skips them): read
            # on down the fused list rather than return fewer than k.
            state = replace(state, missing=len(order[:k]) - len(documents))
            documents = [*documents, *kb.documents(order[k:])][:k]
        if state.stale:
            _report_stale(kb, state)
        scores = self.relevances(query, documents)
        for doc, score in zip(documents, scores, strict=True):
            chunk_id = doc.metadata["id"]
            doc.id = chunk_id
            doc.metadata.update(ranks.get(chunk_id, {}))
            doc.metadata["score"] = round(fused[chunk_id], 6)
            doc.metadata["relevance"] = score
        return documents

    def judges(self, query: str) -> bool:
        """Whether :func:`relevance` can judge ``query`` here: at least ``MIN_COVERAGE`` of its
        characters and words (bigrams left out: an unrelated question shares characters, not
        pairs) occur somewhere in the collection."""
        words = {t for t in relevance_tokens(query) if not is_cjk_pair(t)}
        if not words:
            return True
        return len(self.kb.known_tokens(words)) / len(words) >= MIN_COVERAGE

    def relevances(self, query: str, documents: Sequence[Document]) -> list[float]:
        """:func:`relevance` of each chunk for ``query``, its file's title and name included
        (a question may name its document: "民法典中……")."""
        wanted = relevance_tokens(query)
        idf = self.kb.token_weights(wanted)
        scores = []
        for doc in documents:
            meta = doc.metadata
            labelled = f"{meta.get('title', '')}\n{meta.get('source', '')}\n{doc.page_content}"
            scores.append(round(relevance(wanted, labelled, idf), 4))
        return scores

    def _rerank(self, query: str, order: list[str]) -> list[str]:
        model = load_cross_encoder(self.reranker or "", self.kb.device)
        texts = self.kb.texts(order)
        scores = model.predict([(query, text) for text in texts], show_progress_bar=False)
        return [i for _, i in sorted(zip(scores, order, strict=True), key=lambda p: -float(p[0]))]


#: The last stale state logged per knowledge base (a long-running app must not log it on every
#: query, nor remember every state it ever saw).
_REPORTED: dict[tuple[str, str], IndexState] = {}


def _report_stale(kb: KnowledgeBase, state: IndexState) -> None:
    """Log a stale index once per knowledge base and state (not on every query)."""
    key = (str(kb.persist_dir), kb.name)
    if _REPORTED.get(key) != state:
        _REPORTED[key] = state
        logger.warning("%s", describe_stale(kb, state))


@lru_cache(maxsize=2)
def load_cross_encoder(name_or_path: str, device: str = "cpu") -> Any:
    """A sentence-transformers ``CrossEncoder``, loaded once per process, never downloaded."""
    from chinese_mixtral_rag.errors import ModelLoadError

    try:
        from sentence_transformers import CrossEncoder
    except ImportError as exc:
        from chinese_mixtral_rag.errors import MissingDependencyError

        raise MissingDependencyError("sentence-transformers", "rag", "Reranking") from exc
    try:
        return CrossEncoder(name_or_path, device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load the reranker {name_or_path!r}: {exc}. Give a cross-encoder "
            "directory or a hub id already in the local cache (e.g. BAAI/bge-reranker-base), or "
            "unset CMR_RERANKER."
        ) from exc
