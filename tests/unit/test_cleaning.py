"""Text cleaning: what a user would notice is retrieval that misses because of invisible junk,
or a cleaned sentence that no longer matches the original."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.chinese import is_han as is_cjk
from chinese_mixtral_rag.documents.cleaning import (
    clean_text,
    join_broken_lines,
    remove_repeated_lines,
)

CHINESE_PUNCTUATION = "，。！？；：、（）「」『』“”‘’《》【】〈〉…—·～％＋－＠＃"

PROSE = [
    "中华人民共和国是工人阶级领导的、以工农联盟为基础的人民民主专政的社会主义国家。",
    "话说天下大势，分久必合，合久必分。",
    "孔明曰：“亮夜观天象，见将星欲坠。”",
    "《中华人民共和国民法典》自2021年1月1日起施行；同时废止《婚姻法》。",
    "他问：“你今天去哪儿了？”她答：“去图书馆（北京）看书！”",
    "Python 3.12 的性能提升了 5%，详见 PEP 709。",
    "第一段第一句。\n第一段第二句。\n\n第二段。",
]


@pytest.mark.parametrize("text", PROSE)
def test_plain_prose_is_unchanged_byte_for_byte(text: str) -> None:
    assert clean_text(text) == text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("第一行\r\n第二行\r第三行", "第一行\n第二行\n第三行"),
        ("中\u200b华\u200c人\u200d民\ufeff共\u2060和国", "中华人民共和国"),
        ("控制\x00字符\x07与\x1b删除", "控制字符与删除"),
        ("不间断\u00a0空格和\u2003全角\u3000空格", "不间断 空格和 全角 空格"),
        ("\u3000\u3000第一条\u3000为了保护公民。", "第一条 为了保护公民。"),
        ("ＡＢＣ　ｘｙｚ　１２３号", "ABC xyz 123号"),
        ("全角标点，。！？；：（）「」“”保留", "全角标点，。！？；：（）「」“”保留"),
        ("多个   空格\t\t和制表符", "多个 空格 和制表符"),
        ("  行首空格\n行尾空格   \n", "行首空格\n行尾空格"),
        ("一段\n\n\n\n\n另一段", "一段\n\n另一段"),
        ("换页\f之后", "换页\n之后"),
        ("  \n\n  ", ""),
    ],
)
def test_clean_text_examples(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_clean_text_does_not_apply_nfkc_to_chinese_punctuation() -> None:
    # NFKC would turn these into ASCII and break exact matching against user questions.
    text = "甲，乙：丙；丁！戊？（己）"
    assert clean_text(text) == text


_ALPHABET = st.sampled_from(
    list("中华人民共和国宪法第一条总纲abcXYZ019")
    + list(CHINESE_PUNCTUATION)
    + list(" \t\n\r\f\v\x00\x1b\u00a0\u2003\u3000\u200b\ufeff\u2060ＡＺａｚ０９")
)
_TEXT = st.text(alphabet=_ALPHABET, max_size=200) | st.text(max_size=200)


@given(_TEXT)
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


def _kept(text: str) -> list[str]:
    return [ch for ch in text if is_cjk(ch) or ch in CHINESE_PUNCTUATION]


@given(_TEXT)
def test_clean_text_never_changes_han_characters_or_chinese_punctuation(text: str) -> None:
    assert _kept(clean_text(text)) == _kept(text)


@given(_TEXT)
def test_clean_text_leaves_no_double_spaces_or_runs_of_blank_lines(text: str) -> None:
    cleaned = clean_text(text)
    assert "  " not in cleaned
    assert "\n\n\n" not in cleaned
    assert "\t" not in cleaned
    assert cleaned == cleaned.strip()
    assert all(line == line.strip() for line in cleaned.split("\n"))


# --- join_broken_lines -------------------------------------------------------------------------

# As pypdf extracts page 4 of the Constitution PDF: sentences broken at the printed line end.
PDF_PAGE = """\
本宪法以法律的形式确认了中国各族人民奋斗的成果，规定了国
家的根本制度和根本任务，是国家的根本法，具有最高的法律效力。
全国各族人民、一切国家机关和武装力量、各政党和各社会团体、各
企业事业组织，都必须以宪法为根本的活动准则，并且负有维护宪法
尊严、保证宪法实施的职责。
第一章 总 纲
第一条 中华人民共和国是工人阶级领导的、以工农联盟为基础
的人民民主专政的社会主义国家。
社会主义制度是中华人民共和国的根本制度。中国共产党领导是
中国特色社会主义最本质的特征。"""


def test_join_broken_lines_rejoins_sentences_and_keeps_paragraphs() -> None:
    lines = join_broken_lines(PDF_PAGE).split("\n")
    assert lines == [
        "本宪法以法律的形式确认了中国各族人民奋斗的成果，规定了国家的根本制度和根本任务，"
        "是国家的根本法，具有最高的法律效力。",
        "全国各族人民、一切国家机关和武装力量、各政党和各社会团体、各企业事业组织，"
        "都必须以宪法为根本的活动准则，并且负有维护宪法尊严、保证宪法实施的职责。",
        "第一章 总纲",
        "第一条 中华人民共和国是工人阶级领导的、以工农联盟为基础的人民民主专政的社会主义国家。",
        "社会主义制度是中华人民共和国的根本制度。中国共产党领导是中国特色社会主义最本质的特征。",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # A digit at the line end joins a line starting with a Han character.
        (
            "（1982年12月4日第五届全国人民代表大会第五次会议通过 1982\n年12月4日公布施行。",
            "（1982年12月4日第五届全国人民代表大会第五次会议通过 1982年12月4日公布施行。",
        ),
        # A new item (第…条, list markers, 1、) starts its own line even after a full line.
        (
            "应当先履行债务的当事人有确切证据证明对方有下列情形之一\n（一）经营状况严重恶化；",
            "应当先履行债务的当事人有确切证据证明对方有下列情形之一\n（一）经营状况严重恶化；",
        ),
        (
            "全国人民代表大会常务委员会行使下列各项职权的有关规定\n第六十七条 全国人民代表",
            "全国人民代表大会常务委员会行使下列各项职权的有关规定\n第六十七条 全国人民代表",
        ),
        ("这是一个完整的句子但是没有标点结束\n1、第一项内容", None),
        # Sentence-final punctuation and closing quotes keep the break.
        ("国家尊重和保障人权，这是宪法规定。\n任何公民享有宪法规定的权利。", None),
        ("他说道：“我们明天出发去北京吧。”\n第二天他们果然出发了北京。", None),
        # English lines are never glued together.
        ("This is an English line that ends\nwithout punctuation here.", None),
        # Letter-spaced headings lose their spaces; words and names in a list keep them.
        ("目 录", "目录"),
        ("第一章 总 纲", "第一章 总纲"),
        ("杨启光 陈光磊 陈学超 周小兵 赵金铭\n王 劼 刘潇潇", None),
    ],
)
def test_join_broken_lines_examples(raw: str, expected: str | None) -> None:
    assert join_broken_lines(raw) == (raw if expected is None else expected)


def test_join_broken_lines_keeps_a_short_heading_line_apart() -> None:
    page = "序言\n中国是世界上历史最悠久的国家之一。中国各族人民共同创造了\n光辉灿烂的文化。"
    assert join_broken_lines(page) == (
        "序言\n中国是世界上历史最悠久的国家之一。中国各族人民共同创造了光辉灿烂的文化。"
    )


# --- remove_repeated_lines ---------------------------------------------------------------------


BODIES = ["天下大势，分久必合。", "合久必分。", "周末七国分争。", "并入于秦。", "楚汉分争。"]


def test_remove_repeated_lines_drops_running_header_and_page_numbers() -> None:
    pages = [
        f"某某公司内部资料 严禁外传\n{body}\n{body[::-1]}\n- {n} -"
        for n, body in enumerate(BODIES, start=1)
    ]
    cleaned = remove_repeated_lines(pages)
    assert cleaned == [f"{body}\n{body[::-1]}" for body in BODIES]


@pytest.mark.parametrize(
    "number_line", ["12", "- 12 -", "第 12 页", "12 / 31", "第 12 页 共 31 页"]
)
def test_remove_repeated_lines_drops_standalone_page_numbers(number_line: str) -> None:
    page = f"{number_line}\n正文内容在这里。\n{number_line}"
    assert remove_repeated_lines([page]) == ["正文内容在这里。"]


def test_remove_repeated_lines_keeps_lines_repeated_on_few_pages() -> None:
    pages = ["摘要\n内容一。", "摘要\n内容二。", "引言\n内容三。", "方法\n内容四。"]
    pages += ["结果\n内容五。", "讨论\n内容六。"]
    assert remove_repeated_lines(pages) == pages


def test_remove_repeated_lines_keeps_page_count_when_a_page_empties() -> None:
    pages = ["页眉文字\n正文一。", "页眉文字", "页眉文字\n正文三。"]
    assert remove_repeated_lines(pages) == ["正文一。", "", "正文三。"]


def test_ocr_text_fixes_quote_direction_and_yue() -> None:
    """The recogniser's systematic slips on Chinese dialogue, undone by context; dates and
    words ending in 日 stay as they are."""
    from chinese_mixtral_rag.documents.ocr import fix_text

    read = '玄德日：”吾乃中山靖王之后。“飞日："好"。今日：晴。3月1日：“开会”。生日：“快乐”'
    assert fix_text(read) == (
        "玄德曰：“吾乃中山靖王之后。”飞曰：“好”。今日：晴。3月1日：“开会”。生日：“快乐”"
    )
    assert fix_text("第十条 城市的土地属于国家所有。") == "第十条 城市的土地属于国家所有。"
