"""Retrieval quality on CMRC 2018 dev through the evaluation harness, the ``cmrag eval`` output, and
reranking with a real (tiny, random) cross-encoder.

The CMRC test ingests the 848 dev contexts through the real ingest path with the offline default
chunking (384 tokens, overlap 48, counted by the tiny GGUF's tokenizer) and embeds them with the
tiny random embedder, so it runs in about a minute. That leaves the measured figure unchanged: the
embedder's tokenizer is all-MiniLM-L6-v2's, which maps most Chinese characters to ``[UNK]``, so
the retriever's per-query gate switches the dense side off for the Chinese questions and they are
answered by BM25 alone, exactly as with the real bundled MiniLM (``benchmarks/retrieval_eval.py``
measures the real embedder and the fusion variants).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chinese_mixtral_rag.cli import main
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec
from chinese_mixtral_rag.eval import (
    EvalDataset,
    evaluate_retrieval,
    ingest_corpus,
    load_dataset,
    make_retriever,
)
from chinese_mixtral_rag.qa.retrieval import HybridRetriever, load_cross_encoder
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_reranker

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
CMRC = SHARED / "cmrc2018" / "cmrc2018_dev.json"

ZHUGE = "诸葛亮，字孔明，琅琊阳都人，三国时期蜀汉丞相。刘备三顾茅庐，请他出山辅佐。"
GREAT_WALL = "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。"
PANDA = "大熊猫主要生活在四川、陕西和甘肃的山区，以竹子为主要食物。"
TINY_DATASET = {
    "data": [
        {
            "title": "hand-made",
            "paragraphs": [
                {
                    "context": ZHUGE,
                    "qas": [
                        {"id": "t1", "question": "刘备三顾茅庐请的是谁？", "answers": ["诸葛亮"]},
                        {"id": "t2", "question": "诸葛亮是哪国的丞相？", "answers": ["蜀汉"]},
                    ],
                },
                {
                    "context": GREAT_WALL,
                    "qas": [{"id": "t3", "question": "长城西边到哪里？", "answers": ["嘉峪关"]}],
                },
                {
                    "context": PANDA,
                    "qas": [{"id": "t4", "question": "大熊猫吃什么？", "answers": ["竹子"]}],
                },
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def cmrc(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> tuple[EvalDataset, KnowledgeBase]:
    if not CMRC.is_file():
        pytest.skip(f"CMRC 2018 dev not found at {CMRC} (shared data absent)")
    base = tmp_path_factory.mktemp("cmrc-eval")
    dataset = load_dataset(CMRC)
    kb = KnowledgeBase("cmrc", resolve_embedding_model(str(tiny_embedder)), persist_dir=base)
    spec = ChunkingSpec(
        chunk_size=384,
        chunk_overlap=48,
        model_path=str(tiny_model.gguf_path),
        embedding_path=str(tiny_embedder),
    )
    report = ingest_corpus(dataset, kb, spec, base / "corpus", workers=2)
    assert not report.failures
    assert report.count("added") == 848
    return dataset, kb


def test_cmrc_dev_recall_with_the_default_retriever(
    cmrc: tuple[EvalDataset, KnowledgeBase],
) -> None:
    dataset, kb = cmrc
    assert len(dataset.contexts) == 848
    assert len(dataset.items) == 3219
    started = time.perf_counter()
    report = evaluate_retrieval(make_retriever(kb), dataset)
    elapsed = time.perf_counter() - started
    metrics = report.metrics()
    summary = ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
    print(f"\nCMRC dev, {kb.count()} chunks, {elapsed:.1f} s: {summary}")
    assert len(report.outcomes) == 3219
    assert not any(o.used_dense for o in report.outcomes)  # BM25 alone, as with the real MiniLM
    assert metrics["recall@1"] >= 0.95, summary
    assert metrics["recall@5"] >= 0.985, summary
    assert metrics["mrr@10"] >= metrics["recall@1"]


def _write_tiny_dataset(folder: Path) -> Path:
    path = folder / "tiny-qa.json"
    path.write_text(json.dumps(TINY_DATASET, ensure_ascii=False), encoding="utf-8")
    return path


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CMR_")}


def test_cli_prints_one_line_per_metric_and_a_table(
    tmp_path: Path,
    tiny_embedder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("CMR_"):
            monkeypatch.delenv(name)
    dataset = _write_tiny_dataset(tmp_path)
    store = tmp_path / "store"
    common = ["--dataset", str(dataset), "--embedding-model", str(tiny_embedder), "-q"]
    flags = [*common, "--store", str(store), "--workers", "0", "--json", str(tmp_path / "r.json")]
    assert main(["eval", "retrieval", *flags, "--min-relevance", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    expected = ["recall@1", "recall@3", "recall@5", "recall@10", "mrr@10"]
    assert [line.split()[0] for line in lines[:5]] == expected
    for line in lines[:5]:
        assert re.fullmatch(r"\S+ 1\.000", line), line  # 4 easy questions, 3 contexts
    assert re.fullmatch(r"latency_p50_ms \d+\.\d", lines[5])
    assert re.fullmatch(r"latency_p95_ms \d+\.\d", lines[6])
    assert lines[7] == "questions 4"
    assert re.fullmatch(r"refused@0\.5 \d\.\d{3}", lines[8])
    assert "retrieval: tiny-qa" in out  # the table's title
    assert "3 contexts, 3 chunks in 'eval-tiny-qa'" in out
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved["metrics"]["recall@1"] == 1.0
    assert [o["rank"] for o in saved["outcomes"]] == [1, 1, 1, 1]

    # the module entry point, on the kept store: nothing is ingested again
    again = ["--store", str(store), "--k", "1,2"]
    run = subprocess.run(
        [sys.executable, "-m", "chinese_mixtral_rag.eval", "retrieval", *common, *again],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:3] == ["recall@1 1.000", "recall@2 1.000", "mrr@2 1.000"]
    assert "(3 unchanged)" in run.stdout

    # a bad dataset is an error message and status 2, not a traceback
    (tmp_path / "bad.json").write_text("{}")
    assert main(["eval", "retrieval", "--dataset", str(tmp_path / "bad.json"), "-q"]) == 2
    assert "unknown dataset format" in capsys.readouterr().err


def test_reranker_loads_a_real_cross_encoder_and_reorders_candidates(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    reranker = build_tiny_reranker(tmp_path / "tiny-reranker")
    dataset = load_dataset(_write_tiny_dataset(tmp_path))
    extra = [f"三国时期第{n}位将军镇守关口，士兵以竹子修筑城墙。" for n in range(1, 6)]
    dataset.contexts.extend(extra)
    kb = KnowledgeBase(
        "rerank", resolve_embedding_model(str(tiny_embedder)), persist_dir=tmp_path / "store"
    )
    spec = ChunkingSpec(embedding_path=str(tiny_embedder))
    ingest_corpus(dataset, kb, spec, tmp_path / "corpus", workers=0)
    query = "三国时期哪位将军镇守关口？"
    plain = HybridRetriever(kb=kb, k=20, dense_weight=0).invoke(query)  # every candidate
    assert len(plain) >= 6
    reranked = HybridRetriever(kb=kb, k=20, dense_weight=0, reranker=str(reranker)).invoke(query)
    model = load_cross_encoder(str(reranker), "cpu")
    assert type(model).__name__ == "CrossEncoder"
    scores = model.predict([(query, d.page_content) for d in plain], show_progress_bar=False)
    by_score = [d.id for _, d in sorted(zip(scores, plain, strict=True), key=lambda p: -p[0])]
    assert [d.id for d in reranked] == by_score
    assert by_score != [d.id for d in plain]  # the random model does reorder them
    assert {d.metadata["lexical_rank"] for d in reranked} == set(range(1, len(plain) + 1))


def test_cli_qa_scores_the_chains_answers_with_the_tiny_model(
    tmp_path: Path,
    tiny_model: TinyModel,
    tiny_embedder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``cmrag eval qa`` end to end on LongBench-style items with the tiny GGUF (random answers,
    so only the output format and the restriction to each item's own file are checked)."""
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    for name in list(os.environ):
        if name.startswith("CMR_"):
            monkeypatch.delenv(name)
    rows = [
        {"input": "刘备三顾茅庐请的是谁？", "context": ZHUGE, "answers": ["诸葛亮"], "_id": "a"},
        {"input": "长城西边到哪里？", "context": GREAT_WALL, "answers": ["嘉峪关"], "_id": "b"},
        {"input": "大熊猫吃什么？", "context": PANDA, "answers": ["竹子"], "_id": "c"},
    ]
    dataset = tmp_path / "tiny-lb.jsonl"
    dataset.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    flags = ["--dataset", str(dataset), "--embedding-model", str(tiny_embedder), "-q"]
    flags += ["--model-path", str(tiny_model.gguf_path), "--n-ctx", "2048", "--max-tokens", "8"]
    flags += ["--temperature", "0", "--workers", "0", "--min-relevance", "0"]
    flags += ["--json", str(tmp_path / "qa.json")]
    assert main(["eval", "qa", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["exact_match", "char_f1", "longbench_f1", "found", "gold_in_sources", "cited_gold"]
    assert [line.split()[0] for line in lines[:6]] == names
    for line in lines[:6]:
        assert re.fullmatch(r"\S+ [01]\.\d{3}", line), line
    assert lines[3] == "found 1.000"  # min_relevance 0: the model is always asked
    assert lines[4] == "gold_in_sources 1.000"  # each question restricted to its own file
    assert re.fullmatch(r"latency_p50_s \d+\.\d{3}", lines[6])
    assert lines[8] == "questions 3"
    saved = json.loads((tmp_path / "qa.json").read_text(encoding="utf-8"))
    assert [o["answers"] for o in saved["outcomes"]] == [["诸葛亮"], ["嘉峪关"], ["竹子"]]
    assert all(isinstance(o["prediction"], str) for o in saved["outcomes"])
