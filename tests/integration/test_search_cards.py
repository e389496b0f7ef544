"""Search results as a reader sees them: an article the splitter cut in two is one card, cards
follow the ranking, and a card of a file without pages names its section (heading). Real
statutes from ../shared/data and the sample documents of examples/docs, real ingest into real
Chroma with the tiny embedder, no model (search needs none)."""

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
EXAMPLES = REPO / "examples" / "docs"
POLICY = "公司差旅报销制度.docx"
MOE = "混合专家模型简介.md"
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


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path) -> KnowledgeBase:
    """The travel policy (chapters, numbered articles as headings, a table) and the MoE guide."""
    base = tmp_path_factory.mktemp("samples")
    folder = base / "docs"
    folder.mkdir()
    for name in (POLICY, MOE):
        shutil.copy(EXAMPLES / name, folder)
    kb, report = ingest_with_tiny_models(folder, base / "store", "samples", None, tiny_embedder)
    assert not report.failures
    return kb


def test_docx_and_markdown_cards_name_their_section(
    samples: KnowledgeBase, tiny_embedder: Path
) -> None:
    from chinese_mixtral_rag import Settings
    from chinese_mixtral_rag.cli.ask import format_passages
    from chinese_mixtral_rag.qa.packing import hit_passages
    from chinese_mixtral_rag.qa.prompts import passage_header
    from chinese_mixtral_rag.web import Conversation, WebApp

    lodging = "出差到一线城市，普通员工住宿费每晚最多报销多少元？"
    qa = build_qa_chain(None, kb=samples)
    sources = qa.invoke({"question": lodging, "mode": "search"})["sources"]
    (limits,) = [s for s in sources if "550 元" in s.text]  # the table of article 8
    assert limits.source == POLICY
    assert limits.heading.endswith(" > 第四章 住宿标准 > 第八条 按城市等级确定住宿标准")
    where = "第四章 住宿标准 > 第八条 按城市等级确定住宿标准"
    printed = "\n".join(format_passages(sources))
    assert f"[{limits.n}] {POLICY} {where} 表 1 第 2-4 行  (相关度 " in printed

    # The prompt names it the same way (the title in brackets, once).
    passages = hit_passages(HybridRetriever(kb=samples, k=K).invoke(lodging))
    (table,) = [p for p in passages if "550 元" in p.text]
    assert passage_header(1, table) == (
        f"[1] 来源：{POLICY}（青禾数据科技有限公司差旅费用报销制度），{where}，表 1 第 2-4 行"
    )

    # The web app: the card and the list of passages in the chat.
    settings = Settings(
        persist_dir=samples.persist_dir, collection=samples.name, embedding_model=str(tiny_embedder)
    )
    app = WebApp(settings, chat=None)
    *_, (conversation, cards, _) = app.answer(
        lodging, Conversation(), "仅检索", [], samples.name, 0.0, 64, K, False
    )
    assert f"{where.replace('>', '&gt;')} · 表 1 第 2-4 行 · 相关度" in cards
    assert (
        f"{POLICY} {where.replace('>', '&gt;')} · 表 1 第 2-4 行"
        in (conversation.messages[-1]["content"])
    )

    experts = "Mixtral 8x7B 有几个专家，每个词元激活几个专家？"
    best = qa.invoke({"question": experts, "mode": "search"})["sources"][0]
    assert (best.source, best.section) == (MOE, "Mixtral 8x7B")
    assert format_passages([best])[0].startswith(f"[1] {MOE} Mixtral 8x7B  (相关度 ")
