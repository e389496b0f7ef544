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

#: Passages of the Civil Code as the prompt numbers them: 居住权 (arts. 366-370), 地役权 (arts.
#: 372-374), 继承 (arts. 1122-1124).
RESIDENCE = (
    "第三百六十六条 居住权人有权按照合同约定，对他人的住宅享有占有、使用的用益物权，以满足生活"
    "居住的需要。第三百六十七条 设立居住权，当事人应当采用书面形式订立居住权合同。第三百六十八条 "
    "居住权无偿设立，但是当事人另有约定的除外。设立居住权的，应当向登记机构申请居住权登记。居住权"
    "自登记时设立。第三百六十九条 居住权不得转让、继承。设立居住权的住宅不得出租，但是当事人另有"
    "约定的除外。第三百七十条 居住权期限届满或者居住权人死亡的，居住权消灭。"
)
EASEMENT = (
    "第三百七十二条 地役权人有权按照合同约定，利用他人的不动产，以提高自己的不动产的效益。"
    "第三百七十三条 设立地役权，当事人应当采用书面形式订立地役权合同。第三百七十四条 地役权自地役权"
    "合同生效时设立。当事人要求登记的，可以向登记机构申请地役权登记；未经登记，不得对抗善意第三人。"
)
INHERITANCE = (
    "第一千一百二十二条 遗产是自然人死亡时遗留的个人合法财产。依照法律规定或者根据其性质不得继承的"
    "遗产，不得继承。第一千一百二十三条 继承开始后，按照法定继承办理；有遗嘱的，按照遗嘱继承或者"
    "遗赠办理。第一千一百二十四条 继承开始后，继承人放弃继承的，应当在遗产处理前，以书面形式作出"
    "放弃继承的表示；没有表示的，视为接受继承。"
)
LAWS = [RESIDENCE, EASEMENT, INHERITANCE]


def run(pieces: list[str], passages: list[str]) -> tuple[str, list[int]]:
    citations = CitationFilter(passages)
    out = "".join(citations.feed(p) for p in pieces) + citations.flush()
    return out, citations.cited


def test_a_marker_stays_only_where_its_passage_says_the_sentence() -> None:
    answer = (
        "居住权不得转让、继承[1]。居住权人死亡的，居住权消灭。[1]"  # right, before and after 。
        "地役权自地役权合同生效时设立[2]，居住权自登记时设立[2]。"  # right, then wrong
        "设立居住权的住宅不得出租[3]。"  # the inheritance passage: wrong
        "继承人放弃继承的，应当在遗产处理前以书面形式表示[3][1]。"  # right, wrong side by side
    )
    assert run([answer], LAWS) == (
        "居住权不得转让、继承[1]。居住权人死亡的，居住权消灭。[1]"
        "地役权自地役权合同生效时设立[2]，居住权自登记时设立。"
        "设立居住权的住宅不得出租。"
        "继承人放弃继承的，应当在遗产处理前以书面形式表示[3]。",
        [1, 2, 3],
    )


def test_markers_that_point_to_nothing_or_cite_nothing_are_removed() -> None:
    text = "居住权不得继承[2]，也不得转让[7][1]。见第[3条和[x]。是的[1]。"
    passages = ["居住权不得转让。", "居住权不得继承。", "无关"]
    assert run([text], passages) == (
        "居住权不得继承[2]，也不得转让[1]。见第[3条和[x]。是的。",
        [2, 1],
    )
    assert run([text], [])[0] == "居住权不得继承，也不得转让。见第[3条和[x]。是的。"


def test_a_copied_material_header_is_no_citation() -> None:
    """``[3] 来源：…`` echoed from the prompt, at a line's start or inside the answer, claims only
    what the header says; the marker goes unless the text it stands for is passage 3's."""
    at_line_start = (
        "居住权不得继承[1]。\n[3] 来源：民法典.pdf 第 3 页\n[1] 来源：民法典.pdf，第 69 页\n"
    )
    assert run([at_line_start], LAWS) == (
        "居住权不得继承[1]。\n 来源：民法典.pdf 第 3 页\n 来源：民法典.pdf，第 69 页\n",
        [1],
    )
    inside = "居住权不得继承[1]。[3] 来源：民法典.pdf 第 3 页。详见民法典.pdf 第 3 页[3]。"
    assert run([inside], LAWS) == (
        "居住权不得继承[1]。 来源：民法典.pdf 第 3 页。详见民法典.pdf 第 3 页。",
        [1],
    )
    # The header's marker stands for the sentence after it when that sentence is passage 3's.
    followed = "[3] 来源：民法典（继承编），第 209 页：继承人放弃继承的，应当以书面形式表示。"
    assert run([followed], LAWS)[1] == [3]
    assert run(["[3] 来源：中华人民共和国民法典（继承编），第 209 页"], LAWS) == (
        " 来源：中华人民共和国民法典（继承编），第 209 页",
        [],
    )


def test_an_english_answer_is_judged_on_its_words() -> None:
    passages = [
        "A right of habitation may not be transferred or inherited. A dwelling subject to a right "
        "of habitation may not be leased, unless otherwise agreed by the parties.",
        "The holder of an easement may use the immovable property of another person to improve "
        "the efficiency of his own immovable property.",
    ]
    answer = (
        "No. A right of habitation cannot be inherited or transferred [1]. The dwelling cannot be "
        "leased unless the parties agree otherwise [1][2]. Easements improve the efficiency of "
        "one's own property [2]. It is on p. 3 [2]."
    )
    assert run([answer], passages) == (
        "No. A right of habitation cannot be inherited or transferred [1]. The dwelling cannot be "
        "leased unless the parties agree otherwise [1]. Easements improve the efficiency of "
        "one's own property [2]. It is on p. 3 .",
        [1, 2],
    )


ANSWER = (
    "根据资料，居住权不得转让、继承[1]。\n[3] 来源：民法典.pdf 第 3 页\n"
    "设立居住权的住宅不得出租[3][1]，地役权合同生效时设立[2]。[7]\n"
    "[2][1] 地役权自地役权合同生效时设立。"
)


def test_the_answer_is_the_same_wherever_the_stream_splits_it() -> None:
    whole = run([ANSWER], LAWS)
    assert whole == (
        "根据资料，居住权不得转让、继承[1]。\n 来源：民法典.pdf 第 3 页\n"
        "设立居住权的住宅不得出租[1]，地役权合同生效时设立[2]。\n"
        "[2] 地役权自地役权合同生效时设立。",
        [1, 2],
    )
    for cut in range(len(ANSWER) + 1):
        assert run([ANSWER[:cut], ANSWER[cut:]], LAWS) == whole, cut
    assert run(list(ANSWER), LAWS) == whole


def test_a_supported_marker_is_not_held_back() -> None:
    """Text streams on as it comes: a marker ending its sentence goes out with it; only one at a
    line's start waits for the sentence it stands for."""
    citations = CitationFilter(LAWS)
    assert citations.feed("居住权不得转让、继承[1") == "居住权不得转让、继承"
    assert citations.feed("]，") == "[1]，"
    assert citations.feed("\n[2] ") == "\n"
    assert citations.feed("地役权合同生效时") == ""
    assert citations.feed("设立。") == "[2] 地役权合同生效时设立。"


@given(
    text=st.text(alphabet="居住权设立[]0123456789x。\n 来源：", max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=10),
    passages=st.integers(0, 12),
)
def test_streaming_in_any_pieces_gives_the_same_text(
    text: str, cuts: list[int], passages: int
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    laws = (["居住权设立。", "无关的条文。"] * 6)[:passages]
    assert run(pieces, laws) == run([text], laws)


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
