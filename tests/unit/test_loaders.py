"""Loading files as a user drops them into a folder: every format, every Chinese encoding, the
real statutes and novel of the shared data set, and every way a file can be bad."""

from __future__ import annotations

import base64
import email.policy
import io
import json
import os
import random
import re
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS, decode_text, load_file
from chinese_mixtral_rag.documents.loaders.pdf import text_layer_usable
from chinese_mixtral_rag.errors import DocumentError

DOCS = Path(__file__).parents[2] / ".." / "shared" / "data" / "docs"
needs_data = pytest.mark.skipif(
    not DOCS.is_dir(), reason=f"shared data set not found at {DOCS.resolve()}"
)

LONG_SIMPLIFIED = (
    "中华人民共和国是工人阶级领导的、以工农联盟为基础的人民民主专政的社会主义国家。\n"
    "社会主义制度是中华人民共和国的根本制度。中国共产党领导是中国特色社会主义最本质的特征。"
    "禁止任何组织或者个人破坏社会主义制度。\n\n"
    "第二条 中华人民共和国的一切权力属于人民。人民行使国家权力的机关是全国人民代表大会和"
    "地方各级人民代表大会。2018年3月11日修正，共143条。"
)
SHORT_SIMPLIFIED = "我们明天去公园散步。"
LONG_TRADITIONAL = (
    "中華民國憲法第一條規定，中華民國基於三民主義，為民有民治民享之民主共和國。\n"
    "臺灣的夜市非常熱鬧，小吃種類繁多，吸引了許多來自世界各地的觀光客。\n\n"
    "學習語言最重要的是持續練習，請問這本書多少錢？電腦軟體開發需要耐心與細心。"
)
SHORT_TRADITIONAL = "我們明天去公園散步。"
RARE_GB18030 = "\n罕用字：𠮷野家、䶮、喆、堃、镕。"  # 𠮷 and 䶮 exist in GB18030, not in GBK
RARE_GBK = "\n罕用字：喆、堃、镕。"
RARE_CP950 = "\n罕用字：碁、銹、裏。"  # Microsoft's Big5 (cp950) extensions

# (text, encoding written by the test, encoding name the loader must report)
_SIMPLIFIED = [LONG_SIMPLIFIED, SHORT_SIMPLIFIED]
_TRADITIONAL = [LONG_TRADITIONAL, SHORT_TRADITIONAL]
ENCODING_CASES = [
    *[(t + r, "utf-8", "utf-8") for t in _SIMPLIFIED for r in ("", RARE_GB18030)],
    *[(t + r, "utf-8-sig", "utf-8-sig") for t in _SIMPLIFIED for r in ("", RARE_GB18030)],
    *[(t + r, "gb18030", "gb18030") for t in _SIMPLIFIED for r in ("", RARE_GB18030)],
    *[(t + r, "gbk", "gb18030") for t in _SIMPLIFIED for r in ("", RARE_GBK)],
    *[(t, "gb2312", "gb18030") for t in _SIMPLIFIED],
    *[(t + r, "utf-16", "utf-16") for t in _SIMPLIFIED for r in ("", RARE_GB18030)],
    *[(t + r, "utf-16-le", "utf-16-le") for t in _SIMPLIFIED for r in ("", RARE_GB18030)],
    *[(t, "big5", "big5") for t in _TRADITIONAL],
    *[(t + RARE_CP950, "cp950", "cp950") for t in _TRADITIONAL],
    *[(t, "utf-8", "utf-8") for t in _TRADITIONAL],
    *[(t, "utf-16", "utf-16") for t in _TRADITIONAL],
    *[(t, "utf-16-le", "utf-16-le") for t in _TRADITIONAL],
    *[(t, "gb18030", "gb18030") for t in _TRADITIONAL],
]


def contiguous_rows(docs: list[Any], start: int, row: str) -> int:
    """Assert that the parts' row ranges follow each other from ``start`` with one line per row,
    each matching ``row`` (every value labelled by its column); return the row after the last."""
    for doc in docs:
        assert doc.metadata["row_start"] == start
        lines = doc.page_content.splitlines()
        assert len(lines) == doc.metadata["row_end"] - start + 1
        assert all(re.match(row, line) for line in lines), lines
        start = doc.metadata["row_end"] + 1
    return start


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _only(docs: list[Any]) -> Any:
    assert len(docs) == 1
    return docs[0]


def _case_id(case: tuple[str, str, str]) -> str:
    text, written, _ = case
    kind = "short" if len(text) <= 12 else "long"
    script = "trad" if "們" in text else "simp"
    rare = "+rare" if "罕用字" in text else ""
    return f"{script}-{kind}{rare}-{written}"


# --- encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ENCODING_CASES, ids=_case_id)
def test_same_text_in_any_encoding_loads_to_the_same_content(
    tmp_path: Path, case: tuple[str, str, str]
) -> None:
    text, written, reported = case
    reference = _only(load_file(_write(tmp_path, "utf8.txt", text.encode("utf-8"))))
    doc = _only(load_file(_write(tmp_path, f"doc-{written}.txt", text.encode(written))))
    assert doc.page_content == reference.page_content == text.strip()
    assert doc.metadata["encoding"] == reported


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030", "big5", "utf-16"])
def test_crlf_and_cr_line_ends_become_lf(tmp_path: Path, encoding: str) -> None:
    text = "第一行：臺灣\r\n第二行\r第三行"
    doc = _only(load_file(_write(tmp_path, "crlf.txt", text.encode(encoding))))
    assert doc.page_content == "第一行：臺灣\n第二行\n第三行"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"\xef\xbb\xbf" + "你好".encode(), "utf-8-sig"),
        ("你好".encode("utf-16"), "utf-16"),
        ("你好".encode("utf-32"), "utf-32"),
        ("你好，世界".encode("utf-16-be"), "utf-16-be"),
        (b"plain ascii", "utf-8"),
        ("Ceci est un café très agréable à Montréal.".encode("cp1252"), "cp1252"),
        ("日本語のテキストです。ひらがなとカタカナ。".encode("shift_jis"), "shift_jis"),
        ("한국어 텍스트입니다. 이것은 짧은 문장입니다.".encode("euc-kr"), "euc_kr"),
        ("Привет, мир! Это документ в кодировке Windows-1251.".encode("cp1251"), "cp1251"),
    ],
)
def test_decode_text_reports_the_encoding(data: bytes, name: str) -> None:
    text, encoding = decode_text(data)
    assert encoding == name
    assert text == data.decode(name)


@pytest.mark.parametrize(
    ("simplified", "traditional"),
    [
        ("玄德曰：“吾乃汉室宗亲。”", "玄德曰：「吾乃漢室宗親。」"),
        ("孔明笑而不答。", "孔明笑而不答。"),
        ("曹操大怒，遂起兵。", "曹操大怒，遂起兵。"),
        ("关公提刀上马。", "關公提刀上馬。"),
        ("这个问题需要讨论", "這個問題需要討論"),
    ],
)
def test_decode_text_tells_gbk_from_big5_in_short_sentences(
    simplified: str, traditional: str
) -> None:
    # Short strings are where byte-statistics detectors pick Big5, EUC-KR or Shift_JIS.
    assert decode_text(simplified.encode("gbk")) == (simplified, "gb18030")
    assert decode_text(traditional.encode("big5")) == (traditional, "big5")


def test_decode_text_replaces_a_damaged_byte_instead_of_failing() -> None:
    data = (LONG_SIMPLIFIED * 20).encode("gb18030")
    damaged = data[:1001] + b"\xff" + data[1002:]
    text, encoding = decode_text(damaged)
    assert encoding == "gb18030"
    assert 1 <= text.count("\ufffd") <= 2  # the damaged character and maybe its partner byte
    assert text.startswith(LONG_SIMPLIFIED[:300])
    assert text.endswith(LONG_SIMPLIFIED[-300:])


@pytest.mark.parametrize(
    "data",
    [
        random.Random(0).randbytes(65536),
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64,
        b"\x00" * 100,
        b"PK\x03\x04" + random.Random(1).randbytes(4096),
    ],
    ids=["random", "png", "nul", "zip"],
)
def test_decode_text_rejects_binary(data: bytes) -> None:
    with pytest.raises(DocumentError, match="not a text file"):
        decode_text(data)


# --- formats -----------------------------------------------------------------------------------


def test_markdown_sections_follow_headings(tmp_path: Path) -> None:
    markdown = (
        "前言：本文档说明用法。\n\n"
        "# 用户手册\n\n简介段落。\n\n"
        "## 第一章 安装\n\n安装步骤。\n\n"
        "```bash\n# 这不是标题\npip install x\n```\n\n"
        "### 第一节 环境\n\n需要 Python 3.10。\n\n"
        "## 第二章 使用\n\n运行命令。\n"
    )
    docs = load_file(_write(tmp_path, "manual.md", markdown.encode("gbk")))
    assert [d.metadata.get("heading") for d in docs] == [
        None,
        "用户手册",
        "用户手册 > 第一章 安装",
        "用户手册 > 第一章 安装 > 第一节 环境",
        "用户手册 > 第二章 使用",
    ]
    assert docs[0].page_content == "前言：本文档说明用法。"
    assert docs[2].page_content.split("\n")[0] == "第一章 安装"
    assert "# 这不是标题" in docs[2].page_content
    assert docs[3].page_content == "第一节 环境\n\n需要 Python 3.10。"
    assert {d.metadata["title"] for d in docs} == {"用户手册"}
    assert {d.metadata["encoding"] for d in docs} == {"gb18030"}


def test_markdown_front_matter_title_and_setext_headings(tmp_path: Path) -> None:
    markdown = '---\ntitle: "会议纪要"\ndate: 2024-03-04\n---\n议题\n====\n\n讨论预算。\n'
    doc = _only(load_file(_write(tmp_path, "notes.md", markdown)))
    assert doc.metadata == {"title": "会议纪要", "heading": "议题", "encoding": "utf-8"}
    assert doc.page_content == "议题\n\n讨论预算。"


def test_markdown_without_heading_is_titled_by_file_stem(tmp_path: Path) -> None:
    doc = _only(load_file(_write(tmp_path, "随笔.markdown", "只有正文，没有标题。")))
    assert doc.metadata == {"title": "随笔", "encoding": "utf-8"}


def _docx(path: Path, *, styled_title: bool = True) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "核心属性标题"
    if styled_title:
        document.add_heading("测试管理办法", 0)
    document.add_paragraph("为了规范管理，制定本办法。")
    document.add_heading("第一章 总则", 1)
    document.add_paragraph("第一条 本办法适用于全体员工。")
    document.add_heading("第一节 一般规定", 2)
    document.add_paragraph("第二条 员工应当遵守纪律。")
    table = document.add_table(rows=2, cols=3)
    for cell, text in zip(table.rows[0].cells, ["姓名", "部门", "工号"], strict=True):
        cell.text = text
    for cell, text in zip(table.rows[1].cells, ["张三", "研发部", "001"], strict=True):
        cell.text = text
    document.add_heading("第二章 附则", 1)
    document.add_paragraph("第三条 本办法自发布之日起施行。")
    document.save(str(path))
    return path


def test_docx_sections_titles_and_tables(tmp_path: Path) -> None:
    docs = load_file(_docx(tmp_path / "办法.docx"))
    assert [d.metadata.get("heading") for d in docs] == [
        "测试管理办法",
        "测试管理办法 > 第一章 总则",
        "测试管理办法 > 第一章 总则 > 第一节 一般规定",
        "测试管理办法 > 第一章 总则 > 第一节 一般规定",
        "测试管理办法 > 第二章 附则",
    ]
    assert docs[0].page_content == "测试管理办法\n为了规范管理，制定本办法。"
    assert docs[2].page_content == "第一节 一般规定\n第二条 员工应当遵守纪律。"
    assert docs[3].page_content == "姓名: 张三; 部门: 研发部; 工号: 001"
    assert (docs[3].metadata["table"], docs[3].metadata["row_start"]) == (1, 2)
    assert {d.metadata["title"] for d in docs} == {"测试管理办法"}
    assert all("page" not in d.metadata and "encoding" not in d.metadata for d in docs)


def _fill(table: Any, rows: list[list[str]]) -> None:
    for row, texts in zip(table.rows, rows, strict=True):
        for cell, text in zip(row.cells, texts, strict=True):
            cell.text = text


def test_a_long_docx_table_is_cut_into_parts_that_each_repeat_the_header(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("第一章 门店", 1)
    document.add_paragraph("各门店销量见下表。")
    stores = document.add_table(rows=61, cols=3)
    _fill(
        stores,
        [["门店", "城市", "销量（箱）"]] + [[f"第{n}店", "杭州", f"{1000 + n}"] for n in range(60)],
    )
    document.add_paragraph("表后的说明：销量按箱计。")
    document.add_heading("第二章 人员", 1)
    staff = document.add_table(rows=3, cols=2)
    _fill(staff, [["姓名", "岗位"], ["王芳", "店长"], ["李雷", "店员"]])
    path = tmp_path / "门店.docx"
    document.save(str(path))

    docs = load_file(path)
    first = [d for d in docs if d.metadata.get("table") == 1]
    assert len(first) > 3
    assert {doc.metadata["heading"] for doc in first} == {"第一章 门店"}
    row = r"门店: 第\d+店; 城市: 杭州; 销量（箱）: 1\d{3}$"
    assert contiguous_rows(first, 2, row) == 62  # row 1 is the header
    (row_50,) = [d for d in first if "门店: 第49店;" in d.page_content]  # the 50th store: row 51
    assert row_50.metadata["row_start"] <= 51 <= row_50.metadata["row_end"]
    texts = [d.page_content for d in docs]
    assert texts[0] == "第一章 门店\n各门店销量见下表。"
    after = texts.index("表后的说明：销量按箱计。")  # the text after the table, in its place
    assert docs[after].metadata == {"title": "门店", "heading": "第一章 门店"}
    assert after == 1 + len(first)
    second = [d for d in docs if d.metadata.get("table") == 2]
    assert [(d.page_content, d.metadata["heading"]) for d in second] == [
        ("姓名: 王芳; 岗位: 店长\n姓名: 李雷; 岗位: 店员", "第二章 人员")
    ]
    assert "第二章 人员" not in texts  # a heading directly over a table lives on in its metadata


def test_docx_merged_cells_layout_tables_and_nested_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("成绩如下。")
    scores = document.add_table(rows=4, cols=3)
    _fill(
        scores, [["姓名", "成绩", ""], ["张三", "90", "85"], ["李四", "", ""], ["王五", "88", "92"]]
    )
    scores.cell(0, 1).merge(scores.cell(0, 2))  # "成绩" heads two columns
    scores.cell(2, 1).merge(scores.cell(2, 2)).text = "缺考"  # said once, not twice
    box = document.add_table(rows=1, cols=1)  # a box around a note: text, not 列1: ...
    box.cell(0, 0).text = "注意：本表仅供参考。"
    box.cell(0, 0).add_paragraph("如有疑问请联系教务处。")
    inner = box.cell(0, 0).add_table(rows=2, cols=2)
    _fill(inner, [["甲", "乙"], ["1", "2"]])
    column = document.add_table(rows=3, cols=1)  # one column: a list laid out in a table
    _fill(column, [["一、总则"], ["二、附则"], ["三、附录"]])
    document.add_paragraph("以上。")
    path = tmp_path / "成绩.docx"
    document.save(str(path))

    docs = load_file(path)
    assert [d.page_content for d in docs] == [
        "成绩如下。",
        "姓名: 张三; 成绩: 90; 成绩: 85\n姓名: 李四; 成绩: 缺考\n姓名: 王五; 成绩: 88; 成绩: 92",
        "注意：本表仅供参考。\n如有疑问请联系教务处。\n甲 | 乙\n1 | 2\n"
        "一、总则\n二、附则\n三、附录\n以上。",
    ]
    assert docs[1].metadata["table"] == 1
    assert "table" not in docs[2].metadata
    assert "列1" not in "".join(d.page_content for d in docs)


def test_docx_without_title_style_uses_core_properties(tmp_path: Path) -> None:
    docs = load_file(_docx(tmp_path / "办法.docx", styled_title=False))
    assert docs[0].metadata == {"title": "核心属性标题"}
    assert docs[0].page_content == "为了规范管理，制定本办法。"


def test_pptx_one_document_per_slide_with_tables_and_notes(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    presentation.core_properties.title = "季度汇报"
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "第一季度业绩"
    slide.placeholders[1].text_frame.text = "销售额增长百分之二十。"
    slide.notes_slide.notes_text_frame.text = "演讲者备注：强调增长原因。"
    blank = presentation.slides.add_slide(presentation.slide_layouts[6])
    assert blank is not None  # slide 2 has no text: dropped, numbering stays true
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide.shapes.title.text = "数据明细"
    table = slide.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "地区", "销售额"
    table.cell(1, 0).text, table.cell(1, 1).text = "华东", "120万"
    table.cell(2, 0).text, table.cell(2, 1).text = "华南", "95万"
    path = tmp_path / "汇报.pptx"
    presentation.save(str(path))

    docs = load_file(path)
    assert [d.metadata for d in docs] == [
        {"title": "季度汇报", "page": 1, "heading": "第一季度业绩"},
        {
            "title": "季度汇报",
            "page": 3,
            "heading": "数据明细",
            "table": 1,
            "row_start": 2,
            "row_end": 3,
        },
    ]
    assert docs[0].page_content == (
        "第一季度业绩\n销售额增长百分之二十。\n\n演讲者备注：强调增长原因。"
    )
    assert docs[1].page_content == "地区: 华东; 销售额: 120万\n地区: 华南; 销售额: 95万"


def test_pptx_merged_cells_are_read_once_across_and_repeated_down(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[6])
    table = slide.shapes.add_table(4, 3, Inches(1), Inches(1), Inches(6), Inches(2)).table
    texts = [["地区", "销售额", ""], ["华东", "一月 120", "二月 130"], ["", "一月 80", "二月 90"]]
    texts.append(["华南", "未统计", ""])
    for r, row in enumerate(texts):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    table.cell(0, 1).merge(table.cell(0, 2))  # "销售额" heads two columns
    table.cell(1, 0).merge(table.cell(2, 0))  # "华东" covers two rows
    table.cell(3, 1).merge(table.cell(3, 2))
    path = tmp_path / "合并.pptx"
    presentation.save(str(path))

    (doc,) = load_file(path)
    assert doc.page_content.splitlines() == [
        "地区: 华东; 销售额: 一月 120; 销售额: 二月 130",
        "地区: 华东; 销售额: 一月 80; 销售额: 二月 90",
        "地区: 华南; 销售额: 未统计",
    ]
    assert (doc.metadata["table"], doc.metadata["row_start"], doc.metadata["row_end"]) == (1, 2, 4)


def test_epub_chapters_become_sections(tmp_path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title("三国故事选")
    book.set_language("zh")
    chapters = []
    for number, (heading, sub, body) in enumerate(
        [
            ("第一回 宴桃园豪杰三结义", "桃园结义", "刘备、关羽、张飞结为兄弟。"),
            ("第二回 张翼德怒鞭督邮", "鞭打督邮", "张飞大怒，鞭打督邮。"),
        ],
        start=1,
    ):
        chapter = epub.EpubHtml(title=heading, file_name=f"chap{number}.xhtml", lang="zh")
        chapter.content = (
            f"<html><body><h1>{heading}</h1><p>回目引言。</p>"
            f"<h2>{sub}</h2><p>{body}</p></body></html>"
        )
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    path = tmp_path / "三国.epub"
    epub.write_epub(str(path), book)

    docs = load_file(path)
    assert [(d.metadata.get("heading"), d.page_content) for d in docs] == [
        ("第一回 宴桃园豪杰三结义", "第一回 宴桃园豪杰三结义\n回目引言。"),
        ("第一回 宴桃园豪杰三结义 > 桃园结义", "桃园结义\n刘备、关羽、张飞结为兄弟。"),
        ("第二回 张翼德怒鞭督邮", "第二回 张翼德怒鞭督邮\n回目引言。"),
        ("第二回 张翼德怒鞭督邮 > 鞭打督邮", "鞭打督邮\n张飞大怒，鞭打督邮。"),
    ]
    assert {d.metadata["title"] for d in docs} == {"三国故事选"}


HTML = """<!DOCTYPE html>
<html><head><meta charset="gbk"><title>公司简介 - 示例</title>
<style>body {{ color: red; }}</style><script>var secret = "不应出现";</script></head>
<body><nav>首页 | 导航菜单</nav>
<p>欢迎访问。这是<b>加粗</b>和<a href="#">链接</a>的文字，
源码中换行。</p>
<h1>关于我们</h1><p>第一段。<br>第二行。</p>
<h2>联系方式</h2><table><tr><th>城市</th><th>电话</th></tr>
<tr><td>北京</td><td>010-12345678</td></tr></table>
<!-- 注释不应出现 -->
<footer>版权所有</footer></body></html>"""


def test_html_text_headings_and_dropped_chrome(tmp_path: Path) -> None:
    docs = load_file(_write(tmp_path, "about.html", HTML.encode("gbk")))
    assert [(d.metadata.get("heading"), d.page_content) for d in docs] == [
        (None, "欢迎访问。这是加粗和链接的文字，源码中换行。"),
        ("关于我们", "关于我们\n第一段。\n第二行。"),
        ("关于我们 > 联系方式", "城市: 北京; 电话: 010-12345678"),
    ]
    assert docs[-1].metadata["table"] == 1
    assert {d.metadata["title"] for d in docs} == {"公司简介 - 示例"}
    assert {d.metadata["encoding"] for d in docs} == {"gb18030"}
    joined = "\n".join(d.page_content for d in docs)
    for hidden in ("不应出现", "导航菜单", "版权所有", "注释", "color"):
        assert hidden not in joined


def test_a_long_html_table_repeats_its_header_in_every_part(tmp_path: Path) -> None:
    def row(n: int) -> str:
        if n % 10 == 0:  # this store also covers the next row
            return f"<tr><td rowspan=2>第{n}店</td><td>{1000 + n}</td></tr>"
        store = "" if n % 10 == 1 and n > 1 else f"<td>第{n}店</td>"
        return f"<tr>{store}<td>{1000 + n}</td></tr>"

    rows = "".join(row(n) for n in range(1, 60))
    markup = (
        "<html><body><h1>销量</h1><p>表前说明。</p><table><caption>表1 门店销量</caption>"
        "<tr><th colspan=2>2026年一季度</th></tr><tr><th>门店</th><th>销量（箱）</th></tr>"
        f"{rows}<tr><td colspan=2>合计见附件</td></tr></table><p>表后说明。</p></body></html>"
    )
    docs = load_file(_write(tmp_path, "销量.html", markup))
    assert docs[0].page_content == "销量\n表前说明。\n表1 门店销量\n2026年一季度"
    table = docs[1:-1]
    assert len(table) > 2
    assert {(d.metadata["heading"], d.metadata["table"]) for d in table} == {("销量", 1)}
    assert table[0].metadata["row_start"] == 3  # <tr> 1 the title row, 2 the header row
    lines = [line for d in table for line in d.page_content.splitlines()]
    assert all(line.startswith("门店: ") for line in lines)
    assert "门店: 第10店; 销量（箱）: 1011" in lines  # rowspan: the store repeats down
    assert lines[-1] == "门店: 合计见附件"  # colspan: said once
    assert table[-1].metadata["row_end"] == 62
    assert docs[-1].page_content == "表后说明。"
    assert docs[-1].metadata["heading"] == "销量"
    assert "table" not in docs[-1].metadata


def test_html_layout_tables_stay_text(tmp_path: Path) -> None:
    markup = (
        "<html><body><table><tr><td><h1>公告</h1><p>正文第一段。</p></td>"
        "<td>侧栏链接</td></tr></table>"  # a page laid out in a table: its heading still counts
        "<table><tr><td>一、总则</td></tr><tr><td>二、附则</td></tr></table>"  # one column
        "<table><tr><th colspan=2>刘备</th></tr><tr><th>字</th><td>玄德</td></tr>"
        "<tr><th>国</th><td>蜀汉</td></tr></table></body></html>"  # keys beside their values
    )
    docs = load_file(_write(tmp_path, "公告.html", markup))
    assert [(d.metadata.get("heading"), d.metadata.get("table")) for d in docs] == [("公告", None)]
    lines = docs[0].page_content.splitlines()
    assert lines[:2] == ["公告", "正文第一段。"]
    assert lines[-5:] == ["一、总则", "二、附则", "刘备", "字: 玄德", "国: 蜀汉"]
    assert "列1" not in docs[0].page_content


def test_html_spans_cannot_grow_a_small_file_into_a_huge_table(tmp_path: Path) -> None:
    header = "".join(f"<th rowspan=100000>列名{n}</th>" for n in range(300))  # each over every row
    body = "".join(f"<tr><td colspan=1000>{n}</td></tr>" for n in range(1000))
    markup = f"<html><body><table><tr>{header}</tr>{body}</table></body></html>"
    docs = load_file(_write(tmp_path, "攻击.html", markup))
    text = "\n".join(d.page_content for d in docs)
    assert len(text) < 5 * len(markup)  # read in proportion to the file, not 300 x 1000 cells
    assert "列名0" in text


def test_csv_rows_keep_their_column_names(tmp_path: Path) -> None:
    rows = '姓名,城市,备注\n张三,北京,"喜欢读书, 写作"\n李四,,无\n\n王五,上海,\n'
    doc = _only(load_file(_write(tmp_path, "名单.csv", rows.encode("gbk"))))
    assert doc.page_content == (
        "姓名: 张三; 城市: 北京; 备注: 喜欢读书, 写作\n姓名: 李四; 备注: 无\n姓名: 王五; 城市: 上海"
    )
    # Row numbers as a spreadsheet opening the file shows them: the blank line is row 4.
    assert doc.metadata == {"title": "名单", "encoding": "gb18030", "row_start": 2, "row_end": 5}


@pytest.mark.parametrize(("name", "sep"), [("订单.csv", ","), ("订单.tsv", "\t")])
def test_a_long_csv_is_cut_into_row_ranges_that_each_repeat_the_header(
    tmp_path: Path, name: str, sep: str
) -> None:
    records = [sep.join(["编号", "客户", "备注"])]
    for n in range(1, 201):
        note = '"第一行\n第二行"' if n == 50 else f"第{n}单"  # one record over two lines
        records.append(sep.join([f"A{n:03d}", f"客户{n}", note]))
    docs = load_file(_write(tmp_path, name, "\n".join(records) + "\n"))
    assert len(docs) > 5
    assert contiguous_rows(docs, 2, r"编号: A\d{3}; 客户: 客户\d+; 备注: ") == 202
    (late,) = [d for d in docs if "编号: A150;" in d.page_content]
    assert late.metadata["row_start"] <= 151 <= late.metadata["row_end"]  # record 151, line 152


def test_a_one_line_csv_is_one_line_of_its_cells(tmp_path: Path) -> None:
    doc = _only(load_file(_write(tmp_path, "标签.csv", "茶叶,绿茶,杭州\n")))
    assert doc.page_content == "茶叶; 绿茶; 杭州"
    assert (doc.metadata["row_start"], doc.metadata["row_end"]) == (1, 1)


def test_json_becomes_key_value_lines_not_syntax(tmp_path: Path) -> None:
    value = {
        "标题": "民法典解读",
        "作者": {"姓名": "张三", "单位": "某大学"},
        "标签": ["民法", "合同"],
        "页数": 320,
        "备注": None,
    }
    doc = _only(load_file(_write(tmp_path, "book.json", json.dumps(value, ensure_ascii=False))))
    assert doc.page_content == (
        "标题: 民法典解读\n作者.姓名: 张三\n作者.单位: 某大学\n标签: 民法, 合同\n页数: 320"
    )


def test_json_list_of_records_gives_one_line_per_record(tmp_path: Path) -> None:
    records = [{"问": "什么是民法典？", "答": "调整民事关系的法律。"}, {"问": "何时施行？"}]
    doc = _only(load_file(_write(tmp_path, "faq.json", json.dumps(records, ensure_ascii=False))))
    assert doc.page_content == "问: 什么是民法典？; 答: 调整民事关系的法律。\n问: 何时施行？"


def test_jsonl_one_line_per_record(tmp_path: Path) -> None:
    lines = [{"question": "宪法何时通过？", "answer": "1982年12月4日。", "tags": ["宪法"]}, {}]
    data = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n\n"
    doc = _only(load_file(_write(tmp_path, "qa.jsonl", data)))
    assert doc.page_content == "question: 宪法何时通过？; answer: 1982年12月4日。; tags: 宪法"


def test_jsonl_with_a_broken_line_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "qa.jsonl", '{"a": "好"}\n{"b": 不是JSON}\n')
    with pytest.raises(DocumentError, match=r"qa\.jsonl: not valid JSON on line 2"):
        load_file(path)


def test_eml_with_gbk_subject_and_body_declared_as_gb2312(tmp_path: Path) -> None:
    # 镕 is GBK but not GB2312: mail clients label GBK mail "gb2312" all the time.
    body = "各位同事：\n\n朱镕基同志的讲话稿已上传，请查阅。\n\n办公室"
    subject = Header("关于讲话稿（镕）的通知", "gbk").encode()
    sender = Header("张三", "gbk").encode()
    headers = (
        f"Subject: {subject}\r\nFrom: {sender} <zhangsan@example.com>\r\n"
        "Date: Mon, 04 Mar 2024 10:00:00 +0800\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="gb2312"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    )
    data = headers.encode("ascii") + base64.encodebytes(body.encode("gbk"))
    doc = _only(load_file(_write(tmp_path, "notice.eml", data)))
    assert doc.metadata == {"title": "关于讲话稿（镕）的通知", "encoding": "gb18030"}
    assert doc.page_content == (
        "Subject: 关于讲话稿（镕）的通知\nFrom: 张三 <zhangsan@example.com>\n"
        "Date: Mon, 04 Mar 2024 10:00:00 +0800\n\n" + body
    )


def test_eml_with_raw_eight_bit_gbk_headers(tmp_path: Path) -> None:
    data = "Subject: 未编码的主题\r\n\r\n正文内容。".encode("gbk")
    doc = _only(load_file(_write(tmp_path, "raw.eml", data)))
    assert doc.page_content == "Subject: 未编码的主题\n\n正文内容。"
    assert doc.metadata["title"] == "未编码的主题"


def test_eml_html_only_body_goes_through_html_extraction(tmp_path: Path) -> None:
    message = MIMEMultipart("mixed")
    message["Subject"] = Header("網頁郵件", "big5").encode()
    message.attach(MIMEText("<p>第一段。</p><script>x()</script><p>第二段。</p>", "html", "big5"))
    attachment = MIMEText("附件内容不应出现", "plain", "utf-8")
    attachment.add_header("Content-Disposition", "attachment", filename="a.txt")
    message.attach(attachment)
    data = message.as_bytes(policy=email.policy.compat32)
    doc = _only(load_file(_write(tmp_path, "web.eml", data)))
    assert doc.page_content == "Subject: 網頁郵件\n\n第一段。\n第二段。"
    assert doc.metadata == {"title": "網頁郵件", "encoding": "big5"}


# --- PDF -----------------------------------------------------------------------------------------


def _pdf(pages: list[str | None], user_password: str | None = None) -> bytes:
    """A PDF written by pypdf: a Helvetica text line per page (None: a page without text)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(612, 792)
        if text is None:
            continue
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    if user_password is not None:
        writer.encrypt(user_password, owner_password="owner-secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_pdf_pages_keep_true_numbers_when_empty_pages_are_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, "report.pdf", _pdf(["First page text.", None, "Third page text."]))
    docs = load_file(path)
    assert [(d.metadata["page"], d.page_content) for d in docs] == [
        (1, "First page text."),
        (3, "Third page text."),
    ]
    assert {d.metadata["title"] for d in docs} == {"report"}


def test_pdf_encrypted_with_an_empty_user_password_loads(tmp_path: Path) -> None:
    data = _pdf(["Open without a password."], user_password="")
    doc = _only(load_file(_write(tmp_path, "open.pdf", data)))
    assert doc.page_content == "Open without a password."


def test_pdf_encrypted_with_a_password_says_to_remove_it(tmp_path: Path) -> None:
    data = _pdf(["Secret."], user_password="secret")
    with pytest.raises(DocumentError, match=r"secret\.pdf: the PDF is encrypted; remove its pass"):
        load_file(_write(tmp_path, "secret.pdf", data))


def test_a_pdf_of_blank_pages_says_not_even_ocr_found_text(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"scan\.pdf: no text found, not even by OCR"):
        load_file(_write(tmp_path, "scan.pdf", _pdf([None, None])))


@needs_data
def test_truncated_pdf_is_reported_as_damaged(tmp_path: Path) -> None:
    data = (DOCS / "laws" / "中华人民共和国宪法.pdf").read_bytes()
    with pytest.raises(DocumentError, match=r"half\.pdf: cannot read the PDF.*damaged or trunc"):
        load_file(_write(tmp_path, "half.pdf", data[: len(data) // 2]))


# --- real documents ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def constitution() -> list[Any]:
    if not DOCS.is_dir():
        pytest.skip(f"shared data set not found at {DOCS.resolve()}")
    return load_file(DOCS / "laws" / "中华人民共和国宪法.pdf")


def test_constitution_pdf_pages_in_order_with_title(constitution: list[Any]) -> None:
    assert [d.metadata["page"] for d in constitution] == list(range(1, 32))
    assert {d.metadata["title"] for d in constitution} == {"中华人民共和国宪法"}
    assert not any("ocr_confidence" in d.metadata for d in constitution)  # text pages: no OCR


def test_a_text_layer_is_judged_by_what_it_holds() -> None:
    """The rule that sends a PDF page to OCR: no text, a scan's stray stamp, or characters no
    real text is made of."""
    article = (
        "第十条 城市的土地属于国家所有。"
        "农村和城市郊区的土地，除由法律规定属于国家所有的以外，属于集体所有。"
    )
    assert text_layer_usable(article, draws_image=False)
    assert text_layer_usable(article, draws_image=True)
    assert text_layer_usable("Chapter 3. Results and discussion (n = 12)", draws_image=False)
    assert text_layer_usable("2024年1月", draws_image=False)  # a short last page of text
    assert not text_layer_usable("  \n ", draws_image=False)  # nothing, or text as outlines
    assert not text_layer_usable("- 3 -", draws_image=True)  # a page number stamped on a scan
    assert not text_layer_usable(article.encode("gbk").decode("latin-1"), draws_image=False)
    assert not text_layer_usable("\ue000\ue001\ue002\ue003" * 20, draws_image=False)


@pytest.mark.parametrize(
    "sentence",
    [
        # Each of these is broken over two or three lines by pypdf.
        "中华人民共和国是工人阶级领导的、以工农联盟为基础的人民民主专政的社会主义国家。",
        "中国坚持独立自主的对外政策，坚持互相尊重主权和领土完整、互不侵犯、互不干涉内政、"
        "平等互利、和平共处的五项原则",
        "第六十三条 全国人民代表大会有权罢免下列人员：",
        "第一章 总纲",
    ],
)
def test_constitution_sentences_survive_verbatim(constitution: list[Any], sentence: str) -> None:
    assert any(sentence in d.page_content for d in constitution)


def test_constitution_table_of_contents_keeps_one_entry_per_line(constitution: list[Any]) -> None:
    lines = constitution[0].page_content.split("\n")
    assert lines[0] == "中华人民共和国宪法"
    for entry in (
        "目录",
        "序言",
        "第一章 总纲",
        "第一节 全国人民代表大会",
        "第八节 人民法院和人民检察院",
    ):
        assert entry in lines


@pytest.fixture(scope="module")
def civil_code() -> list[Any]:
    if not DOCS.is_dir():
        pytest.skip(f"shared data set not found at {DOCS.resolve()}")
    return load_file(DOCS / "laws" / "中华人民共和国民法典.pdf")


def test_civil_code_pages_are_read_from_their_text_layer(civil_code: list[Any]) -> None:
    assert not any("ocr_confidence" in d.metadata for d in civil_code)


@pytest.mark.slow
def test_civil_code_pdf_has_no_page_number_lines_and_a_decoded_title(
    civil_code: list[Any],
) -> None:
    # pypdf puts the printed page number (" 101") on top of every page; the /Title is stored
    # as hex of a GBK string ("Microsoft Word - 中华人民共和国民法典.doc").
    assert [d.metadata["page"] for d in civil_code] == list(range(1, 235))
    assert {d.metadata["title"] for d in civil_code} == {"中华人民共和国民法典"}
    for doc in civil_code:
        lines = doc.page_content.split("\n")
        assert not re.fullmatch(r"\d+", lines[0])
        assert not re.fullmatch(r"\d+", lines[-1])
    sentence = (
        "第五百二十八条 当事人依据前条规定中止履行的，应当及时通知对方。对方提供适当担保的，"
        "应当恢复履行。"
    )
    assert any(sentence in d.page_content for d in civil_code)


@needs_data
def test_cid_font_pdf_loads(tmp_path: Path) -> None:
    doc = _only(load_file(DOCS / "pdf" / "simplified_chinese.pdf"))
    assert doc.metadata == {"title": "simplified_chinese", "page": 1}
    assert "中华人民共和国国务院侨务办公室" in doc.page_content
    assert "杨启光 陈光磊 陈学超 周小兵 赵金铭" in doc.page_content.split("\n")


@needs_data
@pytest.mark.parametrize(
    ("name", "title", "heading", "sentence"),
    [
        (
            "麻醉药品和精神药品管理条例.docx",
            "麻醉药品和精神药品管理条例",
            "第一章 总则",
            "第一条 为加强麻醉药品和精神药品的管理，保证麻醉药品和精神药品的合法、安全、合理使用，"
            "防止流入非法渠道，根据药品管理法和其他有关法律的规定，制定本条例。",
        ),
        (
            # core_properties.title is a leftover template name; the centred first line wins.
            "中华人民共和国禁毒法.docx",
            "中华人民共和国禁毒法",
            None,
            "第一条 为了预防和惩治毒品违法犯罪行为，保护公民身心健康，维护社会秩序，制定本法。",
        ),
        (
            "中华人民共和国刑法.docx",
            "中华人民共和国刑法",
            None,
            "第一条 为了惩罚犯罪，保护人民，根据宪法，结合我国同犯罪作斗争的具体经验及实际情况，"
            "制定本法。",
        ),
    ],
)
def test_law_docx(name: str, title: str, heading: str | None, sentence: str) -> None:
    docs = load_file(DOCS / "laws" / name)
    assert {d.metadata["title"] for d in docs} == {title}
    matching = [d for d in docs if sentence in d.page_content]
    assert len(matching) == 1
    assert matching[0].metadata.get("heading") == heading
    if heading:
        assert matching[0].page_content.startswith(heading + "\n")


@needs_data
def test_novel_loads_whole_and_verbatim() -> None:
    path = DOCS / "novel" / "三国演义.txt"
    raw = path.read_text(encoding="utf-8")
    doc = _only(load_file(path))
    assert doc.metadata == {"title": "三国演义", "encoding": "utf-8"}
    sentences = [s for s in re.split(r"(?<=。)", raw) if 15 <= len(s) <= 80 and "\n" not in s]
    for sentence in random.Random(42).sample(sentences, 3):
        assert sentence.strip() in doc.page_content


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "pattern"),
    [
        ("empty.txt", b"", r"empty\.txt: the file is empty \(0 bytes\)"),
        ("blank.md", b" \n\t\r\n  ", r"blank\.md: no text"),
        ("blank-utf16.txt", "  \n ".encode("utf-16"), r"blank-utf16\.txt: no text"),
        ("blank.html", b"<html><body><script>x()</script></body></html>", r"no text"),
        ("random.txt", random.Random(7).randbytes(65536), "not a text"),
        (
            "image.csv",
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16,
            r"image\.csv: not a text file",
        ),
        ("text.docx", "这其实是一个文本文件。".encode(), r"text\.docx: cannot open as a Word"),
        ("text.pptx", b"just text", r"text\.pptx: cannot open as a PowerPoint"),
        ("text.epub", b"just text", r"text\.epub: cannot open as an EPUB"),
        ("text.pdf", b"just text, no PDF header", r"text\.pdf: not a PDF"),
        ("broken.json", b'{"a": ', r"broken\.json: not valid JSON"),
        ("binary.eml", b"\x00\x01\x02" * 100, r"binary\.eml: not a text file"),
        ("data.xyz", b"whatever", r"data\.xyz: unsupported file type '\.xyz'; supported: .*\.pdf"),
        ("old.doc", b"whatever", r"old\.doc: unsupported file type.*save it as \.docx"),
        ("noext", b"whatever", r"noext: unsupported file type '\(no extension\)'"),
    ],
)
def test_bad_files_raise_document_error_naming_file_and_reason(
    tmp_path: Path, name: str, data: bytes, pattern: str
) -> None:
    with pytest.raises(DocumentError, match=pattern):
        load_file(_write(tmp_path, name, data))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"gone\.txt: file not found"):
        load_file(tmp_path / "gone.txt")


def test_directory_named_like_a_file(tmp_path: Path) -> None:
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(DocumentError, match=r"folder\.txt: is a directory"):
        load_file(tmp_path / "folder.txt")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read a chmod 000 file"
)
def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "locked.txt", "内容")
    path.chmod(0)
    try:
        with pytest.raises(DocumentError, match=r"locked\.txt: permission denied"):
            load_file(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(
    ("error", "pattern"),
    [
        (PermissionError(13, "Permission denied"), r"locked\.txt: permission denied"),
        (OSError(5, "Input/output error"), r"locked\.txt: cannot read the file \(Input/output"),
    ],
)
def test_read_errors_become_document_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, pattern: str
) -> None:
    path = _write(tmp_path, "locked.txt", "内容")

    def fail(*args: object, **kwargs: object) -> int:
        raise error

    monkeypatch.setattr(os, "open", fail)  # files are opened with os.open (non-blocking)
    with pytest.raises(DocumentError, match=pattern):
        load_file(path)


def test_unexpected_parser_failure_is_still_a_document_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docx

    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    path = _docx(tmp_path / "deep.docx")
    monkeypatch.setattr(docx.document.Document, "iter_inner_content", explode)
    with pytest.raises(DocumentError, match=r"deep\.docx: cannot extract text \(RecursionError"):
        load_file(path)


def test_five_megabyte_single_line_loads(tmp_path: Path) -> None:
    line = "中华人民共和国是工人阶级领导的社会主义国家，" * 80_000  # ~5.3 MB of UTF-8, no newline
    path = _write(tmp_path, "oneline.txt", line)
    doc = _only(load_file(path))
    assert doc.page_content == line


def test_supported_extensions_are_lowercase_with_dot() -> None:
    required = ".txt .md .markdown .pdf .docx .html .htm .csv .json .jsonl .epub .pptx .eml"
    assert set(required.split()) <= SUPPORTED_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in SUPPORTED_EXTENSIONS)


def test_extension_match_is_case_insensitive(tmp_path: Path) -> None:
    doc = _only(load_file(_write(tmp_path, "README.TXT", "大写扩展名。")))
    assert doc.page_content == "大写扩展名。"


def test_importing_the_loaders_does_not_import_parsers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chinese_mixtral_rag.documents.loaders\n"
        "heavy = {'pypdf', 'docx', 'pptx', 'ebooklib', 'bs4', 'charset_normalizer', 'lxml'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- spreadsheets ---------------------------------------------------------------------------


def two_sheet_workbook(path: Path, rows: int = 3) -> Path:
    """价格 (a header on row 2, under a title row left empty) and 库存, as Excel writes them."""
    import datetime

    openpyxl = pytest.importorskip("openpyxl", reason="needs the test extra")
    book = openpyxl.Workbook()
    prices = book.active
    prices.title = "价格"
    prices.append([])
    prices.append(["产品", "单价（元）", "上市日期", "有货"])
    for n in range(rows):
        prices.append([f"龙井{n}号", 12.0 + n, datetime.date(2026, 3, 1), n % 2 == 0])
    stock = book.create_sheet("库存")
    stock.append(["仓库", "产品", "数量"])
    stock.append(["杭州仓", "碧螺春", 340])
    book.save(path)
    return path


def test_spreadsheet_rows_carry_their_header_sheet_and_row_numbers(tmp_path: Path) -> None:
    docs = load_file(two_sheet_workbook(tmp_path / "茶叶.xlsx"))
    by_sheet = {d.metadata["sheet"]: d for d in docs}
    assert set(by_sheet) == {"价格", "库存"}
    prices = by_sheet["价格"]
    assert prices.page_content.splitlines() == [
        "产品: 龙井0号; 单价（元）: 12; 上市日期: 2026-03-01; 有货: TRUE",
        "产品: 龙井1号; 单价（元）: 13; 上市日期: 2026-03-01; 有货: FALSE",
        "产品: 龙井2号; 单价（元）: 14; 上市日期: 2026-03-01; 有货: TRUE",
    ]
    assert (prices.metadata["row_start"], prices.metadata["row_end"]) == (3, 5)  # Excel's rows
    assert by_sheet["库存"].page_content == "仓库: 杭州仓; 产品: 碧螺春; 数量: 340"
    assert all(d.metadata["title"] == "茶叶" for d in docs)


def test_a_long_sheet_is_cut_into_row_ranges_that_each_repeat_the_header(tmp_path: Path) -> None:
    docs = load_file(two_sheet_workbook(tmp_path / "long.xlsx", rows=200))
    prices = [d for d in docs if d.metadata["sheet"] == "价格"]
    assert len(prices) > 5
    assert contiguous_rows(prices, 3, r"产品: 龙井\d+号; 单价（元）: ") == 203


def test_a_damaged_workbook_is_a_clear_error(tmp_path: Path) -> None:
    good = two_sheet_workbook(tmp_path / "good.xlsx").read_bytes()
    (tmp_path / "cut.xlsx").write_bytes(good[: len(good) // 2])
    with pytest.raises(DocumentError, match=r"cut\.xlsx: .*(damaged|cannot read)"):
        load_file(tmp_path / "cut.xlsx")
    (tmp_path / "fake.xls").write_bytes(b"not a spreadsheet at all" * 10)
    with pytest.raises(DocumentError, match=r"fake\.xls: "):
        load_file(tmp_path / "fake.xls")


def test_xls_and_ods_read_like_xlsx(tmp_path: Path) -> None:
    """Excel 97-2003 (.xls, written by xlwt) and OpenDocument (.ods, written by odfpy) give the
    same labelled rows, sheet names and row numbers as .xlsx."""
    xlwt = pytest.importorskip("xlwt", reason="needs the test extra")
    pytest.importorskip("odf", reason="needs the test extra")
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    rows = [["产品", "单价（元）"], ["龙井", "12"], ["碧螺春", "9"]]
    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("价格")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            sheet.write(r, c, float(value) if value.isdigit() else value)
    book.save(str(tmp_path / "old.xls"))
    document = OpenDocumentSpreadsheet()
    table = Table(name="价格")
    for row in rows:
        line = TableRow()
        for value in row:
            cell = TableCell(valuetype="string")
            cell.addElement(P(text=value))
            line.addElement(cell)
        table.addElement(line)
    document.spreadsheet.addElement(table)
    document.save(str(tmp_path / "open.ods"))
    for name in ("old.xls", "open.ods"):
        (doc,) = load_file(tmp_path / name)
        assert doc.page_content.splitlines() == [
            "产品: 龙井; 单价（元）: 12",
            "产品: 碧螺春; 单价（元）: 9",
        ]
        assert (doc.metadata["sheet"], doc.metadata["row_start"], doc.metadata["row_end"]) == (
            "价格",
            2,
            3,
        )


def test_a_password_protected_office_file_says_so(tmp_path: Path) -> None:
    """Office encrypts a workbook or document into a compound file: named as password-protected
    with what to do, not as damaged."""
    import docx
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = two_sheet_workbook(tmp_path / "plain.xlsx")
    document = docx.Document()
    document.add_paragraph("机密文件。")
    document.save(str(tmp_path / "plain.docx"))
    for name in ("plain.xlsx", "plain.docx"):
        source = tmp_path / name
        with source.open("rb") as clear, (tmp_path / f"secret{source.suffix}").open("wb") as out:
            OOXMLFile(clear).encrypt("口令123", out)
        with pytest.raises(
            DocumentError, match=r"password-protected \(encrypted\).*remove the password"
        ):
            load_file(tmp_path / f"secret{source.suffix}")
    assert load_file(plain)  # the same workbook without its password reads
