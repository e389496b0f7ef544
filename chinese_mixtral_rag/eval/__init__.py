"""The evaluation harness as a library: datasets, metrics and runs over the real ingest and QA.

``cmrag eval retrieval|qa`` (or ``python -m chinese_mixtral_rag.eval``) only parses flags and
prints; everything it measures is here, usable from a notebook or a benchmark::

    from chinese_mixtral_rag.eval import load_dataset, ingest_corpus, make_retriever
    from chinese_mixtral_rag.eval import evaluate_retrieval

    dataset = load_dataset("../shared/data/cmrc2018/cmrc2018_dev.json")
    ingest_corpus(dataset, kb, spec, folder)
    report = evaluate_retrieval(make_retriever(kb), dataset)
    report.metrics()  # {"recall@1": ..., "mrr@10": ..., "latency_p50_ms": ...}

Imports the write path (to ingest a corpus), the store and the read path; never the faces.
"""

from chinese_mixtral_rag.errors import EvalError
from chinese_mixtral_rag.eval.datasets import (
    DatasetFormat,
    EvalDataset,
    EvalItem,
    context_file_name,
    default_collection,
    ingest_corpus,
    load_dataset,
    write_corpus,
)
from chinese_mixtral_rag.eval.metrics import (
    DEFAULT_KS,
    LONGBENCH_ZH_PUNCTUATION,
    char_f1,
    exact_match,
    longbench_zh_f1,
    mean_reciprocal_rank,
    normalize_answer,
    normalize_zh_answer,
    percentile,
    recall_at_k,
)
from chinese_mixtral_rag.eval.runs import (
    SIDES,
    AnswerOutcome,
    DenseMode,
    QAReport,
    QueryOutcome,
    RetrievalReport,
    always_dense_class,
    compare_retrieval,
    evaluate_qa,
    evaluate_retrieval,
    gains_and_losses,
    make_retriever,
    source_names,
)

__all__ = [
    "DEFAULT_KS",
    "LONGBENCH_ZH_PUNCTUATION",
    "SIDES",
    "AnswerOutcome",
    "DatasetFormat",
    "DenseMode",
    "EvalDataset",
    "EvalError",
    "EvalItem",
    "QAReport",
    "QueryOutcome",
    "RetrievalReport",
    "always_dense_class",
    "char_f1",
    "compare_retrieval",
    "context_file_name",
    "default_collection",
    "evaluate_qa",
    "evaluate_retrieval",
    "exact_match",
    "gains_and_losses",
    "ingest_corpus",
    "load_dataset",
    "longbench_zh_f1",
    "make_retriever",
    "mean_reciprocal_rank",
    "normalize_answer",
    "normalize_zh_answer",
    "percentile",
    "recall_at_k",
    "source_names",
    "write_corpus",
]
