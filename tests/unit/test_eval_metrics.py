"""The evaluation metrics against values computed by hand, and the dataset readers on tiny files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from chinese_mixtral_rag.eval import (
    EvalError,
    QueryOutcome,
    RetrievalReport,
    char_f1,
    default_collection,
    evaluate_qa,
    evaluate_retrieval,
    exact_match,
    load_dataset,
    longbench_zh_f1,
    mean_reciprocal_rank,
    normalize_answer,
    normalize_zh_answer,
    percentile,
    recall_at_k,
    source_names,
    write_corpus,
)

# -- ranking metrics ---------------------------------------------------------------------------


def test_recall_at_k_counts_gold_ranks_within_k() -> None:
    ranks = [1, 3, None, 2]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 2) == 0.5
    assert recall_at_k(ranks, 3) == 0.75
    assert recall_at_k(ranks, 10) == 0.75  # the miss stays a miss
    assert recall_at_k([], 5) == 0.0


def test_mrr_is_the_mean_of_reciprocal_ranks_with_misses_as_zero() -> None:
    ranks = [1, 2, None, 4]
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 0 + 1 / 4) / 4)  # 0.4375
    assert mean_reciprocal_rank(ranks, cutoff=3) == pytest.approx((1 + 1 / 2) / 4)  # 0.375
    assert mean_reciprocal_rank([]) == 0.0


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)  # position 0.95 * 3 = 2.85
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))


def test_report_metrics_and_refusals() -> None:
    def outcome(rank: int | None, seconds: float, best: float) -> QueryOutcome:
        return QueryOutcome("id", "q", "00000.txt", rank, seconds, "", 0.0, best_relevance=best)

    report = RetrievalReport(
        [outcome(1, 0.010, 0.9), outcome(2, 0.020, 0.5), outcome(None, 0.030, 0.1)], (1, 3)
    )
    metrics = report.metrics()
    assert list(metrics) == ["recall@1", "recall@3", "mrr@3", "latency_p50_ms", "latency_p95_ms"]
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["mrr@3"] == pytest.approx((1 + 1 / 2) / 3)
    assert metrics["latency_p50_ms"] == pytest.approx(20.0)
    assert metrics["latency_p95_ms"] == pytest.approx(29.0)  # 20 + 0.9 * 10
    assert report.refused(0.5) == pytest.approx(1 / 3)  # the best hit decides; 0.5 itself passes
    assert report.refused(0.95) == 1.0


# -- answer metrics ------------------------------------------------------------------------


def test_normalize_answer_folds_width_case_punctuation_and_spaces() -> None:
    assert normalize_answer("《三国演义》， Ｌｕｏ Guanzhong ") == "三国演义luoguanzhong"
    assert normalize_answer("“光荣和ω-force”。") == "光荣和ωforce"
    assert normalize_answer("100%") == "100"  # ASCII punctuation, as in SQuAD
    assert normalize_answer(" \n\t") == ""


def test_exact_match_after_normalisation_any_answer() -> None:
    assert exact_match("“光荣和ω-force”。", ["光荣和ω-force"]) == 1.0
    assert exact_match("光荣", ["光荣和ω-force", "光荣"]) == 1.0
    assert exact_match("光荣公司", ["光荣"]) == 0.0
    assert exact_match("", ["光荣"]) == 0.0


def test_char_f1_by_hand() -> None:
    # 5 predicted characters, 2 of them gold; gold has 2: P = 2/5, R = 1, F1 = 0.8/1.4
    assert char_f1("刘备和关羽", ["刘备"]) == pytest.approx(4 / 7)
    # max over answers: "1949" gives P 4/5, R 1 -> 8/9; "1949年10月1日" gives P 1, R 1/2 -> 2/3
    assert char_f1("1949年", ["1949", "1949年10月1日"]) == pytest.approx(8 / 9)
    # characters are counted with multiplicity: one 哈 of three is shared, P 1/3, R 1 -> 1/2
    assert char_f1("哈哈哈", ["哈"]) == pytest.approx(0.5)
    assert char_f1("诸葛亮。", ["诸葛亮"]) == 1.0
    assert char_f1("曹操", ["刘备"]) == 0.0
    assert char_f1("", ["刘备"]) == 0.0
    assert char_f1("。", ["，"]) == 1.0  # both normalise to nothing
    assert char_f1("刘备", []) == 0.0


def test_longbench_zh_f1_by_hand() -> None:
    jieba = pytest.importorskip("jieba")
    # premises: how jieba 0.42.1 cuts these texts
    assert jieba.lcut("中华人民共和国成立于1949年") == [
        "中华人民共和国",
        "成立",
        "于",
        "1949",
        "年",
    ]
    assert jieba.lcut("1949年10月1日") == ["1949", "年", "10", "月", "1", "日"]
    assert jieba.lcut("在北京大学举办") == ["在", "北京大学", "举办"]
    # 2 shared words of 5 predicted and 6 gold: P 2/5, R 1/3 -> 4/11
    assert longbench_zh_f1("中华人民共和国成立于1949年", ["1949年10月1日"]) == pytest.approx(4 / 11)
    # 1 of 3 words: P 1/3, R 1 -> 1/2; the max over answers takes the exact one
    assert longbench_zh_f1("在北京大学举办", ["北京大学"]) == pytest.approx(0.5)
    assert longbench_zh_f1("在北京大学举办", ["北京大学", "在北京大学举办"]) == 1.0
    # the full stop is a word of its own, normalised to nothing and dropped
    assert longbench_zh_f1("北京大学。", ["北京大学"]) == 1.0
    assert longbench_zh_f1("", ["北京大学"]) == 0.0
    assert longbench_zh_f1("北京大学", []) == 0.0


def test_normalize_zh_answer_is_longbenchs() -> None:
    assert normalize_zh_answer("北京 大学》，ABC!") == "北京大学abc"
    assert normalize_zh_answer("《") == "《"  # missing from LongBench's list: kept, as there
    assert normalize_zh_answer("Ｆ") == "ｆ"  # no width folding: scores exactly as LongBench


# -- datasets ------------------------------------------------------------------------------


def _squad(path: Path) -> Path:
    data = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "甲文。",
                        "qas": [
                            {"id": "q1", "question": "甲？", "answers": [{"text": "甲"}] * 3},
                            {"id": "q2", "question": "文？", "answers": [{"text": "文"}]},
                        ],
                    },
                    {"context": "乙文。", "qas": [{"id": "q3", "question": "乙？", "answers": []}]},
                ]
            },
            {"paragraphs": [{"context": "甲文。", "qas": [{"id": "q4", "question": "再甲？"}]}]},
        ]
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_load_squad_dataset(tmp_path: Path) -> None:
    dataset = load_dataset(_squad(tmp_path / "cmrc.json"))
    assert dataset.format == "squad"
    assert dataset.name == "cmrc"
    assert dataset.contexts == ["甲文。", "乙文。"]  # the repeated context is stored once
    assert [(i.id, i.question, i.answers, i.context) for i in dataset.items] == [
        ("q1", "甲？", ("甲",), 0),
        ("q2", "文？", ("文",), 0),
        ("q3", "乙？", (), 1),
        ("q4", "再甲？", (), 0),
    ]
    assert dataset.source(dataset.items[2]) == "00001.txt"


def test_load_longbench_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "multifieldqa_zh.jsonl"
    rows = [
        {"input": "问一", "context": "长文一", "answers": ["答一"], "_id": "a"},
        {"input": "问二", "context": "长文二", "answers": "答二", "_id": "b"},
        {"input": "问三", "context": "长文一", "answers": ["答三", "答三"], "_id": "c"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    dataset = load_dataset(path)
    assert dataset.format == "longbench"
    assert dataset.contexts == ["长文一", "长文二"]
    assert [(i.id, i.answers, i.context) for i in dataset.items] == [
        ("a", ("答一",), 0),
        ("b", ("答二",), 1),
        ("c", ("答三",), 0),
    ]


def test_bad_datasets_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="Cannot read"):
        load_dataset(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"version": 1}')
    with pytest.raises(EvalError, match="unknown dataset format"):
        load_dataset(tmp_path / "x.json")
    (tmp_path / "y.jsonl").write_text("{not json\n")
    with pytest.raises(EvalError, match="not valid JSON"):
        load_dataset(tmp_path / "y.jsonl")


def test_write_corpus_keeps_exactly_the_contexts(tmp_path: Path) -> None:
    dataset = load_dataset(_squad(tmp_path / "cmrc.json"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "00007.txt").write_text("stale")
    (folder / "notes.md").write_text("kept")
    files = write_corpus(dataset, folder)
    assert [f.name for f in files] == ["00000.txt", "00001.txt"]
    assert sorted(p.name for p in folder.iterdir()) == ["00000.txt", "00001.txt", "notes.md"]
    assert (folder / "00001.txt").read_text(encoding="utf-8") == "乙文。"
    before = (folder / "00000.txt").stat().st_mtime_ns
    write_corpus(dataset, folder)
    assert (folder / "00000.txt").stat().st_mtime_ns == before  # unchanged files not rewritten


def test_default_collection_is_a_valid_chroma_name() -> None:
    assert default_collection("../data/cmrc2018_dev.json") == "eval-cmrc2018_dev"
    assert default_collection("中文 数据.jsonl") == "eval-dataset"


# -- the loops, with stand-in retriever and chain ----------------------------------------------


class _FakeRetriever:
    """Returns fixed sources per question (the harness reads only metadata)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def invoke(self, query: str, **kwargs: Any) -> list[Document]:
        self.calls.append((query, kwargs["k"]))
        return [
            Document(page_content="", metadata={"source": s, "relevance": 0.5 + n / 10})
            for n, s in enumerate(self.answers[query])
        ]


def test_evaluate_retrieval_finds_the_gold_rank(tmp_path: Path) -> None:
    dataset = load_dataset(_squad(tmp_path / "cmrc.json"))
    retriever = _FakeRetriever(
        {
            "甲？": ["00000.txt", "00001.txt"],
            "文？": ["00001.txt", "00001.txt", "00000.txt"],
            "乙？": ["00000.txt"],
            "再甲？": [],
        }
    )
    report = evaluate_retrieval(retriever, dataset, ks=(1, 3))  # type: ignore[arg-type]
    assert report.ranks == [1, 3, None, None]
    assert retriever.calls[0] == ("甲？", 3)  # the untimed warm-up, at the largest k
    assert len(retriever.calls) == 5
    assert report.outcomes[1].top_relevance == 0.5
    assert report.outcomes[1].best_relevance == pytest.approx(0.7)  # the third hit's
    assert report.outcomes[3].top_relevance == report.outcomes[3].best_relevance == 0.0
    assert report.outcomes[3].top_source == ""


def test_evaluate_qa_scores_answers_and_restricts_longbench_to_the_gold_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lb.jsonl"
    rows = [
        {"input": "问一", "context": "长文一", "answers": ["北京大学"]},
        {"input": "问二", "context": "长文二", "answers": ["1949年10月1日"]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    dataset = load_dataset(path)
    seen: list[Any] = []
    replies = {"问一": "北京大学。", "问二": "中华人民共和国成立于1949年"}

    def chain(inputs: dict[str, Any]) -> dict[str, Any]:
        seen.append(inputs["sources"])
        found = inputs["question"] == "问一"
        return {
            "answer": replies[inputs["question"]],
            "found": found,
            "sources": [{"source": "x.txt"}, {"source": "00000.txt"}] if found else [],
            "cited": [2] if found else [],
        }

    report = evaluate_qa(RunnableLambda(chain), dataset)
    assert seen == [["00000.txt"], ["00001.txt"]]
    first, second = report.outcomes
    assert (first.exact_match, first.char_f1, first.longbench_f1) == (1.0, 1.0, 1.0)
    assert (first.found, first.gold_in_sources, first.cited_gold) == (True, True, True)
    assert second.exact_match == 0.0
    assert second.longbench_f1 == pytest.approx(4 / 11)
    assert (second.found, second.gold_in_sources, second.cited_gold) == (False, False, False)
    metrics = report.metrics()
    assert metrics["exact_match"] == 0.5
    assert metrics["longbench_f1"] == pytest.approx((1 + 4 / 11) / 2)
    assert metrics["found"] == metrics["cited_gold"] == 0.5
    evaluate_qa(RunnableLambda(chain), dataset, restrict=False)
    assert seen[-2:] == [None, None]


def test_source_names_reads_sources_strings_mappings_and_documents() -> None:
    @dataclass
    class Source:
        source: str

    document = Document(page_content="", metadata={"source": "c"})
    sources = ["a.txt", {"source": "b.txt"}, document, Source("d.pdf")]
    assert source_names(sources) == ["a.txt", "b.txt", "c", "d.pdf"]
    assert source_names(None) == []
