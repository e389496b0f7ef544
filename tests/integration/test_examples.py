"""The sample documents in examples/docs go through the real ingest path and each example
question of examples/README.md finds its own file first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.stores import ingest_with_tiny_models

pytest.importorskip("chromadb", reason="needs the rag extra")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "docs"
FILES = {
    "公司差旅报销制度.docx",
    "混合专家模型简介.md",
    "西湖龙井茶.txt",
    "城市公园开放时间.csv",
    "常见问题.html",
}
# The example questions of examples/README.md, the file that answers each, and the answer.
QUESTIONS = [
    ("出差到一线城市，普通员工住宿费每晚最多报销多少元？", "公司差旅报销制度.docx", "550 元"),
    ("Mixtral 8x7B 有几个专家，每个词元激活几个专家？", "混合专家模型简介.md", "选出 2 个专家"),
    ("冲泡西湖龙井茶用多少度的水合适？", "西湖龙井茶.txt", "80至85摄氏度"),
    ("鹭洲湿地公园几点开放，门票要钱吗？", "城市公园开放时间.csv", "6:00-18:00"),
    ("导入文档支持哪些文件格式？", "常见问题.html", ".docx、.pptx"),
]


@pytest.fixture(scope="module")
def examples(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> KnowledgeBase:
    base = tmp_path_factory.mktemp("examples")
    folder = base / "docs"
    shutil.copytree(EXAMPLES, folder)  # ingest never writes there, but keep the checkout clean
    kb, report = ingest_with_tiny_models(
        folder, base / "store", "examples", tiny_model.gguf_path, tiny_embedder
    )
    assert not report.failures, report.failures
    assert {o.source: o.status for o in report.outcomes} == dict.fromkeys(FILES, "added")
    return kb


def test_every_example_file_is_ingested(examples: KnowledgeBase) -> None:
    assert {p.name for p in EXAMPLES.iterdir()} == FILES
    states = examples.file_states()
    assert set(states) == FILES
    assert all(state.chunks == state.expected > 0 for state in states.values())


def test_the_text_file_is_decoded_as_gb18030(examples: KnowledgeBase) -> None:
    raw = (EXAMPLES / "西湖龙井茶.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # really a GB18030 file, not UTF-8
    chunks = examples.chunks_of("西湖龙井茶.txt")
    assert chunks
    assert {chunk.metadata["encoding"] for chunk in chunks} == {"gb18030"}
    assert "明前茶" in "".join(chunk.page_content for chunk in chunks)


@pytest.mark.parametrize(
    ("question", "expected", "answer"), QUESTIONS, ids=[Path(q[1]).suffix[1:] for q in QUESTIONS]
)
def test_example_question_finds_its_file(
    examples: KnowledgeBase, question: str, expected: str, answer: str
) -> None:
    hits = HybridRetriever(kb=examples).invoke(question)
    assert hits[0].metadata["source"] == expected
    assert any(answer in hit.page_content for hit in hits[:3])  # the answer is near the top
