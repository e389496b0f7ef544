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
