"""Text from files and from the model, shown in the web app and the terminal as itself."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.cli.console import printable
from chinese_mixtral_rag.web.app import as_answer, as_text, link_citations


def test_a_hostile_file_name_is_text_in_markdown() -> None:
    shown = as_text("<img src=x onerror=alert(11)>[点我](http://127.0.0.1:9/)恶意.md")
    assert "<" not in shown
    assert "\\[点我\\](" in shown  # escaped brackets: no link
    assert shown.startswith("&lt;img")
    assert as_text("报告_2024.v2-final.md") == "报告_2024.v2-final.md"  # plain names stay plain


def test_an_answer_keeps_its_markdown_but_not_its_html_or_images() -> None:
    answer = "**结论**：可以[1]。<img src=http://127.0.0.1:9/t.png> ![x](http://127.0.0.1:9/p.png)"
    shown = link_citations(as_answer(answer), 1)
    assert "**结论**" in shown  # bold stays
    assert "[\\[1\\]](#src-1)" in shown  # the citation still links to its card
    assert "<img" not in shown
    assert "![" not in shown  # an image would be fetched by the browser


@given(st.text(max_size=60))
def test_terminal_names_hold_no_control_character_and_keep_chinese(name: str) -> None:
    shown = printable(name + "中文")
    assert not re.search(r"[\x00-\x1f\x7f]", shown)
    assert shown.endswith("中文")


def test_terminal_escapes_are_readable() -> None:
    assert printable("red\x1b[31m.txt") == "red\\x1b[31m.txt"
    assert printable("two\nlines.txt") == "two\\nlines.txt"


def test_ingest_times_read_as_people_say_them() -> None:
    from datetime import datetime, timedelta, timezone

    from chinese_mixtral_rag.web.app import when
    from chinese_mixtral_rag.web.text import TEXT

    now = datetime(2026, 12, 2, 15, 30).astimezone()
    at = now.replace(hour=9, minute=5)
    stamp = at.astimezone(timezone.utc).isoformat(timespec="seconds")  # as ingest stores it
    assert when(stamp, TEXT["zh"], now) == "今天 09:05"
    yesterday = (at - timedelta(days=1)).isoformat()
    assert when(yesterday, TEXT["zh"], now) == "昨天 09:05"
    assert when((at - timedelta(days=5)).isoformat(), TEXT["zh"], now) == "11月27日 09:05"
    assert when(at.replace(year=2025, month=3, day=4).isoformat(), TEXT["zh"], now) == (
        "2025年3月4日"
    )
    assert when(at.replace(year=2025, month=3, day=4).isoformat(), TEXT["en"], now) == (
        "4 Mar 2025"
    )
    assert when("", TEXT["zh"], now) == ""


def test_example_questions_come_from_lines_and_table_cells(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from chinese_mixtral_rag.web.app import example_questions

    readme = tmp_path / "README.md"
    readme.write_text(
        "# 示例\n\n这一行不是问题。\n- 居住权可以继承吗？\n\n| Question | Source |\n| --- | --- |\n"
        "| 出差住宿费每晚最多报销多少元？ | `a.docx` |\n| What is MoE? | b.md |\n"
        "- 居住权可以继承吗？\n",
        encoding="utf-8",
    )
    assert example_questions(readme) == [
        "居住权可以继承吗？",
        "出差住宿费每晚最多报销多少元？",
        "What is MoE?",
    ]


def test_a_copied_answer_is_plain_text_with_the_sources_it_cites() -> None:
    from chinese_mixtral_rag.qa.citations import Source
    from chinese_mixtral_rag.web.app import plain_answer
    from chinese_mixtral_rag.web.text import TEXT

    def source(n: int, name: str, page: str) -> Source:
        return Source(n, name, page, "", "…", 1.0, 1.0, (f"c{n}",))

    sources = [source(1, "民法典.pdf", "120"), source(2, "a<b>.md", "")]
    copied = plain_answer("居住权不得继承 *[1]*。", sources, [1], TEXT["zh"])
    assert copied == "居住权不得继承 *[1]*。\n\n来源：\n[1] 民法典.pdf 第 120 页"
    assert plain_answer("无引用。", sources, [], TEXT["zh"]) == "无引用。"


def test_the_upload_status_names_each_file_and_where_it_is() -> None:
    from chinese_mixtral_rag.documents.pipeline import FileOutcome
    from chinese_mixtral_rag.documents.uploads import UploadProgress
    from chinese_mixtral_rag.web.app import upload_status
    from chinese_mixtral_rag.web.text import TEXT

    events: list[dict[str, object]] = []
    progress = UploadProgress(["扫描.pdf", "a.docx", "<b>.md"], events.append)
    progress.start(3, 3)
    progress.file_done(FileOutcome("a.docx", "added", chunks=12))
    progress.reading("扫描.pdf")
    progress.pages("扫描.pdf", 3, 31)
    shown = upload_status(progress, TEXT["zh"])
    assert shown.splitlines() == [
        "**导入中：1/3 个文件完成**，已写入 12 个片段",
        "- ⏳ 扫描.pdf：读取中…OCR 第 3/31 页",
        "- ✅ a.docx：12 个片段",
        "- · <b>.md：等待".replace("<b>", "&lt;b&gt;"),
    ]
    assert [e["event"] for e in events] == ["progress", "reading", "ocr"]
