"""``cmrag eval``: measure retrieval and question answering on a public dataset.

Two dataset formats are read:

* SQuAD / CMRC 2018 JSON: ``data`` -> ``paragraphs`` -> ``context`` and ``qas`` -> ``question``,
  ``answers[].text``;
* LongBench JSONL: one item per line with ``input`` (the question), ``context`` and ``answers``.

The corpus is the dataset's distinct contexts, written one file per context (``00000.txt``, ...)
into ``<store>/eval-corpora/<collection>/`` and ingested through the real ingest path into a
:class:`~chinese_mixtral_rag.store.KnowledgeBase` whose persist directory is ``<store>`` (a
temporary folder unless ``--store`` is given; with ``--store`` a re-run ingests nothing and starts
answering at once).

``cmrag eval retrieval``: every question goes through
:class:`~chinese_mixtral_rag.retrieval.HybridRetriever`; the gold rank is the position of the
first retrieved chunk that comes from the question's own context file. Reported: recall@k (share
of questions with the gold file among the first k chunks), MRR over the chunks fetched (the largest
k), and p50/p95 query latency (one untimed warm-up query first loads the indexes); with
``--min-relevance X``, the share of questions the QA chain would refuse at that threshold.
``fetch_k``, ``dense_weight`` and ``reranker`` default to the ``CMR_*`` settings the QA chain uses.

``cmrag eval qa``: every question goes through the QA chain (``chinese_mixtral_rag.qa``); the answer
is scored with exact match and character F1 (SQuAD-style, for CMRC) and with LongBench's own
Chinese token F1 (jieba words), each the maximum over the gold answers; also the shares of
questions answered from the documents (``found``), with the gold file among the sources given to
the model (``gold_in_sources``) and cited by the answer (``cited_gold``). LongBench items are
single-document questions: by default each question is restricted to its own file
(``sources=[file]``), CMRC questions are asked against the whole collection.

Run as ``cmrag eval ...`` or ``python -m chinese_mixtral_rag.eval ...``::

    cmrag eval retrieval --dataset ../shared/data/cmrc2018/cmrc2018_dev.json --store /tmp/cmrc
    cmrag eval qa --dataset ../shared/data/longbench/multifieldqa_zh.jsonl --model-path M.gguf \\
        --limit 20

All scores are shares between 0 and 1 (LongBench papers print them times 100).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import re
import string
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.errors import ChineseMixtralError

if TYPE_CHECKING:
    from chinese_mixtral_rag.ingest import ChunkingSpec, IngestReport, ProgressHook
    from chinese_mixtral_rag.retrieval import HybridRetriever
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.store import KnowledgeBase

DatasetFormat = Literal["squad", "longbench"]
DenseMode = Literal["auto", "always", "never"]

#: Default cut-offs of recall@k; the largest is also the depth of MRR.
DEFAULT_KS = (1, 3, 5, 10)

#: LongBench's list of Chinese punctuation (``normalize_zh_answer`` in its ``metrics.py``).
LONGBENCH_ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣"
    "､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_LONGBENCH_PUNCTUATION = frozenset(string.punctuation + LONGBENCH_ZH_PUNCTUATION)


class EvalError(ChineseMixtralError):
    """The evaluation cannot run as asked (unreadable dataset, bad option)."""


# -- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    """One question with its gold answers and the index of its context in the dataset."""

    id: str
    question: str
    answers: tuple[str, ...]
    context: int


@dataclass
class EvalDataset:
    """Distinct contexts and the questions about them."""

    name: str
    format: DatasetFormat
    contexts: list[str] = field(default_factory=list)
    items: list[EvalItem] = field(default_factory=list)

    def source(self, item: EvalItem) -> str:
        """The ingested ``source`` of the item's context file."""
        return context_file_name(item.context)


def context_file_name(index: int) -> str:
    """File name of the ``index``-th context in the evaluation corpus (its ingested source)."""
    return f"{index:05d}.txt"


def _answer_texts(raw: Any) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    texts = (v.get("text", "") if isinstance(v, Mapping) else str(v) for v in values)
    return tuple(dict.fromkeys(t for t in texts if t and t.strip()))


def load_dataset(path: str | Path) -> EvalDataset:
    """Read a SQuAD/CMRC JSON file or a LongBench JSONL file (or JSON list of such items).

    Identical contexts are stored once; answers are de-duplicated in order.
    """
    path = Path(path).expanduser()
    try:
        raw_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"Cannot read the dataset {path}: {exc.strerror or exc}.") from exc
    try:
        if path.suffix.lower() == ".jsonl":
            rows: Any = [json.loads(line) for line in raw_text.splitlines() if line.strip()]
        else:
            rows = json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise EvalError(f"{path} is not valid JSON/JSONL: {exc}.") from exc
    dataset: EvalDataset
    positions: dict[str, int] = {}

    def context_index(text: str) -> int:
        if text not in positions:
            positions[text] = len(dataset.contexts)
            dataset.contexts.append(text)
        return positions[text]

    if isinstance(rows, Mapping) and isinstance(rows.get("data"), list):
        dataset = EvalDataset(path.stem, "squad")
        for article in rows["data"]:
            for paragraph in article.get("paragraphs", []):
                context = context_index(str(paragraph["context"]))
                for qa in paragraph.get("qas", []):
                    dataset.items.append(
                        EvalItem(
                            str(qa.get("id", len(dataset.items))),
                            str(qa["question"]),
                            _answer_texts(qa.get("answers", [])),
                            context,
                        )
                    )
    elif isinstance(rows, list) and all(isinstance(r, Mapping) and "input" in r for r in rows):
        dataset = EvalDataset(path.stem, "longbench")
        for n, row in enumerate(rows):
            dataset.items.append(
                EvalItem(
                    str(row.get("_id", n)),
                    str(row["input"]),
                    _answer_texts(row.get("answers", [])),
                    context_index(str(row["context"])),
                )
            )
    else:
        raise EvalError(
            f"{path}: unknown dataset format. Expected SQuAD/CMRC JSON (data -> paragraphs -> "
            "context, qas) or LongBench JSONL (input, context, answers per line)."
        )
    if not dataset.items:
        raise EvalError(f"{path}: no questions found.")
    return dataset


def write_corpus(dataset: EvalDataset, folder: Path) -> list[Path]:
    """Write each context as ``folder/<n>.txt`` (unchanged files are left alone, other ``.txt``
    files removed, so the folder holds exactly this corpus); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, text in enumerate(dataset.contexts):
        path = folder / context_file_name(n)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        files.append(path)
    wanted = set(files)
    for stale in folder.glob("*.txt"):
        if stale not in wanted:
            stale.unlink()
    return files


def ingest_corpus(
    dataset: EvalDataset,
    kb: KnowledgeBase,
    spec: ChunkingSpec,
    folder: Path,
    *,
    workers: int | None = None,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Write the contexts into ``folder`` and ingest it into ``kb`` (incremental; files of an
    earlier corpus in the same folder are pruned)."""
    from chinese_mixtral_rag.ingest import ingest

    write_corpus(dataset, folder)
    return ingest(folder, kb, spec, prune=True, workers=workers, progress=progress)


def default_collection(dataset_path: str | Path) -> str:
    """``eval-<dataset file stem>``, reduced to the characters Chroma allows."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(dataset_path).stem).strip("-._") or "dataset"
    return f"eval-{stem}"[:60]


# -- metrics --------------------------------------------------------------------------------


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose gold rank (1-based; None: not retrieved) is at most ``k``.

    >>> recall_at_k([1, 3, None, 2], 2)
    0.5
    """
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None], cutoff: int | None = None) -> float:
    """Mean of ``1 / rank`` over questions (0 for gold not retrieved or ranked after ``cutoff``).

    >>> mean_reciprocal_rank([1, 2, None, 4])
    0.4375
    """
    if not ranks:
        return 0.0
    total = sum(
        1.0 / r for r in ranks if r is not None and (cutoff is None or r <= cutoff) and r > 0
    )
    return total / len(ranks)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks, as
    ``numpy.percentile`` computes it by default (nan for no values).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation for Chinese: NFKC (full-width letters and digits to ASCII),
    lowercase, and every punctuation mark (Unicode category P*, plus ASCII punctuation and
    LongBench's Chinese list) and whitespace removed.

    >>> normalize_answer("《三国演义》， Ｌｕｏ Guanzhong ")
    '三国演义luoguanzhong'
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(
        c
        for c in folded
        if not c.isspace()
        and c not in _LONGBENCH_PUNCTUATION
        and not unicodedata.category(c).startswith("P")
    )


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(a) for a in answers))


def _token_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """F1 of two bags of tokens (SQuAD's ``f1_score``): 0 when nothing is shared."""
    common = Counter(predicted) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def char_f1(prediction: str, answers: Iterable[str]) -> float:
    """Character-level F1 (SQuAD's bag-of-tokens F1 with each character of the normalised text a
    token), the maximum over the gold answers; 1.0 when both normalise to empty.

    >>> round(char_f1("刘备和关羽", ["刘备"]), 4)  # precision 2/5, recall 2/2
    0.5714
    """
    predicted = list(normalize_answer(prediction))
    best = 0.0
    for answer in answers:
        gold = list(normalize_answer(answer))
        score = (
            float(predicted == gold) if not predicted or not gold else _token_f1(predicted, gold)
        )
        best = max(best, score)
    return best


def _jieba() -> Any:
    try:
        module = importlib.import_module("jieba")
    except ImportError as exc:
        from chinese_mixtral_rag.errors import MissingDependencyError

        raise MissingDependencyError("jieba", "rag", "LongBench's Chinese F1") from exc
    module.setLogLevel(logging.WARNING)  # not "Building prefix dict..." on every run
    return module


def normalize_zh_answer(text: str) -> str:
    """LongBench's ``normalize_zh_answer``: lowercase, its punctuation list removed, whitespace
    removed (no NFKC folding, to score exactly as LongBench does)."""
    return "".join(c for c in text.lower() if c not in _LONGBENCH_PUNCTUATION and not c.isspace())


def longbench_zh_f1(prediction: str, answers: Iterable[str]) -> float:
    """LongBench's ``qa_f1_zh_score`` (the metric of multifieldqa_zh), maximum over answers:
    both texts cut into words with ``jieba.lcut`` (precise mode), each word normalised with
    :func:`normalize_zh_answer`, empty words dropped, then F1 of the two bags of words."""
    jieba = _jieba()

    def words(text: str) -> list[str]:
        normalised = (normalize_zh_answer(w) for w in jieba.lcut(text, cut_all=False))
        return [w for w in normalised if w]

    predicted = words(prediction)
    return max((_token_f1(predicted, words(a)) for a in answers), default=0.0)


# -- retrieval ------------------------------------------------------------------------------


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
    from chinese_mixtral_rag.retrieval import HybridRetriever

    if dense == "never":
        fields["dense_weight"] = 0.0
    if dense == "always":
        return always_dense_class()(kb=kb, **fields)
    return HybridRetriever(kb=kb, **fields)


@lru_cache(maxsize=1)
def always_dense_class() -> type[HybridRetriever]:
    """``HybridRetriever`` with the unknown-token gate switched off (for measuring the gate)."""
    from chinese_mixtral_rag.retrieval import HybridRetriever

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


# -- question answering ---------------------------------------------------------------------


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
    """The answer cites (``[n]``) a passage of the gold context's file."""


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


# -- command line ---------------------------------------------------------------------------


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
        "--store", type=Path, help="persist dir to keep and reuse (default: a temporary one)"
    )
    store.add_argument("--collection", help="collection name [eval-<dataset file name>]")
    store.add_argument("--embedding-model", help="sentence-transformers model [offline MiniLM]")
    store.add_argument("--chunk-size", type=int, help="chunk size in tokens [384]")
    store.add_argument("--chunk-overlap", type=int, help="overlap in tokens [48]")
    store.add_argument("--workers", type=int, help="parsing processes [up to 4]")


def _add_retriever_flags(group: Any, *, full: bool) -> None:
    group.add_argument("--dense-weight", type=float, help="RRF weight of dense search [1.0]")
    group.add_argument("--fetch-k", type=int, help="candidates per retriever [50]")
    group.add_argument("--reranker", help="cross-encoder directory or cached hub id")
    if not full:
        return
    group.add_argument(
        "--dense",
        choices=["auto", "always", "never"],
        default="auto",
        help="dense search: per-query gate (auto), every query, or BM25 only [auto]",
    )
    group.add_argument("--lexical-weight", type=float, help="RRF weight of BM25 [1.0]")
    group.add_argument("--rrf-k", type=int, help="reciprocal-rank constant [60]")
    group.add_argument("--rerank-top", type=int, help="candidates reranked [30]")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands and flags of ``cmrag eval`` (also ``python -m chinese_mixtral_rag.eval``)."""
    kinds = parser.add_subparsers(dest="eval_command", required=True)
    retrieval = kinds.add_parser(
        "retrieval", help="recall@k, MRR and latency of the retriever on the dataset's questions"
    )
    _add_common(retrieval)
    _add_retriever_flags(retrieval.add_argument_group("retriever"), full=True)
    retrieval.add_argument(
        "--k", type=_ks, default=DEFAULT_KS, help="recall cut-offs, comma-separated [1,3,5,10]"
    )
    retrieval.add_argument(
        "--model-path", help="chat model whose tokenizer counts chunk tokens [CMR_MODEL_PATH]"
    )
    retrieval.add_argument(
        "--min-relevance",
        type=float,
        action="append",
        help="also report the share of questions whose hits are all below this relevance "
        "(the QA chain would answer 'not in the documents'); repeatable",
    )
    retrieval.add_argument("--misses", type=int, default=0, help="print N questions missed at k=1")
    qa = kinds.add_parser("qa", help="exact match and F1 of the QA chain's answers")
    _add_common(qa)
    chain = qa.add_argument_group("QA chain (defaults from CMR_* environment variables)")
    _add_retriever_flags(chain, full=False)
    chain.add_argument("--retrieve-k", type=int, help="chunks offered to the packer [20]")
    chain.add_argument(
        "--min-relevance", type=float, help="below it: 'not found', model not asked [0.5]"
    )
    chain.add_argument("--context-tokens", type=int, help="most tokens of material [window]")
    qa.add_argument(
        "--restrict",
        choices=["auto", "gold", "none"],
        default="auto",
        help="ask each question about its own context file only (gold), against the whole "
        "collection (none), or gold for LongBench and none for CMRC/SQuAD (auto)",
    )
    from chinese_mixtral_rag.cli import _add_model_flags

    _add_model_flags(qa)


@dataclass
class _Prepared:
    dataset: EvalDataset
    kb: KnowledgeBase
    report: IngestReport
    items: list[EvalItem]
    settings: Settings


def _prepare(args: argparse.Namespace, store: Path) -> _Prepared:
    """Load the dataset, then write and ingest its corpus (with a progress bar)."""
    from chinese_mixtral_rag.embeddings import resolve_embedding_model
    from chinese_mixtral_rag.ingest import ChunkingSpec
    from chinese_mixtral_rag.ingest_cli import _RichProgress
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.store import KnowledgeBase

    if args.limit is not None and args.limit < 1:
        raise EvalError("--limit must be at least 1")
    dataset = load_dataset(args.dataset)
    overrides = {
        name: getattr(args, name)
        for name in ("embedding_model", "chunk_size", "chunk_overlap", "model_path", "model")
        if getattr(args, name, None) is not None
    }
    if args.workers is not None:
        overrides["ingest_workers"] = args.workers
    settings = Settings(**overrides)
    collection = args.collection or default_collection(args.dataset)
    kb = KnowledgeBase(
        collection,
        resolve_embedding_model(settings.embedding_model),
        persist_dir=store,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
    )
    spec = ChunkingSpec(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        model_path=settings.model_path or settings.model,
        embedding_path=kb.embedding.path,
    )
    for noisy in ("pypdf", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with _RichProgress(args.quiet) as progress:
        report = ingest_corpus(
            dataset,
            kb,
            spec,
            store / "eval-corpora" / collection,
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
    """Flags, else the ``CMR_*`` settings the QA chain uses (``fetch_k``, ``dense_weight``,
    ``reranker``), else the retriever's defaults."""
    fields = {
        "fetch_k": settings.fetch_k,
        "dense_weight": settings.dense_weight,
        "reranker": settings.reranker,
    }
    names = ("dense_weight", "lexical_weight", "fetch_k", "rrf_k", "reranker", "rerank_top")
    fields.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    return fields


def _bar(quiet: bool, label: str, total: int) -> tuple[Any, Callable[[Any], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn as Elapsed

    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        Elapsed(),
        console=Console(stderr=True),
        disable=quiet,
    )
    task = progress.add_task(label, total=total)
    return progress, lambda _: progress.advance(task)


def _format(name: str, value: float) -> str:
    if name == "questions":
        return str(int(value))
    return f"{value:.1f}" if name.endswith("_ms") else f"{value:.3f}"


def _print_metrics(title: str, metrics: Mapping[str, float], notes: Sequence[str] = ()) -> None:
    """One ``name value`` line per metric (easy to grep), then the same as a table."""
    from rich.console import Console
    from rich.table import Table

    for name, value in metrics.items():
        print(f"{name} {_format(name, value)}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, _format(name, value))
    Console().print(table)
    for note in notes:
        print(note)  # not through rich: a long line must not be wrapped


def _corpus_note(prepared: _Prepared) -> str:
    kb, report = prepared.kb, prepared.report
    return (
        f"{prepared.dataset.name}: {len(prepared.dataset.contexts)} contexts, {kb.count()} chunks "
        f"in {kb.name!r} ({kb.embedding.name}), ingest {report.seconds:.1f} s "
        f"({report.count('unchanged')} unchanged)"
    )


def _run_retrieval(args: argparse.Namespace, store: Path) -> int:
    prepared = _prepare(args, store)
    fields = _retriever_fields(args, prepared.settings)
    retriever = make_retriever(prepared.kb, dense=args.dense, **fields)
    bar, advance = _bar(args.quiet, "retrieve", len(prepared.items))
    with bar:
        report = evaluate_retrieval(
            retriever, prepared.dataset, ks=args.k, items=prepared.items, on_query=advance
        )
    metrics = {**report.metrics(), "questions": float(len(report.outcomes))}
    for threshold in args.min_relevance or []:
        metrics[f"refused@{threshold:g}"] = report.refused(threshold)
    if retriever.dense_weight > 0:
        dense = sum(1 for o in report.outcomes if o.used_dense)
        metrics["dense_share"] = dense / max(1, len(report.outcomes))
    notes = [_corpus_note(prepared)]
    misses = [o for o in report.outcomes if o.rank != 1][: args.misses]
    notes += [
        f"miss@1 rank={o.rank} top={o.top_source} gold={o.gold}: {o.question}" for o in misses
    ]
    _print_metrics(f"retrieval: {prepared.dataset.name}", metrics, notes)
    if args.json:
        payload = {"metrics": metrics, "outcomes": [asdict(o) for o in report.outcomes]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def _qa_chain(chat: Any, prepared: _Prepared, args: argparse.Namespace) -> Any:
    """The QA chain over the evaluation knowledge base, with the options given as flags."""
    from chinese_mixtral_rag.qa import build_qa_chain

    names = (
        "dense_weight",
        "fetch_k",
        "reranker",
        "retrieve_k",
        "min_relevance",
        "context_tokens",
    )
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return build_qa_chain(chat, kb=prepared.kb, settings=prepared.settings, **options)


def _run_qa(args: argparse.Namespace, store: Path) -> int:
    from chinese_mixtral_rag.chat_models import ChineseMixtralChat
    from chinese_mixtral_rag.cli import _options

    prepared = _prepare(args, store)
    chat = ChineseMixtralChat(**_options(args))
    chain = _qa_chain(chat, prepared, args)
    restrict = {"auto": None, "gold": True, "none": False}[args.restrict]
    bar, advance = _bar(args.quiet, "answer", len(prepared.items))
    with bar:
        report = evaluate_qa(
            chain, prepared.dataset, items=prepared.items, restrict=restrict, on_answer=advance
        )
    metrics = {**report.metrics(), "questions": float(len(report.outcomes))}
    own = prepared.dataset.format == "longbench" if restrict is None else restrict
    scope = "its own context file" if own else "all context files"
    _print_metrics(
        f"qa: {prepared.dataset.name}",
        metrics,
        [_corpus_note(prepared), f"each question searched in {scope}"],
    )
    if args.json:
        payload = {"metrics": metrics, "outcomes": [asdict(o) for o in report.outcomes]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Run ``cmrag eval retrieval|qa`` with parsed arguments; returns the exit status."""
    run = _run_retrieval if args.eval_command == "retrieval" else _run_qa
    if args.store is not None:
        return run(args, args.store.expanduser())
    with tempfile.TemporaryDirectory(prefix="cmrag-eval-") as scratch:
        return run(args, Path(scratch))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chinese_mixtral_rag.eval``: exactly ``cmrag eval``."""
    from chinese_mixtral_rag.cli import main as cli_main

    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
