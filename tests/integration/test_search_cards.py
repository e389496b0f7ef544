"""Search results as a reader sees them: an article the splitter cut in two is one card, cards
follow the ranking. Real statutes from ../shared/data, real ingest into real Chroma with the tiny
embedder, no model (search needs none)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chinese_mixtral_rag import build_qa_chain
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.testing.stores import ingest_with_tiny_models

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
CONSTITUTION = "中华人民共和国宪法.pdf"
K = 8

needs_laws = pytest.mark.skipif(not LAWS.is_dir(), reason=f"shared data not found at {LAWS}")


@pytest.fixture(scope="module")
def constitution(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path) -> KnowledgeBase:
    """The constitution in small chunks (96 tokens), so the splitter cuts articles in two."""
    base = tmp_path_factory.mktemp("constitution")
    folder = base / "docs"
    folder.mkdir()
    shutil.copy(LAWS / CONSTITUTION, folder)
    kb, report = ingest_with_tiny_models(
        folder, base / "store", "constitution", None, tiny_embedder, chunk_size=96, chunk_overlap=16
    )
    assert not report.failures
    return kb


def printed(start: str, end: str) -> tuple[str, list[int]]:
    """The text from ``start`` to just before ``end`` as the PDF prints it (whitespace removed)
    and the pages its beginning and its end are printed on."""
    from pypdf import PdfReader

    pages = ["".join(p.extract_text().split()) for p in PdfReader(LAWS / CONSTITUTION).pages]
    text = "".join(pages)
    article = text[text.index(start) : text.index(end)]
    on = [n for n, page in enumerate(pages, 1) if article[:12] in page or article[-12:] in page]
    return article, on


@needs_laws
def test_an_article_cut_in_two_is_one_card_and_cards_follow_the_ranking(
    constitution: KnowledgeBase,
) -> None:
    article, pages = printed("第四十条", "第四十一条")
    assert pages == [11, 12]  # printed over a page break
    chunks = sorted(constitution.chunks_of(CONSTITUTION), key=lambda c: c.metadata["chunk_index"])
    (opening,) = [c for c in chunks if c.page_content.startswith("第四十条")]
    rest = chunks[chunks.index(opening) + 1]
    assert "".join(rest.page_content.split()) in article  # the splitter cut the article in two
    question = "公民的通信自由和通信秘密受法律保护吗？"
    ranked = [h.metadata["id"] for h in HybridRetriever(kb=constitution, k=K).invoke(question)]
    assert {opening.metadata["id"], rest.metadata["id"]} <= set(ranked)  # both halves found

    qa = build_qa_chain(None, kb=constitution, retrieve_k=K)
    sources = qa.invoke({"question": question, "mode": "search"})["sources"]

    (card,) = [s for s in sources if opening.metadata["id"] in s.chunk_ids]
    assert rest.metadata["id"] in card.chunk_ids
    assert article in "".join(card.text.split())  # the whole article, in one card
    assert card.page == "11-12"
    assert [s.n for s in sources] == list(range(1, len(sources) + 1))
    best = [min(ranked.index(i) for i in s.chunk_ids) for s in sources]
    assert best == sorted(best)  # numbered in the rank of their best chunk
    assert sorted(i for s in sources for i in s.chunk_ids) == sorted(ranked)  # hits, each once
    assert len(sources) < len(ranked)
