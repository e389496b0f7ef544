"""Citation markers in a streamed answer: kept when they point at a source, removed otherwise,
whatever the pieces the text arrives in."""

from __future__ import annotations

import re
from dataclasses import replace
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.qa.citations import CitationFilter, Source, rows_label
from chinese_mixtral_rag.qa.packing import Passage


def run(pieces: list[str], valid: int) -> tuple[str, list[int]]:
    citations = CitationFilter(valid)
    out = "".join(citations.feed(p) for p in pieces) + citations.flush()
    return out, citations.cited


def test_dangling_markers_are_removed_and_cited_ones_listed() -> None:
    text = "居住权不得继承[2]，也不得转让[7][1]。见第[3条和[x]。"
    assert run([text], valid=3) == ("居住权不得继承[2]，也不得转让[1]。见第[3条和[x]。", [2, 1])
    assert run([text], valid=0)[0] == "居住权不得继承，也不得转让。见第[3条和[x]。"


@given(
    text=st.text(alphabet="居住权[]0123456789x。 ", max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=10),
    valid=st.integers(0, 12),
)
def test_streaming_in_any_pieces_gives_the_same_text(
    text: str, cuts: list[int], valid: int
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    assert run(pieces, valid) == run([text], valid)


def test_a_cited_chunk_of_rows_says_its_sheet_and_rows_wherever_the_page_is_shown() -> None:
    from chinese_mixtral_rag.cli.ask import format_sources
    from chinese_mixtral_rag.web.app import source_cards, where
    from chinese_mixtral_rag.web.text import TEXT

    rows = Passage(
        "销售.xlsx", "门店: 第77门店", ("a",), 3, sheet="一季度销售", row_start=3, row_end=12
    )
    table = Passage("办法.docx", "姓名: 张三", ("c",), 0, table=2, row_start=5, row_end=5)
    pdf = Passage("宪法.pdf", "第一条", ("d",), 0, page=3, last_page=4)
    sheet_source, table_source, pdf_source = (
        Source.of(n, p) for n, p in enumerate([rows, table, pdf], start=1)
    )
    assert (sheet_source.sheet, sheet_source.rows, sheet_source.page) == ("一季度销售", "3-12", "")
    assert sheet_source.as_dict()["rows"] == "3-12"
    lines = format_sources([sheet_source, table_source, pdf_source], cited=[])
    assert lines[0].startswith("[1] 销售.xlsx 工作表 一季度销售 第 3-12 行  (")
    assert lines[1].startswith("[2] 办法.docx 表 2 第 5 行  (")
    assert lines[2].startswith("[3] 宪法.pdf 第 3-4 页  (")
    assert where(sheet_source, TEXT["zh"]) == "工作表 一季度销售 第 3-12 行"
    assert where(sheet_source, TEXT["en"]) == "sheet 一季度销售, rows 3-12"
    assert where(table_source, TEXT["en"]) == "table 2, rows 5"
    assert where(pdf_source, TEXT["en"]) == "p. 3-4"
    assert "工作表 一季度销售 第 3-12 行" in source_cards([sheet_source], TEXT["zh"])


def test_a_passage_of_a_file_without_pages_names_its_section_wherever_the_page_is_shown() -> None:
    """DOCX, Markdown, HTML: the heading path below the title (its last two levels) is the
    position, before the rows of a table; where a page is shown it stays the only position."""
    from chinese_mixtral_rag.cli.ask import format_passages, format_sources
    from chinese_mixtral_rag.qa.prompts import passage_header
    from chinese_mixtral_rag.web.app import source_cards, where
    from chinese_mixtral_rag.web.text import TEXT

    title = "差旅费用报销制度"
    path = f"{title} > 第四章 住宿标准 > 第八条 住宿限额"
    table = Passage("差旅.docx", "城市: 北京", ("a",), 9, table=1, row_start=2, row_end=4)
    table = replace(table, title=title, heading=path)
    guide = Passage("简介.md", "路由器……", ("b",), 2, title="简介", heading="简介 > 路由 <b>")
    slide = Passage("汇报.pptx", "季度目标", ("c",), 3, page=3, title="汇报", heading="季度目标")
    opening = Passage("简介.md", "本文介绍……", ("d",), 0, title="简介", heading="简介")
    deep = Passage("书.epub", "……", ("e",), 5, title="书", heading="上编 > 第一章 > 第一节 > 一、")
    sources = [Source.of(n, p) for n, p in enumerate([table, guide, slide, opening, deep], 1)]
    assert sources[0].heading == path  # the whole path for API clients
    assert [s.section for s in sources] == [
        "第四章 住宿标准 > 第八条 住宿限额",
        "路由 <b>",
        "",  # the page is the position; the slide's title opens its text
        "",  # before the first heading below the title
        "第一节 > 一、",
    ]
    assert sources[0].as_dict()["heading"] == path
    lines = format_sources(sources, cited=[])
    assert lines[0].startswith("[1] 差旅.docx 第四章 住宿标准 > 第八条 住宿限额 表 1 第 2-4 行  (")
    assert lines[1].startswith("[2] 简介.md 路由 <b>  (")
    assert lines[2].startswith("[3] 汇报.pptx 第 3 页  (")
    assert lines[3].startswith("[4] 简介.md  (")
    assert format_passages(sources[:1])[0] == lines[0].rsplit("  ", 1)[0]
    assert where(sources[0], TEXT["zh"]) == "第四章 住宿标准 > 第八条 住宿限额 · 表 1 第 2-4 行"
    assert where(sources[0], TEXT["en"]) == (
        "section 第四章 住宿标准 > 第八条 住宿限额 · table 1, rows 2-4"
    )
    assert where(sources[2], TEXT["zh"]) == "第 3 页"
    assert "路由 &lt;b&gt;" in source_cards(sources[1:2], TEXT["zh"])  # a heading is text
    assert passage_header(1, table) == (
        "[1] 来源：差旅.docx（差旅费用报销制度），第四章 住宿标准 > 第八条 住宿限额，表 1 第 2-4 行"
    )
    assert passage_header(2, slide) == "[2] 来源：汇报.pptx，第 3 页"
    assert passage_header(3, opening) == "[3] 来源：简介.md"


def test_rows_without_a_sheet_or_table_are_csv_rows() -> None:
    assert rows_label("", None, "7-9") == "第 7-9 行"
    assert rows_label("价格", None, "") == ""


def test_source_cards_most_relevant_first_five_open_and_the_question_marked() -> None:
    """Cards in the order of the relevance they show (each keeps its [n]), five open and the
    rest one click away, the question's words marked in the passage, names and text escaped."""
    from chinese_mixtral_rag.web.app import highlight, source_cards
    from chinese_mixtral_rag.web.text import TEXT

    passages = [
        Passage(f"法{n}.txt", f"第{n}条 居住权不得转让、继承。<b>", (str(n),), n)
        for n in range(1, 8)
    ]
    sources = [
        Source(**{**Source.of(n, p).as_dict(), "relevance": r, "chunk_ids": (str(n),)})
        for (n, p), r in zip(
            enumerate(passages, start=1), [0.2, 0.9, 0.5, 0.1, 0.7, 0.3, 0.6], strict=True
        )
    ]
    cards = source_cards(sources, TEXT["zh"], question="居住权可以继承吗？")
    order = [int(n) for n in re.findall(r"id='src-(\d+)'", cards)]
    assert order == [2, 5, 7, 3, 6, 1, 4]
    opened, _, more = cards.partition("<details")
    assert opened.count("source-card") == 5
    assert "更多来源（2）" in more
    assert more.count("source-card") == 2
    assert "<mark>居住权</mark>不得转让、<mark>继承</mark>。&lt;b&gt;" in cards
    assert highlight("与问题无关的段落", "居住权可以继承吗？") == "与问题无关的段落"
